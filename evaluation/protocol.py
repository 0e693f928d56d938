"""`recipekit eval`: embed one split of a trained model once, then score the protocol.

:func:`evaluate` takes a run folder (``RUN/best.pt``; the data from ``RUN/config.resolved.json``)
or a :meth:`~recipekit.embedders.JointEmbedder.save` file, embeds ``PREPARED/shards/{split}``
with :func:`~recipekit.evaluation.embed.embed_split`, scores bags of 1k and 10k pairs in both
directions (:func:`~recipekit.evaluation.metrics.evaluate_bags`) and writes ``eval.json`` and
``eval.md`` (and with ``plot``, ``retrievals.png``). It only reports: nothing is selected here.
The eval.json schema is in docs/evaluation.md.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recipekit.core.device import resolve_device
from recipekit.core.io import file_sha256
from recipekit.core.layout import Prepared, Run, RunTarget
from recipekit.embedders.modelfile import HF_PREFIX, resolve_model

from .corpus import check_not_other_corpus, corpus_fingerprint, corpus_out, parse_splits, split_label
from .embed import IMAGE_PICKS, SplitEmbeddings, embed_split
from .metrics import DEFAULT_METRICS, DIRECTIONS, KS, evaluate_bags, metric_function
from .report import render_table, write_outputs

__all__ = ["EvalProtocol", "EvalResult", "EvalTarget", "evaluate", "resolve_target", "score_protocol",
           "split_location"]

FORMAT = "recipekit.eval/1"
log = logging.getLogger(__name__)
RUN_CONFIG = Run.RESOLVED_CONFIG
SAMPLINGS = ("independent", "chunks")


@dataclass(frozen=True)
class EvalProtocol:
    """The bags to score: ``n_bags`` of ``bag_size`` and ``n_bags_large`` of ``bag_size_large``
    (``bag_size_large=None`` or ``n_bags_large=0`` skips them); ``sampling`` of the bags
    (``"independent"`` draws, or disjoint ``"chunks"`` of one shuffle) and ``seed`` (which also
    seeds ``image_pick="random"``); ``metrics``: the registered metric functions scored on each
    bag (:func:`~recipekit.evaluation.metrics.register_metric`)."""

    bag_size: int = 1000
    n_bags: int = 10
    bag_size_large: int | None = 10000
    n_bags_large: int = 5
    sampling: str = "independent"
    seed: int = 1234
    image_pick: str = "first"
    metrics: tuple[str, ...] = DEFAULT_METRICS

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        for name in self.metrics:
            metric_function(name)  # an unknown name: a ValueError listing the registered ones
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown bag sampling {self.sampling!r}; choose from {', '.join(SAMPLINGS)}")
        if self.image_pick not in IMAGE_PICKS:
            raise ValueError(f"unknown image pick {self.image_pick!r}; choose from {', '.join(IMAGE_PICKS)}")
        for name in ("bag_size", "n_bags"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.bag_size_large is not None and self.n_bags_large > 0 and self.bag_size_large < 2:
            raise ValueError(f"bag_size_large must be >= 2, not {self.bag_size_large}")

    def bag_specs(self) -> list[tuple[int, int]]:
        """(bag size, number of bags) of each row group, small first."""
        specs = [(int(self.bag_size), int(self.n_bags))]
        if self.bag_size_large and self.n_bags_large > 0:
            specs.append((int(self.bag_size_large), int(self.n_bags_large)))
        return specs


@dataclass
class EvalTarget:
    """What :func:`resolve_target` found: the embedder file, the prepared folder, the run."""

    checkpoint: Path
    prepared: Path
    run: Path | None = None
    run_config: dict[str, Any] | None = None
    default_out: Path | None = None


@dataclass
class EvalResult:
    """The eval.json content (``report``), where it was written, and the split's embeddings."""

    report: dict[str, Any]
    out: Path | None
    embeddings: SplitEmbeddings | None = field(default=None, repr=False)

    @property
    def json_path(self) -> Path | None:
        return self.out / "eval.json" if self.out else None

    @property
    def md_path(self) -> Path | None:
        return self.out / "eval.md" if self.out else None

    @property
    def plot_path(self) -> Path | None:
        path = self.report.get("outputs", {}).get("plot")
        return self.out / path if (self.out and path) else None

    def table(self) -> str:
        return render_table(self.report)


def resolve_target(target: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "test") -> EvalTarget:
    """A run folder (``RUN/best.pt``), a model folder (also ``hf-hub:ORG/NAME``, which needs
    ``data``) or an embedder file, and the prepared folder to read:
    ``data`` when given, else ``data.prepared`` of ``config.resolved.json`` (in the run folder,
    or beside the file or one folder up; a model folder; or ``hf-hub:ORG/NAME[@REV]``, which needs
    ``data`` and writes under ``./eval/ORG--NAME/SPLIT``): :meth:`recipekit.core.Run.resolve`.
    Errors name the missing path."""
    name = os.fspath(target)
    if name.startswith(HF_PREFIX):  # never inside the Hugging Face cache
        if data is None:
            raise ValueError(f"{name}: a hf-hub: model needs --data PREPARED")
        found = RunTarget(resolve_model(name), None, Path.cwd(), False)
        default_out = Path.cwd() / "eval" / name[len(HF_PREFIX):].replace("/", "--") / split
    else:
        found = Run.resolve(target)
        default_out = found.eval_dir(split)
    config = found.run_config()
    prepared = found.prepared(data, config)
    return EvalTarget(found.checkpoint.resolve(), prepared.resolve(), found.run.path.resolve() if found.run else None,
                      config, default_out)


