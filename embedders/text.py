"""Text side of the recipe towers: tokeniser, vocabulary, word2vec matrix, recipe batches.

Token ids (the convention of the pipeline's ``word2vec/vocab.txt``)
-------------------------------------------------------------------
``vocab.txt`` holds one word a line; the word on line ``k`` (0-based) has id
``k + 2``. Id ``0`` is padding (its embedding row is zero and gets no gradient).
Id ``1`` is ``<unk>``: every out-of-vocabulary word maps to it. No end-of-sentence
token is appended (im2recipe used id 1 as ``</s>``/unknown; here lengths and
masks mark where a sequence ends), so id 1 only ever means "unknown word".

Tokenised recipe (:func:`tokenise_recipe`)
------------------------------------------
``{"title": [ids], "ingredients": [[ids], ...], "ingredient_names": [ids],
"instructions": [[ids], ...]}``: the title's tokens, each ingredient line's
tokens, one id per ingredient *name* (``olive_oil``; for the JE tower) and each
instruction's tokens, truncated to ``max_tokens`` / ``max_ingredients`` /
``max_instructions``.

Recipe batch (:func:`collate_recipes`), a dict of LongTensors
-------------------------------------------------------------
=====================  =============  ==============================================
key                    shape          meaning
=====================  =============  ==============================================
``title``              [B, T]         title token ids, 0-padded
``title_len``          [B]            tokens in each title
``ingredients``        [B, Ni, Ti]    token ids of each ingredient line, 0-padded
``ingredients_len``    [B, Ni]        tokens in each ingredient line (0 = padding)
``ingredient_names``   [B, Ni]        one id per ingredient name (JE), 0-padded
``n_ingredients``      [B]            ingredient lines (and names) per recipe
``instructions``       [B, S, W]      token ids of each instruction, 0-padded
``instructions_len``   [B, S]         tokens in each instruction (0 = padding)
``n_instructions``     [B]            instructions per recipe
=====================  =============  ==============================================

Masks are ``ids != 0`` (token level) and ``*_len > 0`` (sentence level). Every
dimension is at least 1, so an empty title or an empty instruction list gives an
all-padding row that the towers handle (pooled to a zero vector).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "tokenize",
    "ingredient_token",
    "Vocabulary",
    "embedding_matrix_from_keyedvectors",
    "load_word2vec_matrix",
    "tokenise_recipe",
    "collate_recipes",
]

# One tokeniser and one vocabulary for the whole project: the pipeline built vocab.txt with them,
# and the LMDB store and the loaders tokenise with the same code (torch-free, in recipekit.pipeline).
from recipekit.pipeline.tokenize import ingredient_token, tokenize, underscore_ingredients  # noqa: E402,F401
from recipekit.pipeline.vocab import N_SPECIAL as _N_SPECIAL  # noqa: E402,F401
from recipekit.pipeline.vocab import PAD_ID, UNK_ID, Vocabulary, tokenise_recipe  # noqa: E402,F401
from recipekit.pipeline.vocab import _texts  # noqa: E402,F401


def embedding_matrix_from_keyedvectors(kv: Any, vocab: Vocabulary, seed: int = 0) -> np.ndarray:
    """Embedding rows for ``vocab`` from gensim ``KeyedVectors`` (float32, [len(vocab), dim]).

    Row 0 (padding) is zero; a word missing from ``kv`` (and row 1, unknown) gets a small
    random vector (normal, std 0.1 x the mean std of the known vectors)."""
    dim = int(kv.vector_size)
    rng = np.random.default_rng(seed)
    known = [w for w in vocab.words if w in kv.key_to_index]
    scale = float(np.std(kv[known])) * 0.1 if known else 0.01
    matrix = rng.normal(0.0, scale, size=(len(vocab), dim)).astype(np.float32)
    matrix[PAD_ID] = 0.0
    for w in known:
        matrix[vocab.id(w)] = kv[w]
    return matrix


def load_word2vec_matrix(path: str | Path, vocab: Vocabulary, *, allow_pickle: bool = False) -> np.ndarray:
    """Build the matrix for ``vocab`` from a prepared folder's word vectors: ``path`` is the
    prepared folder, its ``word2vec/`` folder or a file in it (``vectors.npy``). An older
    folder's ``word2vec.kv`` (a pickle) is read only with ``allow_pickle=True``
    (:func:`recipekit.pipeline.word2vec.load_vectors`)."""
    from recipekit.pipeline.word2vec import load_vectors

    return embedding_matrix_from_keyedvectors(load_vectors(path, allow_pickle=allow_pickle), vocab)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Position of every element inside its group, for groups of ``lengths`` laid end to end."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _flat(groups) -> np.ndarray:
    flat = [t for g in groups for t in g]
    return np.asarray(flat, dtype=np.int64) if flat else np.zeros(0, dtype=np.int64)


# Padding scatters every id with one numpy assignment rather than one torch call per sentence:
# 0.28 -> 0.02 ms per recipe, the largest Python cost of a loader worker (docs/benchmarks.md).
def _pad2(seqs: list[list[int]]):
    import torch

    lens = np.fromiter((len(s) for s in seqs), np.int64, len(seqs))
    out = np.zeros((len(seqs), max(int(lens.max(initial=0)), 1)), np.int64)
    out[np.repeat(np.arange(len(seqs)), lens), _offsets(lens)] = _flat(seqs)
    return torch.from_numpy(out), torch.from_numpy(lens)


def _pad3(nested: list[list[list[int]]]):
    import torch

    counts = np.fromiter((len(x) for x in nested), np.int64, len(nested))
    sents = [s for x in nested for s in x]
    lens = np.fromiter((len(s) for s in sents), np.int64, len(sents))
    n, width = max(int(counts.max(initial=0)), 1), max(int(lens.max(initial=0)), 1)
    ids = np.zeros((len(nested), n, width), np.int64)
    slen = np.zeros((len(nested), n), np.int64)
    b, i = np.repeat(np.arange(len(nested)), counts), _offsets(counts)
    slen[b, i] = lens
    ids[np.repeat(b, lens), np.repeat(i, lens), _offsets(lens)] = _flat(sents)
    return torch.from_numpy(ids), torch.from_numpy(slen), torch.from_numpy(counts)


def collate_recipes(recipes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad a list of :func:`tokenise_recipe` outputs into the batch described in the module doc."""
    if not recipes:
        raise ValueError("collate_recipes needs at least one recipe")
    title, title_len = _pad2([list(r["title"]) for r in recipes])
    ingredients, ingredients_len, n_ingredients = _pad3([list(r["ingredients"]) for r in recipes])
    names, _ = _pad2([list(r.get("ingredient_names") or []) for r in recipes])
    if names.shape[1] < ingredients.shape[1]:
        names = _pad_cols(names, ingredients.shape[1])
    instructions, instructions_len, n_instructions = _pad3([list(r["instructions"]) for r in recipes])
    return {
        "title": title,
        "title_len": title_len,
        "ingredients": ingredients,
        "ingredients_len": ingredients_len,
        "ingredient_names": names,
        "n_ingredients": n_ingredients,
        "instructions": instructions,
        "instructions_len": instructions_len,
        "n_instructions": n_instructions,
    }


def _pad_cols(t, width: int):
    import torch

    out = torch.zeros(t.shape[0], width, dtype=t.dtype)
    out[:, : t.shape[1]] = t
    return out
