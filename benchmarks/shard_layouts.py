"""Shard layouts: what the per-image layout costs against per-recipe, in bytes and loader speed.

One demo corpus is prepared once (every stage, photos at ``--image-size``), then its `shard` stage
is run with each layout into two copies. Measured on each copy, alternating layouts, ``--runs``
times (medians reported, each with its ratio to per-recipe measured in the same run):

- *bytes*: the tars of every partition on disk (and per recipe);
- *stream*: recipekit's sample stream without decoding (``tar_samples``, ``group_photos``,
  ``pick_image``: the layout-dependent part of the loader), recipes per CPU second;
- *loader*: the whole eval loader (``make_loader``: decode, resize, normalise, tokenise,
  collate; ``num_workers=0``), recipes per CPU second, over the train shards.

CPU seconds are this process's (``time.process_time``), which other load on a shared machine
inflates far less than wall time (wall time is reported too).

    .venv/bin/python benchmarks/shard_layouts.py [--recipes 1000] [--runs 3] [--write-doc]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _measure import load_average, machine, replace_section, today  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
LAYOUTS = ("per-recipe", "per-image")


def prepare_copies(work: Path, recipes: int, image_size: int, workers: int) -> dict[str, Path]:
    from recipekit.pipeline.demo import write_demo_corpus
    from recipekit.pipeline.prepare import PrepareConfig, prepare
    from recipekit.pipeline.shard import ShardParams, shard
    from recipekit.pipeline.word2vec import Word2VecParams

    src = work / "src"
    write_demo_corpus(src, recipes=recipes, seed=0, image_fraction=1.0, image_size=image_size, workers=workers)
    base = work / "per-recipe"
    config = PrepareConfig(word2vec=Word2VecParams(vector_size=32, epochs=1, min_count=2),
                           shard=ShardParams(image_size=image_size, max_count=100))
    prepare(src, base, config=config, workers=workers, quiet=True)
    other = work / "per-image"
    shutil.copytree(base, other)
    shard(src, other, params=ShardParams(image_size=image_size, max_count=100, layout="per-image"), workers=workers)
    return {"per-recipe": base, "per-image": other}


def tar_bytes(out: Path) -> tuple[int, int, int]:
    """(bytes of every tar, recipes, photos) of a prepared folder."""
    index = json.loads((out / "shards" / "index.json").read_text(encoding="utf-8"))
    total = sum(p.stat().st_size for p in (out / "shards").rglob("*.tar"))
    recipes = sum(e.get("recipes", e["samples"]) for e in index.values())
    return total, recipes, sum(e["images"] for e in index.values())


def _timed(fn) -> tuple[int, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - w0, time.process_time() - c0


def stream(out: Path, passes: int) -> int:
    from recipekit.loaders.batching import group_photos, pick_image
    from recipekit.loaders.shards import SharedEpoch, resolve_shards
    from recipekit.loaders.tario import tar_samples

    urls = resolve_shards(out / "shards" / "train").urls * passes
    picked = pick_image(train=True, seed=0, epoch=SharedEpoch(0), rank=0)
    return sum(1 for _ in picked(group_photos()(tar_samples()({"url": u} for u in urls))))


def loader(out: Path, image_size: int) -> int:
    from recipekit.loaders import make_loader
    from recipekit.pipeline.vocab import Vocabulary

    vocab = Vocabulary.from_file(out / "word2vec" / "vocab.txt")
    batches, _ = make_loader(out / "shards" / "train", vocab=vocab, train=False, batch_size=64,
                             image_size=min(224, image_size), store=None)
    return sum(len(b["ids"]) for b in batches)


def measure(copies: dict[str, Path], runs: int, image_size: int, passes: int) -> dict:
    rows: dict[str, dict[str, list]] = {lay: {"stream": [], "loader": []} for lay in LAYOUTS}
    for lay in LAYOUTS:  # warm-up, not timed: imports, decoder choice, page cache
        stream(copies[lay], 1)
        loader(copies[lay], image_size)
    for r in range(runs):
        for lay in LAYOUTS:
            rows[lay]["stream"].append(_timed(lambda: stream(copies[lay], passes)))
            rows[lay]["loader"].append(_timed(lambda: loader(copies[lay], image_size)))
        print(f"run {r + 1}: " + ", ".join(
            f"{lay} stream {m['stream'][-1][2]:.2f} s CPU, loader {m['loader'][-1][2]:.2f} s CPU"
            for lay, m in rows.items()), flush=True)
    result = {}
    for lay, m in rows.items():
        size, recipes, photos = tar_bytes(copies[lay])
        res = {"bytes": size, "recipes": recipes, "photos": photos}
        for kind, runs_ in m.items():
            counts = {n for n, _, _ in runs_}
            if len(counts) != 1:
                raise SystemExit(f"{lay} {kind}: different sample counts across runs: {sorted(counts)}")
            res[kind] = {"n": counts.pop(), "wall": statistics.median(w for _, w, _ in runs_),
                         "cpu": statistics.median(c for _, _, c in runs_), "cpus": [c for _, _, c in runs_]}
            res[kind]["per_cpu_s"] = res[kind]["n"] / res[kind]["cpu"]
            res[kind]["per_wall_s"] = res[kind]["n"] / res[kind]["wall"]
        result[lay] = res
    if result["per-recipe"]["loader"]["n"] != result["per-image"]["loader"]["n"]:
        raise SystemExit("the two layouts gave the loader different numbers of recipes")
    return result


def render(result: dict, args, command: str, load: tuple[str, str]) -> str:
    base = result["per-recipe"]
    lines = [
        f"Machine: {machine()}; load average (1/5/15 min) before: {load[0]}, after: {load[1]}. Date: {today()}.",
        f"Command: `{command}`",
        "",
        f"The demo corpus ({args.recipes} recipes, every one with photos, rendered at {args.image_size} px) "
        f"prepared once, then sharded with each layout (100 recipes per per-recipe shard). Medians of {args.runs} "
        "runs after one untimed warm-up pass, layouts alternating within each run; ratios are per-image / per-recipe from the same runs. "
        f"*stream*: `tar_samples`, `group_photos`, `pick_image`, {args.stream_passes} passes over the train shards "
        "(no decoding); *loader*: "
        "the eval `make_loader` over the train shards (decode, resize to "
        f"{min(224, args.image_size)} px, normalise, tokenise the JSON, collate; no workers, one torch thread). Rates are recipes "
        "per CPU second of this process (wall in brackets: inflated by other load).",
        "",
        "Per run, CPU s: " + "; ".join(
            f"{lay} stream {', '.join(f'{c:.2f}' for c in res['stream']['cpus'])}, loader "
            f"{', '.join(f'{c:.2f}' for c in res['loader']['cpus'])}" for lay, res in result.items()) + ".",
        "",
        "| layout | tar bytes | bytes / photo | tar samples | stream recipes/s CPU (wall) | "
        "loader recipes/s CPU (wall) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for lay, res in result.items():
        samples = res["photos"] if lay == "per-image" else res["recipes"]
        lines.append(
            f"| {lay} | {res['bytes']:,} ({res['bytes'] / base['bytes']:.3f}x) | {res['bytes'] / res['photos']:,.0f} "
            f"| {samples:,} | {res['stream']['per_cpu_s']:,.0f} ({res['stream']['per_wall_s']:,.0f}); "
            f"{res['stream']['per_cpu_s'] / base['stream']['per_cpu_s']:.2f}x "
            f"| {res['loader']['per_cpu_s']:,.0f} ({res['loader']['per_wall_s']:,.0f}); "
            f"{res['loader']['per_cpu_s'] / base['loader']['per_cpu_s']:.2f}x |")
    lines += ["", f"{base['recipes']:,} recipes, {base['photos']:,} photos "
              f"({base['photos'] / base['recipes']:.2f} per recipe)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stream-passes", type=int, default=20, help="passes over the train shards per stream timing")
    ap.add_argument("--write-doc", action="store_true", help=f"write the section of {DOC.relative_to(ROOT)}")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="The image decoding and encoding")
    import torch

    torch.set_num_threads(1)  # one core's work: idle intra-op threads spinning would count as CPU time
    command = "python benchmarks/shard_layouts.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="recipekit-layouts-") as tmp:
        copies = prepare_copies(Path(tmp), args.recipes, args.image_size, args.workers)
        load0 = load_average()
        result = measure(copies, args.runs, args.image_size, args.stream_passes)
        load1 = load_average()
    body = render(result, args, command.strip(), (load0, load1))
    print(body)
    if args.write_doc:
        replace_section(DOC, "shard_layouts", body, "Shard layouts: per-recipe against per-image "
                        "(benchmarks/shard_layouts.py)")


if __name__ == "__main__":
    main()
