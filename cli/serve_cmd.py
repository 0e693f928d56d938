"""`recipekit plot --tsne` and `recipekit serve`: thin Click faces over
:func:`recipekit.search.tsne.plot_tsne` and :func:`recipekit.search.server.serve`."""

from __future__ import annotations

from pathlib import Path

import click

from .options import device_option, log_options

_DATA_HELP = "Prepared folder (default: data.prepared of RUN/config.resolved.json)."


@click.command("plot")
@log_options
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--tsne", is_flag=True, help="A t-SNE map of image and recipe embeddings of the largest classes.")
@click.option("--split", default="test", show_default=True, help="Split of the prepared folder to embed.")
@click.option("--classes", type=click.IntRange(2), default=5, show_default=True, help="How many of the largest classes.")
@click.option("--per-class", type=click.IntRange(1), default=100, show_default=True, help="Pairs of each class, at most.")
@click.option("--seed", type=int, default=0, show_default=True, help="Draw of the pairs and t-SNE's random state.")
@device_option("auto", "auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The PNG (default: RUN/eval/SPLIT/tsne.png).")
def plot_cmd(run, data, tsne, split, classes, per_class, seed, device, out):
    """Plots of a trained RUN on the prepared DATA (default: the run's own). --tsne: image and
    recipe embeddings of the largest classes, each pair joined by a line (docs/web.md)."""
    if not tsne:
        raise click.UsageError("choose a plot: --tsne")
    from recipekit.search.tsne import plot_tsne

    try:
        path = plot_tsne(run, data, out, split=split, classes=classes, per_class=per_class, seed=seed, device=device)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}")


@click.command("serve")
@log_options
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0 exposes the page to your network: no authentication).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--index", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index folder of `recipekit index` (default: RUN/index, built there when missing).")
@click.option("--max-upload-mb", type=click.FloatRange(0.01), default=8.0, show_default=True,
              help="Larger photo uploads are refused (413) before they are read.")
@device_option("cpu", "Where queries are embedded: cpu, cuda, auto.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A host name the page may be opened under besides localhost and IP addresses (repeat; "
                   "'*' allows any: no protection against DNS rebinding).")
@click.option("--threads", type=click.IntRange(1), default=16, show_default=True,
              help="Worker threads answering requests.")
def serve_cmd(run, data, host, port, index, max_upload_mb, device, allowed_hosts, threads):
    """A local web page over a trained RUN: upload a photo to see the top recipes, or type
    ingredients (and what to leave out) to see dishes. Ctrl-C stops it (docs/web.md)."""
    from recipekit.search.server import serve

    try:
        serve(run, data, host=host, port=port, index=index, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
              device=device, echo=click.echo, allowed_hosts=allowed_hosts, threads=threads)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
