"""The base of every `prepare` stage's settings (:class:`StageParams`) and its checks."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["StageParams", "require", "positive_ints"]


class StageParams:
    """Base of every stage's settings: a frozen dataclass beside the stage's code, one field per
    setting (``recipekit prepare --set STAGE.FIELD=VALUE``). :meth:`manifest` is the dict recorded
    in ``manifests/<stage>.json`` and compared to decide whether the stage is up to date, so
    changing what it returns makes finished folders run the stage again."""

    def manifest(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_manifest(cls, params: dict[str, Any]):
        """The params a stage's ``run`` gets back from ``ctx.params`` (:meth:`manifest`'s dict)."""
        return cls(**params)


def require(params: StageParams, stage: str, ok: bool, key: str, what: str) -> None:
    """A one-line ValueError naming the stage and the key unless ``ok``."""
    if not ok:
        raise ValueError(f"{stage} parameter {key} must be {what}, got {getattr(params, key)!r}")


def positive_ints(params: StageParams, stage: str, *keys: str, minimum: int = 1) -> None:
    for key in keys:
        value = getattr(params, key)
        require(params, stage, isinstance(value, int) and not isinstance(value, bool) and value >= minimum, key,
                "a positive integer" if minimum == 1 else f"an integer >= {minimum}")
