"""The tokeniser's limits: ingredient lines and instructions kept per recipe, tokens per text.

One frozen :class:`TextLimits` (20 / 20 / 15 by default, im2recipe's and every recipekit
tower's) is what the store stage, the loaders, the embedders' configs and the searches cut
recipes at. It iterates as ``(max_ingredients, max_instructions, max_tokens)``, the tuple the
loaders take. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_LIMITS", "TextLimits"]


@dataclass(frozen=True)
class TextLimits:
    max_ingredients: int = 20
    max_instructions: int = 20
    max_tokens: int = 15

    def __iter__(self) -> Iterator[int]:
        return iter((self.max_ingredients, self.max_instructions, self.max_tokens))

    def astuple(self) -> tuple[int, int, int]:
        return (self.max_ingredients, self.max_instructions, self.max_tokens)

    @classmethod
    def of(cls, recipe_config: Mapping[str, Any]) -> "TextLimits":
        """The limits of a recipe tower's config (``model.config["recipe"]``); a key it does
        not set keeps its default."""
        d = cls()
        return cls(int(recipe_config.get("max_ingredients", d.max_ingredients)),
                   int(recipe_config.get("max_instructions", d.max_instructions)),
                   int(recipe_config.get("max_tokens", d.max_tokens)))

    @classmethod
    def of_model(cls, model: Any) -> "TextLimits":
        """The limits of a :class:`~recipekit.embedders.JointEmbedder` (its recipe config)."""
        return cls.of(model.config["recipe"])


DEFAULT_LIMITS = TextLimits()
