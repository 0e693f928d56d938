"""H-T's self-supervised recipe loss (Salvador et al., CVPR 2021)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_loss
from .triplet import TripletLoss

__all__ = ["HTRecipeLoss"]

COMPONENTS = ("title", "ingredients", "instructions")


class HTRecipeLoss(nn.Module):
    r"""Each recipe component against its projection from every other component.

    Called as ``loss(components)`` with ``components`` the per-component recipe vectors
    (``EmbedderOutput.components`` of the ``ht`` / ``minilm`` towers: ``{"title",
    "ingredients", "instructions"}`` -> [B, dim]) -- unlike the other losses it takes no image.
    This module owns the projections ``g_{b->a} = nn.Linear(dim, dim)`` (one per ordered
    pair; give its parameters to the optimiser):

    .. math::
        L_{rec} = \frac{1}{|P|}\sum_{(a, b) \in P,\, a \ne b} T\big(e_a,\; g_{b\to a}(e_b)\big)

    with ``T`` the bidirectional in-batch triplet loss on the cosine distance (margin 0.3,
    ``aggregation="mean"``, ``combine="sum"`` as H-T; see :class:`TripletLoss`). H-T adds
    it with weight 1 to the image-recipe triplet loss, on paired and on recipe-only batches.
    """

    def __init__(self, dim: int = 512, margin: float = 0.3, components=COMPONENTS, aggregation: str = "mean", combine: str = "sum"):
        super().__init__()
        self.components = tuple(components)
        self.triplet = TripletLoss(margin, aggregation, combine)
        self.projections = nn.ModuleDict(
            {f"{b}_to_{a}": nn.Linear(dim, dim) for a in self.components for b in self.components if a != b}
        )

    def forward(self, components: dict[str, torch.Tensor], recipe_emb: torch.Tensor | None = None, labels=None):
        terms = []
        for a in self.components:
            for b in self.components:
                if a != b:
                    terms.append(self.triplet(components[a], self.projections[f"{b}_to_{a}"](components[b])))
        return torch.stack(terms).mean()


register_loss("ht_recipe", kind="recipe")(HTRecipeLoss)
