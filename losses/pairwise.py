"""Pairwise losses with mismatched pairs: im2recipe's ``pairwise`` and AdaMine's ``pairwise++``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_loss

__all__ = ["PairwiseLoss"]


class PairwiseLoss(nn.Module):
    r"""Contrastive loss on matched / mismatched pairs, plus the semantic classification head.

    Each row ``i`` of the batch is paired with its own recipe (``y = 1``) or, with
    probability ``mismatch_rate``, with the recipe of another row ``j != i`` drawn uniformly
    (``y = -1``); :meth:`sample_pairs` draws these from ``torch.Generator(seed)`` when a
    ``seed`` is given. With ``d = 1 - cos(v_i, r_j)``:

    .. math::
        L_{pair} = \frac{1}{B}\sum_i \begin{cases} [d - m_+]_+ & y_i = 1 \\
                                                 [m_- - d]_+ & y_i = -1 \end{cases}

    * ``pairwise`` (im2recipe, Salvador et al. CVPR 2017): ``m_+ = 0, m_- = 1 - 0.1``, i.e.
      ``torch.nn.CosineEmbeddingLoss(margin=0.1)``: ``1 - cos`` for matches,
      ``[cos - 0.1]_+`` for mismatches; 80% mismatched pairs;
    * ``pairwise++`` (AdaMine's PWC++, Carvalho et al. SIGIR 2018): ``m_+ = 0.3, m_- = 0.9``.

    Semantic regularisation (when ``num_classes`` is given and ``labels`` passed): this
    module owns the classifier shared by both modalities, ``nn.Linear(embed_dim,
    num_classes)`` applied to the (normalised) embeddings -- so give its parameters to the
    optimiser --, and adds cross-entropy on images and recipes with the background class 0
    weighted 0:

    .. math:: L = w_{pair} L_{pair} + w_{cls} (CE(W v, c) + CE(W r, c))

    with ``w_pair = 0.98, w_cls = 0.01`` (im2recipe; ``1 - 2 w_cls`` in AdaMine's code). A batch
    of background only contributes 0 classification loss. Without a classifier ``L = L_pair``.

    ``image_class_weight`` / ``recipe_class_weight``: separate weights of the image and the
    recipe cross-entropy (the Recipe1M+ reproduction's 0.98/0.01/0.01 and 0.8/0.1/0.1
    settings); each one left unset (None) is ``class_weight``.

    ``partners``: where a mismatched row's recipe comes from. ``"batch"``: another row of the
    batch (above). ``"dataset"``: a recipe drawn uniformly from the whole training set, as
    im2recipe's data loader does; the trainer draws and embeds one such recipe per row and
    passes their embeddings as ``partner_emb`` [B, D] (:mod:`recipekit.training.partners`),
    and a mismatched row ``i`` is scored against ``partner_emb[i]``.
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 0.9,
        mismatch_rate: float = 0.8,
        num_classes: int | None = None,
        embed_dim: int = 1024,
        pair_weight: float = 0.98,
        class_weight: float = 0.01,
        seed: int | None = None,
        image_class_weight: float | None = None,
        recipe_class_weight: float | None = None,
        partners: str = "batch",
    ):
        super().__init__()
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.mismatch_rate = float(mismatch_rate)
        self.pair_weight = float(pair_weight)
        self.class_weight = float(class_weight)
        self.image_class_weight = float(class_weight if image_class_weight is None else image_class_weight)
        self.recipe_class_weight = float(class_weight if recipe_class_weight is None else recipe_class_weight)
        if partners not in ("batch", "dataset"):
            raise ValueError(f"partners must be 'batch' or 'dataset', got {partners!r}")
        self.partners = partners
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.classifier = nn.Linear(embed_dim, num_classes) if num_classes else None
        if num_classes:
            w = torch.ones(num_classes)
            w[0] = 0.0
            self.register_buffer("class_weights", w, persistent=False)

    def sample_pairs(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(recipe index paired with each image [n], target [n] in {1, -1})."""
        idx = torch.arange(n)
        if n < 2:
            return idx, torch.ones(n)
        flip = torch.rand(n, generator=self.generator) < self.mismatch_rate
        offset = torch.randint(1, n, (n,), generator=self.generator)
        partner = torch.where(flip, (idx + offset) % n, idx)
        return partner, torch.where(flip, -1.0, 1.0)

    def _classification(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = self.class_weights.to(emb.device, emb.dtype)
        if not bool((weights[labels] > 0).any()):
            return emb.sum() * 0.0
        return F.cross_entropy(self.classifier(emb), labels, weight=weights)

    def forward(self, image_emb: torch.Tensor, recipe_emb: torch.Tensor, labels: torch.Tensor | None = None,
                partner_emb: torch.Tensor | None = None):
        partner, target = self.sample_pairs(image_emb.shape[0])
        partner, target = partner.to(image_emb.device), target.to(image_emb.device, image_emb.dtype)
        if self.partners == "dataset":
            if partner_emb is None:
                raise ValueError("partners = 'dataset' needs partner_emb: the embeddings of recipes drawn from the "
                                 "whole training set (the trainer passes them)")
            other = torch.where((target < 0)[:, None], partner_emb, recipe_emb)
        else:
            other = recipe_emb[partner]
        d = 1.0 - F.cosine_similarity(image_emb, other, dim=-1)
        cost = torch.where(target > 0, d - self.pos_margin, self.neg_margin - d).clamp(min=0)
        pair = cost.mean()
        if self.classifier is None or labels is None:
            return pair
        labels = labels.reshape(-1).long().to(image_emb.device)
        return (self.pair_weight * pair + self.image_class_weight * self._classification(image_emb, labels)
                + self.recipe_class_weight * self._classification(recipe_emb, labels))


@register_loss("pairwise", options=PairwiseLoss, pos_margin=0.0, neg_margin=0.9)
def _pairwise(*, embed_dim: int = 1024, margin: float | None = None, **options) -> PairwiseLoss:
    """im2recipe's pairwise loss; ``margin`` is the cosine margin (``neg_margin = 1 - margin``)."""
    if margin is not None:
        options["neg_margin"] = 1.0 - float(margin)
    return PairwiseLoss(embed_dim=embed_dim, **options)


@register_loss("pairwise++", options=PairwiseLoss, pos_margin=0.3, neg_margin=0.9)
def _pairwise_pp(*, embed_dim: int = 1024, **options) -> PairwiseLoss:
    """AdaMine's pairwise++ (a positive margin too)."""
    return PairwiseLoss(embed_dim=embed_dim, **options)
