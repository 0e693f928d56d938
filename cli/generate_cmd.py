"""`recipekit generate`: photos generated for one recipe by a run's generator (ACME, R2GAN, TNLBT)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import device_option, log_options


@click.command("generate")
@log_options
@click.argument("run", metavar="RUN_OR_CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--recipe", "recipe", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A layer1-style recipe: a JSON object with title, ingredients, instructions.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The PNG to write (the K photos side by side).")
@click.option("--n", "n", type=click.IntRange(1, 64), default=4, show_default=True, help="Photos to generate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generator's noise.")
@device_option("auto", "auto, cpu, cuda or cuda:N.")
def generate_cmd(run, recipe, out, n, seed, device):
    """Generate N photos for one recipe with the generator of a run (its best.pt)."""
    from recipekit.evaluation.generation import generate

    try:
        path = generate(run, recipe, out, n=n, seed=seed, device=device)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path} ({n} photos)")
