"""recipekit.losses: retrieval losses from the Recipe1M literature (see issue 4).

``create_loss(name, **kwargs)`` / ``list_losses()``; classes :class:`PairwiseLoss`,
:class:`TripletLoss`, :class:`AdaMineLoss`, :class:`InfoNCELoss`, :class:`HTRecipeLoss`;
the margin schedule :class:`DynamicMargin`. Needs torch (``pip install recipekit[train]``);
names are imported lazily.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "list_losses": "registry",
    "create_loss": "registry",
    "DynamicMargin": "common",
    "cosine_distance": "common",
    "PairwiseLoss": "pairwise",
    "TripletLoss": "triplet",
    "AdaMineLoss": "triplet",
    "InfoNCELoss": "infonce",
    "HTRecipeLoss": "ht_recipe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise ImportError("recipekit.losses needs torch: pip install 'recipekit[train]'") from exc
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
