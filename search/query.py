"""`recipekit search`: query an index built by :func:`~recipekit.search.index.build_index`.

:class:`SearchEngine` holds the model and the index of one run. Three queries, each returning
:class:`Hit` rows, best first (score = cosine similarity in the joint space):

* :meth:`~SearchEngine.by_image` - a photo -> recipes (``target="recipes"``, the default) or
  other photos (``"images"``);
* :meth:`~SearchEngine.by_recipe` - a layer1-style recipe -> photos (default) or recipes;
* :meth:`~SearchEngine.by_ingredients` - AdaMine's ingredient query: the ingredients as the
  recipe, the train-set mean of the other components (instructions; title unless a class is
  given, whose name is then the title) -> photos (default) or recipes.

Leaving an ingredient out is two separate choices: ``remove`` is AdaMine's removal experiment
(the ingredient is taken out of the query: its ingredient lines and the instructions that name it;
the results are not filtered), ``exclude`` is a filter (results whose recipe mentions it, in its
extracted ingredient names *or* its raw ingredient lines, are dropped; whole words, plurals
folded: ``tomato`` also drops "2 tomatoes" and ``cherry tomato``). ``without`` does both.
``class_name`` keeps only recipes of that class, ``partition`` (``train``, ``val``, ``test``;
``all`` or None: every one) only recipes of that split: AdaMine's ingredient and removal
experiments retrieve among the test images. These filters live in :mod:`.filters`.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import SearchError
from .filters import ALL_PARTITIONS, RecipeFilters, class_hint  # noqa: F401 (re-exported)
from .index import KINDS, _faiss, read_meta, resolve_run
from .ingredients import IngredientVocabulary, RecipeMentions, mentions, split_terms, without_ingredients

__all__ = ["ALL_PARTITIONS", "Hit", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "SearchEngine", "TARGETS"]

TARGETS = KINDS  # ("recipes", "images")
MAX_IMAGE_BYTES = 20 * 2**20  # an upload larger than this is refused before decoding
MAX_IMAGE_PIXELS = 50_000_000  # width x height; a larger photo is refused before decoding


@dataclass
class Hit:
    """One result. ``kind`` is ``"recipe"`` or ``"image"``; ``image_paths`` are the recipe's
    stored photos (paths relative to the corpus' ``images/`` folder, as in layer2); for an image
    hit ``image_index`` is which of them matched (read its bytes with
    :meth:`SearchEngine.image_bytes`) and ``image_path`` its path."""

    rank: int
    score: float
    recipe_id: str
    title: str
    kind: str
    image_paths: list[str] = field(default_factory=list)
    class_name: str | None = None
    image_index: int | None = None
    image_path: str | None = None
    partition: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _columns(path: Path, names: Sequence[str]) -> dict[str, list]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(names))
    return {c: table.column(c).to_pylist() for c in names}


class SearchEngine(RecipeFilters):
    """A trained model and its index. Build with :meth:`open`. Its class, partition and
    ingredient filters (and :meth:`classes`, :meth:`partitions`) come from :class:`RecipeFilters`."""

    def __init__(self, model, index_dir: Path, meta: dict[str, Any], *, max_image_bytes: int = MAX_IMAGE_BYTES,
                 max_image_pixels: int = MAX_IMAGE_PIXELS):
        self.model, self.index_dir, self.meta = model, Path(index_dir), meta
        self.prepared = Path(meta["prepared"])
        self.max_image_bytes, self.max_image_pixels = int(max_image_bytes), int(max_image_pixels)
        self.recipes = _columns(self.index_dir / "recipes.parquet", (
            "recipe_id", "partition", "title", "ingredients", "class_id", "class_name", "image_paths"))
        self.images = _columns(self.index_dir / "images.parquet", (
            "recipe_id", "recipe_row", "position", "path", "shard", "offset", "size"))
        self.vectors = {kind: np.load(self.index_dir / f"{kind}.npy", mmap_mode="r") for kind in KINDS}
        for kind in KINDS:
            if self.vectors[kind].shape != (meta["counts"][kind], meta["dim"]):
                raise SearchError(f"{self.index_dir / (kind + '.npy')}: shape {self.vectors[kind].shape} does not "
                                  f"match meta.json ({meta['counts'][kind]} x {meta['dim']}); rebuild the index")
        vocab = _columns(self.index_dir / "ingredients.parquet", ("name", "count"))
        self.ingredients = IngredientVocabulary(vocab["name"], vocab["count"])
        with np.load(self.index_dir / "components.npz") as npz:
            self.component_means = {k: npz[k] for k in npz.files}
        self._row = {rid: i for i, rid in enumerate(self.recipes["recipe_id"])}
        self._image_row = {(self.recipes["recipe_id"][r], p): j
                           for j, (r, p) in enumerate(zip(self.images["recipe_row"], self.images["position"]))}
        self._class_ids = np.asarray(self.recipes["class_id"], dtype=np.int64)
        self._partition_of = np.asarray([p or "" for p in self.recipes["partition"]], dtype=str)
        self._image_recipe = np.asarray(self.images["recipe_row"], dtype=np.int64)
        self._indexes: dict[str, Any] = {}
        self._mentions: RecipeMentions | None = None
        self._text: Any = None  # prepared recipes.parquet (raw lines, instructions, url), read on first use
        self._classes: list[tuple[int, str]] | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, run: str | os.PathLike, index: str | os.PathLike | None = None, *, device: Any = "cpu",
             max_image_bytes: int = MAX_IMAGE_BYTES, max_image_pixels: int = MAX_IMAGE_PIXELS) -> "SearchEngine":
        """The model of ``run`` (a run folder or an embedder file) and its index (default
        ``RUN/index``). The index must have been built with this very checkpoint (SHA-256 in
        meta.json), else :class:`SearchError`."""
        from recipekit.embedders import load_embedder
        from recipekit.core.device import resolve_device
        from recipekit.core.io import file_sha256

        _faiss()
        checkpoint, default_index = resolve_run(run)
        index_dir = Path(index) if index is not None else default_index
        meta = read_meta(index_dir)
        digest = file_sha256(checkpoint)
        built = meta["checkpoint"]["sha256"]
        if digest != built:
            raise SearchError(
                f"index/model mismatch: {index_dir} was built with checkpoint {meta['checkpoint']['path']} "
                f"(sha256 {built[:12]}...), not {checkpoint} (sha256 {digest[:12]}...); "
                f"rebuild it with `recipekit index {run}`")
        try:
            model = load_embedder(checkpoint)
        except ValueError as exc:  # unreadable, truncated, or not plain weights: one line, no traceback
            raise SearchError(str(exc)) from None
        if model.embed_dim != meta["dim"]:
            raise SearchError(f"index/model mismatch: {index_dir} holds {meta['dim']}-d vectors, "
                              f"{checkpoint} embeds in {model.embed_dim} dimensions")
        model.to(resolve_device(device)).eval()
        return cls(model, index_dir, meta, max_image_bytes=max_image_bytes, max_image_pixels=max_image_pixels)

    # -- what the index knows --------------------------------------------------------------
    @property
    def has_generator(self) -> bool:
        """Whether the model makes photos (``[gan]`` runs): :meth:`generated_photo`."""
        return getattr(self.model, "generator", None) is not None

    def __len__(self) -> int:
        return len(self.recipes["recipe_id"])

    def known_ingredient(self, name: str) -> str | None:
        """The canonical ingredient name ``name`` stands for in this index, or None."""
        return self.ingredients.canonical(name)

    def image_bytes(self, recipe_id: str, i: int = 0) -> bytes:
        """JPEG bytes of photo ``i`` (``image_index``) of a recipe, read from its shard."""
        from .corpus import read_member

        j = self._image_row.get((str(recipe_id), int(i)))
        if j is None:
            raise SearchError(f"no photo {i} of recipe {recipe_id!r} in this index")
        return read_member(self.prepared, self.images["shard"][j], self.images["offset"][j], self.images["size"][j])

    # -- queries ---------------------------------------------------------------------------
    def by_image(self, image: Any, k: int = 10, *, target: str = "recipes", without: Iterable[str] | str = (),
                 class_name: str | None = None, exclude: Iterable[str] | str = (),
                 partition: str | None = None) -> list[Hit]:
        """Recipes (or photos) for a photo: a path, bytes or a PIL image. A photo has no
        ingredient to remove: ``without`` is ``exclude``, a filter."""
        from .embedding import embed_image_query

        mask = self._mask(class_name, self._excluded(without, exclude), partition)
        return self._search(embed_image_query(self.model, self._jpeg(image)), target, k, mask)

    def by_recipe(self, recipe: Mapping[str, Any], k: int = 10, *, target: str = "images",
                  without: Iterable[str] | str = (), class_name: str | None = None, remove: Iterable[str] | str = (),
                  exclude: Iterable[str] | str = (), partition: str | None = None) -> list[Hit]:
        """Photos (or recipes) for a layer1-style recipe ``{title, ingredients: [{text}],
        instructions: [{text}]}``; ``remove`` takes ingredients out of it (lines and
        instructions), ``exclude`` filters the results, ``without`` does both."""
        from .embedding import embed_recipe_query

        removed, excluded = self._excluded(without, remove), self._excluded(without, exclude)
        query = without_ingredients(_layer1(recipe), removed)
        if not (query["title"].strip() or query["ingredients"] or query["instructions"]):
            raise SearchError("empty query: the recipe has no title, ingredients or instructions"
                              + (" left after removing " + ", ".join(removed) if removed else ""))
        query["ingredients"] = self._named(query["ingredients"])
        vec = embed_recipe_query(self.model, query, self.component_means)
        return self._search(vec, target, k, self._mask(class_name, excluded, partition))

    def by_ingredients(self, ingredients: Sequence[str] | str, *, without: Iterable[str] | str = (),
                       class_name: str | None = None, k: int = 10, target: str = "images",
                       remove: Iterable[str] | str = (), exclude: Iterable[str] | str = (),
                       partition: str | None = None) -> list[Hit]:
        """AdaMine's ingredient query: photos (or recipes) of dishes with ``ingredients``.
        ``remove``: names taken out of the query only (asked-for ingredients that mention one
        are dropped; results unfiltered); ``exclude``: results whose recipe mentions one are
        dropped; ``without``: both."""
        terms = split_terms(ingredients)
        if not terms:
            raise SearchError("empty query: give at least one ingredient")
        removed, excluded = self._excluded(without, remove), self._excluded(without, exclude)
        vec = self._ingredient_vector(terms, removed, class_name)
        return self._search(vec, target, k, self._mask(class_name, excluded, partition))

    def generated_photo(self, ingredients: Sequence[str] | str, *, without: Iterable[str] | str = (),
                        remove: Iterable[str] | str = (), class_name: str | None = None, seed: int = 0) -> bytes:
        """A PNG of the photo the model's generator (``[gan]`` runs: ACME, R2GAN, TNLBT) makes
        from the embedding :meth:`by_ingredients` searches with for the same query (eval mode,
        noise drawn from ``seed``). :class:`SearchError` when the model has no generator."""
        from .embedding import generate_png

        if not self.has_generator:
            raise SearchError("this model has no generator: only [gan] runs (ACME, R2GAN, TNLBT) make photos")
        terms = split_terms(ingredients)
        if not terms:
            raise SearchError("empty query: give at least one ingredient")
        return generate_png(self.model, self._ingredient_vector(terms, self._excluded(without, remove), class_name),
                            seed)

    def _ingredient_vector(self, terms: list[str], removed: list[str], class_name: str | None) -> np.ndarray:
        """AdaMine's ingredient query as a recipe embedding: the asked-for ingredients (less the
        removed ones), the class name as title (else the train mean), the train-mean instructions."""
        from .embedding import embed_recipe_query

        names = self.ingredients.require_all(terms)
        names = [n for n in dict.fromkeys(names) if not any(mentions([n], x)[0] for x in removed)]
        if not names:
            raise SearchError(f"empty query: every ingredient asked for is also removed ({', '.join(removed)})")
        cls = self._class(class_name)
        recipe = {"title": cls[1] if cls else "", "ingredients": [{"text": n, "name": n} for n in names],
                  "instructions": []}
        replace = ["instructions"] + ([] if cls else ["title"])
        return embed_recipe_query(self.model, recipe, self.component_means, replace)

    # -- internals -------------------------------------------------------------------------
    def _text_table(self):
        """The prepared ``recipes.parquet`` (raw ingredient lines, instructions, url), row for row
        the index's recipes; kept as an Arrow table (columns, not Python objects)."""
        if self._text is None:
            import pyarrow.parquet as pq

            path = self.prepared / "recipes.parquet"
            if not path.is_file():
                raise SearchError(f"{path}: missing; the index was built on {self.prepared} (was it moved?)")
            columns = [c for c in ("id", "ingredients", "instructions", "url") if c in pq.read_schema(path).names]
            table = pq.read_table(path, columns=columns)
            if table.column("id").to_pylist() != self.recipes["recipe_id"]:
                raise SearchError(f"{path}: its recipes are not the ones of the index {self.index_dir}; "
                                  f"rebuild it with `recipekit index`")
            self._text = table
        return self._text

    def recipe(self, recipe_id: str) -> dict[str, Any]:
        """One recipe as the corpus has it: ``recipe_id, title, partition, class_name,
        ingredients`` (the raw lines), ``instructions, url`` (None when the corpus has none)
        ``image_paths`` and ``image_positions`` (its stored photos: ``image_bytes(recipe_id, position)``)."""
        row = self._row.get(str(recipe_id))
        if row is None:
            raise SearchError(f"no recipe {recipe_id!r} in this index")
        text = self._text_table().slice(row, 1).to_pylist()[0]
        r = self.recipes
        return {"recipe_id": r["recipe_id"][row], "title": r["title"][row], "partition": r["partition"][row],
                "class_name": r["class_name"][row], "ingredients": list(text.get("ingredients") or []),
                "instructions": list(text.get("instructions") or []), "url": text.get("url") or None,
                "image_paths": list(r["image_paths"][row] or []),
                "image_positions": [int(self.images["position"][j]) for j in np.flatnonzero(self._image_recipe == row)]}

    def _named(self, items: list[Any]) -> list[dict[str, str]]:
        """Ingredient lines with their canonical names (as the prepared corpus has them)."""
        from recipekit.pipeline.ingredient_names import extract_name

        out = []
        for item in items:
            text = item["text"] if isinstance(item, Mapping) else str(item)
            name = extract_name(text) if text.strip() else None
            out.append({"text": text, "name": name} if name and name in self.ingredients else {"text": text})
        return out

    def _jpeg(self, image: Any) -> bytes:
        from recipekit.pipeline.imageio import ImageRejected, encode_jpeg, open_rgb

        size = int(self.meta.get("image_size") or 256)
        what = "uploaded image"
        if isinstance(image, (str, os.PathLike)):
            what = str(image)
            path = Path(image)
            if not path.is_file():
                raise SearchError(f"{path}: no such image file")
            if path.stat().st_size > self.max_image_bytes:
                raise SearchError(f"{path}: image too large ({path.stat().st_size:,} bytes > limit "
                                  f"{self.max_image_bytes:,})")
            image = path.read_bytes()
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            w, h = image.size
            if w * h > self.max_image_pixels:
                raise SearchError(f"{what}: image too large ({w}x{h} = {w * h:,} pixels > limit {self.max_image_pixels:,})")
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="PNG")
            image = buf.getvalue()
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise SearchError(f"an image query must be a path, bytes or a PIL image, not {type(image).__name__}")
        image = bytes(image)
        if not image:
            raise SearchError(f"{what}: empty file, not an image")
        if len(image) > self.max_image_bytes:
            raise SearchError(f"{what}: image too large ({len(image):,} bytes > limit {self.max_image_bytes:,})")
        try:
            rgb, _, _ = open_rgb(image, image_size=size, pixel_limit=self.max_image_pixels)
        except ImageRejected as exc:
            reason = str(exc)
            if reason.startswith("decompression bomb"):
                raise SearchError(f"{what}: image too large ({reason.split(': ', 1)[-1]})") from None
            raise SearchError(f"{what}: not a usable image ({reason})") from None
        return encode_jpeg(rgb)

    def _index(self, kind: str):
        if kind not in self._indexes:
            faiss = _faiss()
            entry = self.meta["index"][kind]
            if entry.get("file"):
                index = faiss.read_index(str(self.index_dir / entry["file"]))
                index.nprobe = int(entry.get("nprobe", 32))
            else:
                index = faiss.IndexFlatIP(int(self.meta["dim"]))
                if len(self.vectors[kind]):
                    index.add(np.ascontiguousarray(self.vectors[kind], dtype=np.float32))
            self._indexes[kind] = index
        return self._indexes[kind]

    def _search(self, vec: np.ndarray, target: str, k: int, mask: np.ndarray | None) -> list[Hit]:
        if target not in TARGETS:
            raise SearchError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
        if int(k) < 1:
            raise SearchError(f"k must be at least 1, not {k}")
        k = int(k)
        vectors = self.vectors[target]
        n = len(vectors)
        if mask is not None and target == "images":
            mask = mask[self._image_recipe]
        q = np.array(vec, dtype=np.float32, copy=True).reshape(1, -1)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        if n == 0 or (mask is not None and not mask.any()):
            return []
        if mask is None:
            scores, rows = self._index(target).search(q, min(k, n))
            found = [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]
        elif self.meta["index"][target]["kind"] == "exact" or mask.sum() <= self.meta["approximate_above"]:
            # few enough allowed rows (a class, a rare filter) to score them all exactly
            found = _exact(vectors, q[0], np.flatnonzero(mask), k)
        else:
            found, fetch = [], 4 * k
            while True:
                scores, rows = self._index(target).search(q, min(fetch, n))
                found = [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0 and mask[r]][:k]
                if len(found) >= k or fetch >= n:
                    break
                fetch *= 4
            if len(found) < min(k, int(mask.sum())):  # a selective filter: score its rows exactly
                found = _exact(vectors, q[0], np.flatnonzero(mask), k)
        return [self._hit(rank, row, score, target) for rank, (row, score) in enumerate(found, start=1)]

    def _hit(self, rank: int, row: int, score: float, target: str) -> Hit:
        rec = row if target == "recipes" else int(self._image_recipe[row])
        r = self.recipes
        hit = Hit(rank=rank, score=round(score, 6), recipe_id=r["recipe_id"][rec], title=r["title"][rec],
                  kind="recipe" if target == "recipes" else "image", image_paths=list(r["image_paths"][rec] or []),
                  class_name=r["class_name"][rec], partition=r["partition"][rec])
        if target == "images":
            hit.image_index = int(self.images["position"][row])
            hit.image_path = self.images["path"][row]
        return hit


