"""Benchmark: the parse stage on a Recipe1M-sized real-text corpus against `json.load` of the same file.

Builds the corpus by resampling a real Recipe1M-layout corpus (default ../shared/data/recipes-en):
SIZE recipes drawn with replacement, each with a fresh id (and fresh photo ids in layer2.json and
det_ingrs.json entries for the recipes that have them), in shuffled order. Then, each in its own
process, with wall time, CPU time (the process and its workers) and peak RSS of the process tree:

* ``json.load`` of the whole layer1.json (the baseline);
* the decoder alone: ``jsonfast.map_array`` splitting and decoding every record with orjson in
  ``--workers`` processes, nothing else (the record-by-record path's floor);
* the reader alone: the same split, then Arrow's JSON reader on each run in the workers, nothing
  else (the columnar path's floor);
* ``recipekit prepare --stages parse``: with the standard library's decoder in one process
  (``RECIPEKIT_JSON=stdlib``), record by record with orjson in the workers (``RECIPEKIT_JSON=orjson``),
  and as it runs by default (columnar); the three runs' tables are compared byte for byte.

    python benchmarks/parse_scale.py --sizes 100000 1000000 --workers 2

``--recipe1m-shape`` gives layer2.json and det_ingrs.json Recipe1M's proportions (39 % of the
recipes with photos, a det_ingrs entry for every recipe) instead of the source's, and the
baseline loads all three files: the whole stage as a Recipe1M user runs it.

Writes the ``parse_scale`` section of docs/benchmarks.md; big files go to --workdir and are
deleted unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import load_average, machine, replace_section, run_measured, today  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLES = ["recipes.parquet", "images.parquet", "det_ingrs.parquet", "quarantine.parquet"]
TARGET_SPEEDUP, TARGET_MB = 4.0, 1024

_DECODE_ONLY = """
import sys
from recipekit.pipeline.backends import PoolExecutor
from recipekit.pipeline.jsonfast import count_elements, map_array
n = sum(map_array(sys.argv[1], count_elements, executor=PoolExecutor(int(sys.argv[2]))))
print(n)
"""
# The split plus Arrow's JSON reader on each run, in the workers, nothing else: the columnar path's floor.
_READ_ONLY = """
import sys
from recipekit.pipeline.backends import PoolExecutor
from recipekit.pipeline.jsonfast import count_elements, map_array
sys.path.insert(0, sys.argv[3])
from parse_scale import arrow_rows
n = sum(map_array(sys.argv[1], count_elements, columnar=arrow_rows, executor=PoolExecutor(int(sys.argv[2]))))
print(n)
"""


def arrow_rows(run) -> int:
    """Rows Arrow's JSON reader reads from a run, with the stage's field list (``_READ_ONLY``)."""
    import io

    import pyarrow.json as pj

    from recipekit.pipeline import columnar

    return pj.read_json(io.BytesIO(run.lines), read_options=pj.ReadOptions(use_threads=False,
                        block_size=len(run.lines) + 1), parse_options=columnar._PARSE).num_rows


# Recipe1M's own proportions: 402,760 of its 1,029,720 recipes have photos (887,536 in all), and
# det_ingrs.json has an entry for every recipe.
R1M_PHOTO_SHARE, R1M_PHOTO_COUNTS = 0.39, (1, 1, 1, 2, 2, 3, 4, 4)  # 2.25 a recipe with photos


def _r1m_extras(rec: dict, new: str, rng: random.Random) -> tuple[dict | None, dict]:
    """A Recipe1M-shaped layer2 entry (or None) and det_ingrs entry for a resampled recipe: photo
    ids made up, and det_ingrs items made from its own ingredient lines (their last two words,
    lower-cased, four in five flagged valid), as Recipe1M's detected ingredients are short names."""
    entry = None
    if rng.random() < R1M_PHOTO_SHARE:
        entry = {"id": new, "images": [{"id": f"{new}{j:02d}{rng.randrange(16 ** 6):06x}.jpg",
                                        "url": f"http://img.example.org/{new}/{j}.jpg"}
                                       for j in range(rng.choice(R1M_PHOTO_COUNTS))]}
    items = [{"text": " ".join(str(x.get("text", "")).lower().split()[-2:])} for x in rec.get("ingredients", [])]
    return entry, {"id": new, "valid": [rng.random() < 0.8 for _ in items], "ingredients": items}


