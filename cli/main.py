"""The `recipekit` command line. Each command parses options and calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from recipekit.pipeline.ingredient_names import EXTRACTORS
from recipekit.pipeline.prepare import STAGES, PrepareConfig, default_workers, prepare, summary_table
from recipekit.pipeline.word2vec import Word2VecParams

_W2V = Word2VecParams()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="recipekit")
def main() -> None:
    """recipekit: cross-modal recipe retrieval (Recipe1M-style data)."""


def _stages(_ctx, _param, value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in names if s not in STAGES]
    if bad:
        raise click.BadParameter(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    return names


@main.command("prepare")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--stages", callback=_stages, help=f"Comma-separated subset of: {', '.join(STAGES)} (default: all).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes/threads (default: all cores).")
@click.option("--force", is_flag=True, help="Redo the stages even when their manifests say they are up to date.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--ingredient-extractor", type=click.Choice(EXTRACTORS), default="rules", show_default=True)
@click.option("--w2v-dim", type=click.IntRange(1), default=_W2V.vector_size, show_default=True)
@click.option("--w2v-window", type=click.IntRange(1), default=_W2V.window, show_default=True)
@click.option("--w2v-min-count", type=click.IntRange(1), default=_W2V.min_count, show_default=True)
@click.option("--w2v-epochs", type=click.IntRange(1), default=_W2V.epochs, show_default=True)
@click.option("--w2v-seed", type=int, default=_W2V.seed, show_default=True)
@click.option("--class-top-bigrams", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--class-max", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--class-min-train", type=click.IntRange(0), default=None, help="Default: scaled to the corpus size.")
@click.option("--no-food101", is_flag=True, help="Do not add Food-101 category names as classes.")
def prepare_cmd(src, out, stages, workers, force, quiet, ingredient_extractor, w2v_dim, w2v_window, w2v_min_count,
                w2v_epochs, w2v_seed, class_top_bigrams, class_max, class_min_train, no_food101):
    """Prepare a Recipe1M-style corpus in SRC (layer1.json, layer2.json, [det_ingrs.json], images/) into OUT."""
    config = PrepareConfig(
        ingredient_extractor=ingredient_extractor,
        word2vec=Word2VecParams(
            vector_size=w2v_dim, window=w2v_window, min_count=w2v_min_count, epochs=w2v_epochs, seed=w2v_seed
        ),
        class_top_bigrams=class_top_bigrams,
        class_max=class_max,
        class_min_train=class_min_train,
        class_food101=not no_food101,
    )
    try:
        reports = prepare(src, out, stages=stages, config=config, workers=workers, force=force, quiet=quiet)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary_table(reports))
    click.echo(f"\nArtefacts in {out} (see docs/artefacts.md); manifests in {out / 'manifests'}")


@main.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--recipes", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of recipes with photos (0 for a text-only corpus).")
@click.option("--image-size", type=click.IntRange(16), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None, help="Image rendering processes (default: all cores).")
def demo_data_cmd(out, recipes, seed, image_fraction, image_size, workers):
    """Write the embedded synthetic demo corpus, in the Recipe1M layout, to OUT."""
    from recipekit.pipeline.demo import write_demo_corpus

    counts = write_demo_corpus(
        out, recipes=recipes, seed=seed, image_fraction=image_fraction, image_size=image_size,
        workers=workers or default_workers(), quiet=False,
    )
    click.echo(json.dumps(counts))


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-run"), show_default=True)
@click.option("--recipes", type=click.IntRange(50), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True)
def demo_cmd(out, recipes, seed, quiet):
    """The main job on the embedded demo corpus: generate it, then prepare it."""
    from recipekit.pipeline.demo_run import run_demo

    result = run_demo(out, recipes=recipes, seed=seed, quiet=quiet)
    click.echo(result.report)


def _later(issue: int, what: str):
    def command(**_kwargs):
        click.echo(f"recipekit {what}: not implemented yet (issue #{issue}).", err=True)
        sys.exit(2)

    return command


main.command("train", help="Train an embedder (not implemented yet: issue #5).",
             context_settings={"ignore_unknown_options": True})(
    click.argument("args", nargs=-1, type=click.UNPROCESSED)(_later(5, "train")))
main.command("eval", help="Evaluate a trained model (not implemented yet: issue #5).",
             context_settings={"ignore_unknown_options": True})(
    click.argument("args", nargs=-1, type=click.UNPROCESSED)(_later(5, "eval")))


if __name__ == "__main__":
    main()
