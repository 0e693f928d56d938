"""Training checkpoints (``RUN/checkpoints/last.pt``) and the best model (``RUN/best.pt``).

``last.pt`` is written at the end of every epoch, under a temporary name then renamed (a
killed run leaves the previous complete file). It holds everything a resumed run needs to
continue bit for bit: the model, the loss modules (classifier, projections, temperature),
the optimiser, the GradScaler, the LR scheduler, the number of completed epochs and
optimiser steps, the best validation result so far, the random states (Python, numpy,
torch CPU, every CUDA device, and the private generators of the losses), the loaders' next
epoch, and the resolved config. Everything is plain containers and tensors, so it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from recipekit.embedders.model import load_weights_file
from recipekit.core.io import atomic_path

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "RESUMABLE_CHANGES", "TrainingState", "atomic_save", "capture_rng", "restore_rng",
           "generator_states", "load_checkpoint", "save_training_state", "restore_training_state",
           "check_resume_config"]

FORMAT = "recipekit.train-checkpoint/1"

# Keys that may differ between a checkpoint's config and the config of the run resuming it.
RESUMABLE_CHANGES = ("train.epochs", "train.val_every", "ddp.timeout_minutes", "ddp.find_unused_parameters",
                     "data.val_batch_size", "log.progress", "log.tensorboard", "log.curves", "log.log_every",
                     "data.shards", "data.train_shards", "data.val_shards",  # the same shards, moved
                     "train.text_cache")  # the same values up to float rounding


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` under a temporary name, then renamed over ``path`` (core.io.atomic_path)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def capture_rng() -> dict[str, Any]:
    """The global random states (weights_only-loadable: tensors, ints, tuples)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    out = {
        "python": [version, list(state), gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return out


def restore_rng(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": n["bit_generator"],
        "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        "has_gauss": n["has_gauss"],
        "gauss": n["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def generator_states(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """States of the private ``torch.Generator`` of each module that has one (seeded losses)."""
    out = {}
    for name, module in modules.items():
        if module is None:
            continue
        for sub_name, sub in module.named_modules():
            gen = getattr(sub, "generator", None)
            if isinstance(gen, torch.Generator):
                out[f"{name}/{sub_name}"] = gen.get_state()
    return out


def restore_generators(modules: dict[str, torch.nn.Module], states: dict[str, torch.Tensor]) -> None:
    for name, module in modules.items():
        if module is None:
            continue
        for sub_name, sub in module.named_modules():
            gen = getattr(sub, "generator", None)
            key = f"{name}/{sub_name}"
            if isinstance(gen, torch.Generator) and key in states:
                gen.set_state(states[key])


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        blob = load_weights_file(path, map_location, what="training checkpoint")
    except ValueError as exc:  # e.g. a file cut short by a full disk or an interrupted copy
        raise ValueError(f"{exc}; resume from a copy of the run, or start it again without --resume") from None
    if blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a recipekit training checkpoint ({FORMAT})")
    return blob


@dataclass
class TrainingState:
    """The objects a checkpoint saves and restores."""

    model: torch.nn.Module
    losses: dict[str, torch.nn.Module | None]  # {"loss": ..., "recipe_loss": ... or None}
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler or None


def save_training_state(path: str | os.PathLike, state: TrainingState, info, *, epoch: int, global_step: int,
                        best: dict | None, config: dict, extra: dict | None = None) -> None:
    """Gather every rank's random states and (rank 0) write ``last.pt`` atomically."""
    mine = {"global": capture_rng(), "generators": generator_states(state.losses)}
    states = [mine]
    if info.distributed:
        states = [None] * info.world_size
        dist.all_gather_object(states, mine)
    if info.is_main:
        atomic_save({
            "format": FORMAT, "epoch": epoch, "global_step": global_step, "model": state.model.state_dict(),
            "losses": {k: m.state_dict() for k, m in state.losses.items() if m is not None},
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict() if state.scaler is not None else None, "best": best,
            "rng": states, "loader_epoch": epoch, "world_size": info.world_size, "config": config,
            "extra": extra}, path)  # extra: {"adversarial": ...} of [gan] runs


def restore_training_state(blob: dict, state: TrainingState, *, rank: int, world_size: int):
    """Load ``blob`` into ``state`` and this rank's random states; (epoch, global_step, best)."""
    state.model.load_state_dict(blob["model"])
    for name, module in state.losses.items():
        if module is not None:
            module.load_state_dict(blob["losses"][name])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.scheduler.load_state_dict(blob["scheduler"])
    if state.scaler is not None and blob.get("scaler"):
        state.scaler.load_state_dict(blob["scaler"])
    states = blob["rng"]
    if len(states) != world_size:
        log.warning(f"warning: checkpoint written by {len(states)} processes, resuming with {world_size}: the data "
                    "order and random draws will differ from an uninterrupted run")
    mine = states[rank % len(states)]
    restore_rng(mine["global"])
    restore_generators(state.losses, mine["generators"])
    return blob["epoch"], blob["global_step"], blob["best"]


def _flat(d: Mapping[str, Any]) -> dict[str, Any]:
    """{"section.key": value}; tables inside a section compare whole."""
    return {f"{section}.{k}": v for section, values in d.items() for k, v in values.items()}


def check_resume_config(saved: dict, cfg) -> None:
    """A ConfigError naming every key (outside RESUMABLE_CHANGES) where ``cfg`` differs from ``saved``."""
    from .config import ConfigError

    old, new = _flat(saved), _flat(cfg.to_dict())
    if "gan" not in saved and cfg.gan.method == "none":  # a checkpoint from before the [gan] section
        old.update({k: v for k, v in new.items() if k.startswith("gan.")})
    old.setdefault("train.select_window", 1)  # a checkpoint from before the key: one validation per score
    if "train.plugins" not in old and not cfg.train.plugins:  # a checkpoint from before train.plugins
        old["train.plugins"] = []
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(f"cannot resume: the config differs from the checkpoint's in {detail} "
                          f"(only {', '.join(RESUMABLE_CHANGES)} may change)")
