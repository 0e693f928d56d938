"""Process group, device and cross-rank helpers of the trainer.

One process per device. The rank and world size come from the caller
(``train(..., rank=, world_size=, init_method=)``: ``torch.multiprocessing.spawn``) or from
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``: the DDP contract, ``init_method="env://"``). A process group that the
caller already initialised is used as it is and left open.

Contrastive losses need every rank's embeddings: :func:`gather_with_local_grad` all-gathers
them, the other ranks' parts as constants and the local part as the tensor itself, so its
gradient flows. Every rank then computes the loss of the global batch; the gradient each
rank computes is the part of the global gradient that flows through its own samples, so the
trainer multiplies the gradient reaching the local embeddings by ``world_size``
(:func:`scale_grad`) and DDP's gradient average gives exactly the single-process gradient of
the global batch (tested for every loss, tests/test_effective_batch.py). The loss itself is
not scaled: parameters of the loss (InfoNCE's temperature, a classifier head) already get
the whole global-batch gradient on every rank.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from recipekit.losses.infonce import gather_features

__all__ = ["DistInfo", "setup", "teardown", "barrier", "gather_with_local_grad", "gather_labels", "scale_grad",
           "mean_over_ranks", "resolve_device"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # setup() initialised the process group (teardown destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda when available, else cpu (the evaluation's rule); a bare ``cuda`` becomes
    this process's GPU (``local_rank``), which is made the current device."""
    from recipekit.core.device import resolve_device as resolve

    dev = resolve(str(device))
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def setup(device: str | torch.device = "auto", *, rank: int | None = None, world_size: int | None = None,
          init_method: str | None = None, backend: str = "auto", timeout_minutes: int = 60) -> DistInfo:
    """Resolve rank, world size and device; initialise the process group when world_size > 1."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK", rank)
        return DistInfo(rank, world_size, local, resolve_device(device, local), dist.get_backend(), False)
    world_size = world_size if world_size is not None else _env_int("WORLD_SIZE", 1)
    rank = rank if rank is not None else _env_int("RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    local = _env_int("LOCAL_RANK", rank) if world_size > 1 else 0
    dev = resolve_device(device, local)
    if world_size == 1:
        return DistInfo(0, 1, 0, dev, None, False)
    if not dist.is_available():
        raise RuntimeError("world_size > 1 but this torch build has no torch.distributed")
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method or "env://", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rank, world_size, local, dev, backend, True)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def gather_with_local_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """[B, D] of every rank concatenated in rank order; the local rows keep their gradient."""
    if not info.distributed:
        return x
    return gather_features(x, info.rank, info.world_size, with_grad=False)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor: float):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged; its gradient multiplied by ``factor`` on the way back."""
    return _ScaleGrad.apply(x, float(factor))


def gather_labels(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All ranks' labels (no gradient), in rank order."""
    if not info.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def mean_over_ranks(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise mean of a list of floats over the ranks (for logging)."""
    if not info.distributed or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return (t / info.world_size).tolist()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device if info.backend == "nccl" else None)
    return box[0]
