"""Loss registry: ``@register_loss(name)``, ``create_loss(name, **kwargs)``, ``list_losses()``.

A loss is registered under a name by decorating its builder: a ``torch.nn.Module`` class or a
function returning one. The builder's signature says what it takes:

* keyword-only parameters named like a run quantity (:data:`RUN_KEYS`: ``embed_dim``,
  ``num_classes``, ``rank``, ``world_size``, ``vocab``) are supplied by the trainer from the run
  (only those declared; one without a default is required, and a run that cannot supply it is a
  config error naming the key);
* every other named parameter is an option, set from the ``[loss]`` section of a run config.
  A builder that forwards ``**kwargs`` names the callable whose parameters those are with
  ``options=`` (e.g. the class it builds).

``register_loss(name, **defaults)`` also takes default option values, so one class can be
registered under several names (``adamine_ins`` is :class:`AdaMineLoss` with ``semantic=False``).
This module does not import torch; the built-in losses register themselves when their modules
are imported (the first time the registry is asked for a name).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from recipekit.core.lazy import builtin_loader

__all__ = ["register_loss", "list_losses", "create_loss", "loss_spec", "LossSpec", "RUN_KEYS"]

RUN_KEYS = ("embed_dim", "num_classes", "rank", "world_size", "vocab")
_BUILTIN_MODULES = ("pairwise", "triplet", "infonce", "ht_recipe")
_KINDS = ("pair", "recipe")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its builder, default options, and what it takes (read from the
    builder's signature once, at registration). ``needs``: the run quantities it declares
    (name -> required); ``options``: the option names it accepts; ``kind``: ``"pair"`` (an
    image-recipe loss, ``loss.name``) or ``"recipe"`` (H-T's recipe loss)."""

    name: str
    builder: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    needs: Mapping[str, bool] = field(default_factory=dict)
    options: frozenset = frozenset()
    kind: str = "pair"
    dynamic_margin: bool = False  # its ``margin`` option takes a DynamicMargin (annotated so)
    target: str = ""  # what the options are the parameters of (a class name), for messages

    def build(self, options: Mapping[str, Any], run: Mapping[str, Callable[[], Any]] | None = None):
        """Build with ``options`` (over the defaults) and the declared run quantities: ``run``
        maps a key of :data:`RUN_KEYS` to a function returning its value (called only when the
        builder declares that key). An option given as ``"auto"`` for a run key takes the run's value."""
        kwargs = {**self.defaults, **options}
        run = run or {}
        for key, value in list(kwargs.items()):
            if value == "auto" and key in RUN_KEYS:
                if key not in run:
                    raise ValueError(f"{self.name}: {key} = \"auto\" is resolved by the trainer from the run; pass a value")
                kwargs[key] = run[key]()
        for key, required in self.needs.items():
            if key in kwargs:
                continue
            if key in run:
                kwargs[key] = run[key]()
            elif required:
                raise ValueError(f"{self.name}: needs {key} (supplied by the trainer from the run; pass it when "
                                 "building the loss yourself)")
        return self.builder(**kwargs)


_REGISTRY: dict[str, LossSpec] = {}


def _params(fn: Callable) -> tuple[dict[str, bool], set[str], bool, bool]:
    """(run needs, option names, takes **kwargs, margin annotated as a DynamicMargin)."""
    sig = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn)
    needs, options, var_kw, dynamic = {}, set(), False, False
    for p in sig.parameters.values():
        if p.name == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.KEYWORD_ONLY and p.name in RUN_KEYS:
            needs[p.name] = p.default is p.empty
        else:
            options.add(p.name)
            if p.name == "margin" and "DynamicMargin" in str(p.annotation):
                dynamic = True
    return needs, options, var_kw, dynamic


def _same(a: Callable, b: Callable) -> bool:
    """The same builder defined again (its module imported again): replacing it is allowed."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def register_loss(name: str, *, options: Callable | None = None, kind: str = "pair", **defaults: Any):
    """Decorator: register the decorated builder (class or function) as loss ``name``, with
    default options ``defaults``. ``options``: for a builder taking ``**kwargs``, the callable
    (a class) whose parameters those keyword options are. Registering a taken name is an error,
    unless it is the same builder (same module and qualified name: its module imported again)."""
    if kind not in _KINDS:
        raise ValueError(f"register_loss({name!r}): kind must be one of {', '.join(_KINDS)}, got {kind!r}")

    def deco(builder):
        if name in _REGISTRY and not _same(_REGISTRY[name].builder, builder):
            raise ValueError(f"register_loss: a loss named {name!r} is already registered")
        needs, opts, var_kw, dynamic = _params(builder)
        if var_kw and options is not None:
            extra_needs, extra, _, extra_dynamic = _params(options)
            dynamic = dynamic or ("margin" not in opts and extra_dynamic)  # the builder's own margin wins
            opts |= extra | set(extra_needs)
        unknown = set(defaults) - opts - set(needs)
        if unknown and not (var_kw and options is None):
            raise ValueError(f"register_loss({name!r}): unknown default option(s) {', '.join(sorted(unknown))}")
        _REGISTRY[name] = LossSpec(name, builder, dict(defaults), needs, frozenset(opts), kind, dynamic,
                                   getattr(options or builder, "__name__", name))
        return builder

    return deco


_load_builtins = builtin_loader(__package__, _BUILTIN_MODULES)  # the built-ins register themselves on import


def list_losses(kind: str | None = None) -> list[str]:
    """Registered loss names, sorted (``kind``: only ``"pair"`` or ``"recipe"`` losses)."""
    _load_builtins()
    return sorted(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def loss_spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of ``name``; an unknown name is a ValueError listing the choices."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(list_losses())}")
    return _REGISTRY[name]


def create_loss(name: str, **kwargs: Any):
    """Build loss ``name``; ``kwargs`` override its defaults (see each class's docstring) and
    may give the run quantities it declares (``embed_dim``, ``num_classes``, ``rank``, ...).

    ``pairwise`` also takes ``margin`` (the cosine margin of ``CosineEmbeddingLoss``, 0.1),
    i.e. ``neg_margin = 1 - margin``. Every loss is a ``torch.nn.Module`` called as
    ``loss(image_emb, recipe_emb, labels=None)`` returning a scalar, except ``ht_recipe``,
    called as ``loss(components)``."""
    return loss_spec(name).build(kwargs)
