"""Bidirectional triplet losses on the cosine distance: ``triplet`` (VSE/H-T/VSE++) and ``adamine``."""

from __future__ import annotations

import torch
import torch.nn as nn

from .common import AGGREGATIONS, DynamicMargin, MarginLoss, aggregate, background_free_ce, cosine_distance
from .registry import register_loss

__all__ = ["TripletLoss", "AdaMineLoss"]


def _instance_costs(d: torch.Tensor, margin: float):
    """Hinge costs of the in-batch instance triplets and their mask (off-diagonal).

    image->recipe: anchor image i, positive recipe i, negative recipe j:
        c[i, j] = [d(v_i, r_i) - d(v_i, r_j) + m]_+
    recipe->image: anchor recipe i, positive image i, negative image j:
        c[i, j] = [d(v_i, r_i) - d(v_j, r_i) + m]_+
    """
    pos = d.diag()
    mask = ~torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    i2r = (pos[:, None] - d + margin).clamp(min=0)
    r2i = (pos[:, None] - d.t() + margin).clamp(min=0)
    return i2r, r2i, mask


def _combine(terms: list[torch.Tensor], how: str) -> torch.Tensor:
    total = torch.stack(terms).sum()
    if how == "mean":
        return total / len(terms)
    if how == "sum":
        return total
    raise ValueError("combine must be 'mean' or 'sum'")


class TripletLoss(MarginLoss):
    r"""Bidirectional in-batch triplet loss on ``d = 1 - cos`` (all negatives of the batch).

    .. math::
        L = \mathrm{comb}\big(\mathrm{agg}_{i \ne j}[d(v_i,r_i) - d(v_i,r_j) + m]_+,\;
                              \mathrm{agg}_{i \ne j}[d(v_i,r_i) - d(v_j,r_i) + m]_+\big)

    ``aggregation``: ``mean`` over all B(B-1) triplets of a direction; ``valid``: sum over
    the triplets with a non-zero loss divided by their count (AdaMine's adaptive mining,
    Carvalho et al., SIGIR 2018); ``hardest``: the hardest negative per anchor, averaged over
    anchors (VSE++, Faghri et al., BMVC 2018). ``combine``: ``mean`` (default, as the
    AdaMine code averages its terms) or ``sum`` of the two directions. H-T (Salvador et al.,
    CVPR 2021) sums both directions over all B*B pairs and divides by B*B: that is
    ``aggregation="mean", combine="sum"`` up to a factor (B-1)/B. ``margin`` is 0.3 by default,
    or a :class:`~recipekit.losses.DynamicMargin` (with :meth:`set_epoch`).
    ``labels`` are ignored.
    """

    def __init__(self, margin: float | DynamicMargin = 0.3, aggregation: str = "mean", combine: str = "mean"):
        super().__init__(margin)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; choose from {', '.join(AGGREGATIONS)}")
        self.aggregation = aggregation
        self.combine = combine

    def forward(self, image_emb: torch.Tensor, recipe_emb: torch.Tensor, labels: torch.Tensor | None = None):
        i2r, r2i, mask = _instance_costs(cosine_distance(image_emb, recipe_emb), self.margin)
        return _combine([aggregate(i2r, mask, self.aggregation), aggregate(r2i, mask, self.aggregation)], self.combine)


