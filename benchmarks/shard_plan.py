"""Benchmark: the `shard` stage's plan and sample read-back, alone, from 30k to 1M photos.

The stage plans the shards, reads back each run of ``shard.PLAN_ROWS`` recipes' samples, then
encodes photos; this measures the first two (what grows with the corpus apart from the photos
themselves) on synthetic prepared tables: ``recipes.parquet``, ``images.parquet`` (one photo
per recipe), ``ingredients.parquet`` and ``recipe_classes.parquet`` of SIZE recipes with
Recipe1M-like text lengths. Each run is its own process (wall, CPU, peak RSS of the process):

* **bucketed** (the stage as it runs): one streaming pass over each table buckets the samples by
  run, then each run joins its bucket (:func:`recipekit.pipeline.shardplan.shard_rows`);
* **rescan** (the baseline, same run): each run of recipes joins the whole tables again with
  a streaming semi-join (what the read-back did before the bucketing pass), at sizes up to
  ``--rescan-max``.

    python benchmarks/shard_plan.py --sizes 30000 100000 300000 1000000 --rescan-max 300000

Writes the ``shard_plan`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import load_average, machine, replace_section, run_measured, today  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys
from pathlib import Path
import polars as pl
from recipekit.pipeline import shardplan
from recipekit.pipeline.shard import PLAN_ROWS, ShardParams
out, mode = Path(sys.argv[1]), sys.argv[2]
flat = shardplan.plan_shards(out, ShardParams(), ["train", "val", "test"]).flat()
samples = photos = 0
if mode == "bucketed":
    rows = shardplan.shard_rows(out, flat, rows=PLAN_ROWS)
else:  # the whole tables joined again for every run
    whole = {t: shardplan._scan(out, t) for t in shardplan._SOURCES}
    def gen():
        for run in shardplan._runs(flat, PLAN_ROWS):
            ids = [r for i in run for r in flat[i][2]]
            frame = shardplan._read_rows(whole, pl.DataFrame({"id": ids}, schema={"id": pl.Utf8}))
            start = 0
            for i in run:
                n = len(flat[i][2])
                yield i, frame.slice(start, n).to_dicts()
                start += n
    rows = gen()
for _, shard in rows:
    samples += len(shard)
    photos += sum(len(s["image_id"]) for s in shard)
print(json.dumps({"shards": len(flat), "samples": samples, "photos": photos}))
"""


