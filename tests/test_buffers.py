"""Recycled shared-memory image slots (recipekit.loaders.buffers): the state machine, and
DataLoader workers that reuse their slots without ever overwriting a batch still in use."""

from __future__ import annotations

import gc

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
pytest.importorskip("webdataset")

from recipekit.loaders import make_loader
from recipekit.loaders.buffers import FREE, RECEIVED, SENT, BatchBuffers
from recipekit.pipeline.vocab import Vocabulary

from test_loaders import WORDS, make_recipe, write_shards

SHAPE = (4, 3, 8, 8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    recipes = [make_recipe(i, class_id=i % 4, n_images=1 + i % 3) for i in range(48)]
    return write_shards(tmp_path_factory.mktemp("wds-buffers"), "train", recipes, per_shard=6)


def _send(buffers, images, marker):
    """A worker's batch through to the main process (both roles in this process)."""
    return buffers.received(marker, buffers.outgoing(images, marker))


def test_a_slot_is_reused_only_after_every_reference_is_gone():
    buffers = BatchBuffers(workers=1, slots=2)
    written, marker = buffers.acquire(0, SHAPE, torch.float32)
    assert marker[0] == 0 and marker[2] == 0 and buffers.state[0, 0] == SENT
    written.fill_(7)
    assert buffers.outgoing(written, marker) is written  # the first batch in a slot carries its tensor
    got = buffers.received(marker, written)
    del written
    assert buffers.state[0, 0] == RECEIVED and got.shape == SHAPE and bool((got == 7).all())
    view = got[1:3]
    del got
    buffers.release()
    assert buffers.state[0, 0] == RECEIVED  # a view still points into the slot
    array = view.numpy()
    del view
    buffers.release()
    assert buffers.state[0, 0] == RECEIVED  # so does a numpy array
    ptr = array.ctypes.data
    del array
    gc.collect()
    buffers.release()
    assert buffers.state[0, 0] == FREE
    again, marker = buffers.acquire(0, SHAPE, torch.float32)
    assert marker[2] == 0 and again.data_ptr() <= ptr < again.data_ptr() + again.nbytes  # the same memory
    again.fill_(9)
    assert buffers.outgoing(again, marker) is None  # the main process maps the slot: only the marker
    got = buffers.received(marker, None)
    assert got.data_ptr() == again.data_ptr() and bool((got == 9).all())


def test_every_slot_taken_means_a_one_off_segment_and_a_smaller_batch_a_view():
    buffers = BatchBuffers(workers=2, slots=2)
    a, ma = buffers.acquire(1, SHAPE, torch.uint8)
    b, mb = buffers.acquire(1, SHAPE, torch.uint8)
    c, mc = buffers.acquire(1, SHAPE, torch.uint8)
    assert (ma[2], mb[2], mc) == (0, 1, None) and c.is_shared()
    assert buffers.outgoing(c, mc) is c and buffers.received(mc, c) is c and buffers.one_off == 1
    assert buffers.state[0].tolist() == [FREE, FREE]  # worker 0's slots are its own
    _send(buffers, a, ma)
    del a
    buffers.release()
    small, marker = buffers.acquire(1, (2, 3, 8, 8), torch.uint8)  # a short last batch fits in slot 0
    assert marker[2] == 0 and small.shape == (2, 3, 8, 8)
    assert _send(buffers, small, marker).shape == (2, 3, 8, 8)
    other, marker = buffers.acquire(1, SHAPE, torch.float32)  # another dtype never aliases
    assert marker is None


def test_a_marker_for_a_slot_never_received_is_an_error():
    buffers = BatchBuffers(workers=1, slots=1)
    with pytest.raises(RuntimeError, match="slot 0 of worker 0"):
        buffers.received((0, 123, 0, SHAPE), None)


def test_pinned_batches_free_their_slot_on_arrival():
    buffers = BatchBuffers(workers=1, slots=1, pinned=True)
    images, marker = buffers.acquire(0, SHAPE, torch.float32)
    assert buffers.outgoing(images, marker) is images
    copy = images.clone()  # what the pin-memory thread hands on
    assert buffers.received(marker, copy) is copy and buffers.state[0, 0] == FREE
    again, marker = buffers.acquire(0, SHAPE, torch.float32)
    assert buffers.outgoing(again, marker) is again  # pinned: the tensor every time


def test_reset_gives_new_workers_a_new_state():
    buffers = BatchBuffers(workers=1, slots=1)
    images, marker = buffers.acquire(0, SHAPE, torch.float32)
    old = buffers.state
    buffers.reset()
    assert old[0, 0] == SENT and buffers.state[0, 0] == FREE and buffers.state.is_shared()


def _epochs(folder, vocab, *, recycle: bool, keep: bool, epochs: int = 2):
    loader, _ = make_loader(folder, vocab=vocab, train=True, batch_size=2, image_size=16, seed=3, num_workers=2,
                            persistent_workers=True, recycle_buffers=recycle)
    out, held = [], []
    for _ in range(epochs):
        for batch in loader:
            if keep:  # hold on to every batch (and a view of it) until the end
                held.append((batch["ids"], batch["images"], batch["images"][:1]))
            else:
                out.append((batch["ids"], batch["images"].clone()))
    out += [(ids, images.clone()) for ids, images, _ in held]
    return out, loader


@pytest.mark.slow
def test_workers_reuse_slots_and_deliver_what_fresh_segments_deliver(shards):
    vocab = Vocabulary(WORDS)
    want, _ = _epochs(shards, vocab, recycle=False, keep=False)
    got, loader = _epochs(shards, vocab, recycle=True, keep=False)
    assert len(want) == 48 and [i for i, _ in got] == [i for i, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert torch.equal(a, b)
    buffers = loader.buffers
    assert (buffers.slotted, buffers.one_off) == (48, 0)  # 48 batches through at most 2 x 5 slots
    assert 2 <= len(buffers._held) <= 2 * buffers.slots
    kept, loader = _epochs(shards, vocab, recycle=True, keep=True)  # nothing released: one-off segments
    for (_, a), (_, b) in zip(kept, want):
        assert torch.equal(a, b)
    assert all(state == RECEIVED for state in loader.buffers.state.flatten().tolist())
    assert loader.buffers.slotted == 2 * loader.buffers.slots and loader.buffers.one_off == 38


@pytest.mark.slow
def test_eval_loader_with_new_workers_each_pass_and_a_short_last_batch(shards):
    vocab = Vocabulary(WORDS)

    def passes(recycle):
        loader, _ = make_loader(shards, vocab=vocab, train=False, batch_size=5, image_size=16, num_workers=2,
                                recycle_buffers=recycle)
        return [(b["ids"], b["images"].clone()) for _ in range(2) for b in loader], loader

    want, _ = passes(False)
    got, loader = passes(True)
    assert [len(i) for i, _ in got] == [len(i) for i, _ in want] and min(len(i) for i, _ in got) < 5
    assert [i for i, _ in got] == [i for i, _ in want]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))
    assert loader.buffers.slotted == len(got) and loader.buffers.one_off == 0


@pytest.mark.slow
def test_epochs_left_early_give_their_slots_back(shards):
    """Persistent workers: breaking out of an epoch leaves batches in flight, which the next
    iter() discards; their slots are reclaimed, not lost (5 slots per worker, 4 breaks)."""
    vocab = Vocabulary(WORDS)

    def run(recycle):
        loader, _ = make_loader(shards, vocab=vocab, train=True, batch_size=2, image_size=16, seed=4,
                                num_workers=2, persistent_workers=True, recycle_buffers=recycle)
        out = []
        for epoch in range(5):
            for k, batch in enumerate(loader):
                out.append((batch["ids"], batch["images"].clone()))
                if epoch < 4 and k == 2:
                    break
        return out, loader

    want, _ = run(False)
    got, loader = run(True)
    assert len(got) == 4 * 3 + 24 and [i for i, _ in got] == [i for i, _ in want]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))
    assert loader.buffers.one_off == 0 and loader.buffers.slotted == len(got)
