"""`recipekit eval`: embed one split of a trained model once, then score the protocol.

:func:`evaluate` takes a run folder (``RUN/best.pt``; the data from ``RUN/config.resolved.json``)
or a :meth:`~recipekit.embedders.JointEmbedder.save` file, embeds ``PREPARED/shards/{split}``
with :func:`~recipekit.evaluation.embed.embed_split`, scores bags of 1k and 10k pairs in both
directions (:func:`~recipekit.evaluation.metrics.evaluate_bags`) and writes ``eval.json`` and
``eval.md`` (and with ``plot``, ``retrievals.png``). It only reports: nothing is selected here.
The eval.json schema is in docs/evaluation.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .embed import IMAGE_PICKS, SplitEmbeddings, embed_split, resolve_device, split_folder
from .metrics import DEFAULT_METRICS, DIRECTIONS, KS, evaluate_bags, metric_function
from .report import render_table, write_outputs

__all__ = ["EvalProtocol", "EvalResult", "EvalTarget", "evaluate", "resolve_target", "score_protocol",
           "split_location"]

FORMAT = "recipekit.eval/1"
RUN_CONFIG = "config.resolved.json"
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


def _read_run_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the run's resolved config ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def _prepared_from(config: dict[str, Any], path: Path) -> Path:
    prepared = (config.get("data") or {}).get("prepared") if isinstance(config.get("data"), dict) else None
    if not prepared:
        raise ValueError(f"{path}: no data.prepared (give the prepared folder with --data)")
    return Path(prepared)


def resolve_target(target: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "test") -> EvalTarget:
    """A run folder (``RUN/best.pt``) or an embedder file, and the prepared folder to read:
    ``data`` when given, else ``data.prepared`` of ``config.resolved.json`` (in the run folder,
    or beside the file or one folder up). Errors name the missing path."""
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such run folder or checkpoint file")
    run, config = None, None
    if target.is_dir():
        run, checkpoint = target, target / "best.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: missing (is {target} a run folder of `recipekit train`?)")
        default_out = run / "eval" / split
        config_path = run / RUN_CONFIG
        if config_path.is_file():
            config = _read_run_config(config_path)
        elif data is None:
            raise FileNotFoundError(f"{config_path}: missing; give the prepared folder with --data")
    else:
        checkpoint = target
        default_out = target.parent / "eval" / target.stem / split
        for folder in (target.parent, target.parent.parent):
            if (folder / RUN_CONFIG).is_file():
                run, config = folder, _read_run_config(folder / RUN_CONFIG)
                break
        if config is None and data is None:
            raise ValueError(
                f"{checkpoint}: a checkpoint file needs --data PREPARED (no {RUN_CONFIG} beside it or one folder up)"
            )
    prepared = Path(data) if data is not None else _prepared_from(config, run / RUN_CONFIG)
    if not prepared.is_dir():
        raise FileNotFoundError(f"{prepared}: the prepared folder does not exist")
    return EvalTarget(checkpoint.resolve(), prepared.resolve(), run.resolve() if run else None, config, default_out)


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
        split_folder(found.prepared, split)
        return None
    location = split_shards(shards, split)
    from recipekit.loaders import resolve_shards

    resolve_shards(location)  # unreachable, missing: an error naming the URL before the model loads
    return location


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    prepared folder (default: the run's). ``out``: where eval.json / eval.md (/ retrievals.png)
    go (default ``RUN/eval/{split}/``, or ``FOLDER/eval/{stem}/{split}/`` beside a checkpoint
    file); ``write=False`` writes nothing. ``limit``: embed only the first that many pairs
    (smoke tests; recorded in the report). ``shards``: read the split's shards from there
    instead of ``PREPARED/shards/{split}`` (see :func:`split_location`; default: the run's
    ``data.shards`` when ``data`` is not given)."""
    from recipekit.embedders import load_embedder

    protocol = protocol or EvalProtocol()
    found = resolve_target(target, data, split=split)
    location = split_location(found, split, shards, data_given=data is not None)  # a clear error before loading
    if plot and location is not None and not Path(location).is_dir():
        raise ValueError(f"{location}: --plot reads the photos back from a local shard folder; "
                         "plot with the local PREPARED/shards instead")
    try:
        model = load_embedder(found.checkpoint)
    except Exception as exc:  # an unreadable or foreign file: say which
        raise ValueError(f"{found.checkpoint}: not a readable recipekit embedder file ({exc})") from exc
    dev = resolve_device(device)
    started = time.perf_counter()
    emb = embed_split(model, found.prepared, split, image_pick=protocol.image_pick, batch_size=batch_size,
                      num_workers=num_workers, device=dev, limit=limit, seed=protocol.seed, shards=location)
    embed_s = time.perf_counter() - started
    if len(emb) == 0:
        raise ValueError(f"{location or found.prepared / 'shards' / split}: no pairs to evaluate")
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
        "data": {"prepared": str(found.prepared), "split": split, "pairs": len(emb), "limit": limit,
                 **({"shards": str(location)} if location is not None else {})},
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
    out_dir = Path(out) if out is not None else found.default_out
    if not write:
        return EvalResult(report, None, emb)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plot:
        from .plot import plot_retrievals

        report["outputs"]["plot"] = "retrievals.png"
        plot_retrievals(emb, location or split_folder(found.prepared, split), out_dir / "retrievals.png",
                        bag_size=protocol.bag_size, sampling=protocol.sampling, seed=protocol.seed)
    write_outputs(report, out_dir)
    return EvalResult(report, out_dir.resolve(), emb)