def make_corpus(source: Path, size: int, dest: Path, seed: int = 0, recipe1m_shape: bool = False) -> None:
    """``size`` recipes resampled from ``source`` with fresh ids, shuffled, streamed to ``dest``;
    with ``recipe1m_shape``, layer2.json and det_ingrs.json take Recipe1M's proportions instead of
    the source's (:func:`_r1m_extras`)."""
    if (dest / "layer1.json").exists():
        return
    rng = random.Random(seed)
    layer1 = json.loads((source / "layer1.json").read_text(encoding="utf-8"))
    layer2 = {e["id"]: e for e in json.loads((source / "layer2.json").read_text(encoding="utf-8"))}
    det_path = source / "det_ingrs.json"
    det = {e["id"]: e for e in json.loads(det_path.read_text(encoding="utf-8"))} if det_path.exists() else {}
    picks = [rng.randrange(len(layer1)) for _ in range(size)]  # already in random order
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "tmp"
    tmp.mkdir(exist_ok=True)
    with open(tmp / "layer1.json", "w", encoding="utf-8") as l1, \
            open(tmp / "layer2.json", "w", encoding="utf-8") as l2, open(tmp / "det_ingrs.json", "w", encoding="utf-8") as dt:
        for fh in (l1, l2, dt):
            fh.write("[")
        first2 = first3 = True
        for i, k in enumerate(picks):
            rec = dict(layer1[k])
            old, new = rec["id"], f"{i:010x}"
            rec["id"] = new
            l1.write(("" if i == 0 else ",\n") + json.dumps(rec, ensure_ascii=False))
            if recipe1m_shape:
                entry, det_entry = _r1m_extras(rec, new, rng)
                if entry is not None:
                    l2.write(("" if first2 else ",\n") + json.dumps(entry))
                    first2 = False
                dt.write(("" if first3 else ",\n") + json.dumps(det_entry, ensure_ascii=False))
                first3 = False
                continue
            if old in layer2:
                images = [{**img, "id": f"{i:010x}{j:02d}.jpg"} for j, img in enumerate(layer2[old]["images"])]
                l2.write(("" if first2 else ",\n") + json.dumps({"id": new, "images": images}))
                first2 = False
            if old in det:
                dt.write(("" if first3 else ",\n") + json.dumps({**det[old], "id": new}))
                first3 = False
        for fh in (l1, l2, dt):
            fh.write("]\n")
    for name in ("layer1.json", "layer2.json", "det_ingrs.json"):
        os.replace(tmp / name, dest / name)
    tmp.rmdir()


def _run(cmd: list[str], env: dict | None = None) -> dict:
    run = run_measured(cmd, env=env)
    if run.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.output}")
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss_mb": run.peak_rss_mb}


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) if k != "peak_rss_mb" else max(r[k] for r in runs)
            for k in runs[0]}


