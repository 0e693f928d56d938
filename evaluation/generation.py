"""Evaluating and using a run's recipe-to-image generator (ACME, R2GAN, TNLBT runs).

:func:`generation_metrics` is the ``generation`` block that ``recipekit eval`` adds to eval.json
when the model has a generator:

- **recipe -> generated image -> recipe retrieval.** Each recipe of the split gets one generated
  photo (eval mode: the conditioning code is its mean; the noise is drawn from the protocol's
  seed), re-embedded by the run's image tower; the generated-photo embeddings are the queries
  against the split's recipe embeddings, over the same bags as the retrieval table (same sizes,
  sampling and seed): medR and R@1/5/10, mean and std over the bags. A generator that carries
  the recipe's content gives a low medR (chance is about (bag size + 1) / 2).
- **Fréchet distance on the run's own image-tower features**, ``frechet_image_tower``: the
  Fréchet distance between Gaussians fitted to the image-tower embeddings of the real photos and
  of the photos generated from the same recipes,
  ``||m_r - m_g||^2 + tr(S_r + S_g - 2 (S_r^1/2 S_g S_r^1/2)^1/2)``. It is *not* Inception FID
  (no Inception weights offline; and this tower was trained by the run itself): compare it only
  between runs that share an image tower, e.g. epochs or GAN settings of one method.

:func:`generate` writes K generated photos for one recipe (``recipekit generate``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["frechet_distance", "generation_metrics", "generated_embeddings", "generate", "check_recipe"]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` ([N, D] each;
    float64, covariances with ``N - 1``). The matrix square root goes through symmetric
    eigendecompositions, so rank-deficient covariances (N <= D) are fine."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs two [N >= 2, D] arrays of one width, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ s_b @ root_a
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)


def generated_embeddings(model, recipe_emb: np.ndarray, *, seed: int, batch_size: int = 64, device=None) -> np.ndarray:
    """Image-tower embeddings [N, D] of one photo generated from each recipe embedding (eval
    mode; noise from ``seed``, one draw per row whatever the batch size)."""
    import torch

    if device is not None:
        model.to(device)
    dev = model.device
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(len(recipe_emb), model.generator.noise_dim, generator=gen)
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(recipe_emb), batch_size):
                r = torch.from_numpy(np.ascontiguousarray(recipe_emb[i : i + batch_size])).to(dev)
                images = model.generator(r, noise[i : i + batch_size].to(dev))[0]
                out.append(model.embed_generated(images).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, model.embed_dim), np.float32)


def generation_metrics(model, emb, protocol, *, device=None, batch_size: int = 64) -> dict[str, Any]:
    """The eval.json ``generation`` block (module doc) for a split's :class:`SplitEmbeddings`."""
    from .protocol import score_protocol

    gen = generated_embeddings(model, emb.recipe, seed=protocol.seed, batch_size=batch_size, device=device)
    retrieval = []
    for entry in score_protocol(gen, emb.recipe, protocol):
        row = {k: entry[k] for k in ("requested_bag_size", "applicable", "bag_size", "n_bags") if k in entry}
        if entry.get("applicable", True):
            row["generated_image_to_recipe"] = entry["image_to_recipe"]
        if entry.get("note"):
            row["note"] = entry["note"]
        retrieval.append(row)
    g = model.generator
    return {
        "pairs": len(gen),
        "generator": {"image_size": g.image_size, "cond_dim": g.cond_dim, "noise_dim": g.noise_dim},
        "noise": f"one N(0, I) draw per recipe from seed {protocol.seed}; conditioning code = its mean (eval mode)",
        "retrieval": retrieval,
        "frechet_image_tower": frechet_distance(emb.image, gen),
        "frechet_features": f"the run's own L2-normalised image-tower embeddings ({gen.shape[1]}-d) of the split's "
                            "real photos and of photos generated from the same recipes; not Inception FID",
    }


def check_recipe(recipe: Any, source: str) -> dict[str, Any]:
    """A layer1-style recipe dict (``title``, ``ingredients``, ``instructions``), or a
    ValueError of one line naming ``source``."""
    if not isinstance(recipe, Mapping):
        raise ValueError(f"{source}: expected a JSON object with title, ingredients, instructions")
    ingredients = recipe.get("ingredients")
    if not isinstance(ingredients, list) or not any(
            (it.get("text") if isinstance(it, Mapping) else it) for it in ingredients):
        raise ValueError(f"{source}: the recipe has no ingredients (a list of {{\"text\": ...}} objects)")
    for key in ("instructions",):
        if key in recipe and not isinstance(recipe[key], list):
            raise ValueError(f"{source}: {key} must be a list")
    return {"title": str(recipe.get("title") or ""),
            "ingredients": [it if isinstance(it, Mapping) else {"text": str(it)} for it in ingredients],
            "instructions": [it if isinstance(it, Mapping) else {"text": str(it)}
                             for it in recipe.get("instructions") or []]}


def generate(run: str | os.PathLike, recipe: str | os.PathLike | Mapping[str, Any], out: str | os.PathLike, *,
             n: int = 4, seed: int = 0, device: Any = "auto") -> Path:
    """Write ``n`` photos generated for one recipe as one PNG row (``out``; written under a
    temporary name then renamed). ``run``: a run folder (its ``best.pt``) or an embedder file;
    ``recipe``: a JSON file (or dict) with ``title``, ``ingredients``, ``instructions``."""
    from torchvision.utils import save_image

    from recipekit.embedders import load_embedder
    from recipekit.pipeline.stagekit import atomic_path

    from .embed import resolve_device

    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    run = Path(run)
    from recipekit.embedders.modelfile import is_model_folder

    checkpoint = run / "best.pt" if run.is_dir() and not is_model_folder(run) else run
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no such model (a run folder of `recipekit train` or a .pt file)")
    if isinstance(recipe, Mapping):
        data, source = recipe, "<recipe>"
    else:
        source = str(recipe)
        try:
            data = json.loads(Path(recipe).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{source}: no such recipe file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
    clean = check_recipe(data, source)
    try:
        model = load_embedder(checkpoint)
    except Exception as exc:
        raise ValueError(f"{checkpoint}: not a readable recipekit embedder file ({exc})") from exc
    if model.generator is None:
        raise ValueError(f"{checkpoint}: this model has no generator (train an ACME, R2GAN or TNLBT config)")
    images = model.generate_images([clean], n=n, seed=seed, device=resolve_device(device))[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_image(images, tmp, nrow=n, padding=2, format="png")
    return out
