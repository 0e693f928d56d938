"""`recipekit index` and `recipekit search`: thin Click faces over
:func:`recipekit.search.build_index` and :func:`recipekit.search.search`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import device_option, log_options


@click.command("index")
@log_options
@click.argument("run", metavar="RUN", type=click.Path(path_type=Path))
@click.argument("data", metavar="[DATA]", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index folder (default: RUN/index).")
@device_option("auto", "auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="DataLoader workers decoding photos.")
@click.option("--approximate-above", type=click.IntRange(0), default=None,
              help="Build an approximate (IVF) index for a kind with more vectors than this "
                   "(default: 80,000, the measured threshold: docs/search.md).")
def index_cmd(run, data, out, device, batch_size, workers, approximate_above, quiet):
    """Embed every recipe and every photo of the prepared data (DATA, default: the run's
    data.prepared) with the trained model of RUN and write the search index (docs/search.md)."""
    from recipekit.search import APPROXIMATE_ABOVE, SearchError, build_index, read_meta

    try:
        folder = build_index(run, data, out, device=device, batch_size=batch_size, num_workers=workers,
                             approximate_above=APPROXIMATE_ABOVE if approximate_above is None else approximate_above,
                             progress=not quiet)
    except (SearchError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    meta = read_meta(folder)
    def kind(k: str) -> str:
        entry = meta["index"][k]
        extra = (f", nprobe {entry['nprobe']} of {entry['nlist']} cells, recall@10 {entry['recall_at_10']:.3f}"
                 if entry["kind"] == "ivf" else "")
        return f"{meta['counts'][k]:,} {k} ({entry['kind']}{extra})"

    kinds = ", ".join(kind(k) for k in ("recipes", "images"))
    click.echo(f"indexed {kinds}, {meta['dim']}-d, in {meta['timing']['embed_s']:.1f} s on {meta['timing']['device']}")
    click.echo(f"wrote {folder}")


@click.command("search")
@log_options
@click.argument("run", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--index", "index", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index folder (default: RUN/index).")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Query photo: find its recipes (or, with --target images, similar photos).")
@click.option("--recipe", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Query recipe, a layer1-style JSON file: find its photos (or recipes).")
@click.option("--ingredients", default=None, help='Comma-separated ingredients, e.g. "tomato, basil".')
@click.option("--without", multiple=True, help="Ingredient(s) to leave out: --remove and --exclude both "
              "(repeat, or comma-separate).")
@click.option("--remove", multiple=True, help="Ingredient(s) taken out of the query only, results not filtered "
              "(AdaMine's removal experiment).")
@click.option("--exclude", multiple=True, help="Drop results whose recipe mentions the ingredient(s) "
              "(extracted names or raw ingredient lines).")
@click.option("--partition", default=None, help="Only recipes of this split: train, val, test (default: all).")
@click.option("--class", "class_name", default=None, help="Only dishes of this class (e.g. pizza).")
@click.option("--list-classes", is_flag=True, help="Print the class names --class accepts (and their recipes), "
              "then stop.")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results.")
@click.option("--target", type=click.Choice(["recipes", "images"]), default=None,
              help="What to return (default: recipes for --image, images for --recipe/--ingredients).")
@device_option("cpu", "cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search_cmd(run, index, image, recipe, ingredients, without, remove, exclude, partition, class_name, list_classes, k,
               target, device, as_json):
    """Search the index of RUN with a photo, a recipe or a list of ingredients (docs/search.md)."""
    from recipekit.search import SearchError, render_hits, search

    if list_classes:
        from recipekit.search.api import list_classes as classes

        try:
            found = classes(run, index)
        except (SearchError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        if as_json:
            click.echo(json.dumps([{"class": n, "recipes": c} for n, c in found], indent=2, ensure_ascii=False))
        else:
            click.echo("\n".join(f"{n}\t{c}" for n, c in found) if found else "no classes in this index")
        return
    try:
        hits = search(run, index=index, image=image, recipe=recipe, ingredients=ingredients, without=without,
                      remove=remove, exclude=exclude, partition=partition, class_name=class_name, k=k,
                      target=target, device=device)
    except (SearchError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
    else:
        click.echo(render_hits(hits))
