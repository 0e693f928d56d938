"""Recycled shared-memory image buffers for DataLoader workers.

A worker hands each image batch to the main process in shared memory. Allocating a fresh
segment for every batch (what ``default_collate`` does) makes the kernel find, zero and map
every 4 KiB page of it again, in the worker as it writes the pixels and in the main process
as it reads them: about 0.4 ms per 224 px float image on a 2-core VM, as much as decoding
the JPEG (``benchmarks/loader.py``, docs/benchmarks.md). :class:`BatchBuffers` lets each
worker keep a few segments ("slots") and write batch after batch into them, once the main
process has let go of the batch a slot last held.

The protocol: one state byte per (worker, slot), in a shared tensor made before the workers
start, goes FREE -> SENT (worker) -> RECEIVED (main process) -> FREE (main process):

* worker: :meth:`BatchBuffers.acquire` takes a slot of its own that is FREE (or makes a new
  one, up to ``slots``), marks it SENT and returns a view of it with a marker for the batch
  (:data:`SLOT_KEY`: worker, pid, slot, shape). A batch carries the tensor (through the
  DataLoader's shared-memory hand-over, which maps the segment in the main process) until the
  main process says it holds that slot (a shared flag); then only the marker (with
  ``pin_memory``, the tensor every time, for the pin-memory thread to copy).
  With every slot taken it falls back to a one-off segment (the old way: it never blocks,
  never waits on the main process).
* main process: :meth:`BatchBuffers.received` returns the batch's images (a view of the slot
  it holds), marks the slot RECEIVED, and frees (FREE) every slot that nothing else references
  any more: the storage's use count shows no tensor, view or numpy array in this process still
  pointing into it. With ``pin_memory`` the images reaching the main thread are a pinned copy
  already, so the slot is FREE at once.

A loop that leaves an epoch early leaves batches in flight that the DataLoader discards when the
next epoch starts (persistent workers): :meth:`BatchBuffers.reclaim`, after that, frees the slots
of those batches, known by the round (``iter(loader)`` call) each slot was last sent in.

So a slot is rewritten only after every reference to its last batch in the main process is
gone. What this cannot see: a batch tensor sent on to *another* process (e.g. through a
``multiprocessing`` queue); copy it first (``images.clone()``), or make the loader with
``recycle_buffers=False``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["SLOT_KEY", "BatchBuffers", "shared_empty"]

SLOT_KEY = "_slot"
FREE, SENT, RECEIVED = 0, 1, 2


def shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in a new shared-memory segment (``default_collate``'s way)."""
    proto = torch.empty(0, dtype=dtype)
    numel = 1
    for d in shape:
        numel *= d
    storage = proto._typed_storage()._new_shared(numel, device=proto.device)
    return proto.new(storage).resize_(shape)


def _use_count(storage: torch.UntypedStorage) -> int:
    return torch._C._storage_Use_Count(storage._cdata)