class AdaMineLoss(MarginLoss):
    r"""AdaMine (Carvalho et al., SIGIR 2018; github.com/Cadene/recipe1m.bootstrap.pytorch).

    .. math::
        L = \frac{1}{T}\big(L^{ins}_{v\to r} + L^{ins}_{r\to v}
            + \lambda (L^{sem}_{v\to r} + L^{sem}_{r\to v})\big)

    with ``T`` the number of terms used (4; 2 for the ``instance``-only or ``semantic``-only
    ablations), as the released code averages its terms. Instance terms are
    :class:`TripletLoss`'s two directions. Semantic terms take as anchor each item whose class
    is not background (label 0), as positive an item of the *other* modality with the same
    class (not the anchor's own pair; ``positives``: ``random`` -- one drawn uniformly per
    anchor, seeded by ``seed`` --, ``first`` -- the lowest index, as the released code --, or
    ``all``), and as negatives every item of the other modality with another non-background
    class. Background items are never positives, negatives or anchors of semantic triplets.
    Each term is aggregated on its own (``valid``: divided by its own count of active
    triplets; ``mean``: AdaMine_avg). ``semantic_weight`` lambda is 0.1 in the released
    configs, 0.3 in the paper. ``deterministic=True`` is ``positives="all"``.

    Differences from the released code: its ``RII`` term is the transpose of ``IRR`` (same
    image-anchored triplets); here the recipe->image term anchors on recipes. Its semantic
    negatives are cut to the smallest count over anchors; here every other-class negative is
    used, and anchors without a same-class positive are skipped (the code needs a batch
    sampler that guarantees one).

    ``num_classes`` (with ``embed_dim``) adds a classification head instead of, or beside,
    the semantic triplets: AdaMine's ``AdaMine_ins+cls`` ablation (registered as
    ``adamine_ins_cls``: instance triplets + the head, the released code's ``with_classif``).
    This module then owns a classifier ``nn.Linear(embed_dim, num_classes)`` shared by both
    modalities and the loss is
    ``(1 - w_img - w_rec) L + w_img CE(W v, c) + w_rec CE(W r, c)`` (background weighted 0),
    as the released code weights retrieval ``1 - 2 w``; ``class_weight`` w is 0.01 by default
    and ``image_class_weight`` / ``recipe_class_weight`` set the two sides apart.
    """

    def __init__(
        self,
        margin: float | DynamicMargin = 0.3,
        semantic_weight: float = 0.1,
        aggregation: str = "valid",
        instance: bool = True,
        semantic: bool = True,
        positives: str = "random",
        seed: int | None = None,
        deterministic: bool = False,
        num_classes: int | None = None,
        embed_dim: int = 1024,
        class_weight: float = 0.01,
        image_class_weight: float | None = None,
        recipe_class_weight: float | None = None,
    ):
        super().__init__(margin)
        if aggregation not in ("mean", "valid"):
            raise ValueError("adamine aggregation must be 'valid' (AdaMine) or 'mean' (AdaMine_avg)")
        if not (instance or semantic):
            raise ValueError("adamine needs instance and/or semantic terms")
        if deterministic:
            positives = "all"
        if positives not in ("random", "first", "all"):
            raise ValueError("positives must be 'random', 'first' or 'all'")
        self.semantic_weight = float(semantic_weight)
        self.aggregation = aggregation
        self.instance = instance
        self.semantic = semantic
        self.positives = positives
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.classifier = nn.Linear(embed_dim, num_classes) if num_classes else None
        self.image_class_weight = float(class_weight if image_class_weight is None else image_class_weight)
        self.recipe_class_weight = float(class_weight if recipe_class_weight is None else recipe_class_weight)
        if self.classifier is not None and self.image_class_weight + self.recipe_class_weight >= 1.0:
            raise ValueError("image_class_weight + recipe_class_weight must be < 1 (retrieval is weighted 1 - both)")

    def _choose(self, pos: torch.Tensor) -> torch.Tensor:
        """One positive per anchor row of ``pos`` [A, N] (rows without one stay all-False)."""
        if self.positives == "first":
            first = pos.float().argmax(dim=1)
        else:
            noise = torch.rand(pos.shape, generator=self.generator).to(pos.device)
            first = torch.where(pos, noise, torch.full_like(noise, -1.0)).argmax(dim=1)
        pick = torch.zeros_like(pos)
        pick[torch.arange(pos.shape[0], device=pos.device), first] = True
        return pick & pos

    def _semantic(self, d: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
        """Semantic term with anchors on the rows of ``d`` (d[a, x]: anchor a, candidate x)."""
        n = d.shape[0]
        fg = labels != 0
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(n, dtype=torch.bool, device=d.device)
        pos = same & fg[:, None] & fg[None, :] & ~eye  # [anchor, positive]
        neg = ~same & fg[:, None] & fg[None, :]  # [anchor, negative]
        if self.positives != "all":  # one positive per anchor: an [A, N] cost matrix
            pick = self._choose(pos)
            has = pick.any(dim=1)
            pos_d = (d * pick).sum(dim=1)
            cost = (pos_d[:, None] - d + margin).clamp(min=0)
            return aggregate(cost, neg & has[:, None], self.aggregation)
        # cost[a, p, k] = [d(a, p) - d(a, k) + m]_+ over chosen positives p and negatives k
        cost = (d[:, :, None] - d[:, None, :] + margin).clamp(min=0)
        mask = pos[:, :, None] & neg[:, None, :]
        return aggregate(cost.reshape(n, -1), mask.reshape(n, -1), self.aggregation)

    def forward(self, image_emb: torch.Tensor, recipe_emb: torch.Tensor, labels: torch.Tensor | None = None):
        d = cosine_distance(image_emb, recipe_emb)
        m = self.margin
        terms = []
        if self.instance:
            i2r, r2i, mask = _instance_costs(d, m)
            terms += [aggregate(i2r, mask, self.aggregation), aggregate(r2i, mask, self.aggregation)]
        if self.semantic:
            if labels is None:
                raise ValueError("adamine's semantic terms need class labels (0 = background)")
            labels = labels.reshape(-1).to(d.device)
            w = self.semantic_weight
            terms += [w * self._semantic(d, labels, m), w * self._semantic(d.t(), labels, m)]
        loss = _combine(terms, "mean")
        if self.classifier is None:
            return loss
        if labels is None:
            raise ValueError("adamine's classification head needs class labels (0 = background)")
        labels = labels.reshape(-1).long().to(d.device)
        wi, wr = self.image_class_weight, self.recipe_class_weight
        return ((1.0 - wi - wr) * loss + wi * background_free_ce(self.classifier, image_emb, labels)
                + wr * background_free_ce(self.classifier, recipe_emb, labels))


register_loss("triplet")(TripletLoss)


def _adamine(name: str, **defaults):
    """AdaMine under ``name``: the run's embedding size is supplied (the optional classifier's input)."""

    def build(*, embed_dim: int = 1024, **options) -> AdaMineLoss:
        return AdaMineLoss(embed_dim=embed_dim, **options)

    build.__name__ = build.__qualname__ = f"build_{name}"
    register_loss(name, options=AdaMineLoss, **defaults)(build)


_adamine("adamine")
_adamine("adamine_ins", semantic=False)
_adamine("adamine_sem", instance=False)
_adamine("adamine_avg", aggregation="mean")


@register_loss("adamine_ins_cls", options=AdaMineLoss, semantic=False)
def _adamine_ins_cls(*, num_classes: int, embed_dim: int = 1024, **options) -> AdaMineLoss:
    """AdaMine_ins+cls: instance triplets and a classifier over the run's classes (background included)."""
    return AdaMineLoss(num_classes=num_classes, embed_dim=embed_dim, **options)