def bench(src: Path, workdir: Path, workers: int, repeats: int, baseline_stage: bool, all_files: bool = False) -> dict:
    """The runs of one corpus; with ``all_files`` the baseline loads all three JSON files and the
    layer1-only floors (decoder alone, reader alone) are left out."""
    py = sys.executable
    layer1 = str(src / "layer1.json")
    files = [str(src / n) for n in ("layer1.json", "layer2.json", "det_ingrs.json")] if all_files else [layer1]
    out = {"json_load": [], "decode": [], "read": [], "parse_rows": [], "parse": [], "parse_stdlib": []}
    for _ in range(repeats):
        out["json_load"].append(_run([py, "-c", "import json, sys\nfor f in sys.argv[1:]: json.load(open(f, 'rb'))",
                                      *files]))
        if not all_files:
            out["decode"].append(_run([py, "-c", _DECODE_ONLY, layer1, str(workers)]))
            out["read"].append(_run([py, "-c", _READ_ONLY, layer1, str(workers), str(Path(__file__).resolve().parent)]))
        cmd = [py, "-m", "recipekit.cli.main", "prepare", str(src), str(workdir / "rows"), "--stages", "parse",
               "--workers", str(workers), "--force", "--quiet"]
        out["parse_rows"].append(_run(cmd, env={**os.environ, "RECIPEKIT_JSON": "orjson"}))
        cmd = [py, "-m", "recipekit.cli.main", "prepare", str(src), str(workdir / "fast"), "--stages", "parse",
               "--workers", str(workers), "--force", "--quiet"]
        out["parse"].append(_run(cmd))
    if baseline_stage:
        cmd = [py, "-m", "recipekit.cli.main", "prepare", str(src), str(workdir / "stdlib"), "--stages", "parse",
               "--workers", "1", "--force", "--quiet"]
        out["parse_stdlib"].append(_run(cmd, env={**os.environ, "RECIPEKIT_JSON": "stdlib"}))
    result = {k: _median(v) for k, v in out.items() if v}
    runs = ["fast", "rows"] + (["stdlib"] if baseline_stage else [])
    result["identical"] = all(len({(workdir / r / t).read_bytes() for r in runs}) == 1 for t in TABLES)
    result["identical_runs"] = runs
    manifest = json.loads((workdir / "fast" / "manifests" / "parse.json").read_text())
    result["counts"] = manifest.get("counts", {})
    return result


_RUN_NAMES = {"fast": "parse", "rows": "record-by-record", "stdlib": "stdlib"}


