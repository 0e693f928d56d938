"""Model folders (``model.safetensors`` + ``config.json``) and how a model is named.

A model folder holds two files, the open_clip / Hugging Face convention:

* ``model.safetensors``: the state dict of a :class:`~recipekit.embedders.model.JointEmbedder`
  (tensors only: reading it cannot run code);
* ``config.json``: plain JSON with ``format`` (``recipekit.model/1``), ``embedder`` (the
  embedder config: ``embed_dim``, ``image``, ``recipe`` with its tokenisation limits,
  ``matching``, ``generator``), ``vocab`` (the word list, ids ``k + 2``; null for the
  ``minilm`` tower) and ``preprocessing`` (image size, resize, mean and std; informative, the
  loader derives them from ``embedder``).

:func:`resolve_model` turns a name into a local path: a model folder, a ``.pt`` embedder file
(:meth:`JointEmbedder.save`), a run folder of ``recipekit train`` (its ``model/`` folder, else
its ``best.pt``), or ``hf-hub:ORG/NAME[@REVISION]`` (a model folder on the Hugging Face Hub,
downloaded into the Hugging Face cache; offline, ``HF_HUB_OFFLINE=1``, it is read from the cache).

This module imports torch only inside the functions that read or write weights.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from recipekit.core.io import file_sha256
from recipekit.core.layout import MODEL_CONFIG, MODEL_WEIGHTS, Run, is_model_folder

__all__ = ["FORMAT", "WEIGHTS", "CONFIG", "HF_PREFIX", "ModelNotFoundError", "is_model_folder", "save_model_folder",
           "read_model_folder", "resolve_model", "model_digest", "export_run"]

FORMAT = "recipekit.model/1"
WEIGHTS = MODEL_WEIGHTS
CONFIG = MODEL_CONFIG
HF_PREFIX = "hf-hub:"
_HF_RE = re.compile(r"^hf-hub:([A-Za-z0-9][\w.-]*)/([\w.-]+)(?:@([\w./-]+))?$")

FORMS = ("a model folder (model.safetensors + config.json)", "a .pt embedder file", "a run folder of `recipekit train`",
         "hf-hub:ORG/NAME[@REVISION]")


class ModelNotFoundError(FileNotFoundError):
    """A model name that names no model; the message is one line listing the accepted forms."""




def save_model_folder(model, out: str | os.PathLike) -> Path:
    """Write ``model`` (a JointEmbedder) as a model folder ``out`` (built under a temporary
    name, then renamed over ``out``). Returns ``out``."""
    from safetensors.torch import save_file

    from recipekit.pipeline.stagekit import atomic_dir, package_version

    from .text import Vocabulary

    out = Path(out)
    tensors, seen = {}, set()
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if ptr is not None and ptr in seen:  # safetensors refuses shared storage: store a copy
            t = t.clone()
        seen.add(ptr)
        tensors[key] = t
    tower = model.image_tower
    config = {
        "format": FORMAT,
        "recipekit_version": package_version(),
        "embedder": model.config,
        "vocab": model.vocab.words if isinstance(model.vocab, Vocabulary) else None,
        "preprocessing": {"image_size": tower.image_size, "resize": round(tower.image_size * 256 / 224),
                          "mean": list(tower.mean), "std": list(tower.std)},
    }
    with atomic_dir(out) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def read_model_folder(path: str | os.PathLike) -> dict[str, Any]:
    """``{"config", "vocab", "state_dict"}`` of a model folder; every failure is one
    ValueError line naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, weights = path / CONFIG, path / WEIGHTS
    for p in (cfg_path, weights):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (a model folder holds {WEIGHTS} and {CONFIG})")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: not a recipekit model config (format {FORMAT})")
    embedder, vocab = cfg.get("embedder"), cfg.get("vocab")
    if not isinstance(embedder, dict) or not all(isinstance(embedder.get(k), dict) for k in ("image", "recipe")):
        raise ValueError(f"{cfg_path}: key 'embedder' must be an embedder config with 'image' and 'recipe' sections")
    if vocab is not None and not (isinstance(vocab, list) and all(isinstance(w, str) for w in vocab)):
        raise ValueError(f"{cfg_path}: key 'vocab' must be a list of words or null")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # SafetensorError: truncated header, bad offsets...
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{weights}: unreadable safetensors file (truncated or corrupt: {first})") from None
    return {"config": embedder, "vocab": vocab, "state_dict": state}


def _not_found(ref: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"{ref}: {why}; name a model as {', '.join(FORMS[:-1])} or {FORMS[-1]}")


def _hf_snapshot(ref: str, cache_dir: str | os.PathLike | None) -> Path:
    match = _HF_RE.match(ref)
    if not match:
        raise ValueError(f"{ref}: a Hugging Face model is named hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    org, name, revision = match.groups()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(f"{ref}: hf-hub models need huggingface_hub: pip install 'recipekit[train]'") from None
    try:  # HF_HUB_OFFLINE=1 (the hub's own switch) reads the local cache only
        folder = snapshot_download(f"{org}/{name}", revision=revision, cache_dir=cache_dir,
                                   allow_patterns=[WEIGHTS, CONFIG])
    except Exception as exc:  # offline and not cached, no such repo, no network...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelNotFoundError(f"{ref}: not found on the Hugging Face Hub nor in the local cache ({first})") from None
    if not is_model_folder(folder):
        raise ValueError(f"{ref}: the Hub repository has no {WEIGHTS} + {CONFIG} (not a recipekit model folder)")
    return Path(folder)


def resolve_model(ref: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local path a model name stands for (see the module doc): a model folder or a
    ``.pt`` file. ``cache_dir``: the Hugging Face cache for ``hf-hub:`` names (default: the
    hub's own, ``HF_HUB_CACHE``)."""
    text = os.fspath(ref)
    if isinstance(ref, str) and text.startswith(HF_PREFIX):
        return _hf_snapshot(text, cache_dir)
    path = Path(text)
    if path.is_dir():
        if is_model_folder(path):
            return path
        if is_model_folder(Run(path).model):
            return Run(path).model
        if Run(path).best.is_file():
            return Run(path).best
        raise _not_found(text, "a folder without model.safetensors + config.json, model/ or best.pt")
    if path.is_file():
        return path
    if isinstance(ref, str) and "/" not in text and os.sep not in text:
        from .registry import list_embedders

        if text in list_embedders():
            raise ModelNotFoundError(
                f"{text} is an embedder config, not trained weights: train it with `recipekit train` ([model] "
                f"embedder = \"{text}\"), or build it untrained with create_embedder({text!r}); load_embedder "
                f"takes {', '.join(FORMS[:-1])} or {FORMS[-1]}")
    raise _not_found(text, "no such file or folder")


def model_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a model file, or of a model folder's config.json then model.safetensors."""
    return file_sha256(path)


def export_run(run: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the model of ``run`` (a run folder: its ``best.pt``; or a ``.pt`` embedder file)
    as a model folder ``out`` (default ``RUN/model``). Returns ``out``."""
    from .model import load_embedder

    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"{run}: no such run folder or .pt file")
    source = Run(run).best if run.is_dir() else run
    if not source.is_file():
        raise FileNotFoundError(f"{source}: missing (is {run} a run folder of `recipekit train` or a .pt file?)")
    if out is None:
        if not run.is_dir():
            raise ValueError(f"{run}: give --out for the model folder of a .pt file")
        out = Run(run).model
    model = load_embedder(source, channels_last=False)
    return save_model_folder(model, out)
