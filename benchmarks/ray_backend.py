"""Benchmark: `recipekit prepare --backend ray` against the default process pool, on one machine.

A demo corpus with photos is prepared once up to `store`; then the `shard` stage alone runs as a
whole command (`recipekit prepare SRC OUT --stages shard --force`, Ray's start and stop included)
with each backend, interleaved, --runs times. Reports wall time, CPU time of the command's process
tree and peak RSS; the pool is the baseline. The two
outputs are also compared byte for byte (tests/test_backend_ray.py checks every artefact).

    python benchmarks/ray_backend.py --recipes 2900 --runs 3 --write
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine, replace_section, run_measured, today

ROOT = Path(__file__).resolve().parents[1]
RECIPEKIT = [sys.executable, "-m", "recipekit.cli.main"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.tar")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", type=int, default=2900)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench-out" / "ray")
    p.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    a = p.parse_args()
    from recipekit.pipeline.demo import write_demo_corpus

    src, prepared = a.out / "src", a.out / "prepared"
    if not (src / "layer1.json").exists():
        write_demo_corpus(src, recipes=a.recipes, seed=1, image_fraction=0.5, image_size=512, workers=a.workers)
    common = ["--workers", str(a.workers), "--quiet", "--shard-max-count", "100"]
    first = run_measured(RECIPEKIT + ["prepare", str(src), str(prepared),
                                      "--stages", "parse,ingredients,word2vec,classes,store"] + common)
    if first.returncode:
        raise SystemExit(first.output)
    got: dict[str, dict[str, list[float]]] = {b: {"wall": [], "cpu": [], "rss": []} for b in ("pool", "ray")}
    digests = {}
    for _ in range(a.runs):
        for backend in ("pool", "ray"):
            shutil.rmtree(prepared / "shards", ignore_errors=True)
            cpu0 = _children_cpu()
            r = run_measured(RECIPEKIT + ["prepare", str(src), str(prepared), "--stages", "shard", "--force",
                                          "--backend", backend] + common)
            if r.returncode:
                raise SystemExit(f"{backend}: {r.output[-2000:]}")
            got[backend]["wall"].append(r.wall_s)
            got[backend]["cpu"].append(_children_cpu() - cpu0)
            got[backend]["rss"].append(r.peak_rss_mb)
            digests[backend] = _digest(prepared / "shards")
    photos = sum(1 for _ in (src / "images").rglob("*.jpg"))
    med = {b: {k: statistics.median(v) for k, v in d.items()} for b, d in got.items()}
    load = os.getloadavg()[0]
    lines = [f"Machine: {machine()}. Date: {today()}. Load average (1 min) at the end: {load:.2f}.",
             f"Command: `python benchmarks/ray_backend.py --recipes {a.recipes} --runs {a.runs} --write`", "",
             f"Demo corpus of {a.recipes:,} recipes with {photos:,} photos of 512 px, sharded at 256 px, 100 "
             f"samples per shard, {a.workers} workers: a local Ray with {a.workers} CPUs against the process pool. "
             "Each run is the whole `recipekit prepare --stages shard --force` command (Ray's start and stop "
             f"included); medians of {a.runs} interleaved runs. CPU s: user + system of the processes the command "
             "waited for - all the work for the pool, but not Ray's workers (children of Ray's own daemons), "
             "so only the pool's CPU figure is whole; compare wall times.", "",
             "| backend | wall s | CPU s | peak RSS MB | wall vs pool |", "|---|---:|---:|---:|---:|"]
    for b in ("pool", "ray"):
        cpu = f"{med[b]['cpu']:.1f}" if b == "pool" else f"({med[b]['cpu']:.1f}, driver only)"
        lines.append(f"| {b} | {med[b]['wall']:.1f} | {cpu} | {med[b]['rss']:.0f} | "
                     f"{med[b]['wall'] / med['pool']['wall']:.2f}x |")
    same = digests["pool"] == digests["ray"]
    lines += ["", f"Shards byte-identical between the backends: {'yes' if same else 'NO'}. On one machine the "
              "pool is the better choice (no Ray start-up); Ray is for spreading `shard`, `store` and "
              "`ingredients` over several machines (docs/scaling.md)."]
    if a.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "ray_backend", "\n".join(lines),
                        "prepare on Ray against the process pool (benchmarks/ray_backend.py)")
    print("\n".join(lines))
    if not same:
        raise SystemExit("the backends wrote different shards")


if __name__ == "__main__":
    main()
