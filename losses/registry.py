"""Loss registry: ``create_loss(name, **kwargs)`` and ``list_losses()``."""

from __future__ import annotations

from typing import Any

__all__ = ["list_losses", "create_loss"]

# name -> (module, class, default keyword arguments)
_LOSSES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "pairwise": ("pairwise", "PairwiseLoss", {"pos_margin": 0.0, "neg_margin": 0.9}),
    "pairwise++": ("pairwise", "PairwiseLoss", {"pos_margin": 0.3, "neg_margin": 0.9}),
    "triplet": ("triplet", "TripletLoss", {}),
    "adamine": ("triplet", "AdaMineLoss", {}),
    "adamine_ins": ("triplet", "AdaMineLoss", {"semantic": False}),
    "adamine_sem": ("triplet", "AdaMineLoss", {"instance": False}),
    "adamine_avg": ("triplet", "AdaMineLoss", {"aggregation": "mean"}),
    "adamine_ins_cls": ("triplet", "AdaMineLoss", {"semantic": False, "num_classes": "auto"}),
    "infonce": ("infonce", "InfoNCELoss", {}),
    "ht_recipe": ("ht_recipe", "HTRecipeLoss", {}),
}


def list_losses() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(_LOSSES)


def create_loss(name: str, **kwargs: Any):
    """Build loss ``name``; ``kwargs`` override its defaults (see each class's docstring).

    ``pairwise`` also takes ``margin`` (the cosine margin of ``CosineEmbeddingLoss``, 0.1),
    i.e. ``neg_margin = 1 - margin``. Every loss is a ``torch.nn.Module`` called as
    ``loss(image_emb, recipe_emb, labels=None)`` returning a scalar, except ``ht_recipe``,
    called as ``loss(components)``."""
    import importlib

    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(list_losses())}")
    module, cls, defaults = _LOSSES[name]
    if name == "pairwise" and "margin" in kwargs:
        kwargs["neg_margin"] = 1.0 - float(kwargs.pop("margin"))
    klass = getattr(importlib.import_module(f".{module}", __package__), cls)
    merged = {**defaults, **kwargs}
    if merged.get("num_classes") == "auto":
        raise ValueError(f"{name}: num_classes = \"auto\" is resolved by the trainer from classes.json; "
                         "pass the number of classes (background included)")
    return klass(**merged)
