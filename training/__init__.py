"""recipekit.training: the trainer behind ``recipekit train`` (docs/training.md).

:func:`train` (``config``, ``run_dir``, ``resume=``, ``device=``) -> :class:`TrainResult`;
:func:`load_config` / :class:`TrainConfig` read and validate TOML run configs
(docs/training.md has every key). The config module needs no torch; the rest needs
``pip install 'recipekit[train]'``. Names are imported lazily.
"""

from __future__ import annotations

from recipekit.core.lazy import lazy_exports

_EXPORTS = {
    "train": "trainer",
    "TrainResult": "trainer",
    "load_config": "config",
    "TrainConfig": "config",
    "ConfigError": "config",
    "parse_override": "config",
    "run_full_demo": "demo",
}

__all__ = sorted(_EXPORTS)

_HINT = "recipekit.training needs torch: pip install 'recipekit[train]'"

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS, _HINT, heavy=("torch", "torchvision", "webdataset"))
