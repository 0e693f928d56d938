#!/usr/bin/env python
"""docs/benchmarks.md, "Frozen sentence encoder cache": ``train.text_cache`` on against off.

    python benchmarks/text_cache.py --work bench-out/results --epochs 3 --repeats 3 --write

Trains ``configs/real_small.toml`` (MiniLM recipe tower, frozen EfficientNet-Lite0 with cached
features) on recipes-en, prepared under ``WORK/recipes-en/prepared`` as benchmarks/results.py
does, for ``--epochs`` epochs, alternately with ``train.text_cache = false`` (the baseline: the
frozen MiniLM runs over every batch) and ``true``. Every cached run starts from an empty cache
(its first epoch encodes every sentence it meets), so a run's time is what a fresh
``recipekit train`` process pays. Reports the median wall time of ``train()`` per setting, the
median per-epoch times, and the ratio, and checks that both give the same losses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import load_average, machine, replace_section, today  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"


def one_run(prepared: Path, features: Path, out: Path, epochs: int, cached: bool) -> tuple[float, list[float], list]:
    import shutil

    from recipekit.training import train
    from recipekit.training.textcache import clear_text_caches

    clear_text_caches()
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = train("real_small", out, device="cpu", overrides=[
        f"data.prepared={prepared}", f"data.feature_cache={features}", f"train.epochs={epochs}",
        f"train.text_cache={'true' if cached else 'false'}", "log.progress=false", "log.tensorboard=false",
        "log.curves=false"])
    wall = time.perf_counter() - t0
    shutil.rmtree(out)
    clear_text_caches()
    return wall, [h["seconds"] for h in result.history], [h["loss"] for h in result.history]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "results")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    import results as R

    torch.set_num_threads(args.threads)
    prepared = R.prepare_corpus("recipes-en", args.work)
    features = args.work / "recipes-en" / "features"
    load0 = load_average()
    times: dict[bool, list[float]] = {False: [], True: []}
    epochs: dict[bool, list[float]] = {False: [], True: []}
    later: dict[bool, list[float]] = {False: [], True: []}
    losses = {}
    one_run(prepared, features, args.work / "text-cache-run", 1, False)  # warm-up: features, imports
    for i in range(args.repeats):
        for cached in (False, True):
            wall, secs, loss = one_run(prepared, features, args.work / "text-cache-run", args.epochs, cached)
            times[cached].append(wall)
            epochs[cached].append(secs[0])
            later[cached].extend(secs[1:])
            losses[cached] = loss
            R.log(f"repeat {i} text_cache={cached}: {wall:.1f} s, epochs {', '.join(f'{s:.1f}' for s in secs)}")
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses[True], losses[False]))
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"Machine: {machine()}; torch {torch.__version__} on {torch.get_num_threads()} thread(s). Date: {today()}. "
        f"Load average at start and end: {load0}; {load_average()} (shared machine: times are indicative).",
        "",
        f"Command: `python benchmarks/text_cache.py {' '.join(sys.argv[1:])}`. `configs/real_small.toml` on recipes-en "
        f"(74 train / 28 val pairs), {args.epochs} epochs, features already cached, {args.repeats} runs per setting "
        "(alternating); each cached run starts from an empty cache.",
        "",
        "| `train.text_cache` | `train()` wall s, median | first epoch s, median | later epochs s, median |",
        "|---|---:|---:|---:|",
    ]
    for cached in (False, True):
        lines.append(f"| {'true' if cached else 'false (baseline)'} | {med[cached]:.1f} | "
                     f"{statistics.median(epochs[cached]):.1f} | "
                     + (f"{statistics.median(later[cached]):.2f}" if later[cached] else "—") + " |")
    lines += ["", f"Ratio of the medians (baseline / cached): {med[False] / med[True]:.1f}x for {args.epochs} epochs. "
              f"Largest relative difference of the per-epoch losses between the two: {rel:.1e}."]
    body = "\n".join(lines)
    print(body)
    if args.write:
        replace_section(DOC, "text-cache", body, "Frozen sentence encoder cache (benchmarks/text_cache.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
