"""What :mod:`~recipekit.training.config` and :mod:`~recipekit.training.checks` share: the
error type and the ``[loss]`` keys the trainer owns. Both import it; neither imports the other
back (``config`` calls ``checks.validate``). No torch."""

from __future__ import annotations

__all__ = ["ConfigError", "LOSS_TRAINER_KEYS", "RESERVED_LOSS_KWARGS"]


# One error type for every config of recipekit (prepare --set and train configs alike).
from recipekit.core.overrides import ConfigError


LOSS_TRAINER_KEYS = ("name", "dynamic_margin", "recipe_weight", "recipe_margin", "matching_weight")
RESERVED_LOSS_KWARGS = ("rank", "world_size")  # set by the trainer (DDP)
