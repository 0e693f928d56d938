"""Options shared by every command: ``--device`` (checked before anything runs) and ``--verbose/--quiet``."""

from __future__ import annotations

import click

from recipekit.evaluation.embed import DEVICE_CHOICES, check_device


def _device(_ctx, _param, value: str | None) -> str | None:
    if value is None:
        return value
    try:
        return check_device(value)
    except ValueError as exc:
        raise click.ClickException(f"--device: {exc}") from None


def device_option(default: str = "auto", help: str = f"{DEVICE_CHOICES}."):  # noqa: A002  (click's name)
    """``--device``, validated by :func:`recipekit.evaluation.embed.check_device` (one-line errors)."""
    return click.option("--device", default=default, show_default=True, callback=_device, help=help)
