"""A user's own module extending recipekit without editing it: a loss, a recipe tower, an
embedder config naming that tower and an evaluation metric, registered when the module is imported.

A run loads it by name (it must be importable: installed, or on ``PYTHONPATH``)::

    [train]
    plugins = ["recipekit_example_plugin"]

    [model]
    embedder = "example_bow"

    [loss]
    name = "example_hinge"
    margin = 0.1

Builders declare what they need from the run with keyword-only parameters: the loss takes
``embed_dim``, the tower ``vocab`` and ``embed_dim``; the trainer and the embedder pass them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recipekit.embedders import register_embedder, register_recipe_tower
from recipekit.evaluation import register_metric
from recipekit.losses import register_loss

BUILT: list[nn.Module] = []  # what the registry built here (the tests look at the run quantities passed)


@register_loss("example_hinge")
class HardestNegativeHinge(nn.Module):
    """VSE++'s bidirectional hinge on the hardest in-batch negative (cosine similarity)."""

    def __init__(self, margin: float = 0.2, *, embed_dim: int):
        super().__init__()
        self.margin, self.embed_dim = float(margin), int(embed_dim)
        BUILT.append(self)

    def forward(self, image_emb: torch.Tensor, recipe_emb: torch.Tensor, labels=None) -> torch.Tensor:
        if image_emb.shape[1] != self.embed_dim:
            raise ValueError(f"example_hinge: embeddings of width {image_emb.shape[1]}, expected {self.embed_dim}")
        sim = image_emb @ recipe_emb.t()
        pos = sim.diag()
        off = torch.eye(len(sim), dtype=torch.bool, device=sim.device)
        hardest = sim.masked_fill(off, float("-inf"))
        i2r = F.relu(self.margin - pos + hardest.max(dim=1).values)
        r2i = F.relu(self.margin - pos + hardest.max(dim=0).values)
        return (i2r + r2i).mean()


@register_recipe_tower("example_bow")
class BagOfWordsTower(nn.Module):
    """Mean word embedding of the title and of the ingredient lines -> linear -> L2."""

    def __init__(self, dim: int = 32, *, vocab, embed_dim: int):
        super().__init__()
        self.words = nn.EmbeddingBag(len(vocab), dim, mode="mean", padding_idx=0)
        self.proj = nn.Linear(2 * dim, embed_dim)
        self.token_dim = None  # no token sequence: no matching head on this tower
        BUILT.append(self)

    def forward(self, batch: dict) -> dict:
        title = self.words(batch["title"])
        b = batch["ingredients"].shape[0]
        ingredients = self.words(batch["ingredients"].reshape(b, -1))
        emb = F.normalize(self.proj(torch.cat([title, ingredients], dim=-1)), dim=-1)
        return {"emb": emb, "tokens": None, "mask": None, "components": {}}


@register_embedder("example_bow")
def example_bow() -> dict:
    """A small ResNet-18 beside the bag-of-words tower."""
    return {
        "description": "bag-of-words recipe tower + ResNet-18 (the example plugin)",
        "source": "tests/plugins/recipekit_example_plugin.py",
        "embed_dim": 16,
        "image": {"backbone": "resnet18", "image_size": 64, "weights": None, "weights_path": None,
                  "tanh": True, "freeze_backbone": False},
        "recipe": {"tower": "example_bow", "dim": 16, "max_ingredients": 20, "max_instructions": 20, "max_tokens": 15},
        "matching": None,
    }


@register_metric("example_mrr")
def mean_reciprocal_rank(ranks: np.ndarray, ks) -> dict[str, float]:
    """Mean reciprocal rank of the true match (x 100)."""
    return {"MRR": float(100.0 * (1.0 / ranks).mean())}
