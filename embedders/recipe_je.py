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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from .image import JointHead

__all__ = ["JERecipeTower", "make_embedding"]


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


def _last_hidden(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Final hidden state(s) of ``lstm`` over the non-empty rows of ``x`` [N, L, E]; zeros for
    empty rows. Bidirectional LSTMs return [fwd; bwd]."""
    out_dim = lstm.hidden_size * (2 if lstm.bidirectional else 1)
    out = x.new_zeros(x.shape[0], out_dim)
    keep = lengths > 0
    if keep.any():
        packed = pack_padded_sequence(x[keep], lengths[keep].cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = lstm(packed)
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
    ):
        super().__init__()
        self.embedding = make_embedding(vocab_size, word_dim, embedding_matrix)
        word_dim = self.embedding.embedding_dim
        self.ingredient_lstm = nn.LSTM(word_dim, ingredient_hidden, batch_first=True, bidirectional=True)
        self.word_lstm = nn.LSTM(word_dim, sentence_dim, batch_first=True)
        self.sentence_lstm = nn.LSTM(sentence_dim, instruction_hidden, batch_first=True)
        self.head = JointHead(2 * ingredient_hidden + instruction_hidden, embed_dim, tanh)
        self.token_dim = None  # no token sequence for a matching head

    def forward(self, batch: dict) -> dict:
        names = batch["ingredient_names"]
        n_ingr = batch["n_ingredients"].to(names.device)
        ingr = _last_hidden(self.ingredient_lstm, self.embedding(names), n_ingr)

        instr = batch["instructions"]  # [B, S, W]
        b, s, w = instr.shape
        words_len = batch["instructions_len"].to(instr.device).reshape(b * s)
        sent = _last_hidden(self.word_lstm, self.embedding(instr.reshape(b * s, w)), words_len)
        n_instr = batch["n_instructions"].to(instr.device)
        steps = _last_hidden(self.sentence_lstm, sent.reshape(b, s, -1), n_instr)

        emb = self.head(torch.cat([ingr, steps], dim=-1))
        return {"emb": emb, "components": {"ingredients": ingr, "instructions": steps}, "tokens": None, "mask": None}
