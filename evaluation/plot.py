"""`recipekit eval --plot`: a PNG grid of top-5 retrievals, read back from the split's shards.

Within one bag of the protocol (its first bag of ``bag_size`` pairs, same sampling and seed),
a few recipe queries show their top-5 images (the true photo framed in green) and a few image
queries their top-5 recipe titles (the true recipe in green). Images and titles come from the
shards themselves (sample key = recipe id; members ``{k}.jpg`` and ``json``), so nothing but
the prepared folder is needed. Needs matplotlib (``pip install 'recipekit[train]'``).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import textwrap
from pathlib import Path

import numpy as np
from recipekit.core.io import atomic_path

from .embed import SplitEmbeddings
from .metrics import _bags

__all__ = ["plot_retrievals", "read_members"]

GOOD, OTHER = "#1a9850", "#bbbbbb"


def read_members(folder: Path, wanted: dict[str, set[str]]) -> dict[tuple[str, str], bytes]:
    """``{(recipe id, member): bytes}`` for the wanted members (``"json"``, ``"0.jpg"``...) of
    the shards in ``folder``: a scan of the tar headers, reading only what is asked for. In the
    per-image layout ``{id}_{k}.jpg`` is member ``{k}.jpg`` and ``{id}_0.json`` the ``json``."""
    got: dict[tuple[str, str], bytes] = {}
    index = Path(folder).parent / "index.json"  # the layout of PREPARED/shards/{split}
    entry = json.loads(index.read_text(encoding="utf-8")).get(Path(folder).name, {}) if index.is_file() else {}
    per_image = entry.get("layout") == "per-image"
    for shard in sorted(Path(folder).glob("*.tar")):
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if per_image:  # {id}_{k}.jpg is the recipe's {k}.jpg, {id}_0.json its json
                    rid, _, k = key.rpartition("_")
                    key, ext = rid, (f"{k}.jpg" if ext == "jpg" else "json" if ext == "json" and k == "0" else "")
                if ext in wanted.get(key, ()):
                    got[(key, ext)] = tar.extractfile(member).read()
    return got


def _title(blob: bytes | None, width: int = 22, lines: int = 3) -> str:
    title = json.loads(blob).get("title", "") if blob else "?"
    return "\n".join(textwrap.wrap(title or "(no title)", width)[:lines])


def _image(blob: bytes | None):
    from PIL import Image

    if blob is None:
        return np.zeros((8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def _frame(ax, colour: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def save_png(fig, out: str | os.PathLike, *, dpi: float | None = None) -> Path:
    """Write a matplotlib figure as a PNG under a temporary name, rename it, and close the figure
    (also on error). Returns the path."""
    import matplotlib.pyplot as plt

    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return out


def plot_retrievals(emb: SplitEmbeddings, folder: str | os.PathLike, out: str | os.PathLike, *,
                    n_queries: int = 3, k: int = 5, bag_size: int = 1000, sampling: str = "independent",
                    seed: int = 1234) -> Path:
    """Write the grid to ``out`` (PNG, atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(emb)
    bag = np.arange(n) if n <= bag_size else _bags(n, bag_size, 1, sampling, seed)[0]
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(bag), size=min(n_queries, len(bag)), replace=False)
    k = min(k, len(bag))
    img, rec = emb.image[bag], emb.recipe[bag]
    picks = emb.image_index[bag] if emb.image_index is not None else np.zeros(len(bag), dtype=np.int64)
    ids = [emb.ids[i] for i in bag]
    rec_sim, img_sim = rec[queries] @ img.T, img[queries] @ rec.T
    rec_top = np.argsort(-rec_sim, axis=1, kind="stable")[:, :k]  # recipe -> images
    img_top = np.argsort(-img_sim, axis=1, kind="stable")[:, :k]  # image -> recipes
    rows_q = np.arange(len(queries))
    rec_rank = 1 + (rec_sim > rec_sim[rows_q, queries][:, None]).sum(1)  # the true match's rank
    img_rank = 1 + (img_sim > img_sim[rows_q, queries][:, None]).sum(1)
    wanted: dict[str, set[str]] = {}
    for j in set(queries.tolist()) | set(rec_top.ravel().tolist()) | set(img_top.ravel().tolist()):
        wanted.setdefault(ids[j], set()).update({"json", f"{int(picks[j])}.jpg"})
    blobs = read_members(Path(folder), wanted)

    rows = 2 * len(queries)
    fig, axes = plt.subplots(rows, k + 1, figsize=(2.1 * (k + 1), 2.3 * rows), squeeze=False)
    for r, q in enumerate(queries):  # recipe queries: top-k images
        ax = axes[r, 0]
        ax.text(0.5, 0.5, "recipe query:\n" + _title(blobs.get((ids[q], "json"))), ha="center", va="center",
                fontsize=8)
        ax.set_title(f"true photo: rank {rec_rank[r]}", fontsize=8)
        _frame(ax, OTHER, 1)
        for c, j in enumerate(rec_top[r]):
            ax = axes[r, c + 1]
            ax.imshow(_image(blobs.get((ids[j], f"{int(picks[j])}.jpg"))))
            hit = j == q
            _frame(ax, GOOD if hit else OTHER, 4 if hit else 1)
            ax.set_title(f"#{c + 1}" + (" ✓ true photo" if hit else ""), fontsize=8, color=GOOD if hit else "black")
    for r, q in enumerate(queries):  # image queries: top-k titles
        row = len(queries) + r
        ax = axes[row, 0]
        ax.imshow(_image(blobs.get((ids[q], f"{int(picks[q])}.jpg"))))
        ax.set_title(f"image query (true recipe: rank {img_rank[r]})", fontsize=8)
        _frame(ax, OTHER, 1)
        for c, j in enumerate(img_top[r]):
            ax = axes[row, c + 1]
            hit = j == q
            ax.text(0.5, 0.5, _title(blobs.get((ids[j], "json"))), ha="center", va="center", fontsize=8,
                    color=GOOD if hit else "black", fontweight="bold" if hit else "normal")
            _frame(ax, GOOD if hit else OTHER, 4 if hit else 1)
            ax.set_title(f"#{c + 1}" + (" ✓ true recipe" if hit else ""), fontsize=8, color=GOOD if hit else "black")
    where = f"a bag of {len(bag)}" if len(bag) < n else f"all {n} pairs"
    fig.suptitle(f"Top-{k} retrievals within {where} (green: the true match)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_png(fig, out, dpi=80)