def split_location(found: EvalTarget, split: str, shards: str | os.PathLike | None = None, *,
                   data_given: bool = False) -> str | None:
    """Where ``split``'s shards are read from, checked: ``shards`` (a copy of PREPARED/shards
    holding ``{split}/``, that split folder itself, a brace pattern, a ``pipe:``; local or any
    fsspec URL: :func:`recipekit.loaders.remote.split_shards`), else the run's ``data.shards``
    unless another prepared folder was given; None means ``PREPARED/shards/{split}``."""
    from recipekit.loaders.remote import split_shards

    if shards is None and not data_given:
        shards = ((found.run_config or {}).get("data") or {}).get("shards") or None
        if isinstance(shards, str) and shards.lstrip().startswith("pipe:"):
            # Whoever wrote the run folder chose this command, not the person running eval.
            raise ValueError(f"{(found.run or found.checkpoint.parent) / RUN_CONFIG}: data.shards is a shell command "
                             f"({shards!r}); commands saved in a run folder are never run. If you trust it, give it "
                             "yourself (--shards 'pipe:...'), or read the prepared folder's own shards with --data")
    if shards is None:
        Prepared(found.prepared).shards(split)
        return None
    location = split_shards(shards, split)
    from recipekit.loaders import resolve_shards

    resolve_shards(location)  # unreachable, missing: an error naming the URL before the model loads
    return location


def score_protocol(image, recipe, protocol: EvalProtocol) -> list[dict[str, Any]]:
    """One entry per bag size (see docs/evaluation.md, ``bags``). A split smaller than a bag
    size is one bag of all its pairs, said in ``note``; when several bag sizes collapse to
    that same all-pairs bag it is scored once and the larger sizes are marked not applicable."""
    n = len(image)
    entries: list[dict[str, Any]] = []
    all_pairs_done = False
    for size, count in protocol.bag_specs():
        entry: dict[str, Any] = {"requested_bag_size": size, "requested_n_bags": count}
        if n < size and all_pairs_done:
            entry.update(applicable=False, bag_size=None, n_bags=0,
                         note=f"split has {n} pairs < bag size {size}: not applicable "
                              f"(the one bag of all {n} pairs is the row above)")
            entries.append(entry)
            continue
        result = evaluate_bags(image, recipe, bag_size=size, n_bags=count, sampling=protocol.sampling,
                               seed=protocol.seed, metrics=protocol.metrics)
        all_pairs_done = all_pairs_done or n <= size
        entry.update(applicable=True, bag_size=result["bag_size"], n_bags=result["n_bags"])
        entry.update({d: result[d] for d in DIRECTIONS})
        if "note" in result:
            entry["note"] = result["note"]
        entries.append(entry)
    return entries


def _concat(parts: list[SplitEmbeddings]) -> SplitEmbeddings:
    """One SplitEmbeddings of several splits' rows, in split order."""
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    return SplitEmbeddings(ids=[i for p in parts for i in p.ids], image=np.concatenate([p.image for p in parts]),
                           recipe=np.concatenate([p.recipe for p in parts]),
                           image_index=np.concatenate([p.image_index for p in parts]))


def _version() -> str:
    from recipekit.pipeline.stagekit import package_version

    return package_version()


