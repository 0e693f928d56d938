"""Accuracy and speed of the ingredient-name extractors ("rules", "spacy-sm").

Accuracy: on the hand-labelled tables of tests/test_ingredient_names.py
(imported from there, so the labels live in one place).
Speed: on every English ingredient line of ``DATA/recipes-en/layer1.json``,
deduplicated first as the ``ingredients`` stage does, on ONE core (the process
is pinned to one CPU and BLAS/OpenMP threads are set to 1); a fresh extractor
per run (model loading is not timed), median of ``--runs`` runs.

    .venv/bin/python benchmarks/ingredient_extractors.py [--data ../shared/data] [--runs 3]

Prints a markdown report (the numbers in docs/ingredients.md come from it).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_tables() -> tuple[dict[str, list], object]:
    path = REPO / "tests" / "test_ingredient_names.py"
    spec = importlib.util.spec_from_file_location("_ingredient_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.TABLES, module.accepted


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding recipes-en/layer1.json (default: ../shared/data from the repo root)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per extractor (median reported)")
    parser.add_argument("--extractors", nargs="+", default=None, help="subset of EXTRACTORS to run")
    args = parser.parse_args(argv)

    layer1 = args.data / "recipes-en" / "layer1.json"
    if not layer1.is_file():
        sys.exit(f"error: {layer1} not found; pass --data pointing at the folder that holds recipes-en/layer1.json")

    from recipekit.pipeline.ingredient_names import EXTRACTORS, IngredientExtractor

    kinds = args.extractors or list(EXTRACTORS)
    unknown = set(kinds) - set(EXTRACTORS)
    if unknown:
        sys.exit(f"error: unknown extractor(s) {sorted(unknown)}; choose from {EXTRACTORS}")

    pinned = pin_one_core()
    recipes = json.loads(layer1.read_text(encoding="utf-8"))
    lines = [ing["text"] for recipe in recipes for ing in recipe.get("ingredients", [])]
    unique = list(dict.fromkeys(lines))
    tables, accepted = load_tables()

    import spacy

    accuracy: dict[str, dict[str, tuple[int, int]]] = {}
    speed: dict[str, list[float]] = {}
    for kind in kinds:
        ex = IngredientExtractor(kind)
        accuracy[kind] = {}
        for name, table in tables.items():
            names = ex.extract_many([line for line, _ in table])
            accuracy[kind][name] = (sum(n in accepted(e) for n, (_, e) in zip(names, table)), len(table))
        speed[kind] = []
        for _ in range(args.runs):
            ex = IngredientExtractor(kind)  # fresh: no warm tokenizer cache carried between runs
            start = time.perf_counter()
            ex.extract_many(unique)
            speed[kind].append(len(unique) / (time.perf_counter() - start))
        print(f"# {kind}: done", file=sys.stderr)

    print("## Ingredient extractor benchmark\n")
    print(f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- machine: nproc={os.cpu_count()}, CPU: {cpu_model()}; {pinned}; BLAS/OpenMP threads 1")
    print(f"- python {platform.python_version()}, spaCy {spacy.__version__}")
    print(f"- command: `python benchmarks/ingredient_extractors.py --runs {args.runs}`")
    print(f"- speed data: {layer1.name} of recipes-en: {len(lines)} ingredient lines, {len(unique)} distinct (timed)\n")
    names = list(tables)
    print("| extractor | " + " | ".join(f"accuracy {n} ({len(tables[n])})" for n in names)
          + " | lines/s (median) | runs |")
    print("|---|" + "---|" * len(names) + "---|---|")
    for kind in kinds:
        cells = [f"{ok / total:.1%} ({ok}/{total})" for ok, total in (accuracy[kind][n] for n in names)]
        runs = ", ".join(f"{s:,.0f}" for s in speed[kind])
        print(f"| {kind} | " + " | ".join(cells) + f" | {statistics.median(speed[kind]):,.0f} | {runs} |")
    if "rules" in speed and "spacy-sm" in speed:
        ratio = statistics.median(speed["rules"]) / statistics.median(speed["spacy-sm"])
        print(f"\nrules / spacy-sm speed ratio: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
