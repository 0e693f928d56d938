"""Progress bars and log messages of the library: one rule for every command.

Library code logs through ``logging.getLogger(__name__)`` (all under the ``recipekit`` logger, which
the command line sets up from ``--verbose/--quiet``) and asks :func:`bar_disabled` whether to draw a
tqdm bar: never when ``quiet`` or when the ``recipekit`` logger is set above INFO (``--quiet``), and
otherwise only when stderr is a terminal (tqdm's ``disable=None``), so logs written to a file or a
pipe carry no carriage-return bar updates.
"""

from __future__ import annotations

import logging

__all__ = ["bar_disabled"]


def bar_disabled(quiet: bool = False) -> bool | None:
    """tqdm's ``disable``: True (no bar) when ``quiet`` or when the ``recipekit`` logger was set to log only
    warnings; None (a bar when stderr is a terminal) otherwise, also when logging was never set up."""
    logger = logging.getLogger("recipekit")
    if quiet or (logger.level != logging.NOTSET and not logger.isEnabledFor(logging.INFO)):
        return True
    return None
