"""``je`` recipe tower: im2recipe's joint embedding (Salvador et al., CVPR 2017; Marin et al., TPAMI 2019).

* ingredients: a bi-directional LSTM (hidden 300 each way) over the ingredient-name ids
  (``ingredient_names`` [B, Ni]), embeddings initialised from word2vec; the two final hidden
  states are concatenated (600);
* instructions: im2recipe fed pre-computed skip-thought vectors (1024-d, trained on recipes)
  to an LSTM (1024). Those vectors are not available, so a *hierarchical* LSTM stands in for
  them: a word-level LSTM over each instruction's tokens (same word embeddings) gives one
  sentence vector (``sentence_dim``, 1024), and the sentence-level LSTM (1024) runs over them;
* concatenation (600 + 1024) -> linear -> tanh -> L2 (the joint space).

This tower has no token sequence for the cross-modal matching head.

Ablations (keyword arguments, also ``[model.overrides] recipe = {...}`` of a run config):

* ``components``: which inputs the tower reads, ``("ingredients", "instructions")`` by
  default; ``("ingredients",)`` is AdaMine's ``AdaMine_ingr`` and ``("instructions",)`` its
  ``AdaMine_instr`` (Carvalho et al., SIGIR 2018; the released code's ``with_ingrs`` /
  ``with_instrs``). The branch left out is not built, and the joint projection takes the
  width of what remains (600 or 1024);
* ``packed``: ``True`` (default) runs every LSTM over packed sequences, so a sequence's
  final state is the one after its last real element; ``False`` runs them over the padded
  batch, so the final state has also read the padding after it (and the backward direction
  starts in the padding): the "without packing" setting of the Recipe1M+ reproduction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from .image import JointHead
from .registry import register_recipe_tower

__all__ = ["JERecipeTower", "make_embedding", "check_components"]


def check_components(components, known: tuple[str, ...]) -> tuple[str, ...]:
    """``components`` as a tuple in the tower's own order; an error names an unknown or empty choice."""
    if isinstance(components, str):
        components = (components,)
    chosen = tuple(components)
    bad = [c for c in chosen if c not in known]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"recipe components must be distinct names among {', '.join(known)} "
                         f"(at least one), got {list(chosen)}")
    return tuple(c for c in known if c in chosen)


def make_embedding(vocab_size: int, dim: int, matrix: np.ndarray | None) -> nn.Embedding:
    """Word embedding (padding row 0), initialised from ``matrix`` when given."""
    if matrix is not None:
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.shape[0] != vocab_size:
            raise ValueError(f"embedding matrix has {matrix.shape[0]} rows, vocabulary needs {vocab_size}")
        dim = matrix.shape[1]
    emb = nn.Embedding(vocab_size, dim, padding_idx=0)
    if matrix is not None:
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(matrix))
            emb.weight[0].zero_()
    return emb


COMPONENTS = ("ingredients", "instructions")


def _last_hidden(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor, packed: bool = True) -> torch.Tensor:
    """Final hidden state(s) of ``lstm`` over the non-empty rows of ``x`` [N, L, E]; zeros for
    empty rows. Bidirectional LSTMs return [fwd; bwd]. ``packed=False``: the LSTM runs over
    the whole padded width of each row (padding included)."""
    out_dim = lstm.hidden_size * (2 if lstm.bidirectional else 1)
    out = x.new_zeros(x.shape[0], out_dim)
    keep = lengths > 0
    if keep.any():
        if packed:
            seq = pack_padded_sequence(x[keep], lengths[keep].cpu(), batch_first=True, enforce_sorted=False)
        else:
            seq = x[keep]
        _, (h, _) = lstm(seq)
        h = torch.cat([h[-2], h[-1]], dim=-1) if lstm.bidirectional else h[-1]
        out = out.index_put((keep.nonzero().squeeze(1),), h.to(out.dtype))
    return out


class JERecipeTower(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 1024,
        word_dim: int = 300,
        ingredient_hidden: int = 300,
        sentence_dim: int = 1024,
        instruction_hidden: int = 1024,
        tanh: bool = True,
        embedding_matrix: np.ndarray | None = None,
        components: tuple[str, ...] | list[str] = COMPONENTS,
        packed: bool = True,
    ):
        super().__init__()
        self.components = check_components(components, COMPONENTS)
        self.packed = bool(packed)
        self.embedding = make_embedding(vocab_size, word_dim, embedding_matrix)
        word_dim = self.embedding.embedding_dim
        width = 0
        if "ingredients" in self.components:
            self.ingredient_lstm = nn.LSTM(word_dim, ingredient_hidden, batch_first=True, bidirectional=True)
            width += 2 * ingredient_hidden
        if "instructions" in self.components:
            self.word_lstm = nn.LSTM(word_dim, sentence_dim, batch_first=True)
            self.sentence_lstm = nn.LSTM(sentence_dim, instruction_hidden, batch_first=True)
            width += instruction_hidden
        self.head = JointHead(width, embed_dim, tanh)
        self.token_dim = None  # no token sequence for a matching head

    def forward(self, batch: dict) -> dict:
        parts = {}
        if "ingredients" in self.components:
            names = batch["ingredient_names"]
            n_ingr = batch["n_ingredients"].to(names.device)
            parts["ingredients"] = _last_hidden(self.ingredient_lstm, self.embedding(names), n_ingr, self.packed)
        if "instructions" in self.components:
            instr = batch["instructions"]  # [B, S, W]
            b, s, w = instr.shape
            words_len = batch["instructions_len"].to(instr.device).reshape(b * s)
            sent = _last_hidden(self.word_lstm, self.embedding(instr.reshape(b * s, w)), words_len, self.packed)
            n_instr = batch["n_instructions"].to(instr.device)
            parts["instructions"] = _last_hidden(self.sentence_lstm, sent.reshape(b, s, -1), n_instr, self.packed)
        emb = self.head(torch.cat([parts[c] for c in self.components], dim=-1))
        return {"emb": emb, "components": parts, "tokens": None, "mask": None}


@register_recipe_tower("je", options=JERecipeTower)
def _je_tower(*, vocab, embed_dim: int = 1024, embedding_matrix=None, **options) -> JERecipeTower:
    """im2recipe's LSTM tower over the prepared vocabulary (word2vec-initialised when given)."""
    return JERecipeTower(len(vocab), embed_dim=embed_dim, embedding_matrix=embedding_matrix, **options)
