"""InfoNCE's all-gather path with 2 gloo processes on CPU (torch.multiprocessing spawn)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

try:
    from stand_ins import local_init_method
except ImportError:  # tests/ imported as a package
    from tests.stand_ins import local_init_method

WORLD, SHARD, DIM = 2, 3, 5
MODES = {"global": (False, False), "local_with_grad": (True, True)}


def _data():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(WORLD * SHARD, DIM, generator=g, dtype=torch.float64)
    r = torch.randn(WORLD * SHARD, DIM, generator=g, dtype=torch.float64)
    return v, r


def _worker(rank: int, init: str, out_dir: str) -> None:
    from recipekit.losses import create_loss

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        v, r = _data()
        part = slice(rank * SHARD, (rank + 1) * SHARD)
        results = {}
        for mode, (local, with_grad) in MODES.items():
            vl = v[part].clone().requires_grad_(True)
            rl = r[part].clone().requires_grad_(True)
            loss = create_loss("infonce", rank=rank, world_size=WORLD, local_loss=local, gather_with_grad=with_grad).double()
            value = loss(vl, rl)
            value.backward()
            results[mode] = (value.detach(), vl.grad, rl.grad, loss.logit_scale.grad)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_infonce_all_gather_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(local_init_method(), str(tmp_path)), nprocs=WORLD, join=True)
    from recipekit.losses import create_loss

    v, r = _data()
    v.requires_grad_(True), r.requires_grad_(True)
    full = create_loss("infonce").double()
    value = full(v, r)
    gv, gr, gs = torch.autograd.grad(value, (v, r, full.logit_scale))
    results = [torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in range(WORLD)]
    for rank, res in enumerate(results):
        part = slice(rank * SHARD, (rank + 1) * SHARD)
        # global loss: every rank computes the full-batch loss; its local shard has the full gradient
        val, grad_v, grad_r, _ = res["global"]
        torch.testing.assert_close(val, value.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad_v, gv[part], rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(grad_r, gr[part], rtol=1e-8, atol=1e-12)
        # local loss with gathered gradients: the rank losses average to the full loss and
        # each shard receives the sum over ranks, i.e. WORLD x the full-batch gradient
        val, grad_v, grad_r, _ = res["local_with_grad"]
        torch.testing.assert_close(grad_v, WORLD * gv[part], rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(grad_r, WORLD * gr[part], rtol=1e-8, atol=1e-12)
    mean_local = sum(res["local_with_grad"][0] for res in results) / WORLD
    torch.testing.assert_close(mean_local, value.detach(), rtol=1e-10, atol=1e-12)
    # temperature gradient: the global-loss ranks each see the full gradient
    torch.testing.assert_close(results[0]["global"][3], gs, rtol=1e-8, atol=1e-12)


def test_infonce_world_size_one_needs_no_process_group():
    from recipekit.losses import create_loss

    v, r = _data()
    assert not dist.is_initialized()
    assert torch.isfinite(create_loss("infonce", rank=0, world_size=1)(v, r))