def make_tables(size: int, out: Path, seed: int = 0) -> None:
    """Synthetic prepared tables of ``size`` recipes, one photo each."""
    import polars as pl

    if (out / "recipe_classes.parquet").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = [f"word{i}" for i in range(2000)]

    def line(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    ids = [f"{rng.getrandbits(40):010x}{i:07d}" for i in range(size)]
    parts = [rng.choices(["train", "val", "test"], [0.7, 0.15, 0.15])[0] for _ in range(size)]
    # A pool of texts reused across recipes keeps generation fast; lengths are Recipe1M-like.
    pool_lines = [line(rng.randint(3, 9)) for _ in range(5000)]
    pool_steps = [line(rng.randint(8, 30)) for _ in range(5000)]
    recipes = pl.DataFrame({
        "id": ids, "partition": parts,
        "title": [pool_lines[rng.randrange(5000)] for _ in range(size)],
        "ingredients": [[pool_lines[rng.randrange(5000)] for _ in range(rng.randint(5, 12))] for _ in range(size)],
        "instructions": [[pool_steps[rng.randrange(5000)] for _ in range(rng.randint(4, 12))] for _ in range(size)],
        "url": [f"http://example.org/{i}" for i in ids],
    })
    groups = {"compression": "zstd", "row_group_size": 20_000}  # as the stages write them
    recipes.write_parquet(out / "recipes.parquet", **groups)
    recipes.select("id", "partition", pl.col("ingredients").list.head(6).alias("ingredients")).write_parquet(
        out / "ingredients.parquet", **groups)
    recipes.select("id", "partition", pl.lit(1, dtype=pl.Int32).alias("class_id"),
                   pl.lit("soup").alias("class_name")).write_parquet(out / "recipe_classes.parquet", **groups)
    pl.DataFrame({
        "image_id": [f"{i}.jpg" for i in ids], "recipe_id": ids, "partition": parts,
        "position": pl.Series([0] * size, dtype=pl.Int16),
        "path": [f"{p}/{i[0]}/{i[1]}/{i[2]}/{i[3]}/{i}.jpg" for p, i in zip(parts, ids)],
        "present": [True] * size, "url": [None] * size,
    }).write_parquet(out / "images.parquet", **groups)


def measure(out: Path, mode: str) -> dict:
    run = run_measured([sys.executable, "-c", _CHILD, str(out), mode], cwd=str(ROOT))
    if run.returncode:
        raise SystemExit(f"{mode} failed:\n{run.output[-3000:]}")
    counts = json.loads(run.output.strip().splitlines()[-1])
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss_mb": run.peak_rss_mb, **counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[30_000, 100_000, 300_000, 1_000_000])
    ap.add_argument("--rescan-max", type=int, default=300_000, help="largest size the baseline runs at")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "shard_plan")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        out = args.workdir / f"tables-{size}"
        make_tables(size, out)
        row = {"size": size, "load": load_average(), "bucketed": measure(out, "bucketed")}
        if size <= args.rescan_max:
            row["rescan"] = measure(out, "rescan")
            assert row["rescan"]["samples"] == row["bucketed"]["samples"]
        print(json.dumps(row), flush=True)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    lines = [
        f"Machine: {machine()}; shared with other jobs (load average before each size: "
        + ", ".join(f"{r['load']} at {r['size']:,}" for r in rows) + f"). Date: {today()}.",
        f"Command: `python benchmarks/shard_plan.py --sizes {' '.join(map(str, args.sizes))} --rescan-max {args.rescan_max}`",
        "",
        "Plan and sample read-back of the `shard` stage (no photo encoding) on synthetic prepared tables, one photo "
        "per recipe, runs of 10,000 recipes (`shard.PLAN_ROWS`), default shard size (1,000 samples). *bucketed*: one "
        "streaming pass over each table, then each run joins its bucket (the stage); *rescan*: each run joins the "
        "whole tables again (the baseline, same run). Each cell is one process.",
        "",
        "| photos | shards | bucketed CPU s | µs CPU per photo | peak RSS MB | rescan CPU s | µs CPU per photo | peak RSS MB | rescan / bucketed CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b, s = r["bucketed"], r.get("rescan")
        cells = (f"{s['cpu_s']:.1f} | {s['cpu_s'] / s['photos'] * 1e6:.0f} | {s['peak_rss_mb']:.0f} | "
                 f"{s['cpu_s'] / b['cpu_s']:.1f}x") if s else "— | — | — | —"
        lines.append(f"| {b['photos']:,} | {b['shards']:,} | {b['cpu_s']:.1f} | {b['cpu_s'] / b['photos'] * 1e6:.0f} | "
                     f"{b['peak_rss_mb']:.0f} | {cells} |")
    first, last = rows[0]["bucketed"], rows[-1]["bucketed"]
    lines += ["", f"From {first['photos']:,} to {last['photos']:,} photos the bucketed read-back's CPU per photo went "
              f"{first['cpu_s'] / first['photos'] * 1e6:.0f} -> {last['cpu_s'] / last['photos'] * 1e6:.0f} µs and its "
              f"peak RSS {first['peak_rss_mb']:.0f} -> {last['peak_rss_mb']:.0f} MB."]
    text = "\n".join(lines)
    print(text)
    replace_section(args.doc, "shard_plan", text, "shard: plan and read-back at scale (benchmarks/shard_plan.py)")


if __name__ == "__main__":
    main()
