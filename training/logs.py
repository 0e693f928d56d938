"""What a run writes as it goes (rank 0 only): ``metrics.jsonl``, TensorBoard events, ``curves.png``.

``metrics.jsonl`` has one JSON object per epoch (keys in docs/training.md). On resume the
lines of epochs after the checkpoint are dropped (they belong to an epoch that will be run
again) and TensorBoard purges the events after the checkpoint's step.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any
from recipekit.core.io import atomic_path
from recipekit.core.layout import Run

__all__ = ["RunLogger", "curves_figure", "read_metrics", "plot_curves", "selected_epoch", "write_json",
           "write_environment"]


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_json(path: Path, obj: Any) -> None:
    """Indented, sorted JSON, written under a temporary name and renamed."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_environment(run_dir: Path, *, device, world_size: int, backend, amp: str, channels_last: bool,
                      cache_features: bool, steps_per_epoch: int, resumed_at: int | None,
                      batch: dict | None = None) -> None:
    """``RUN/environment.json``: what this call of the trainer ran on (``batch``: the batch
    arithmetic, :func:`recipekit.training.data.batch_arithmetic`)."""
    import platform
    import time

    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    write_json(Run(run_dir).environment, {
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device), "device_name": name,
        "cpu_threads": torch.get_num_threads(), "world_size": world_size, "backend": backend, "amp": amp,
        "channels_last": channels_last, "cache_features": cache_features, "steps_per_epoch": steps_per_epoch,
        "resumed_at_epoch": resumed_at, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "batch": batch})


def selected_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch best.pt holds: the last one marked ``best`` in metrics.jsonl (None: none yet)."""
    marked = [h["epoch"] for h in history if h.get("best")]
    return marked[-1] if marked else None


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Training loss and validation medR (both directions) per epoch, as a PNG (Agg backend); a dashed
    vertical line marks the selected epoch (the one in best.pt)."""
    fig = curves_figure(history)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def curves_figure(history: list[dict[str, Any]]):
    """The matplotlib Figure behind :func:`plot_curves`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_med = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for key, label in (("loss", "total"), ("loss_pair", "image-recipe"), ("loss_recipe", "recipe (H-T)")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend()
    for direction, label in (("image_to_recipe", "image→recipe"), ("recipe_to_image", "recipe→image")):
        pts = [(h["epoch"], h["val"][direction]["medR"]) for h in history if h.get("val")]
        if pts:
            ax_med.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax_med.set_xlabel("epoch")
    ax_med.set_ylabel("validation medR (lower is better)")
    best = selected_epoch(history)
    if best is not None:
        for ax in (ax_loss, ax_med):
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"selected: epoch {best} (best.pt)")
        ax_loss.legend()
    if any(h.get("val") for h in history) or best is not None:
        ax_med.legend()
    fig.tight_layout()
    return fig


class RunLogger:
    """Rank 0's writer of ``metrics.jsonl``, TensorBoard scalars and ``curves.png``.
    On other ranks (``enabled=False``) every method does nothing."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, curves: bool, resume_epoch: int = 0,
                 resume_step: int = 0):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.curves = curves and enabled
        self.metrics_path = Run(self.run_dir).metrics
        self.history: list[dict[str, Any]] = []
        self.writer = None
        if not enabled:
            return
        kept = [h for h in read_metrics(self.metrics_path) if h.get("epoch", 0) <= resume_epoch]
        self.history = kept
        with atomic_path(self.metrics_path) as tmp:  # a resumed run drops the epochs after its checkpoint
            tmp.write_text("".join(json.dumps(h) + "\n" for h in kept), encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            kwargs = {"purge_step": resume_step} if resume_step else {}
            self.writer = SummaryWriter(str(Run(self.run_dir).tensorboard), **kwargs)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                if value is not None:
                    self.writer.add_scalar(key, value, step)

    def epoch(self, record: dict[str, Any], step: int) -> None:
        """Append one epoch's record; mirror it to TensorBoard; redraw the curves."""
        if not self.enabled:
            return
        self.history.append(record)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        flat = {f"train/{k}": record[k] for k in ("loss", "loss_pair", "loss_recipe", "loss_recipe_only",
                                                 "loss_matching", "images_per_s") if record.get(k) is not None}
        flat.update({f"train/{k}": v for k, v in record.items() if k.startswith("loss_gan_") and v is not None})
        flat["train/epoch_seconds"] = record["seconds"]
        val = record.get("val")
        if val:
            for direction in ("image_to_recipe", "recipe_to_image"):
                for metric, value in val[direction].items():
                    flat[f"val/{direction}/{metric}"] = value
        self.scalars(flat, step)
        if self.writer is not None:
            self.writer.flush()
        if self.curves:
            plot_curves(self.history, Run(self.run_dir).curves)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
