"""Which torch device to run on.

The two functions of ``recipekit.core`` that need torch; they import it when called (the only
deferred imports of the package, so that ``import recipekit.core`` stays torch-free).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEVICE_CHOICES", "check_device", "resolve_device"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device(device: str) -> str:
    """Check a device string before anything runs: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``).

    A typo (``gpu``) or a GPU this machine does not have raises a one-line :class:`ValueError`
    that says what to pass instead; the string is returned unchanged otherwise. Every command's
    ``--device`` goes through here (and :func:`resolve_device` calls it), so the rule is one function."""
    text = str(device).strip()
    kind, _, index = text.partition(":")
    if text in ("auto", "cpu"):
        return text
    if kind not in ("cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())) or text.endswith(":"):
        raise ValueError(f"unknown device {text!r}: use {DEVICE_CHOICES}")
    import torch  # deferred, as in resolve_device

    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' was asked for but torch sees no MPS device: use --device cpu (or auto)")
        return text
    if not torch.cuda.is_available():
        raise ValueError(f"device {text!r} was asked for but torch sees no CUDA device on this machine: "
                         "use --device cpu (or auto, which picks a GPU when there is one)")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {text!r} was asked for but this machine has {torch.cuda.device_count()} "
                         f"GPU(s): use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return text


def resolve_device(device: Any = None, model: Any = None):
    """``"auto"`` -> cuda when available else cpu; None -> the model's device (cpu without one);
    anything else as ``torch.device`` takes it, a ``ValueError`` when it asks for CUDA and torch
    sees none."""
    import torch  # deferred: the rest of recipekit.core never needs torch

    if device is None:
        return model.device if model is not None else torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        check_device(device)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but torch sees no CUDA device")
    return device
