"""Symmetric InfoNCE with a learnable temperature (CLIP), with an all-gather path for DDP."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_loss

__all__ = ["InfoNCELoss", "gather_features"]


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank and returns this rank's
    slice (a reduce-scatter), so that gradients reach the features of every rank."""

    @staticmethod
    def forward(ctx, x, rank: int, world_size: int):
        ctx.rank, ctx.world_size = rank, world_size
        parts = [torch.zeros_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(ctx.world_size, dim=0)[ctx.rank], None, None


def gather_features(x: torch.Tensor, rank: int, world_size: int, with_grad: bool = False) -> torch.Tensor:
    """Concatenate ``x`` [B, D] from all ranks, in rank order (every rank must have the same
    B). Without ``with_grad`` the other ranks' features are constants and the local shard is
    put back in place so that it keeps its gradient (open_clip's ``gather_features``); with
    it, gradients flow back into every rank's features."""
    if with_grad:
        return _AllGatherWithGrad.apply(x, rank, world_size)
    parts = [torch.zeros_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)


class InfoNCELoss(nn.Module):
    r"""CLIP's contrastive loss (Radford et al., 2021; open_clip's ``ClipLoss``).

    .. math::
        L = \tfrac12\Big(\tfrac1N\sum_i -\log\frac{e^{s\,v_i\cdot r_i}}{\sum_j e^{s\,v_i\cdot r_j}}
          + \tfrac1N\sum_i -\log\frac{e^{s\,r_i\cdot v_i}}{\sum_j e^{s\,r_i\cdot v_j}}\Big)

    on L2-normalised embeddings, with ``s = exp(logit_scale)`` clamped to ``max_scale`` (100),
    ``logit_scale`` a parameter initialised to ``log(1 / temperature)`` (0.07) when
    ``learnable`` -- give the loss's parameters to the optimiser. ``labels`` are ignored.

    Distributed (``world_size > 1``, an initialised ``torch.distributed`` process group):
    features of all ranks are gathered (see :func:`gather_features`). With ``local_loss=False``
    every rank computes the loss over the global N x N logits; with ``local_loss=True`` only its
    own rows (labels offset by ``rank * B``). As in open_clip, use ``gather_with_grad=True``
    with ``local_loss=True``. ``world_size=1`` needs no process group.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learnable: bool = True,
        max_scale: float = 100.0,
        rank: int = 0,
        world_size: int = 1,
        local_loss: bool = False,
        gather_with_grad: bool = False,
    ):
        super().__init__()
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        self.max_scale = float(max_scale)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.local_loss = bool(local_loss)
        self.gather_with_grad = bool(gather_with_grad)

    def forward(self, image_emb: torch.Tensor, recipe_emb: torch.Tensor, labels: torch.Tensor | None = None):
        v = F.normalize(image_emb, dim=-1)
        r = F.normalize(recipe_emb, dim=-1)
        scale = self.logit_scale.exp().clamp(max=self.max_scale).to(v.dtype)
        b = v.shape[0]
        if self.world_size > 1:
            all_v = gather_features(v, self.rank, self.world_size, self.gather_with_grad)
            all_r = gather_features(r, self.rank, self.world_size, self.gather_with_grad)
            if self.local_loss:
                logits_v, logits_r = scale * v @ all_r.t(), scale * r @ all_v.t()
                target = torch.arange(b, device=v.device) + self.rank * b
            else:
                logits_v = scale * all_v @ all_r.t()
                logits_r = logits_v.t()
                target = torch.arange(all_v.shape[0], device=v.device)
        else:
            logits_v = scale * v @ r.t()
            logits_r = logits_v.t()
            target = torch.arange(b, device=v.device)
        return 0.5 * (F.cross_entropy(logits_v, target) + F.cross_entropy(logits_r, target))


@register_loss("infonce", options=InfoNCELoss)
def _infonce(*, rank: int = 0, world_size: int = 1, **options) -> InfoNCELoss:
    """CLIP's symmetric InfoNCE; the trainer supplies this process's rank and the world size."""
    return InfoNCELoss(rank=rank, world_size=world_size, **options)
