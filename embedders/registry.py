"""Registry of embedder configs: JSON files shipped in ``recipekit/embedders/configs``.

A config has ``name``, ``description``, ``source``, ``embed_dim`` and three sections:
``image`` (keyword arguments of :class:`~recipekit.embedders.image.ImageTower`), ``recipe``
(``tower``: a registered recipe tower, ``je`` | ``ht`` | ``minilm`` built in, plus its options and the
tokenisation limits ``max_ingredients``, ``max_instructions``, ``max_tokens``) and
``matching`` (null, or keyword arguments of :class:`~recipekit.embedders.matching.MatchingHead`),
and optionally ``generator`` (absent/null, or keyword arguments of
:class:`~recipekit.embedders.generator.RecipeImageGenerator`: the recipe-to-image generator of
ACME / R2GAN / TNLBT, ``generator={}`` for its defaults).

Extending (a user's own module, no edit of recipekit):

* ``@register_recipe_tower(name)`` registers a recipe-tower builder (a class or a function
  returning an ``nn.Module``) under the name a config's ``recipe.tower`` gives. Its signature
  declares what it takes: keyword-only ``embed_dim``, ``vocab`` (the prepared
  :class:`Vocabulary`) and ``embedding_matrix`` (word2vec vectors, or None) are supplied by
  :class:`~recipekit.embedders.model.JointEmbedder` (only those declared; a required ``vocab``
  that is missing is an error); every other named parameter is a ``recipe`` option.
  ``vocabulary=`` gives a tower its own tokenizer factory (``minilm``: WordPiece);
* ``@register_embedder(name)`` registers a function returning a config (the format above)
  under an embedder name, listed and built like the shipped JSON configs.

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
import inspect
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from recipekit.core.lazy import builtin_loader

__all__ = ["list_embedders", "get_config", "create_embedder", "register_embedder", "register_recipe_tower",
           "recipe_tower_spec", "list_recipe_towers", "RecipeTowerSpec", "TOWER_RUN_KEYS"]

_SECTIONS = ("image", "recipe", "matching", "generator")
_TOP = ("embed_dim", "description", "source")

# Keys each section may take (for flat overrides and early, readable errors).
_IMAGE_KEYS = {"backbone", "image_size", "weights", "weights_path", "tanh", "freeze_backbone"}
_TOKEN_KEYS = {"max_ingredients", "max_instructions", "max_tokens"}
_MATCHING_KEYS = {"dim", "heads", "layers", "ff_dim", "dropout"}
_GENERATOR_KEYS = {"image_size", "cond_dim", "noise_dim", "channels"}  # embedders.generator.GENERATOR_KEYS


TOWER_RUN_KEYS = ("embed_dim", "vocab", "embedding_matrix")
_BUILTIN_TOWER_MODULES = ("recipe_je", "recipe_ht", "sentence")


@dataclass(frozen=True)
class RecipeTowerSpec:
    """A registered recipe tower: its builder, the run quantities it declares (name ->
    required), its option names, and an optional factory of its own vocabulary."""

    name: str
    builder: Callable[..., Any]
    needs: Mapping[str, bool] = field(default_factory=dict)
    options: frozenset = frozenset()
    vocabulary: Callable[[], Any] | None = None

    def build(self, options: Mapping[str, Any], run: Mapping[str, Any]):
        """The tower, from ``recipe`` options and the declared run quantities found in ``run``."""
        kwargs = dict(options)
        for key, required in self.needs.items():
            if run.get(key) is not None:
                kwargs[key] = run[key]
            elif required:
                what = {"vocab": "vocabulary: create_embedder(..., vocab=Vocabulary.from_file('word2vec/vocab.txt'))"}
                raise ValueError(f"the {self.name!r} recipe tower needs a {what.get(key, key)}")
        return self.builder(**kwargs)


_TOWERS: dict[str, RecipeTowerSpec] = {}
_EMBEDDERS: dict[str, Callable[[], dict[str, Any]]] = {}


def _same(a: Callable, b: Callable) -> bool:
    """The same builder defined again (its module imported again): replacing it is allowed."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def register_recipe_tower(name: str, *, options: Callable | None = None, vocabulary: Callable[[], Any] | None = None):
    """Decorator: register the decorated builder as recipe tower ``name`` (module doc).
    ``options``: for a builder taking ``**kwargs``, the class whose parameters those are."""

    def deco(builder):
        if name in _TOWERS and not _same(_TOWERS[name].builder, builder):
            raise ValueError(f"register_recipe_tower: a recipe tower named {name!r} is already registered")
        needs, opts = {}, set()
        for fn in (builder, options) if options is not None else (builder,):
            sig = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn)
            for p in sig.parameters.values():
                if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                if fn is builder and p.kind is p.KEYWORD_ONLY and p.name in TOWER_RUN_KEYS:
                    needs[p.name] = p.default is p.empty
                elif p.name not in TOWER_RUN_KEYS and (fn is builder or p.default is not p.empty):
                    opts.add(p.name)  # a required parameter of the options class is the builder's to pass
        _TOWERS[name] = RecipeTowerSpec(name, builder, needs, frozenset(opts), vocabulary)
        return builder

    return deco


_load_towers = builtin_loader(__package__, _BUILTIN_TOWER_MODULES)  # the built-ins register themselves on import


def list_recipe_towers() -> list[str]:
    """Registered recipe-tower names, sorted (imports the built-in towers: needs torch)."""
    _load_towers()
    return sorted(_TOWERS)


def recipe_tower_spec(name: str) -> RecipeTowerSpec:
    """The :class:`RecipeTowerSpec` of ``name``; unknown: a ValueError listing the choices."""
    _load_towers()
    if name not in _TOWERS:
        raise ValueError(f"unknown recipe tower {name!r}; choose from {', '.join(sorted(_TOWERS))}")
    return _TOWERS[name]


def register_embedder(name: str):
    """Decorator: register the decorated function, returning an embedder config (module doc),
    under the embedder name ``name`` (``create_embedder(name)``, a run's ``model.embedder``)."""

    def deco(fn: Callable[[], dict[str, Any]]):
        if (name in _EMBEDDERS and not _same(_EMBEDDERS[name], fn)) or name in _shipped():
            raise ValueError(f"register_embedder: an embedder named {name!r} is already registered")
        _EMBEDDERS[name] = fn
        return fn

    return deco


def _shipped() -> dict[str, dict[str, Any]]:
    out = {}
    for entry in resources.files("recipekit.embedders").joinpath("configs").iterdir():
        if entry.name.endswith(".json"):
            cfg = json.loads(entry.read_text(encoding="utf-8"))
            out[cfg["name"]] = cfg
    return out


def _configs() -> dict[str, dict[str, Any]]:
    out = _shipped()
    for name, fn in _EMBEDDERS.items():
        out[name] = {**fn(), "name": name}
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
    try:
        tower_keys = set(recipe_tower_spec(tower).options)
    except ValueError:
        tower_keys = set()  # JointEmbedder names the unknown tower
    return {
        "image": _IMAGE_KEYS,
        "recipe": tower_keys | _TOKEN_KEYS | {"tower"},
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
