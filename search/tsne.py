"""`recipekit plot RUN --tsne`: a t-SNE map of image and recipe embeddings (AdaMine's Figure 3).

:func:`plot_tsne` embeds the image-recipe pairs of one split with the run's model
(:func:`recipekit.evaluation.embed_split`), labels them with the ``classes`` stage's output
(``PREPARED/recipe_classes.parquet`` + ``classes.json``; class 0, background, is left out),
keeps the ``classes`` largest classes (at most ``per_class`` pairs of each, a seeded draw),
runs one t-SNE over images and recipes together (scikit-learn) and draws images as circles,
recipes as triangles, coloured by class, each pair joined by a thin line. A model that learned
a joint space puts a photo next to its recipe (short lines) and a class in one cluster.
Needs ``recipekit[train]`` (torch, matplotlib, scikit-learn).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["TsneSelection", "plot_tsne", "read_class_labels", "select_pairs", "tsne_points"]

# Colour-blind-safe (Okabe-Ito), enough for the default five classes and a few more.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"]


@dataclass
class TsneSelection:
    """Rows of the split's embeddings that are plotted, with their class (index into ``names``)."""

    rows: np.ndarray  # int64 [M]: rows of the SplitEmbeddings
    labels: np.ndarray  # int64 [M]: 0..len(names)-1
    names: list[str]  # the kept classes, largest first
    counts: list[int]  # pairs of each kept class in the split (before per_class)


