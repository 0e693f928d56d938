"""The batch arithmetic of docs/training.md, checked on gradients: gradient accumulation
averages the gradients of its micro-batches (each micro-batch is its own set of in-batch
negatives: not the gradient of one large batch), while ranks gather their embeddings (two ranks
of B pairs give exactly the gradient of one process with 2B pairs)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

try:
    from stand_ins import LinearEmbedder, local_init_method
except ImportError:  # tests/ imported as a package
    from tests.stand_ins import LinearEmbedder, local_init_method

LOSSES = {  # name: [loss] section
    "triplet": {"name": "triplet"},
    "triplet_hardest": {"name": "triplet", "aggregation": "hardest"},
    "infonce": {"name": "infonce"},
    "infonce_local": {"name": "infonce", "local_loss": True, "gather_with_grad": True},
}
N, B = 8, 4  # one batch of 8 pairs = 2 micro-batches (or 2 ranks) of 4


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 4, generator=g).double(), torch.randn(N, 5, generator=g).double()


def _step(loss_section: dict, info):
    """The trainer's TrainStep (model + loss) for ``info``'s rank and world size."""
    from recipekit.training.build import AmpSettings, TrainStep, build_losses
    from recipekit.training.config import load_config

    torch.manual_seed(0)
    model = LinearEmbedder().double()
    cfg = load_config({"data": {"prepared": "/unused"}, "loss": dict(loss_section)})
    loss, _ = build_losses(cfg, model, info)
    return model, TrainStep(model, loss.double(), None, cfg, info, AmpSettings(False, None, False))


def _grads(step) -> list[torch.Tensor]:
    return [p.grad.clone() for p in step.parameters() if p.grad is not None]


def _batch_grads(loss_section: dict, rows: list[slice], scale: float = 1.0):
    """Gradients after backward of ``total * scale`` of each batch in ``rows`` (accumulated)."""
    from recipekit.training.distributed import DistInfo

    images, recipes = _data()
    _, step = _step(loss_section, DistInfo())
    for sl in rows:
        out = step("pair", recipes={"x": recipes[sl]}, images=images[sl])
        (out["total"] * scale).backward()
    return _grads(step)


@pytest.mark.parametrize("name", LOSSES)
def test_accumulation_averages_micro_batch_gradients_and_is_not_a_larger_batch(name):
    section = LOSSES[name]
    halves = [slice(0, B), slice(B, N)]
    # the trainer's accumulation: backward of total / accumulate for each micro-batch, one step
    accumulated = _batch_grads(section, halves, scale=1 / len(halves))
    per_micro = [_batch_grads(section, [sl]) for sl in halves]
    for got, *parts in zip(accumulated, *per_micro):
        torch.testing.assert_close(got, sum(parts) / len(parts), rtol=1e-12, atol=1e-14)
    large = _batch_grads(section, [slice(0, N)])  # one batch of 8: 7 negatives per anchor, not 3
    assert not all(torch.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(accumulated, large))


def _ddp_worker(rank: int, out: str, init: str) -> None:
    from recipekit.training.distributed import DistInfo

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    images, recipes = _data()
    part = slice(rank * B, (rank + 1) * B)
    info = DistInfo(rank=rank, world_size=2, backend="gloo")
    result = {}
    for name, section in LOSSES.items():
        _, step = _step(section, info)
        ddp = torch.nn.parallel.DistributedDataParallel(step)
        res = ddp("pair", recipes={"x": recipes[part]}, images=images[part])
        res["total"].backward()
        result[name] = {"pair": float(res["pair"]), "grads": _grads(step)}
    torch.save(result, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_ranks_gather_negatives_like_one_process_with_the_global_batch(tmp_path):
    """Two gloo ranks of 4 pairs == one process with 8, for every loss (AdaMine: test_training)."""
    import torch.multiprocessing as mp
    from recipekit.training.distributed import DistInfo

    mp.spawn(_ddp_worker, args=(str(tmp_path), local_init_method()), nprocs=2, join=True)
    ranks = [torch.load(Path(tmp_path) / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, section in LOSSES.items():
        images, recipes = _data()
        _, step = _step(section, DistInfo())
        out = step("pair", recipes={"x": recipes}, images=images)
        out["total"].backward()
        want = _grads(step)
        for rank in range(2):
            got = ranks[rank][name]
            if not section.get("local_loss"):  # local_loss: each rank logs the loss of its own rows
                assert got["pair"] == pytest.approx(float(out["pair"]), rel=1e-12), name
            assert len(got["grads"]) == len(want), name
            for a, b in zip(got["grads"], want):  # float32 losses (TrainStep): rounding differs by path
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name} rank {rank}: {m}")


def test_the_batch_arithmetic_the_trainer_records_and_prints():
    from recipekit.training.config import load_config
    from recipekit.training.data import batch_arithmetic, describe_batch

    cfg = load_config({"data": {"prepared": "/unused", "batch_size": 64}, "train": {"accumulate": 4}})
    arith = batch_arithmetic(cfg, world_size=2)
    assert arith["effective_batch"] == 512 and arith["loss_batch"] == 128 and arith["paired_per_step"] == 512
    assert describe_batch(arith).startswith("batch: 64 pairs per rank x 2 rank(s) x 4 accumulation step(s) = 512 "
                                            "pairs per optimiser step; each loss evaluation sees 128 pairs")
    cfg = load_config({"data": {"prepared": "/unused", "batch_size": 64, "recipe_only_ratio": 1.0},
                       "loss": {"name": "triplet", "recipe_weight": 1.0}, "train": {"accumulate": 4}})
    arith = batch_arithmetic(cfg, world_size=2)
    assert arith["effective_batch"] == 512 and arith["paired_per_step"] == 256
    assert "about 256 pairs per step" in describe_batch(arith)