def _exact(vectors: np.ndarray, q: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[int, float]]:
    scores = np.asarray(vectors[rows], dtype=np.float32) @ q
    top = np.argsort(-scores, kind="stable")[:k] if len(scores) <= 4 * k else None
    if top is None:
        part = np.argpartition(-scores, k - 1)[:k]
        top = part[np.argsort(-scores[part], kind="stable")]
    return [(int(rows[i]), float(scores[i])) for i in top]


def _layer1(recipe: Any) -> dict[str, Any]:
    """Check a layer1-style recipe and normalise its lists to ``[{"text": ...}]``."""
    if not isinstance(recipe, Mapping):
        raise SearchError(f"a recipe query must be a JSON object (layer1.json style), not {type(recipe).__name__}")

    def items(key: str) -> list[dict[str, str]]:
        value = recipe.get(key) or []
        if isinstance(value, str) or not isinstance(value, list):
            raise SearchError(f"recipe query: {key!r} must be a list of {{\"text\": ...}} objects or strings")
        out = []
        for i, it in enumerate(value):
            text = it.get("text") if isinstance(it, Mapping) else it
            if not isinstance(text, str):
                raise SearchError(f"recipe query: {key}[{i}] has no text")
            if text.strip():
                out.append({"text": text.strip()})
        return out

    title = recipe.get("title") or ""
    if not isinstance(title, str):
        raise SearchError("recipe query: 'title' must be a string")
    return {"title": title, "ingredients": items("ingredients"), "instructions": items("instructions")}
