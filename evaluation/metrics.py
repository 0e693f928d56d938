"""Retrieval metrics for paired embeddings: rows ``i`` of the two inputs belong together.

Conventions (and the slips of the reference code they avoid):

- The rank of the true match is ``1 + the number of candidates strictly more similar`` (cosine),
  so ranks are 1-based (AdaMine's released code is 0-based: its medR 1.0 is a 2 here) and a tie
  with the true match counts in its favour, as H-T's implementation does.
- ``image_to_recipe``: each image queries the recipes; ``recipe_to_image``: each recipe queries the
  images (AdaMine's and T-Food's code swap these labels).
- medR is the median rank; R@K the percentage of queries whose rank is at most K.
- A bag's N x N similarity matrix is computed once (one matrix product) and serves both
  directions (rows: image queries; columns: recipe queries), as long as it fits in
  ``max_bytes`` (default 1 GiB: bags up to ~16k pairs); larger inputs fall back to one chunked
  product per direction, ``chunk`` queries at a time, so memory stays at ``chunk x N``.
- What is computed from a bag's ranks is a list of registered metric functions
  (:func:`register_metric`; default :data:`DEFAULT_METRICS`: ``medR`` then ``recall``). A metric
  is ``fn(ranks, ks) -> {column: value}``: ``ranks`` the 1-based ranks of one direction's
  queries (numpy int64), ``ks`` the K values of the protocol.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["DIRECTIONS", "DEFAULT_METRICS", "retrieval_metrics", "evaluate_bags", "ranks", "paired_ranks",
           "register_metric", "list_metrics", "metric_function"]

DIRECTIONS = ("image_to_recipe", "recipe_to_image")
KS = (1, 5, 10)
MATRIX_BYTES = 1 << 30  # one shared similarity matrix up to this size
DEFAULT_METRICS = ("medR", "recall")

_METRICS: dict[str, Callable[[np.ndarray, Sequence[int]], dict[str, float]]] = {}


def register_metric(name: str):
    """Decorator: register ``fn(ranks, ks) -> {column: value}`` as metric ``name`` (a protocol's
    ``metrics`` lists the names; each bag's columns are averaged over bags, mean and std). A
    taken name is an error, unless it is the same function (its module imported again)."""

    def deco(fn):
        old = _METRICS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"register_metric: a metric named {name!r} is already registered")
        _METRICS[name] = fn
        return fn

    return deco


def list_metrics() -> list[str]:
    """Registered metric names, sorted."""
    return sorted(_METRICS)


def metric_function(name: str):
    """The function registered as ``name``; unknown: a ValueError listing the choices."""
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(list_metrics())}")
    return _METRICS[name]


@register_metric("medR")
def median_rank(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """The median rank of the true match."""
    return {"medR": float(np.median(ranks))}


@register_metric("recall")
def recall_at_k(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """R@K: the percentage of queries whose true match ranks K or better, per K."""
    return {f"R@{k}": float(100.0 * (ranks <= k).mean()) for k in ks}


def _as_backend(x: Any):
    """``(array, is_torch)``; numpy for anything that is not a torch tensor."""
    if type(x).__module__.startswith("torch"):
        return x.detach().float(), True
    return np.asarray(x, dtype=np.float32), False


def _normalise(x):
    norm = (x * x).sum(1)[:, None] ** 0.5
    return x / (norm + 1e-12)


def ranks(queries, candidates, *, chunk: int = 2048) -> np.ndarray:
    """1-based rank of candidate ``i`` among all candidates for query ``i`` (cosine similarity)."""
    q, is_torch = _as_backend(queries)
    c, _ = _as_backend(candidates)
    if q.shape != c.shape or q.ndim != 2:
        raise ValueError(f"expected two [N, D] inputs of the same shape, got {tuple(q.shape)} and {tuple(c.shape)}")
    q, c = _normalise(q), _normalise(c)
    out = []
    for start in range(0, q.shape[0], chunk):
        sim = q[start : start + chunk] @ c.T
        rows = np.arange(sim.shape[0])
        if is_torch:
            rows = _torch_index(rows, sim)
        positive = sim[rows, rows + start]
        better = (sim > positive[:, None]).sum(1)
        out.append(better.cpu().numpy() if is_torch else better)
    return np.concatenate(out).astype(np.int64) + 1 if out else np.zeros(0, dtype=np.int64)


def paired_ranks(image_emb, recipe_emb, *, chunk: int = 2048, max_bytes: int = MATRIX_BYTES):
    """``(image_to_recipe, recipe_to_image)`` 1-based ranks of every pair, from one similarity
    matrix ``S = images @ recipes.T`` when it fits in ``max_bytes``: image ``i``'s rank counts
    the entries of row ``i`` above ``S[i, i]``, recipe ``j``'s the entries of column ``j``
    above ``S[j, j]`` (same numbers as :func:`ranks` per direction, at half the cost)."""
    q, is_torch = _as_backend(image_emb)
    c, _ = _as_backend(recipe_emb)
    if q.shape != c.shape or q.ndim != 2:
        raise ValueError(f"expected two [N, D] inputs of the same shape, got {tuple(q.shape)} and {tuple(c.shape)}")
    n = q.shape[0]
    if n * n * 4 > max_bytes or n == 0:
        return ranks(image_emb, recipe_emb, chunk=chunk), ranks(recipe_emb, image_emb, chunk=chunk)
    sim = _normalise(q) @ _normalise(c).T
    diag = sim.diagonal().clone() if is_torch else sim.diagonal().copy()
    rows, cols = [], 0
    for start in range(0, n, chunk):
        block = sim[start : start + chunk]
        rows.append((block > diag[start : start + chunk, None]).sum(1))
        cols = cols + (block > diag[None, :]).sum(0)
    if is_torch:
        rows, cols = [r.cpu().numpy() for r in rows], cols.cpu().numpy()
    return np.concatenate(rows).astype(np.int64) + 1, np.asarray(cols).astype(np.int64) + 1


def _summary(r: np.ndarray, ks=KS, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    result: dict[str, float] = {}
    for name in metrics:
        result.update(metric_function(name)(r, ks))
    return result


def retrieval_metrics(image_emb, recipe_emb, *, ks=KS, chunk: int = 2048, max_bytes: int = MATRIX_BYTES,
                      metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """The ``metrics`` (default medR and R@K, percent) in both directions for one bag whose rows ``i`` match."""
    i2r, r2i = paired_ranks(image_emb, recipe_emb, chunk=chunk, max_bytes=max_bytes)
    return {"image_to_recipe": _summary(i2r, ks, metrics), "recipe_to_image": _summary(r2i, ks, metrics)}


def _bags(n: int, bag_size: int, n_bags: int, sampling: str, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if sampling == "independent":  # im2recipe, H-T: each bag an independent draw without replacement
        return [np.sort(rng.choice(n, size=bag_size, replace=False)) for _ in range(n_bags)]
    if sampling == "chunks":  # AdaMine: consecutive chunks of one shuffled list
        order = rng.permutation(n)
        return [np.sort(order[i * bag_size : (i + 1) * bag_size]) for i in range(n_bags)]
    raise ValueError(f"unknown bag sampling {sampling!r}; choose 'independent' or 'chunks'")


def evaluate_bags(
    image_emb,
    recipe_emb,
    *,
    bag_size: int = 1000,
    n_bags: int = 10,
    sampling: str = "independent",
    seed: int = 1234,
    ks=KS,
    chunk: int = 2048,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, Any]:
    """The protocol: ``n_bags`` bags of ``bag_size`` pairs, metrics per bag, mean and std.

    A split smaller than ``bag_size`` is scored as one bag of all its pairs, and the result says
    so (``"note"``); with ``sampling="chunks"`` the number of bags is capped at N // bag_size.
    """
    n = len(image_emb)
    if len(recipe_emb) != n:
        raise ValueError(f"{n} image embeddings but {len(recipe_emb)} recipe embeddings")
    if n == 0:
        raise ValueError("no pairs to evaluate")
    note = None
    if n < bag_size:
        bags, note = [np.arange(n)], f"split has {n} pairs < bag size {bag_size}: one bag of all {n} pairs"
    else:
        if sampling == "chunks" and n_bags > n // bag_size:
            note = f"only {n // bag_size} disjoint chunks of {bag_size} in {n} pairs"
            n_bags = n // bag_size
        bags = _bags(n, bag_size, n_bags, sampling, seed)
    per_bag = []
    for idx in bags:
        take = idx if not type(image_emb).__module__.startswith("torch") else _torch_index(idx, image_emb)
        per_bag.append(retrieval_metrics(image_emb[take], recipe_emb[take], ks=ks, chunk=chunk, metrics=metrics))
    result: dict[str, Any] = {
        "bag_size": int(len(bags[0])),
        "n_bags": len(bags),
        "sampling": sampling,
        "seed": seed,
        "pairs": n,
    }
    for direction in DIRECTIONS:
        result[direction] = {
            metric: {
                "mean": float(np.mean([b[direction][metric] for b in per_bag])),
                "std": float(np.std([b[direction][metric] for b in per_bag])),
            }
            for metric in per_bag[0][direction]
        }
    if note:
        result["note"] = note
    return result


def _torch_index(idx: np.ndarray, like):
    import torch

    return torch.as_tensor(idx, device=like.device)
