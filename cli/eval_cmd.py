"""`recipekit eval` (issue #5): a thin Click face over one library function."""

from __future__ import annotations

import sys

import click


@click.command("eval", help="(not implemented yet: issue #5).", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_cmd(args) -> None:
    click.echo("recipekit eval: not implemented yet (issue #5).", err=True)
    sys.exit(2)
