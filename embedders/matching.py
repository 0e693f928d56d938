"""Cross-modal matching head of T-Food (image-text matching, "ITM"; Shukor et al., CVPRW 2022).

A small transformer *decoder*: the recipe tokens (projected to ``dim``) are the queries, they
attend to themselves and, through cross-attention, to the image tokens (ViT patches or CNN
grid cells, projected to ``dim``); a linear layer gives two logits (no match / match) per
token, averaged over the recipe's tokens (T-Food's ``cross_decoder`` with ``get_tokens``
off). The matching score is ``logit[match] - logit[no match]``.

Training objective (:meth:`MatchingHead.loss`, after ALBEF as T-Food does): for each pair
in the batch one positive, one negative recipe for each image and one negative image for
each recipe, sampled with probabilities ``softmax(cosine similarity)`` over the other
items of the batch (``negatives="sample"``, optionally with a ``torch.Generator``) or the
most similar one (``negatives="hardest"``, deterministic); cross-entropy over the 3B pairs.

Re-ranking (:meth:`MatchingHead.rerank`): the top-k candidates of each query by embedding
similarity are re-ordered by matching score. T-Food's extra image-side decoder (image tokens
attending to recipe sentences, ``cross_decoder_image``) is not implemented. (TNLBT has no such
head: its decoder side generates images from recipe embeddings, :mod:`recipekit.embedders.generator`.)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MatchingHead"]


class MatchingHead(nn.Module):
    def __init__(
        self,
        recipe_dim: int,
        image_dim: int,
        dim: int = 512,
        heads: int = 4,
        layers: int = 4,
        ff_dim: int = 2048,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.recipe_proj = nn.Linear(recipe_dim, dim)
        self.image_proj = nn.Linear(image_dim, dim)
        layer = nn.TransformerDecoderLayer(dim, heads, ff_dim, dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.classifier = nn.Linear(dim, 2)

    def logits(self, recipe_tokens, recipe_mask, image_tokens) -> torch.Tensor:
        """Two-way logits [B, 2] for the pairs (recipe_tokens[b], image_tokens[b])."""
        mask = recipe_mask.clone()
        mask[:, 0] = True  # a recipe with no tokens at all still gets one query
        q = self.recipe_proj(recipe_tokens)
        kv = self.image_proj(image_tokens)
        out = self.decoder(q, kv, tgt_key_padding_mask=~mask)
        m = mask.to(out.dtype).unsqueeze(-1)
        return (self.classifier(out) * m).sum(1) / m.sum(1)

    def score(self, recipe_tokens, recipe_mask, image_tokens) -> torch.Tensor:
        """Matching score [B] (log-odds of "match")."""
        lg = self.logits(recipe_tokens, recipe_mask, image_tokens)
        return lg[:, 1] - lg[:, 0]

    @staticmethod
    def _negatives(sim: torch.Tensor, negatives: str, generator) -> torch.Tensor:
        sim = sim.detach().float()
        eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        if negatives == "hardest":
            return sim.masked_fill(eye, float("-inf")).argmax(1)
        if negatives != "sample":
            raise ValueError("negatives must be 'sample' or 'hardest'")
        weights = F.softmax(sim, dim=1).masked_fill(eye, 0.0)
        if generator is not None and generator.device != weights.device:
            return torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(sim.device)
        return torch.multinomial(weights, 1, generator=generator).squeeze(1)

    def loss(
        self,
        image_emb: torch.Tensor,
        recipe_emb: torch.Tensor,
        image_tokens: torch.Tensor,
        recipe_tokens: torch.Tensor,
        recipe_mask: torch.Tensor,
        negatives: str = "sample",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ITM cross-entropy over B positives, B hard negative recipes, B hard negative images."""
        b = image_emb.shape[0]
        if b < 2:
            raise ValueError("the matching loss needs at least 2 pairs in the batch")
        sim = image_emb @ recipe_emb.t()  # [B images, B recipes]
        neg_recipe = self._negatives(sim, negatives, generator)  # for each image
        neg_image = self._negatives(sim.t(), negatives, generator)  # for each recipe
        r_tok = torch.cat([recipe_tokens, recipe_tokens[neg_recipe], recipe_tokens])
        r_mask = torch.cat([recipe_mask, recipe_mask[neg_recipe], recipe_mask])
        i_tok = torch.cat([image_tokens, image_tokens, image_tokens[neg_image]])
        logits = self.logits(r_tok, r_mask, i_tok)
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(logits.device)
        return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def rerank(self, sims, query_tokens, candidate_tokens, candidate_mask=None, k: int = 10, queries_are_images=True):
        """Re-order the top ``k`` of each row of ``sims`` [Q, C] by matching score.

        Returns (indices [Q, k] of the candidates, best first; their matching scores [Q, k]).
        With ``queries_are_images`` the queries are images and ``candidate_*`` recipe tokens
        and mask; otherwise the queries are recipes (``query_tokens`` is then a pair
        ``(tokens, mask)``) and the candidates image tokens."""
        k = min(k, sims.shape[1])
        top = sims.topk(k, dim=1).indices
        scores = torch.empty(top.shape, dtype=torch.float32, device=sims.device)
        for q in range(sims.shape[0]):
            idx = top[q]
            if queries_are_images:
                img = query_tokens[q : q + 1].expand(k, -1, -1)
                s = self.score(candidate_tokens[idx], candidate_mask[idx], img)
            else:
                tok, mask = query_tokens
                s = self.score(tok[q : q + 1].expand(k, -1, -1), mask[q : q + 1].expand(k, -1), candidate_tokens[idx])
            scores[q] = s.float()
        order = scores.argsort(dim=1, descending=True)
        return top.gather(1, order), scores.gather(1, order)
