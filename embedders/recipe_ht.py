"""``ht`` recipe tower: the hierarchical transformer of H-T (Salvador et al., CVPR 2021).

* one word embedding shared by all components (optionally word2vec-initialised; a linear
  maps it to ``hidden`` when its width differs);
* per component (title, ingredients, instructions) a transformer encoder (``layers`` x
  ``heads``, feed-forward ``ff_dim``, dropout, post-norm as ``nn.TransformerEncoderLayer``)
  with learned positions (xavier-normal initialised, dropout) and masked mean pooling;
* ingredients and instructions: the first encoder turns each line into a vector, a second
  encoder of the same kind (learned positions too) runs over those vectors, mean-pooled;
* the three ``hidden`` vectors are concatenated -> linear -> tanh -> L2.

``forward`` also returns the three component vectors (for H-T's self-supervised recipe
loss, :mod:`recipekit.losses`) and a token sequence for the matching head: the title's
token outputs followed by the ingredient and instruction sentence outputs.

``components`` (default all three) chooses which inputs the tower reads: the encoders of the
others are not built and the joint projection takes ``len(components) x hidden`` (AdaMine's
``AdaMine_ingr`` / ``AdaMine_instr`` ablations on this tower: ``("ingredients",)`` /
``("instructions",)``).

A fully padded sequence (empty title, recipe without instructions) is attended with its
first position unmasked (H-T's trick against NaNs) and pooled to a zero vector.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .image import JointHead
from .recipe_je import check_components, make_embedding
from .registry import register_recipe_tower

__all__ = ["HTRecipeTower", "PooledTransformer", "masked_mean"]

COMPONENTS = ("title", "ingredients", "instructions")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [N, L, H] over positions where ``mask`` [N, L] is True (0 if none)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class PooledTransformer(nn.Module):
    """Learned positions + transformer encoder; returns (pooled [N, H], outputs [N, L, H])."""

    def __init__(self, dim: int, heads: int, layers: int, ff_dim: int, dropout: float, max_len: int):
        super().__init__()
        self.pos = nn.Parameter(torch.empty(max_len, dim))
        nn.init.xavier_normal_(self.pos)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = x.shape[1]
        if length > self.pos.shape[0]:
            raise ValueError(f"sequence of {length} exceeds the {self.pos.shape[0]} learned positions")
        x = self.drop(x + self.pos[:length])
        attend = mask.clone()
        attend[:, 0] = True  # never a fully masked row
        out = self.encoder(x, src_key_padding_mask=~attend)
        return masked_mean(out, mask), out


class HierarchicalRecipeTower(nn.Module):
    """What H-T's towers share: per component a sentence encoding (:meth:`encode_sentences`,
    the subclass's), a second-level ``mergers[name]`` transformer over the ingredient and
    instruction vectors, and the joint ``head``. A subclass sets ``components``, ``hidden``,
    ``token_dim``, ``mergers`` and ``head`` and holds its own word-level encoders."""

    components: tuple[str, ...]
    hidden: int

    def encode_sentences(self, name: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled [N, H], token outputs [N, L, H] or None) of the token ids [N, L] of component ``name``."""
        raise NotImplementedError(f"{type(self).__name__} must define encode_sentences")

    def token_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Which positions of :meth:`encode_sentences`' token outputs for ``ids`` [N, L] are tokens."""
        return ids != 0

    def _nested(self, name: str, ids: torch.Tensor, lens: torch.Tensor):
        b, n, length = ids.shape
        flat = ids.reshape(b * n, length)
        keep = lens.reshape(b * n).to(ids.device) > 0
        sent = flat.new_zeros(b * n, self.hidden, dtype=torch.float32)
        if keep.any():
            pooled, _ = self.encode_sentences(name, flat[keep])
            sent = sent.to(pooled.dtype).index_put((keep.nonzero().squeeze(1),), pooled)
        mask = keep.reshape(b, n)
        pooled, out = self.mergers[name](sent.reshape(b, n, self.hidden), mask)
        return pooled, out, mask

    def forward(self, batch: dict) -> dict:
        vecs, outs, masks = {}, [], []
        if "title" in self.components:
            title = batch["title"]
            vecs["title"], t_out = self.encode_sentences("title", title)
            outs.append(t_out)
            masks.append(self.token_mask(title))
        for name in COMPONENTS[1:]:
            if name in self.components:
                vecs[name], out, mask = self._nested(name, batch[name], batch[f"{name}_len"])
                outs.append(out)
                masks.append(mask)
        emb = self.head(torch.cat([vecs[c] for c in self.components], dim=-1))
        return {"emb": emb, "components": vecs, "tokens": torch.cat(outs, dim=1), "mask": torch.cat(masks, dim=1)}


class HTRecipeTower(HierarchicalRecipeTower):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 1024,
        hidden: int = 512,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        max_len: int = 64,
        tanh: bool = True,
        embedding_matrix: np.ndarray | None = None,
        components: tuple[str, ...] | list[str] = COMPONENTS,
        markers: int = 0,
    ):
        super().__init__()
        self.hidden = hidden
        self.components = check_components(components, COMPONENTS)
        self.markers = int(markers)
        if self.markers and not 2 <= self.markers <= max_len:
            raise ValueError(f"markers must be 0 or between 2 and max_len ({max_len}), got {markers}")
        self.embedding = make_embedding(vocab_size, hidden, embedding_matrix)
        width = self.embedding.embedding_dim
        self.embed_proj = nn.Linear(width, hidden) if width != hidden else nn.Identity()
        if self.markers:  # H-T's <start> / <end> around every sentence (converted H-T checkpoints)
            self.marker = nn.Parameter(torch.randn(2, width) * 0.02)

        def enc():
            return PooledTransformer(hidden, heads, layers, ff_dim, dropout, max_len)

        self.encoders = nn.ModuleDict({name: enc() for name in self.components})
        self.mergers = nn.ModuleDict({name: enc() for name in COMPONENTS[1:] if name in self.components})
        self.head = JointHead(len(self.components) * hidden, embed_dim, tanh)
        self.token_dim = hidden

    def encode_sentences(self, name: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word-level encoding of ``ids`` [N, L] (0 = padding): (pooled [N, H], outputs [N, L, H])."""
        x, mask = self.embedding(ids), ids != 0
        if self.markers:
            x, mask = self._wrap(x, mask)
        return self.encoders[name](self.embed_proj(x), mask)

    def token_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return self._marked_mask(ids != 0) if self.markers else ids != 0

    def _wrap(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start marker, the tokens, end marker; cut to ``markers`` positions."""
        n, length, width = x.shape
        lens = mask.sum(1)
        out = x.new_zeros(n, length + 2, width)
        out[:, 1 : length + 1] = x
        out[:, 0] = self.marker[0].to(x.dtype)
        out[torch.arange(n, device=x.device), lens + 1] = self.marker[1].to(x.dtype)
        return out[:, : self.markers], self._marked_mask(mask)

    def _marked_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The token mask of the wrapped (and cut) sequences of ``mask`` [N, L]."""
        lens = mask.sum(1, keepdim=True)
        positions = torch.arange(min(mask.shape[1] + 2, self.markers), device=mask.device).unsqueeze(0)
        return positions < lens + 2


@register_recipe_tower("ht", options=HTRecipeTower)
def _ht_tower(*, vocab, embed_dim: int = 1024, embedding_matrix=None, **options) -> HTRecipeTower:
    """H-T's hierarchical transformer over the prepared vocabulary (word2vec-initialised when given)."""
    return HTRecipeTower(len(vocab), embed_dim=embed_dim, embedding_matrix=embedding_matrix, **options)
