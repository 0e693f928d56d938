"""recipekit.core: what every other part shares, with no torch.

* :mod:`.layout` — :class:`Prepared` and :class:`Run`: every artefact of a prepared folder and
  of a run folder by name, and :meth:`Run.resolve` for "a run folder or a checkpoint file".
* :mod:`.io` — atomic writes (:func:`atomic_path`, :func:`atomic_dir`, :func:`write_json_atomic`)
  and file hashing (:func:`file_sha256`).
* :mod:`.device` — :func:`resolve_device` (imports torch when called, the one deferred import).
* :mod:`.lazy` — :func:`lazy_exports`, the lazy attributes of the torch-using packages.
* :mod:`.limits` — :class:`TextLimits`, the tokeniser's 20 / 20 / 15.

Nothing here imports torch, ``pipeline/`` or any other recipekit package.
"""

from .device import resolve_device
from .io import atomic_dir, atomic_path, file_digest, file_sha256, staged, write_json_atomic
from .layout import Prepared, Run, RunTarget
from .lazy import lazy_exports
from .limits import DEFAULT_LIMITS, TextLimits

__all__ = [
    "DEFAULT_LIMITS",
    "Prepared",
    "Run",
    "RunTarget",
    "TextLimits",
    "atomic_dir",
    "atomic_path",
    "file_digest",
    "file_sha256",
    "lazy_exports",
    "resolve_device",
    "staged",
    "write_json_atomic",
]
