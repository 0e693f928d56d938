"""Import spaCy without torch.

thinc (spaCy's numeric library) imports torch whenever it is installed (the
``train`` extra), which costs every `prepare` worker process seconds and
hundreds of MB, and ``recipekit.pipeline`` must never load torch. Hiding torch
for the duration of the import makes thinc fall back to numpy; torch can still
be imported normally afterwards, and a process that imported torch before keeps
it (spaCy then sees it as usual).
"""

from __future__ import annotations

import sys
from types import ModuleType

__all__ = ["import_spacy"]


def import_spacy() -> ModuleType:
    if "spacy" in sys.modules:
        return sys.modules["spacy"]
    hidden = "torch" not in sys.modules
    if hidden:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        import spacy  # deferred: heavy, and must be imported with torch hidden (above)
    finally:
        if hidden and sys.modules.get("torch", False) is None:
            del sys.modules["torch"]
    return spacy
