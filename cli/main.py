"""The `recipekit` command line. Each command parses options and calls one library function."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from recipekit.pipeline.backends import BACKENDS, BackendError, TaskError
from recipekit.pipeline.ingredient_names import EXTRACTORS
from recipekit.pipeline.classes import ClassesParams
from recipekit.pipeline.prepare import STAGES, PrepareConfig, default_workers, prepare, setting_keys, summary_table
from recipekit.pipeline.shard import LAYOUTS, ShardParams
from recipekit.pipeline.store import StoreParams
from recipekit.pipeline.word2vec import PRESETS, Word2VecParams

from .options import device_option, log_options

_W2V, _CLASSES, _STORE, _SHARD = Word2VecParams(), ClassesParams(), StoreParams(), ShardParams()
# The short options of `prepare` and the STAGE.KEY each one sets (as --set does).
_SHORT_FORMS = {
    "ingredient_extractor": "ingredients.extractor",
    "w2v_dim": "word2vec.vector_size", "w2v_window": "word2vec.window", "w2v_min_count": "word2vec.min_count",
    "w2v_epochs": "word2vec.epochs", "w2v_seed": "word2vec.seed",
    "class_top_bigrams": "classes.top_bigrams", "class_max": "classes.max_classes",
    "class_min_train": "classes.min_train", "no_food101": "classes.food101",
    "store_max_ingredients": "store.max_ingredients", "store_max_instructions": "store.max_instructions",
    "store_max_tokens": "store.max_tokens",
    "shard_image_size": "shard.image_size", "shard_quality": "shard.quality", "shard_max_images": "shard.max_images",
    "shard_max_count": "shard.max_count", "shard_max_bytes": "shard.max_bytes", "shard_seed": "shard.seed",
    "shard_pixel_limit": "shard.pixel_limit", "shard_allow_external_links": "shard.allow_external_links",
    "shard_layout": "shard.layout",
    "split": "parse.split", "split_seed": "parse.split_seed", "split_ratios": "parse.split_ratios",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="recipekit")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import this module first: your own losses, towers, embedders or metrics registered with "
                   "recipekit's register_* decorators (e.g. to evaluate a run trained with train.plugins). "
                   "Repeatable.")
def main(plugins: tuple[str, ...]) -> None:
    """recipekit: cross-modal recipe retrieval (Recipe1M-style data)."""
    if plugins:
        from recipekit.training.checks import import_plugins
        from recipekit.training.config_keys import ConfigError

        try:
            import_plugins(plugins, "recipekit", key="--plugin")
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None


def _stages(_ctx, _param, value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in names if s not in STAGES]
    if bad:
        raise click.BadParameter(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    return names


@main.command("prepare")
@log_options
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--stages", callback=_stages, help=f"Comma-separated subset of: {', '.join(STAGES)} (default: all).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes/threads (default: all cores).")
@click.option("--force", is_flag=True, help="Redo the stages even when their manifests say they are up to date.")
@click.option("--backend", type=click.Choice(BACKENDS), default="pool", show_default=True,
              help="Where ingredients, store and shard run their parallel work: local processes or Ray "
                   "(same bytes either way; needs recipekit[ray]).")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="With --backend ray: join this cluster ('auto', HEAD:6379 or ray://HEAD:10001) instead of "
                   "starting a local Ray. SRC and OUT must then be on a filesystem every node mounts.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Set any stage setting (repeatable; the value is TOML, as for `train --set`), e.g. --set "
                   f"shard.max_images=3 --set parse.split=random. Keys: {', '.join(setting_keys())}. The options "
                   "below are short forms of some of them; --set is applied after them.")
@click.option("--ingredient-extractor", type=click.Choice(EXTRACTORS), default="rules", show_default=True,
              help="= --set ingredients.extractor=NAME")
@click.option("--w2v-dim", type=click.IntRange(1), default=_W2V.vector_size, show_default=True,
              help="= --set word2vec.vector_size=N")
@click.option("--w2v-window", type=click.IntRange(1), default=_W2V.window, show_default=True,
              help="= --set word2vec.window=N")
@click.option("--w2v-min-count", type=click.IntRange(1), default=_W2V.min_count, show_default=True,
              help="= --set word2vec.min_count=N")
@click.option("--w2v-epochs", type=click.IntRange(1), default=None,
              help="= --set word2vec.epochs=N. Default: the preset's (im2recipe 10, fast 5).")
@click.option("--w2v-preset", type=click.Choice(list(PRESETS)), default="im2recipe", show_default=True,
              help="word2vec: im2recipe's settings (skip-gram, hierarchical softmax, 10 epochs) or 'fast' "
                   "(CBOW, 5 negative samples, 5 epochs; docs/benchmarks.md compares them); the base of word2vec.*.")
@click.option("--w2v-seed", type=int, default=_W2V.seed, show_default=True, help="= --set word2vec.seed=N")
@click.option("--class-top-bigrams", type=click.IntRange(1), default=_CLASSES.top_bigrams, show_default=True,
              help="= --set classes.top_bigrams=N")
@click.option("--class-max", type=click.IntRange(1), default=_CLASSES.max_classes, show_default=True,
              help="= --set classes.max_classes=N")
@click.option("--class-min-train", type=click.IntRange(0), default=None,
              help="= --set classes.min_train=N. Default: scaled to the corpus size.")
@click.option("--no-food101", is_flag=True,
              help="Do not add Food-101 category names as classes (= --set classes.food101=false).")
@click.option("--store-max-ingredients", type=click.IntRange(1), default=_STORE.max_ingredients,
              show_default=True,
              help="store: ingredient lines kept per recipe in recipes.lmdb (= --set store.max_ingredients=N).")
@click.option("--store-max-instructions", type=click.IntRange(1), default=_STORE.max_instructions,
              show_default=True,
              help="store: instructions kept per recipe (= --set store.max_instructions=N).")
@click.option("--store-max-tokens", type=click.IntRange(1), default=_STORE.max_tokens, show_default=True,
              help="store: tokens kept per title, ingredient line and instruction (= --set store.max_tokens=N).")
@click.option("--shard-image-size", type=click.IntRange(16), default=_SHARD.image_size, show_default=True,
              help="shard: shorter side of the stored photos in pixels, never upscaled (= --set shard.image_size=N).")
@click.option("--shard-quality", type=click.IntRange(1, 100), default=_SHARD.quality, show_default=True,
              help="shard: JPEG quality of the stored photos (= --set shard.quality=N).")
@click.option("--shard-max-images", type=click.IntRange(1), default=_SHARD.max_images, show_default=True,
              help="shard: photos per recipe, at most (= --set shard.max_images=N).")
@click.option("--shard-max-count", type=click.IntRange(1), default=_SHARD.max_count, show_default=True,
              help="shard: samples (recipes) per shard, at most (= --set shard.max_count=N).")
@click.option("--shard-max-bytes", type=click.IntRange(1), default=_SHARD.max_bytes, show_default=True,
              help="shard: estimated bytes per shard, at most (= --set shard.max_bytes=N).")
@click.option("--shard-seed", type=int, default=_SHARD.seed, show_default=True,
              help="shard: seed of the order of recipes within a partition (= --set shard.seed=N).")
@click.option("--shard-pixel-limit", type=click.IntRange(1), default=_SHARD.pixel_limit, show_default=True,
              help="shard: photos with more pixels are quarantined as decompression bombs (= --set shard.pixel_limit=N).")
@click.option("--shard-allow-external-links", is_flag=True,
              help="shard: read photos through symlinks that lead out of SRC/images, refused by default "
                   "(= --set shard.allow_external_links=true).")
@click.option("--shard-layout", type=click.Choice(LAYOUTS), default=_SHARD.layout, show_default=True,
              help="shard: one sample per recipe ({id}.k.jpg), or one per photo ({id}_{k}.jpg/.json/.cls, "
                   "the layout open_clip, HF datasets and wids read) (= --set shard.layout=per-image).")
@click.option("--split", "split", type=click.Choice(["recipe1m", "random"]), default="recipe1m", show_default=True,
              help="parse: keep the corpus's train/val/test partitions, or re-split its image-recipe pairs at random "
                   "(seeded; recorded in manifests/parse.json) (= --set parse.split=NAME).")
@click.option("--split-seed", type=int, default=0, show_default=True,
              help="parse: seed of the random re-split (= --set parse.split_seed=N).")
@click.option("--split-ratios", type=(float, float, float), default=(0.6, 0.2, 0.2), show_default=True,
              help="parse: train, val and test fractions of the random re-split (= --set parse.split_ratios=[A,B,C]).")
def prepare_cmd(src, out, stages, workers, force, quiet, backend, ray_address, overrides, w2v_preset, **short_forms):
    """Prepare a Recipe1M-style corpus in SRC (layer1.json, layer2.json, [det_ingrs.json], images/) into OUT.

    Every stage setting is a STAGE.KEY that --set takes (docs/artefacts.md lists what each stage writes).
    """
    ctx = click.get_current_context()
    given = [(_SHORT_FORMS[name], value) for name, value in short_forms.items()
             if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]  # the options given, as --set
    given = [(key, not value if key == "classes.food101" else value) for key, value in given]  # --no-food101
    try:
        config = PrepareConfig(word2vec=Word2VecParams.preset(w2v_preset))
        reports = prepare(src, out, stages=stages, config=config, overrides=[*given, *overrides], workers=workers,
                          force=force, quiet=quiet, backend=backend, ray_address=ray_address)
    except (FileNotFoundError, ValueError, BackendError, TaskError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary_table(reports, out))
    click.echo(f"\nArtefacts in {out} (see docs/artefacts.md); manifests in {out / 'manifests'}")


@main.command("demo-data")
@log_options
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


DEMO_CONFIGS = ("demo", "demo_acme", "demo_r2gan", "demo_tnlbt")  # = recipekit.training.demo.DEMO_CONFIGS


@main.command("demo")
@log_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-run"), show_default=True)
@click.option("--recipes", type=click.IntRange(50), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option("cpu", "Where to train and evaluate: cpu, cuda, auto.")
@click.option("--config", "config", type=click.Choice(DEMO_CONFIGS), default="demo", show_default=True,
              help="The packaged CPU config to train: demo (H-T), or the GAN family's demo_acme, demo_r2gan, "
                   "demo_tnlbt.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of that training config, e.g. --set train.epochs=5.")
def demo_cmd(out, recipes, seed, device, config, overrides, quiet):
    """The main job on the embedded demo corpus: generate it, prepare it, train on CPU, evaluate.

    Prints the test-split table and the path of OUT/run/eval/test/eval.json. Without the `train`
    and `pretrained` extras it stops after `prepare` and says what to install.
    """
    from recipekit.training.demo import run_full_demo

    try:
        result = run_full_demo(out, recipes=recipes, seed=seed, quiet=quiet, device=device, overrides=list(overrides),
                               config=config)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.report)


from .eval_cmd import eval_cmd  # noqa: E402  (each command lives in its own module)
from .generate_cmd import generate_cmd  # noqa: E402
from .model_cmd import convert_cmd, export_cmd  # noqa: E402
from .serve_cmd import plot_cmd, serve_cmd  # noqa: E402
from .search_cmd import index_cmd, search_cmd  # noqa: E402
from .train_cmd import train_cmd  # noqa: E402

main.add_command(train_cmd)
main.add_command(eval_cmd)
main.add_command(plot_cmd)
main.add_command(serve_cmd)
main.add_command(index_cmd)
main.add_command(search_cmd)
main.add_command(generate_cmd)
main.add_command(export_cmd)
main.add_command(convert_cmd)


if __name__ == "__main__":
    main()
