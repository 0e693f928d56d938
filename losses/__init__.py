"""recipekit.losses: retrieval losses from the Recipe1M literature (docs/models.md).

``create_loss(name, **kwargs)`` / ``list_losses()``; ``@register_loss(name)`` adds a loss
(built-in or from a user's module; :mod:`recipekit.losses.registry` says how a builder declares
what it needs from the run), ``loss_spec(name)`` describes one; classes :class:`PairwiseLoss`,
:class:`TripletLoss`, :class:`AdaMineLoss`, :class:`InfoNCELoss`, :class:`HTRecipeLoss`;
the margin schedule :class:`DynamicMargin`. Needs torch (``pip install recipekit[train]``);
names are imported lazily.
"""

from __future__ import annotations

from recipekit.core.lazy import lazy_exports

_EXPORTS = {
    "list_losses": "registry",
    "create_loss": "registry",
    "register_loss": "registry",
    "loss_spec": "registry",
    "LossSpec": "registry",
    "RUN_KEYS": "registry",
    "DynamicMargin": "common",
    "cosine_distance": "common",
    "PairwiseLoss": "pairwise",
    "TripletLoss": "triplet",
    "AdaMineLoss": "triplet",
    "InfoNCELoss": "infonce",
    "HTRecipeLoss": "ht_recipe",
}

__all__ = sorted(_EXPORTS)

_TORCH_HINT = "recipekit.losses needs torch: pip install 'recipekit[train]'"

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, _TORCH_HINT, heavy=("torch",))