def evaluate(
    target: str | os.PathLike,
    *,
    split: str = "test",
    data: str | os.PathLike | None = None,
    protocol: EvalProtocol | None = None,
    out: str | os.PathLike | None = None,
    plot: bool = False,
    device: Any = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    limit: int | None = None,
    write: bool = True,
    shards: str | os.PathLike | None = None,
) -> EvalResult:
    """Embed ``split`` once with the model of ``target`` and score ``protocol`` on it.

    ``target``: a run folder or an embedder file (see :func:`resolve_target`); ``data``: the
    prepared folder (default: the run's). ``split``: one split, a comma-separated list
    (``"train,val"``) or ``"all"`` (every split with shards), scored as one set of pairs.
    ``out``: where eval.json / eval.md (/ retrievals.png) go (default ``RUN/eval/{split}/``, or
    ``FOLDER/eval/{stem}/{split}/`` beside a checkpoint file; for a corpus other than the run's own,
    ``.../eval/{corpus}-{fingerprint8}/{split}/``: :mod:`.corpus`); an eval.json of another corpus
    is never replaced. ``write=False`` writes nothing. ``limit``: embed only the first that many pairs
    (smoke tests; recorded in the report). ``shards``: read the split's shards from there
    instead of ``PREPARED/shards/{split}`` (see :func:`split_location`; default: the run's
    ``data.shards`` when ``data`` is not given)."""
    from recipekit.embedders import load_embedder

    protocol = protocol or EvalProtocol()
    found = resolve_target(target, data, split=str(split))
    splits = parse_splits(split, found.prepared)
    label = split_label(split, splits)
    # a clear error before loading: where each split's shards are
    locations = [split_location(found, s, shards, data_given=data is not None) for s in splits]
    if plot and len(splits) > 1:
        raise ValueError(f"--plot shows the retrievals of one split, not {label}: give --split NAME")
    location = locations[0] if len(splits) == 1 else None
    if plot and location is not None and not Path(location).is_dir():
        raise ValueError(f"{location}: --plot reads the photos back from a local shard folder; "
                         "plot with the local PREPARED/shards instead")
    fingerprint = corpus_fingerprint(found.prepared)
    out_dir = (Path(out) if out is not None
               else corpus_out(found.default_out, found.prepared, found.run_config, label, fingerprint))
    if write:
        check_not_other_corpus(out_dir, found.prepared, fingerprint)
    try:
        model = load_embedder(found.checkpoint)
    except Exception as exc:  # an unreadable or foreign file: say which, and what to give instead
        why = str(exc).removeprefix(f"{found.checkpoint}: ")
        raise ValueError(f"{found.checkpoint}: not a readable recipekit embedder file ({why}); give a run folder "
                         "of `recipekit train` or the best.pt it wrote") from None
    dev = resolve_device(device)
    started = time.perf_counter()
    parts, per_split = [], {}
    for name, where in zip(splits, locations):
        left = None if limit is None else limit - sum(len(p) for p in parts)
        if left is not None and left <= 0:
            break
        log.info("embedding split %s of %s", name, found.prepared)
        part = embed_split(model, found.prepared, name, image_pick=protocol.image_pick, batch_size=batch_size,
                           num_workers=num_workers, device=dev, limit=left, seed=protocol.seed, shards=where)
        parts.append(part)
        per_split[name] = len(part)
    emb = _concat(parts)
    embed_s = time.perf_counter() - started
    if len(emb) == 0:
        raise ValueError(f"{location or found.prepared / 'shards' / label}: no pairs to evaluate")
    log.info("scoring %d pairs over bags of %s", len(emb), ", ".join(str(b) for b, _ in protocol.bag_specs()))
    started = time.perf_counter()
    bags = score_protocol(emb.image, emb.recipe, protocol)
    score_s = time.perf_counter() - started
    notes = [f"bags of {b['requested_bag_size']}: {b['note']}" for b in bags if b.get("note")]
    generation = None
    if getattr(model, "generator", None) is not None:  # ACME / R2GAN / TNLBT runs (evaluation/generation.py)
        from .generation import generation_metrics

        started = time.perf_counter()
        generation = generation_metrics(model, emb, protocol, device=dev, batch_size=batch_size)
        generation["seconds"] = round(time.perf_counter() - started, 3)
    report: dict[str, Any] = {
        "format": FORMAT,
        "recipekit_version": _version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {
            "path": str(found.checkpoint),
            "sha256": file_sha256(found.checkpoint),
            "embedder": model.config.get("name"),
            "run": str(found.run) if found.run else None,
        },
        "data": {"prepared": str(found.prepared), "fingerprint": fingerprint, "split": label, "splits": splits,
                 "pairs": len(emb), "split_pairs": per_split, "limit": limit,
                 **({"shards": str(location)} if location is not None else {}),
                 **({"shards": [str(x) for x in locations]} if len(splits) > 1 and any(locations) else {})},
        "protocol": {
            # the metric list is recorded when it is not the default (eval.json of the default protocol as before)
            **{k: v for k, v in asdict(protocol).items() if k != "metrics" or v != DEFAULT_METRICS},
            "bag_sizes": [s for s, _ in protocol.bag_specs()],
            "directions": list(DIRECTIONS),
            "ks": list(KS),
            "similarity": "cosine",
            "rank": "1-based: 1 + candidates strictly more similar than the true match (ties count for it)",
            "medR": "median rank over the bag's queries; mean and std (population) over bags",
            "recall": "percent of queries whose rank is <= K; mean and std over bags",
        },
        "bags": bags,
        "notes": notes,
        "timing": {"device": str(dev), "embed_s": round(embed_s, 3), "score_s": round(score_s, 3),
                   "embed_dim": int(emb.image.shape[1])},
        "outputs": {"json": "eval.json", "markdown": "eval.md", "plot": None},
    }
    if generation is not None:
        report["generation"] = generation
    if not write:
        return EvalResult(report, None, emb)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plot:
        from .plot import plot_retrievals

        report["outputs"]["plot"] = "retrievals.png"
        plot_retrievals(emb, location or Prepared(found.prepared).shards(splits[0]), out_dir / "retrievals.png",
                        bag_size=protocol.bag_size, sampling=protocol.sampling, seed=protocol.seed)
    write_outputs(report, out_dir)
    return EvalResult(report, out_dir.resolve(), emb)
