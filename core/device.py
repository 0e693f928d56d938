"""Which torch device to run on.

The one function of ``recipekit.core`` that needs torch; it imports it when called (the only
deferred import of the package, so that ``import recipekit.core`` stays torch-free).
"""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_device"]


def resolve_device(device: Any = None, model: Any = None):
    """``"auto"`` -> cuda when available else cpu; None -> the model's device (cpu without one);
    anything else as ``torch.device`` takes it, a ``ValueError`` when it asks for CUDA and torch
    sees none."""
    import torch  # deferred: the rest of recipekit.core never needs torch

    if device is None:
        return model.device if model is not None else torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but torch sees no CUDA device")
    return device
