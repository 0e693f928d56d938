"""The torch side of search: embedding the corpus at index time and the queries at search time.

Images, indexed or queried, go through the eval loader's path: JPEG bytes (a query photo is
first made upright RGB at the shards' size and re-encoded like a shard photo) ->
:class:`~recipekit.loaders.images.ImageDecoder` (resize, centre crop) -> the embedder's
normalisation -> the image tower. Recipes are tokenised with the model's vocabulary and
limits (read from ``recipes.lmdb`` when it was built with them, as
:func:`~recipekit.evaluation.embed.embed_split` does), and the recipe tower also returns its
component vectors (title / ingredients / instructions), whose train-set means stand in for
what an ingredient query lacks (AdaMine's ingredient-to-image task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from recipekit.core.layout import Prepared
from recipekit.core.limits import TextLimits

from .corpus import read_member
from .errors import SearchError

__all__ = ["embed_images", "embed_recipes", "embed_recipe_query", "generate_png", "image_tensor"]


def _decoder(model):
    from recipekit.loaders.images import ImageDecoder

    return ImageDecoder("auto", train=False, size=model.image_preprocessing.size)


def _normalised(model, pixels: torch.Tensor) -> torch.Tensor:
    from recipekit.loaders.images import normalisation_for, normalise

    mean, std = normalisation_for(model)
    return normalise(pixels, mean, std)


class _ImageRows(torch.utils.data.Dataset):
    def __init__(self, prepared: Path, rows: Sequence[Mapping[str, Any]], decoder):
        self.prepared, self.rows, self.decoder = prepared, rows, decoder

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        r = self.rows[i]
        return self.decoder(read_member(self.prepared, r["shard"], r["offset"], r["size"]))


@torch.no_grad()
def embed_images(model, prepared: Path, rows: Sequence[Mapping[str, Any]], *, device, batch_size: int,
                 num_workers: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """L2-normalised float32 [len(rows), D]: every photo of :func:`~.corpus.image_table`."""
    out = np.zeros((len(rows), model.embed_dim), dtype=np.float32)
    if not rows:
        return out
    loader = torch.utils.data.DataLoader(_ImageRows(prepared, rows, _decoder(model)), batch_size=batch_size,
                                         num_workers=num_workers, shuffle=False)
    done = 0
    for pixels in loader:
        emb = model.image_tower(_normalised(model, pixels).to(device))[0]
        out[done : done + len(pixels)] = emb.float().cpu().numpy()
        done += len(pixels)
        if progress:
            progress(len(pixels))
    return out


def _token_source(model, prepared: Path):
    """A function ids -> tokenised records: the LMDB store when it holds this model's tokens,
    else tokenising the prepared text."""
    from recipekit.loaders.wds import checked_store

    try:
        store = checked_store(Prepared(prepared).store, model.vocab, model.text_limits.astuple())
        return lambda rows: store.get_many([r["recipe_id"] for r in rows])
    except (ValueError, FileNotFoundError):
        from recipekit.pipeline.vocab import tokenise_sample

        lim = model.text_limits.astuple()
        return lambda rows: [tokenise_sample(r, model.vocab, *lim) for r in rows]


@torch.no_grad()
def embed_recipes(model, prepared: Path, table: Mapping[str, list], *, device, batch_size: int,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Recipe embeddings [N, D] of every row of :func:`~.corpus.recipe_table`, and the mean of
    each component vector over the train recipes (with how many there were)."""
    from recipekit.embedders.text import collate_recipes

    n = len(table["recipe_id"])
    out = np.zeros((n, model.embed_dim), dtype=np.float32)
    sums: dict[str, torch.Tensor] = {}
    n_train = 0
    tokens_of = _token_source(model, prepared)
    checked = False
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        rows = [{"recipe_id": table["recipe_id"][i], "title": table["title"][i],
                 "ingredient_lines": table["ingredient_lines"][i], "ingredients": table["ingredients"][i],
                 "instructions": table["instructions"][i]} for i in range(start, stop)]
        batch = {k: v.to(device) for k, v in collate_recipes(tokens_of(rows)).items()}
        res = model.recipe_tower(batch)
        if not checked:  # the ingredient query rebuilds embeddings from components: check that it can
            rebuilt = model.recipe_tower.head(torch.cat(list(res["components"].values()), dim=-1))
            if not torch.allclose(rebuilt, res["emb"], atol=1e-4):
                raise SearchError(f"the {model.config['recipe']['tower']!r} recipe tower does not build its "
                                  "embedding from its components; ingredient queries cannot be made")
            checked = True
        out[start:stop] = res["emb"].float().cpu().numpy()
        train = torch.tensor([table["partition"][i] == "train" for i in range(start, stop)], device=device)
        for name, vec in res["components"].items():
            part = vec.float()[train].sum(0)
            sums[name] = sums[name] + part if name in sums else part
        n_train += int(train.sum())
        if progress:
            progress(stop - start)
    means = {k: (v / max(n_train, 1)).cpu().numpy().astype(np.float32) for k, v in sums.items()}
    return out, means, n_train


@torch.no_grad()
def embed_recipe_query(model, recipe: Mapping[str, Any], means: Mapping[str, np.ndarray],
                       replace: Sequence[str] = ()) -> np.ndarray:
    """One layer1-style recipe -> [D]; the components named in ``replace`` are the train means."""
    from recipekit.embedders.text import collate_recipes

    dev = model.device
    batch = {k: v.to(dev) for k, v in collate_recipes([model.tokenise(recipe)]).items()}
    res = model.recipe_tower(batch)
    parts = dict(res["components"])
    for name in replace:
        if name in parts:
            parts[name] = torch.from_numpy(np.asarray(means[name])).to(dev, parts[name].dtype)[None]
    emb = model.recipe_tower.head(torch.cat(list(parts.values()), dim=-1)) if replace else res["emb"]
    return emb[0].float().cpu().numpy()


def image_tensor(model, jpeg: bytes) -> torch.Tensor:
    """Shard-like JPEG bytes -> the normalised [1, 3, S, S] input of the image tower."""
    return _normalised(model, _decoder(model)(jpeg)[None])


@torch.no_grad()
def embed_image_query(model, jpeg: bytes) -> np.ndarray:
    return model.image_tower(image_tensor(model, jpeg).to(model.device))[0][0].float().cpu().numpy()


@torch.no_grad()
def generate_png(model, recipe_vec: np.ndarray, seed: int = 0) -> bytes:
    """PNG bytes of the photo ``model.generator`` makes from one recipe embedding ``[D]``
    (:meth:`~recipekit.embedders.model.JointEmbedder.generate_from_embeddings`; the engine's
    model is in eval mode)."""
    import io

    from PIL import Image

    emb = torch.from_numpy(np.ascontiguousarray(recipe_vec, dtype=np.float32))[None].to(model.device)
    image = model.generate_from_embeddings(emb, n=1, seed=seed)[0, 0]
    pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    return out.getvalue()
