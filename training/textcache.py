"""The frozen sentence encoder's cache (``train.text_cache``, on by default).

A recipe tower whose sentence encoder is frozen (the ``minilm`` tower: all-MiniLM-L6-v2, frozen
and in eval mode) gives the same encoder output for a sentence at every epoch, so the trainer
computes it once per sentence and reads it back afterwards. Only the encoder's output is cached;
the projection and the sentence-level transformers that follow it are trained as before.

* **Key.** A SHA-256 of the encoder (its class, its config and every weight) selects the cache;
  inside it, a sentence is keyed by its token ids without padding (the tokeniser's output after the
  model's text limits, so a changed text or limit is another key). A changed model is another
  cache, never a stale entry.
* **What is stored.** Per sentence, in memory: the token outputs [tokens, width] for the title (the
  tower's title transformer reads them) and the mean-pooled vector [width] for ingredient and
  instruction lines, float32 on the CPU. Missing sentences are encoded together, padded to the
  longest of them, so the values equal the uncached ones up to float rounding.
* **Scope.** Caches live for the process and are shared by runs with the same encoder (a
  benchmark's seeds encode each sentence once); :func:`clear_text_caches` drops them. A trainable
  encoder (``freeze_encoder = false``) is never cached.

Nothing here reads or writes files.
"""

from __future__ import annotations

import hashlib
import json

import torch

__all__ = ["SentenceCache", "attach_text_cache", "clear_text_caches", "encoder_digest"]

_CACHES: dict[str, "SentenceCache"] = {}


def encoder_digest(encoder: torch.nn.Module) -> str:
    """SHA-256 of a sentence encoder: class, config (when it has one) and every weight."""
    h = hashlib.sha256(type(encoder).__qualname__.encode())
    config = getattr(encoder, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name, value in encoder.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _key(row: list[int]) -> tuple[int, ...]:
    n = len(row)
    while n and row[n - 1] == 0:
        n -= 1
    return tuple(row[:n])


class SentenceCache:
    """Encoder outputs by sentence (token ids without padding) for one encoder (``digest``)."""

    def __init__(self, digest: str):
        self.digest = digest
        self.tokens: dict[tuple[int, ...], torch.Tensor] = {}  # title: [tokens, width]
        self.pooled: dict[tuple[int, ...], torch.Tensor] = {}  # lines: [width]
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.tokens) + len(self.pooled)

    def lookup(self, tower, ids: torch.Tensor, pooled: bool) -> torch.Tensor:
        """The tower's frozen encoder outputs for ``ids`` [N, L] (0 = padding): [N, width] mean-pooled
        (``pooled``) or [N, L, width] token outputs (zeros at padding)."""
        from recipekit.embedders.recipe_ht import masked_mean

        store = self.pooled if pooled else self.tokens
        keys = [_key(row) for row in ids.tolist()]
        todo = sorted({k for k in keys if k and k not in store})
        self.misses += len(todo)
        self.hits += sum(1 for k in keys if k) - len(todo)
        if todo:
            batch = torch.zeros(len(todo), max(map(len, todo)), dtype=ids.dtype, device=ids.device)
            for i, k in enumerate(todo):
                batch[i, : len(k)] = torch.tensor(k, dtype=ids.dtype)
            with torch.no_grad():
                out, mask = tower._minilm(batch)
                if pooled:
                    out = masked_mean(out, mask)
            out = out.float().cpu()
            for i, k in enumerate(todo):
                store[k] = out[i].clone() if pooled else out[i, : len(k)].clone()
        width = tower.sentence_encoder.config.hidden_size
        if pooled:
            res = torch.zeros(len(keys), width)
            for i, k in enumerate(keys):
                if k:
                    res[i] = store[k]
        else:
            res = torch.zeros(*ids.shape, width)
            for i, k in enumerate(keys):
                if k:
                    res[i, : len(k)] = store[k]
        return res.to(ids.device)


def attach_text_cache(model) -> SentenceCache | None:
    """Give ``model``'s recipe tower the process's cache for its frozen sentence encoder, and
    return it; None (and nothing attached) when the tower has no frozen sentence encoder."""
    tower = getattr(model, "recipe_tower", None)
    if tower is None or not hasattr(tower, "text_cache") or not getattr(tower, "freeze_encoder", False):
        return None
    digest = encoder_digest(tower.sentence_encoder)
    cache = _CACHES.get(digest)
    if cache is None:
        cache = _CACHES[digest] = SentenceCache(digest)
    tower.text_cache = cache
    return cache


def clear_text_caches() -> None:
    """Drop every cache of the process."""
    _CACHES.clear()
