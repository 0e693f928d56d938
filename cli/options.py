"""Options shared by every command: ``--device`` (checked before anything runs) and ``--verbose/--quiet``."""

from __future__ import annotations

import functools
import inspect
import logging
import sys

import click

from recipekit.core.device import DEVICE_CHOICES, check_device


def _device(_ctx, _param, value: str | None) -> str | None:
    if value is None:
        return value
    try:
        return check_device(value)
    except ValueError as exc:
        raise click.ClickException(f"--device: {exc}") from None


def device_option(default: str = "auto", help: str = f"{DEVICE_CHOICES}."):  # noqa: A002  (click's name)
    """``--device``, validated by :func:`recipekit.core.device.check_device` (one-line errors)."""
    return click.option("--device", default=default, show_default=True, callback=_device, help=help)


LOG_FORMAT = "%(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (not when the handler was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """The ``recipekit`` logger to stderr: INFO by default, DEBUG with ``--verbose``, WARNING with ``--quiet``
    (which also turns the progress bars off: :func:`recipekit.pipeline.progress.bar_disabled`)."""
    if verbose and quiet:
        raise click.UsageError("--verbose and --quiet contradict each other: give one")
    logger = logging.getLogger("recipekit")
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for handler in list(logger.handlers):
        if getattr(handler, "_recipekit_cli", False):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._recipekit_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


def log_options(f):
    """``--verbose/-v`` and ``--quiet/-q`` on a command: logging is set up before it runs; a command
    function with a ``quiet`` parameter also receives the flag (to turn its progress bars off)."""
    wants_quiet = "quiet" in inspect.signature(f).parameters

    @functools.wraps(f)
    def wrapper(*args, verbose: bool = False, quiet: bool = False, **kwargs):
        setup_logging(verbose=verbose, quiet=quiet)
        if wants_quiet:
            kwargs["quiet"] = quiet
        return f(*args, **kwargs)

    wrapper = click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors; no progress bars.")(wrapper)
    return click.option("--verbose", "-v", is_flag=True, help="Debug messages too.")(wrapper)
