"""`recipekit eval`: a thin Click face over :func:`recipekit.evaluation.evaluate`."""

from __future__ import annotations

from pathlib import Path

import click

from .options import device_option, log_options

_DEFAULTS = {"bag_size": 1000, "n_bags": 10, "bag_size_large": 10000, "n_bags_large": 5, "seed": 1234}


@click.command("eval")
@log_options
@click.argument("target", metavar="RUN_OR_CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True,
              help="Split(s) of the prepared folder to embed and score as one set of pairs: a name, a "
                   "comma-separated list (train,val) or all (every split with shards).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Prepared folder (default: data.prepared of RUN/config.resolved.json).")
@click.option("--shards", default=None, metavar="LOCATION",
              help="Read the split's shards from LOCATION instead of PREPARED/shards/SPLIT: a copy of "
                   "PREPARED/shards (holding SPLIT/), a split folder, a brace pattern or pipe:CMD; local or any "
                   "fsspec URL (https://, s3:// with s3fs). Default: the run's data.shards, if any.")
@click.option("--bag-size", type=click.IntRange(1), default=_DEFAULTS["bag_size"], show_default=True)
@click.option("--bags", "n_bags", type=click.IntRange(1), default=_DEFAULTS["n_bags"], show_default=True,
              help="Number of bags of --bag-size.")
@click.option("--bag-size-large", type=click.IntRange(2), default=_DEFAULTS["bag_size_large"], show_default=True)
@click.option("--bags-large", "n_bags_large", type=click.IntRange(0), default=_DEFAULTS["n_bags_large"],
              show_default=True, help="Number of bags of --bag-size-large (0: skip them).")
@click.option("--sampling", type=click.Choice(["independent", "chunks"]), default="independent", show_default=True,
              help="independent draws per bag (im2recipe, H-T) or disjoint chunks of one shuffle (AdaMine).")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True,
              help="Seed of the bags (and of --image-pick random).")
@click.option("--image-pick", type=click.Choice(["first", "random"]), default="first", show_default=True,
              help="Which photo of each recipe is embedded.")
@device_option("auto", "auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="DataLoader workers.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Embed only the first N pairs (smoke tests).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: RUN/eval/SPLIT, or FOLDER/eval/STEM/SPLIT beside a checkpoint file; "
                   "for a --data other than the run's own, RUN/eval/CORPUS-FINGERPRINT8/SPLIT). A result of "
                   "another corpus is never replaced.")
@click.option("--plot", is_flag=True, help="Also write retrievals.png (top-5 retrievals of a few queries).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="A registered metric to score, in order (repeatable; default: medR, recall). "
                   "Your own: `recipekit --plugin MODULE eval --metric NAME ...`.")
def eval_cmd(target, split, data, shards, bag_size, n_bags, bag_size_large, n_bags_large, sampling, seed, image_pick,
             device, batch_size, workers, limit, out, plot, metrics):
    """Score a trained model on a split: medR and R@1/5/10 in both directions, over bags of
    1k and 10k pairs (mean ± std), written to eval.json and eval.md (docs/evaluation.md).

    RUN_OR_CHECKPOINT is a run folder of `recipekit train` (its best.pt), a model folder
    (model.safetensors + config.json: RUN/model, `recipekit export`, `recipekit convert`), an
    embedder file (.pt), or hf-hub:ORG/NAME[@REVISION]; all but a run folder need --data unless a
    config.resolved.json sits beside them (docs/models.md)."""
    from recipekit.evaluation import DEFAULT_METRICS, EvalProtocol, evaluate

    try:
        protocol = EvalProtocol(bag_size=bag_size, n_bags=n_bags, bag_size_large=bag_size_large,
                                n_bags_large=n_bags_large, sampling=sampling, seed=seed, image_pick=image_pick,
                                metrics=metrics or DEFAULT_METRICS)
        result = evaluate(target, split=split, data=data, protocol=protocol, out=out, plot=plot, device=device,
                          batch_size=batch_size, num_workers=workers, limit=limit, shards=shards)
    except (OSError, ValueError) as exc:  # FileNotFoundError and unreachable shard URLs are OSErrors
        raise click.ClickException(str(exc)) from exc
    report = result.report
    data_ = report["data"]
    what = (f"split {data_['split']!r}" if len(data_["splits"]) == 1
            else f"splits {', '.join(f'{k} ({v})' for k, v in data_['split_pairs'].items())}")
    click.echo(f"{data_['pairs']} pairs of {what} of {data_['prepared']} (fingerprint {data_['fingerprint'][:8]}), "
               f"{sampling} bags, seed {seed}, image pick {image_pick}\n")
    click.echo(result.table())
    for note in report["notes"]:
        click.echo(f"note: {note}")
    if result.plot_path:
        click.echo(f"plot: {result.plot_path}")
    click.echo(f"wrote {result.json_path}")
