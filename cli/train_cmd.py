"""`recipekit train`: a thin Click face over :func:`recipekit.training.train`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import device_option, log_options


@click.command("train")
@log_options
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TOML run config (docs/training.md), or the name of a packaged example: "
                   "demo, je, pwcpp, adamine, adamine_avg, ht, ht_vit_dynamic (configs/).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optim.lr=3e-4 (repeatable; values are TOML).")
@click.option("--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default: runs/<config name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pt.")
@device_option("auto", "auto, cpu, cuda or cuda:N.")
@click.option("--stop-after", type=click.IntRange(1), default=None,
              help="Stop after this many epochs in this call (resume later with --resume).")
def train_cmd(config, overrides, run_dir, resume, device, stop_after) -> None:
    """Train an image-recipe embedder as a config describes; validate on `val` each epoch.

    Writes RUN/best.pt (the best model on validation, readable by `recipekit eval`), RUN/metrics.jsonl,
    RUN/curves.png, TensorBoard events and RUN/checkpoints/last.pt (docs/training.md). Several GPUs:

    \b
        torchrun --nproc_per_node 8 -m recipekit.cli.main train --config FILE --out RUN
    """
    from recipekit.training import train

    try:
        result = train(config, run_dir, resume=resume, device=device, overrides=list(overrides),
                       stop_after=stop_after)
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError; missing files, unreachable shard URLs
        raise click.ClickException(str(exc)) from exc
    if result.history:  # rank 0 only (the other ranks of a DDP job keep no history)
        summary = {"run_dir": str(result.run_dir), "epochs": result.epochs, "best_epoch": result.best_epoch,
                   "best": str(result.best_path) if result.best_path else None}
        if result.best_metrics:
            summary["val"] = {d: result.best_metrics[d] for d in ("image_to_recipe", "recipe_to_image")}
        click.echo(json.dumps(summary, indent=2))
