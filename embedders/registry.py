"""Registry of embedder configs: JSON files shipped in ``recipekit/embedders/configs``.

A config has ``name``, ``description``, ``source``, ``embed_dim`` and three sections:
``image`` (keyword arguments of :class:`~recipekit.embedders.image.ImageTower`), ``recipe``
(``tower``: ``je`` | ``ht`` | ``minilm`` plus that tower's keyword arguments and the
tokenisation limits ``max_ingredients``, ``max_instructions``, ``max_tokens``) and
``matching`` (null, or keyword arguments of :class:`~recipekit.embedders.matching.MatchingHead`),
and optionally ``generator`` (absent/null, or keyword arguments of
:class:`~recipekit.embedders.generator.RecipeImageGenerator`: the recipe-to-image generator of
ACME / R2GAN / TNLBT, ``generator={}`` for its defaults).

``create_embedder(name, **overrides)``:

* ``vocab`` (a :class:`Vocabulary`, a word list or the path of ``vocab.txt``) and
  ``embedding_matrix`` (numpy [len(vocab), dim]) are passed to the model;
* ``image={...}``, ``recipe={...}``, ``matching={...}`` are merged into those sections
  (``matching=None`` removes the head; ``generator={}`` adds a generator, ``generator=None`` removes it);
* any other key is a top-level key (``embed_dim``) or a key of exactly one section
  (``image_size=64``, ``weights=None``, ``freeze_backbone=True``, ``hidden=32``,
  ``layers=1`` when there is no matching head); a key found in several sections (``tanh``;
  ``layers``, ``heads``... with a matching head) must be given inside its section. Unknown
  keys are an error.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["list_embedders", "get_config", "create_embedder"]

_SECTIONS = ("image", "recipe", "matching", "generator")
_TOP = ("embed_dim", "description", "source")

# Keys each section may take (for flat overrides and early, readable errors).
_IMAGE_KEYS = {"backbone", "image_size", "weights", "weights_path", "tanh", "freeze_backbone"}
_RECIPE_KEYS = {
    "je": {"word_dim", "ingredient_hidden", "sentence_dim", "instruction_hidden", "tanh", "components", "packed"},
    "ht": {"hidden", "heads", "layers", "ff_dim", "dropout", "max_len", "tanh", "components", "markers"},
    "minilm": {"hidden", "heads", "layers", "ff_dim", "dropout", "max_len", "tanh", "freeze_encoder", "components"},
}
_TOKEN_KEYS = {"max_ingredients", "max_instructions", "max_tokens"}
_MATCHING_KEYS = {"dim", "heads", "layers", "ff_dim", "dropout"}
_GENERATOR_KEYS = {"image_size", "cond_dim", "noise_dim", "channels"}  # embedders.generator.GENERATOR_KEYS


def _configs() -> dict[str, dict[str, Any]]:
    out = {}
    for entry in resources.files("recipekit.embedders").joinpath("configs").iterdir():
        if entry.name.endswith(".json"):
            cfg = json.loads(entry.read_text(encoding="utf-8"))
            out[cfg["name"]] = cfg
    return out


def list_embedders() -> list[str]:
    """Names of the shipped embedder configs, sorted."""
    return sorted(_configs())


def get_config(name: str) -> dict[str, Any]:
    """A copy of the config ``name``."""
    configs = _configs()
    if name not in configs:
        raise ValueError(f"unknown embedder {name!r}; choose from {', '.join(sorted(configs))}")
    return copy.deepcopy(configs[name])


def _section_keys(cfg: dict[str, Any]) -> dict[str, set[str]]:
    tower = cfg["recipe"].get("tower", "ht")
    return {
        "image": _IMAGE_KEYS,
        "recipe": _RECIPE_KEYS.get(tower, set()) | _TOKEN_KEYS | {"tower"},
        "matching": _MATCHING_KEYS if cfg.get("matching") else set(),
        "generator": _GENERATOR_KEYS if cfg.get("generator") is not None else set(),
    }


def _apply(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for sec in _SECTIONS:  # section dicts first: they may change the recipe tower
        if sec in overrides:
            val = overrides.pop(sec)
            if val is None:
                if sec not in ("matching", "generator"):
                    raise ValueError(f"the {sec!r} section cannot be removed")
                cfg[sec] = None
            elif not isinstance(val, dict):
                raise TypeError(f"{sec}= takes a dict of that section's keys")
            else:
                if sec == "recipe" and "tower" in val and val["tower"] != cfg["recipe"].get("tower"):
                    cfg["recipe"] = {}
                cfg[sec] = {**(cfg.get(sec) or {}), **val}
    keys = _section_keys(cfg)
    for key, value in overrides.items():
        if key in _TOP:
            cfg[key] = value
            continue
        owners = [s for s in _SECTIONS if key in keys[s]]
        if not owners:
            raise ValueError(f"unknown embedder option {key!r}")
        if len(owners) > 1:
            raise ValueError(f"option {key!r} is ambiguous ({', '.join(owners)}): pass it as {owners[0]}={{{key!r}: ...}}")
        cfg[owners[0]][key] = value
    for sec in _SECTIONS:
        bad = set(cfg.get(sec) or {}) - keys[sec]
        if bad:
            raise ValueError(f"unknown {sec} option(s) {', '.join(sorted(bad))}")
    return cfg


def create_embedder(name: str, **overrides: Any):
    """Build the registered embedder ``name`` (see the module doc for ``overrides``).

    Returns a :class:`~recipekit.embedders.model.JointEmbedder` (a ``torch.nn.Module``)."""
    from .model import JointEmbedder
    from .text import Vocabulary

    vocab = overrides.pop("vocab", None)
    matrix = overrides.pop("embedding_matrix", None)
    if isinstance(vocab, (str, Path)):
        vocab = Vocabulary.from_file(vocab)
    elif vocab is not None and not isinstance(vocab, Vocabulary):
        vocab = Vocabulary(vocab)
    cfg = _apply(get_config(name), dict(overrides))
    return JointEmbedder(cfg, vocab=vocab, embedding_matrix=matrix)