def report(rows: list[dict], args) -> str:
    shape = args.recipe1m_shape
    flags = (" --recipe1m-shape" if shape else "") + (" --no-baseline-stage" if args.no_baseline_stage else "")
    corpus = ("Corpus: the real recipes of `recipes-en` resampled with fresh ids, shuffled (layer1.json as below), "
              "with layer2.json and det_ingrs.json in Recipe1M's proportions instead of the source's: 39 % of the "
              "recipes with 1-4 photos (2.25 on average; ids made up), and a det_ingrs entry for every recipe (items "
              "made from its own ingredient lines). `json.load` loads all three files, one after the other. "
              if shape else
              "Corpus: the real recipes of `recipes-en` resampled with fresh ids, shuffled (layer1.json as below; "
              "layer2.json and det_ingrs.json resampled with them: 9 % of the recipes have photos, one in 1,521 a "
              "det_ingrs entry). ")
    lines = [
        f"Machine: {machine()}; shared with other jobs (load average before each size: "
        + ", ".join(f"{r['load']} at {r['size']:,}" for r in rows) + f"). Date: {today()}.",
        f"Command: `python benchmarks/parse_scale.py --sizes {' '.join(map(str, args.sizes))} --workers {args.workers} "
        f"--repeats {args.repeats}{flags}`",
        "",
        corpus + "Each row is its own process: wall and CPU seconds "
        f"(medians of {args.repeats} run(s); CPU includes the workers), peak RSS of the process tree. `json.load` is "
        "the whole-file standard-library load the speed-up is measured against; *decoder alone* is the numpy split "
        "plus orjson in the workers with nothing else done per record (`jsonfast.map_array`); *reader alone* the split "
        "plus Arrow's JSON reader on each run in the workers, nothing else; *parse, stdlib* is the "
        "stage with the standard library's streaming decoder in one process (`RECIPEKIT_JSON=stdlib`), *parse, "
        "record by record* the stage with orjson and Python validation per record in the workers "
        "(`RECIPEKIT_JSON=orjson`), *parse* the stage as it runs (runs read by Arrow and validated in columns in the "
        "workers, Parquet written by the driver).",
        "",
        "| recipes | layer1.json | run | wall s | CPU s | CPU/wall | peak RSS MB | speed-up vs json.load (wall) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    names = {"json_load": "`json.load`", "decode": "decoder alone (orjson)", "read": "reader alone (Arrow)",
             "parse_stdlib": "parse, stdlib, 1 process", "parse_rows": f"parse, record by record, {args.workers} workers",
             "parse": f"**parse, {args.workers} workers**"}
    for row in rows:
        base = row["json_load"]["wall_s"]
        for key in ("json_load", "decode", "read", "parse_stdlib", "parse_rows", "parse"):
            if key not in row:
                continue
            r = row[key]
            lines.append(f"| {row['size']:,} | {row['mb']:.0f} MB | {names[key]} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                         f"{r['cpu_s'] / r['wall_s']:.2f} | {r['peak_rss_mb']:.0f} | {base / r['wall_s']:.2f}x |")
    lines.append("")
    for row in rows:
        p = row["parse"]
        speed = row["json_load"]["wall_s"] / p["wall_s"]
        cpu_speed = row["json_load"]["cpu_s"] / p["cpu_s"]
        ident = row.get("identical")
        lines.append(
            f"- {row['size']:,} recipes: parse's speed-up over `json.load` {speed:.2f}x in wall time, "
            f"{cpu_speed:.2f}x in CPU time; peak RSS {p['peak_rss_mb']:.0f} MB"
            + (f"; tables byte-identical across the {', '.join(_RUN_NAMES[r] for r in row['identical_runs'])} runs: "
               f"{'yes' if ident else 'NO'}" if ident is not None else "")
            + (f"; {row['parse_rows']['wall_s'] / p['wall_s']:.2f}x the record-by-record path (wall)"
               if "parse_rows" in row else "")
            + (f"; the decoder alone {row['json_load']['wall_s'] / row['decode']['wall_s']:.2f}x (wall), "
               f"{row['json_load']['cpu_s'] / row['decode']['cpu_s']:.2f}x (CPU)" if "decode" in row else "")
            + (f"; the reader alone {row['json_load']['wall_s'] / row['read']['wall_s']:.2f}x (wall), "
               f"{row['json_load']['cpu_s'] / row['read']['cpu_s']:.2f}x (CPU)" if "read" in row else "")
            + ".")
    if shape:  # the target is set on the corpus, not this one
        return "\n".join(lines)
    big = rows[-1]
    speed = big["json_load"]["wall_s"] / big["parse"]["wall_s"]
    lines.append(
        f"Target (>= {TARGET_SPEEDUP:.0f}x `json.load` at 1M recipes on 2 cores, peak RSS < {TARGET_MB} MB): at "
        f"{big['size']:,} recipes {speed:.2f}x ({'met' if speed >= TARGET_SPEEDUP else 'NOT met'}), "
        f"{big['parse']['peak_rss_mb']:.0f} MB ({'met' if big['parse']['peak_rss_mb'] < TARGET_MB else 'NOT met'}).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "recipes-en")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-baseline-stage", action="store_true", help="skip the one-process stdlib parse run")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "parse_scale")
    ap.add_argument("--keep", action="store_true", help="keep the corpora and outputs")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--from-log", type=Path, help="render the JSON lines a run printed, without measuring")
    ap.add_argument("--recipe1m-shape", action="store_true",
                    help="layer2.json and det_ingrs.json in Recipe1M's proportions (doc section parse_scale_r1m)")
    args = ap.parse_args()
    rows = []
    if args.from_log:
        rows = [json.loads(x) for x in args.from_log.read_text().splitlines() if x.startswith("{")]
        args.sizes = [r["size"] for r in rows]
    for size in [] if args.from_log else args.sizes:
        src = args.workdir / (f"corpus-{size}-r1m" if args.recipe1m_shape else f"corpus-{size}")
        make_corpus(args.source, size, src, recipe1m_shape=args.recipe1m_shape)
        row = {"size": size, "mb": (src / "layer1.json").stat().st_size / 1e6, "load": load_average()}
        row.update(bench(src, args.workdir / f"out-{size}", args.workers, args.repeats, not args.no_baseline_stage,
                         all_files=args.recipe1m_shape))
        print(json.dumps(row), flush=True)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(args.workdir / f"out-{size}", ignore_errors=True)
    text = report(rows, args)
    print(text)
    if args.recipe1m_shape:
        replace_section(args.doc, "parse_scale_r1m", text,
                        "parse with Recipe1M's layer2 and det_ingrs (benchmarks/parse_scale.py --recipe1m-shape)")
    else:
        replace_section(args.doc, "parse_scale", text, "parse at Recipe1M scale (benchmarks/parse_scale.py)")


if __name__ == "__main__":
    main()
