"""`recipekit train` (issue #5): a thin Click face over one library function."""

from __future__ import annotations

import sys

import click


@click.command("train", help="(not implemented yet: issue #5).", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train_cmd(args) -> None:
    click.echo("recipekit train: not implemented yet (issue #5).", err=True)
    sys.exit(2)
