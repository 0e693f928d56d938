"""Benchmark: `recipekit demo --config NAME` for the GAN family's CPU demos, end to end.

Each of ``demo`` (the H-T baseline, measured in the same run), ``demo_acme``, ``demo_r2gan`` and
``demo_tnlbt`` runs as the README says a user runs it: one fresh process doing everything
(demo corpus, prepare, train, eval), with its wall time, CPU time and peak RSS. Reported beside the times: the test retrieval and, for the GAN configs, the generation block of
``eval.json``.

    python benchmarks/gan_demos.py --write

Writes the ``gan_demos`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import load_average, machine, replace_section, run_measured, today  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("demo", "demo_acme", "demo_r2gan", "demo_tnlbt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "gan_demos")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    load = load_average()
    rows = []
    for name in args.configs:
        out = args.work / name
        shutil.rmtree(out, ignore_errors=True)
        run = run_measured([sys.executable, "-m", "recipekit.cli.main", "demo", "--out", str(out), "--config", name,
                            "--quiet"], cwd=str(ROOT))
        if run.returncode:
            raise SystemExit(f"recipekit demo --config {name} failed:\n{run.output[-3000:]}")
        report = json.loads((out / "run" / "eval" / "test" / "eval.json").read_text(encoding="utf-8"))
        bag = report["bags"][0]
        gen = report.get("generation")
        g = next((x for x in gen["retrieval"] if x.get("applicable", True)), None) if gen else None
        rows.append({"config": name, "wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss_mb": run.peak_rss_mb,
                     "i2r": bag["image_to_recipe"]["medR"]["mean"], "r2i": bag["recipe_to_image"]["medR"]["mean"],
                     "r1": bag["image_to_recipe"]["R@1"]["mean"],
                     "gen_medr": g["generated_image_to_recipe"]["medR"]["mean"] if g else None,
                     "frechet": gen["frechet_image_tower"] if gen else None})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["config"] == "demo"), None)
    lines = [
        f"Machine: {machine()}; load average {load} at the start. Date: {today()}.",
        f"Command: `python benchmarks/gan_demos.py {' '.join(sys.argv[1:])}`",
        "",
        "Each row is `recipekit demo --out DIR --config NAME --quiet` in a fresh process, everything included "
        "(2,000-recipe demo corpus written, prepared with 2 workers, trained on CPU, test split evaluated). "
        "Retrieval: test split, one bag of all 135 pairs (chance medR about 68); generation: eval.json's "
        "`generation` block (recipe -> generated photo -> recipe medR, and the Fréchet distance on the run's own "
        "image-tower embeddings).",
        "",
        "| config | wall min | CPU min | vs `demo` (wall) | peak RSS MB | i→r medR | i→r R@1 | r→i medR | gen→r medR "
        "| frechet_image_tower |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['wall_s'] / base['wall_s']:.1f}x" if base else "—"
        gen = f"{r['gen_medr']:.1f}" if r["gen_medr"] is not None else "—"
        fd = f"{r['frechet']:.3f}" if r["frechet"] is not None else "—"
        lines.append(f"| `{r['config']}` | {r['wall_s'] / 60:.1f} | {r['cpu_s'] / 60:.1f} | {ratio} | "
                     f"{r['peak_rss_mb']:.0f} | {r['i2r']:.1f} | {r['r1']:.1f} | {r['r2i']:.1f} | {gen} | {fd} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "gan_demos", text,
                        "The GAN family's CPU demos (benchmarks/gan_demos.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
