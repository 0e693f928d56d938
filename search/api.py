"""The one call behind `recipekit search`, and the table it prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import SearchError
from .ingredients import split_terms
from .query import Hit, SearchEngine, _columns

__all__ = ["list_classes", "load_recipe_file", "render_hits", "search"]


def list_classes(run: str | os.PathLike, index: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """(class name, indexed recipes) of every class in the index of ``run`` (default ``RUN/index``),
    by class id, background excluded: the names ``--class`` accepts. Reads the index only (no model)."""
    from .index import read_meta, resolve_run

    _, default_index = resolve_run(run)
    index_dir = Path(index) if index is not None else default_index
    read_meta(index_dir)  # a clear error when the index is missing or foreign
    table = _columns(index_dir / "recipes.parquet", ("class_id", "class_name"))
    counts: dict[tuple[int, str], int] = {}
    for c, n in zip(table["class_id"], table["class_name"]):
        if c != 0:
            counts[(c, n)] = counts.get((c, n), 0) + 1
    return [(n, counts[(c, n)]) for c, n in sorted(counts)]


def load_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """A layer1-style recipe from a JSON file: one object, or a list holding exactly one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchError(f"{path}: no such recipe file") from None
    except UnicodeDecodeError:
        raise SearchError(f"{path}: not a UTF-8 JSON file") from None
    except json.JSONDecodeError as exc:
        raise SearchError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, Mapping):
        raise SearchError(f"{path}: expected one recipe object {{title, ingredients, instructions}} "
                          f"(layer1.json style), not a {type(data).__name__}"
                          + (f" of {len(data)} items" if isinstance(data, list) else ""))
    return dict(data)


def search(
    run: str | os.PathLike,
    *,
    index: str | os.PathLike | None = None,
    image: Any = None,
    recipe: Mapping[str, Any] | str | os.PathLike | None = None,
    ingredients: Sequence[str] | str | None = None,
    without: Iterable[str] | str = (),
    class_name: str | None = None,
    k: int = 10,
    target: str | None = None,
    device: Any = "cpu",
    engine: SearchEngine | None = None,
    remove: Iterable[str] | str = (),
    exclude: Iterable[str] | str = (),
    partition: str | None = None,
) -> list[Hit]:
    """Exactly one of ``image`` (path, bytes, PIL image), ``recipe`` (dict or JSON file) or
    ``ingredients`` (list or ``"tomato, basil"``). ``target``: ``"recipes"`` or ``"images"``
    (default: recipes for an image, images for a recipe or ingredients). ``remove`` takes
    ingredients out of a recipe or ingredient query, ``exclude`` filters the results,
    ``without`` does both; ``partition``: ``train``, ``val``, ``test`` or ``all``."""
    given = [name for name, v in (("image", image), ("recipe", recipe), ("ingredients", ingredients)) if v is not None]
    if len(given) != 1:
        raise SearchError("give exactly one query: an image, a recipe or ingredients"
                          + (f" (got {', '.join(given)})" if given else ""))
    engine = engine or SearchEngine.open(run, index, device=device)
    if image is not None:
        if split_terms(remove):
            raise SearchError("a photo query has no ingredient to remove: use exclude to filter the results")
        return engine.by_image(image, k, target=target or "recipes", without=without, class_name=class_name,
                               exclude=exclude, partition=partition)
    if recipe is not None:
        if not isinstance(recipe, Mapping):
            recipe = load_recipe_file(recipe)
        return engine.by_recipe(recipe, k, target=target or "images", without=without, class_name=class_name,
                                remove=remove, exclude=exclude, partition=partition)
    return engine.by_ingredients(ingredients, without=without, class_name=class_name, k=k, target=target or "images",
                                 remove=remove, exclude=exclude, partition=partition)


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_hits(hits: Sequence[Hit], *, title_width: int = 48) -> str:
    """A plain-text table: rank, score, recipe id, title (and the photo for image results)."""
    if not hits:
        return "no results"
    images = any(h.kind == "image" for h in hits)
    head = ["rank", "score", "recipe id", "title"] + (["image"] if images else ["photos"])
    rows = []
    for h in hits:
        last = h.image_path or "" if h.kind == "image" else (h.image_paths[0] if h.image_paths else "-")
        if h.kind != "image" and len(h.image_paths) > 1:
            last += f" (+{len(h.image_paths) - 1})"
        rows.append([str(h.rank), f"{h.score:.4f}", h.recipe_id, _cut(h.title, title_width), last])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) if i < 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