def read_class_labels(prepared: str | os.PathLike) -> tuple[dict[str, int], dict[int, str]]:
    """``({recipe id: class id}, {class id: name})`` from the ``classes`` stage's outputs."""
    import polars as pl

    prepared = Path(prepared)
    table_path, names_path = prepared / "recipe_classes.parquet", prepared / "classes.json"
    for path in (table_path, names_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (run the `classes` stage of `recipekit prepare` on {prepared})")
    try:
        table = pl.read_parquet(table_path, columns=["id", "class_id"])
    except Exception as exc:  # a foreign or truncated file: say which
        raise ValueError(f"{table_path}: cannot read columns id, class_id ({exc})") from exc
    try:
        names = {int(k): str(v) for k, v in json.loads(names_path.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{names_path}: expected a JSON object {{class id: name}} ({exc})") from exc
    labels = dict(zip(table.get_column("id").to_list(), (int(c) for c in table.get_column("class_id").to_list())))
    return labels, names


def select_pairs(ids: list[str], labels: dict[str, int], names: dict[int, str], *, classes: int = 5,
                 per_class: int = 100, seed: int = 0, where: str = "the split") -> TsneSelection:
    """The pairs of the ``classes`` largest non-background classes among ``ids`` (ties: lower
    class id first), at most ``per_class`` of each (a draw seeded by ``seed``, kept in split order).
    Raises ValueError when fewer than two classes have pairs: a map of one class shows nothing."""
    if classes < 2:
        raise ValueError(f"classes must be >= 2, not {classes}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, not {per_class}")
    cls = np.array([labels.get(i, 0) for i in ids], dtype=np.int64)
    present, counts = np.unique(cls[cls > 0], return_counts=True)
    if len(present) < 2:
        found = ", ".join(f"{names.get(int(c), c)!s} ({n})" for c, n in zip(present, counts)) or "none"
        raise ValueError(
            f"{where}: {len(ids)} pairs, but only {len(present)} class(es) other than background have pairs "
            f"({found}); a t-SNE by class needs at least 2 (try another --split or a larger corpus)"
        )
    order = np.lexsort((present, -counts))[:classes]
    rng = np.random.default_rng(seed)
    rows, lab = [], []
    for j, c in enumerate(present[order]):
        members = np.flatnonzero(cls == c)
        if len(members) > per_class:
            members = np.sort(rng.choice(members, size=per_class, replace=False))
        rows.append(members)
        lab.append(np.full(len(members), j, dtype=np.int64))
    return TsneSelection(np.concatenate(rows), np.concatenate(lab),
                         [names.get(int(c), str(c)) for c in present[order]], [int(n) for n in counts[order]])


def tsne_points(image: np.ndarray, recipe: np.ndarray, *, seed: int = 0, perplexity: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE coordinates of images and recipes, computed jointly (one map for both)."""
    from sklearn.manifold import TSNE

    both = np.concatenate([image, recipe]).astype(np.float32, copy=False)
    n = len(both)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 2 pairs, got {n // 2}")
    if perplexity is None:  # scikit-learn's default 30, lowered for small maps (it must be < n)
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    xy = tsne.fit_transform(both)
    return xy[: len(image)], xy[len(image):]


def _draw(img_xy: np.ndarray, rec_xy: np.ndarray, sel: TsneSelection, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    from recipekit.evaluation.plot import save_png

    colours = [PALETTE[i % len(PALETTE)] for i in range(len(sel.names))]
    fig, ax = plt.subplots(figsize=(8, 7))
    segments = np.stack([img_xy, rec_xy], axis=1)
    ax.add_collection(LineCollection(segments, colors=[colours[c] for c in sel.labels], linewidths=0.6, alpha=0.45))
    for j, name in enumerate(sel.names):
        m = sel.labels == j
        ax.scatter(img_xy[m, 0], img_xy[m, 1], marker="o", s=26, color=colours[j], edgecolors="white", linewidths=0.4)
        ax.scatter(rec_xy[m, 0], rec_xy[m, 1], marker="^", s=30, color=colours[j], edgecolors="black", linewidths=0.4)
    handles = [Line2D([], [], marker="s", linestyle="", color=colours[j], markersize=9,
                      label=f"{name} ({int((sel.labels == j).sum())} pairs)") for j, name in enumerate(sel.names)]
    handles += [Line2D([], [], marker="o", linestyle="", color="grey", label="image"),
                Line2D([], [], marker="^", linestyle="", color="grey", markeredgecolor="black", label="recipe"),
                Line2D([], [], color="grey", linewidth=0.8, label="a pair (image - its recipe)")]
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.autoscale_view()
    fig.tight_layout()
    return save_png(fig, out, dpi=100)


def plot_tsne(
    run: str | os.PathLike,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    split: str = "test",
    classes: int = 5,
    per_class: int = 100,
    seed: int = 0,
    device: Any = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
) -> Path:
    """Write the t-SNE PNG of ``split`` (atomically) and return its path.

    ``run``: a run folder of `recipekit train` (or an embedder file); ``data``: the prepared
    folder (default: the run's ``data.prepared``); ``out``: the PNG (default
    ``RUN/eval/{split}/tsne.png``). ``classes``: how many of the largest classes (by pairs in
    the split; background excluded); ``per_class``: at most that many pairs of each; ``seed``:
    the draw of pairs and t-SNE's random state."""
    from recipekit.core.device import resolve_device
    from recipekit.core.layout import Prepared, Run
    from recipekit.embedders import load_embedder
    from recipekit.evaluation import embed_split

    found = Run.resolve(run)
    prepared = found.prepared(data).resolve()
    folder = Prepared(prepared).shards(split)  # clear errors before the model is loaded
    labels, names = read_class_labels(prepared)
    try:
        model = load_embedder(found.checkpoint)
    except Exception as exc:
        raise ValueError(f"{found.checkpoint}: not a readable recipekit embedder file ({exc})") from exc
    log.info("t-SNE: embedding split %s of %s", split, prepared)
    emb = embed_split(model, prepared, split, batch_size=batch_size, num_workers=num_workers,
                      device=resolve_device(device), seed=seed)
    sel = select_pairs(emb.ids, labels, names, classes=classes, per_class=per_class, seed=seed, where=str(folder))
    log.info("t-SNE: fitting the map of %d pairs of %d classes (the slow step)",
             len(sel.rows), len(sel.names))
    img_xy, rec_xy = tsne_points(emb.image[sel.rows], emb.recipe[sel.rows], seed=seed)
    log.info("t-SNE: drawing %s", out if out is not None else "tsne.png")
    out = Path(out) if out is not None else found.eval_dir(split) / "tsne.png"
    label = found.run.path.resolve().name if found.run else found.checkpoint.name
    title = (f"t-SNE of image and recipe embeddings: {label}, split {split!r}\n"
             f"{len(sel.rows)} pairs of the {len(sel.names)} largest classes")
    return _draw(img_xy, rec_xy, sel, out, title)
