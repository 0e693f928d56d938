"""`recipekit export` (a run's model as a model folder) and `recipekit convert` (released checkpoints)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import log_options


@click.command("export")
@log_options
@click.argument("run", metavar="RUN_OR_CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The model folder to write (default: RUN/model).")
def export_cmd(run, out):
    """Write the model of a run folder (its best.pt) or of a .pt embedder file as a model folder:
    model.safetensors + config.json, loadable by load_embedder and every command taking a model."""
    from recipekit.embedders.modelfile import export_run

    try:
        path = export_run(run, out)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}")


@click.group("convert")
@log_options
def convert_cmd():
    """Convert checkpoints released with the reference projects into recipekit model folders."""


@convert_cmd.command("ht")
@log_options
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backbone", type=click.Choice(["resnet50", "vit"]), required=True,
              help="The image backbone of the checkpoint (H-T's r50_ssl: resnet50, vit_ssl: vit).")
@click.option("--vocab", "vocab", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="H-T's vocabulary as text, one token a line in id order (<pad>, <start>, <end>, ..., <unk>); "
                   "vocab.pkl is a pickle and is not read (docs/models.md).")
@click.option("--heads", type=click.IntRange(1), default=4, show_default=True,
              help="Attention heads of the recipe transformers (args.pkl's tf_n_heads).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The model folder to write.")
def convert_ht_cmd(checkpoint, backbone, vocab, heads, out):
    """Convert H-T's model-best.ckpt (github.com/amzn/image-to-recipe-transformers) into a model folder
    that `recipekit eval OUT --data PREPARED` scores."""
    from recipekit.embedders.convert_ht import convert_ht

    try:
        convert_ht(checkpoint, vocab, backbone, out, heads=heads)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}")
