"""eval.json -> Markdown, and the atomic writing of an evaluation's outputs.

:func:`render_table` turns the ``bags`` of an eval.json dict into a Markdown table (rows: bag
size x direction; columns: medR, R@1, R@5, R@10 as mean ± std over the bags); the demo and
docs/results.md reuse it. :func:`render_markdown` adds a short header (model, data, protocol)
and the notes: that is eval.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from recipekit.core.io import atomic_path

__all__ = ["DIRECTION_LABELS", "bag_label", "render_generation", "render_markdown", "render_table", "write_outputs"]

DIRECTION_LABELS = {"image_to_recipe": "image → recipe", "recipe_to_image": "recipe → image"}
METRICS = ("medR", "R@1", "R@5", "R@10")


def _size(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def bag_label(entry: dict[str, Any]) -> str:
    """``10 × 1k``; ``1 × all 300`` for the one bag of a split smaller than the bag size;
    ``10k`` for a size that does not apply."""
    if not entry.get("applicable", True):
        return _size(entry["requested_bag_size"])
    size, n = entry["bag_size"], entry["n_bags"]
    if size < entry.get("requested_bag_size", size):
        return f"{n} × all {size}"
    return f"{n} × {_size(size)}"


def _cell(stat: dict[str, float], n_bags: int, digits: int) -> str:
    mean = f"{stat['mean']:.{digits}f}"
    return mean if n_bags <= 1 else f"{mean} ± {stat['std']:.{digits}f}"


def render_table(report: dict[str, Any], *, digits: int = 1) -> str:
    """The Markdown table of an eval.json dict (or of any dict with its ``bags`` list); the
    columns are the protocol's metric columns (default medR, R@1, R@5, R@10)."""
    columns = next((list(e["image_to_recipe"]) for e in report["bags"] if e.get("applicable", True)), list(METRICS))
    lines = [
        "| bags | direction | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for entry in report["bags"]:
        label = bag_label(entry)
        if not entry.get("applicable", True):
            lines.append(f"| {label} | both | " + " | ".join("n/a" for _ in columns) + " |")
            continue
        for direction, name in DIRECTION_LABELS.items():
            cells = [_cell(entry[direction][m], entry["n_bags"], digits) for m in columns]
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_generation(gen: dict[str, Any], *, digits: int = 1) -> str:
    """The ``generation`` block of eval.json (GAN runs) as Markdown: generated photo -> recipe
    retrieval per bag size, and the Fréchet distance on the run's image-tower features."""
    lines = ["## Generation: recipe -> generated photo -> recipe", "",
             "| bags | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for entry in gen["retrieval"]:
        if not entry.get("applicable", True):
            continue
        stats = entry["generated_image_to_recipe"]
        lines.append(f"| {bag_label(entry)} | " + " | ".join(_cell(stats[m], entry["n_bags"], digits) for m in METRICS)
                     + " |")
    lines += ["", f"Fréchet distance, real vs generated photos, on the run's image-tower embeddings "
                  f"(`frechet_image_tower`, not Inception FID): {gen['frechet_image_tower']:.4f}"]
    return "\n".join(lines) + "\n"


def _split_pairs(data: dict[str, Any]) -> str:
    per = data.get("split_pairs") or {}
    return f" ({', '.join(f'{k} {v}' for k, v in per.items())})" if len(per) > 1 else ""


def render_markdown(report: dict[str, Any]) -> str:
    """eval.md: what was evaluated, how, the table and the notes."""
    ck, data, proto = report["checkpoint"], report["data"], report["protocol"]
    limit = f" (first {data['limit']} only)" if data.get("limit") else ""
    lines = [
        f"# Retrieval evaluation: {data['split']} split",
        "",
        f"- model: `{ck['path']}` ({ck.get('embedder') or 'embedder'}; sha256 `{ck['sha256'][:16]}…`)",
        f"- data: `{data['prepared']}`" + (f" (fingerprint `{data['fingerprint'][:8]}`)" if data.get("fingerprint") else "")
        + f", split `{data['split']}`" + _split_pairs(data) + f", {data['pairs']} image-recipe pairs{limit}",
        f"- protocol: {proto['sampling']} bags, seed {proto['seed']}, image pick `{proto['image_pick']}`; "
        "cosine similarity, 1-based ranks (ties count for the true match), R@K in percent, "
        "mean ± std over the bags",
        f"- recipekit {report['recipekit_version']}, {report['date']}",
        "",
        render_table(report),
    ]
    if report.get("generation"):
        lines += [render_generation(report["generation"]), ""]
    if report.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    if report.get("outputs", {}).get("plot"):
        lines += [f"![top-5 retrievals]({report['outputs']['plot']})", ""]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_outputs(report: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """eval.json and eval.md into ``out`` (each to a temporary name, then renamed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "eval.json", out / "eval.md"
    _atomic_write(json_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _atomic_write(md_path, render_markdown(report))
    return json_path, md_path
