"""Shared pieces of the retrieval losses: cosine distance, hinge aggregation, margin schedules."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["cosine_distance", "aggregate", "DynamicMargin", "MarginLoss", "AGGREGATIONS", "background_free_ce"]

AGGREGATIONS = ("mean", "valid", "hardest")


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``D[i, j] = 1 - cos(a_i, b_j)`` for all pairs ([Na, Nb])."""
    return 1.0 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()


def aggregate(cost: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce hinge costs ``cost`` [A, N] (anchor x negative) over the triplets where ``mask``.

    * ``mean``: sum / number of triplets;
    * ``valid``: sum / number of triplets with a non-zero cost (AdaMine's adaptive mining;
      0 when none is active);
    * ``hardest``: per anchor the largest cost (VSE++), averaged over anchors with a triplet.
    """
    cost = cost * mask
    if how == "mean":
        return cost.sum() / mask.sum().clamp(min=1)
    if how == "valid":
        return cost.sum() / ((cost > 0) & mask).sum().clamp(min=1)
    if how == "hardest":
        anchors = mask.any(dim=1)
        return cost.max(dim=1).values[anchors].sum() / anchors.sum().clamp(min=1)
    raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")


@dataclass(frozen=True)
class DynamicMargin:
    """Margin that grows by ``step`` per epoch from ``start`` up to ``cap`` (TNLBT / T-Food:
    0.05 for ViT or 0.18 for CLIP, +0.005 per epoch, capped at 0.3).

    ``at(epoch) = min(start + step * epoch, cap)`` (``max`` for a negative step)."""

    start: float
    step: float
    cap: float

    def at(self, epoch: int) -> float:
        value = self.start + self.step * epoch
        return min(value, self.cap) if self.step >= 0 else max(value, self.cap)


class MarginLoss(nn.Module):
    """Base of the losses with a margin: a float, or a :class:`DynamicMargin` read at the
    epoch last given to :meth:`set_epoch` (0 until then)."""

    def __init__(self, margin: float | DynamicMargin):
        super().__init__()
        if isinstance(margin, (list, tuple)):
            margin = DynamicMargin(*margin)
        self.schedule = margin if isinstance(margin, DynamicMargin) else None
        self._fixed = None if self.schedule else float(margin)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Hook for the training loop: call at the start of each epoch."""
        self.epoch = int(epoch)

    @property
    def margin(self) -> float:
        return self.schedule.at(self.epoch) if self.schedule else self._fixed

    def extra_repr(self) -> str:
        return f"margin={self.schedule or self._fixed}"


def background_free_ce(classifier: nn.Module, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``classifier(emb)`` against ``labels`` with the background class 0
    weighted 0 (im2recipe's semantic regularisation); 0 (with a graph) for a batch of
    background only."""
    n = classifier.out_features
    weights = torch.ones(n, device=emb.device, dtype=emb.dtype)
    weights[0] = 0.0
    if not bool((labels != 0).any()):
        return emb.sum() * 0.0
    return F.cross_entropy(classifier(emb), labels, weight=weights)