class BatchBuffers:
    """Per-worker rings of ``slots`` shared-memory image buffers (see the module docstring).

    Made in the main process before the DataLoader starts its workers (it travels to them
    with the dataset); :meth:`acquire` runs in a worker, :meth:`received` and :meth:`reset` in
    the main process."""

    def __init__(self, workers: int, slots: int, *, pinned: bool = False):
        if workers < 1 or slots < 1:
            raise ValueError(f"BatchBuffers needs at least one worker and one slot, not {workers} and {slots}")
        self.slots, self.pinned = int(slots), bool(pinned)
        self.state = torch.zeros(workers, self.slots, dtype=torch.uint8).share_memory_()
        self.sent_in = torch.zeros(workers, self.slots, dtype=torch.int64).share_memory_()  # round of the last send
        self.mapped = torch.zeros(workers, self.slots, dtype=torch.uint8).share_memory_()  # the main process holds it
        self.round = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._local: dict[int, torch.Tensor] = {}  # worker side: slot -> its buffer
        self._owner = os.getpid()
        self._held: dict[tuple, tuple[torch.Tensor, torch.UntypedStorage]] = {}  # main: (worker, pid, slot) ->
        self.slotted = self.one_off = 0  # main side: batches received in a slot / in a one-off segment

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_local"], state["_held"] = {}, {}
        return state

    # -- worker side ------------------------------------------------------------------
    def acquire(self, worker: int, shape: tuple[int, ...], dtype: torch.dtype,
                round_: int | None = None) -> tuple[torch.Tensor, Any]:
        """A ``shape`` tensor to fill in worker ``worker`` and the marker to put in its batch
        (None for a one-off segment); then :meth:`outgoing` says what to send.

        ``round_``: the round this batch belongs to, read by the worker once when its epoch
        began (:meth:`current_round`). Reading it here instead would be a race: a worker still
        finishing a batch of the old round, after the main process started the next one, would
        stamp that batch (which the DataLoader is about to discard) with the new round, and
        :meth:`reclaim` would never free its slot."""
        if os.getpid() != self._owner:  # a new worker process (fork copies the parent's dicts)
            self._local, self._owner = {}, os.getpid()
        numel = 1
        for d in shape:
            numel *= d
        row = self.state[worker]
        for slot in range(self.slots):
            buf = self._local.get(slot)
            if buf is None:
                if slot == len(self._local):  # the next slot never used: make it
                    buf = self._local[slot] = shared_empty(shape, dtype)
                else:
                    continue
            elif row[slot] != FREE or buf.dtype != dtype or buf.numel() < numel:
                continue
            row[slot] = SENT
            self.sent_in[worker, slot] = self.round[0] if round_ is None else round_
            return buf.view(-1)[:numel].view(shape), (worker, self._owner, slot, tuple(shape))
        return shared_empty(shape, dtype), None

    def outgoing(self, images: torch.Tensor, marker: Any) -> torch.Tensor | None:
        """What the batch carries as its images: the tensor, or None once the main process
        maps its slot."""
        if marker is None or self.pinned or not self.mapped[marker[0], marker[2]]:
            return images
        return None

    # -- main side --------------------------------------------------------------------
    def received(self, marker: Any, images: torch.Tensor | None) -> torch.Tensor:
        """The images of a batch that arrived (``marker`` from its :data:`SLOT_KEY`, ``images``
        what it carried); then free every slot whose last batch nothing uses any more."""
        if marker is None:
            self.one_off += 1
        else:
            self.slotted += 1
            worker, pid, slot, shape = marker
            if self.pinned:  # the pin-memory thread copied it out already
                self.state[worker, slot] = FREE
            else:
                key = (worker, pid, slot)
                if images is not None and key not in self._held:  # the whole slot, as one flat tensor
                    storage = images.untyped_storage()
                    base = torch.empty(0, dtype=images.dtype).set_(storage, 0, (storage.nbytes() // images.itemsize,))
                    self._held[key] = (base, storage)
                    self.mapped[worker, slot] = 1
                if key not in self._held:
                    raise RuntimeError(f"batch in slot {slot} of worker {worker} (pid {pid}) arrived without its "
                                       "images, and this process does not map that slot")
                numel = 1
                for d in shape:
                    numel *= d
                images = self._held[key][0][:numel].view(shape)
                self.state[worker, slot] = RECEIVED
        self.release()
        return images

    def release(self) -> None:
        for (worker, pid, slot), (_, storage) in self._held.items():
            # our own references: the flat tensor and the storage object held here, and the
            # buffer itself when this process is also the worker (only in tests)
            own = 2 + (pid == self._owner and slot in self._local)
            if self.state[worker, slot] == RECEIVED and _use_count(storage) == own:
                self.state[worker, slot] = FREE

    def current_round(self) -> int:
        """In a worker, when its epoch begins: the round its batches belong to."""
        return int(self.round[0])

    def next_round(self) -> None:
        """Before each ``iter(loader)``: batches sent from now on belong to a new round."""
        self.round += 1

    def reclaim(self) -> None:
        """After a new round started with the same (persistent) workers, once the DataLoader
        has discarded what was still in flight: free the slots of those discarded batches."""
        stale = (self.state == SENT) & (self.sent_in < self.round[0])
        self.state[stale] = FREE

    def reset(self) -> None:
        """Before the DataLoader starts new worker processes: new state tensors for them, so
        the old ones (alive until their iterator is collected) never see a slot freed."""
        self._held.clear()
        self.state = torch.zeros_like(self.state).share_memory_()
        self.sent_in = torch.zeros_like(self.sent_in).share_memory_()
        self.mapped = torch.zeros_like(self.mapped).share_memory_()
        self.round = torch.zeros_like(self.round).share_memory_()
