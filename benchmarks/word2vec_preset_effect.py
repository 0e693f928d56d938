"""Benchmark: what the word2vec ``fast`` preset changes in a retrieval training run.

The word2vec stage initialises the recipe tower's word embeddings (``model.word2vec = true``).
This prepares each corpus twice, with the im2recipe settings and with ``--w2v-preset fast``
(every stage: the vocabulary, and so the recipe store and the shards' token ids, come from the
word2vec model), then trains and evaluates the same config on each with the same seeds:

* the demo corpus (2,000 synthetic recipes): the ``ht`` row of docs/results.md's demo section
  (H-T tower, word2vec initialised, frozen EfficientNet-Lite0 features, 15 epochs);
* recipes-en (real): its ``ht_w2v`` row (the word2vec H-T tower, recipe-only batches, 25 epochs).

Reported: the word2vec stage's CPU seconds per preset and the test retrieval (one bag of all
test pairs; mean ± sd over the seeds), side by side.

    python benchmarks/word2vec_preset_effect.py --seeds 0 1 2 --write

Writes the ``word2vec_preset_effect`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine, replace_section, today  # noqa: E402
from results import DIRS, SHARED, _agg, _fmt, method_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
ROWS = {"demo": "ht", "recipes-en": "ht_w2v"}  # corpus -> the results.md row it trains
EPOCHS = {"demo": 15, "recipes-en": 25}
PRESETS = ("im2recipe", "fast")


def prepare_twice(corpus: str, work: Path) -> dict[str, tuple[Path, float]]:
    """PRESET -> (prepared folder, the word2vec stage's wall seconds from its manifest)."""
    from recipekit.pipeline.prepare import PrepareConfig, prepare
    from recipekit.pipeline.word2vec import Word2VecParams

    if corpus == "demo":
        src = work / "demo" / "corpus"
        if not (src / "layer2.json").exists():
            from recipekit.pipeline.demo import write_demo_corpus

            write_demo_corpus(src, recipes=2000, seed=0, workers=2, quiet=True)
    else:
        src = SHARED / corpus
        if not (src / "layer1.json").exists():
            raise SystemExit(f"{src}: the real corpus is missing")
    out = {}
    for preset in PRESETS:
        dest = work / corpus / f"prepared-{preset}"
        if not (dest / "shards" / "index.json").exists():
            prepare(src, dest, config=PrepareConfig(word2vec=Word2VecParams.preset(preset)), workers=2, quiet=True)
        manifest = json.loads((dest / "manifests" / "word2vec.json").read_text(encoding="utf-8"))
        out[preset] = (dest, manifest["timings"]["wall_s"])
    return out


def train_eval(corpus: str, prepared: Path, seed: int, work: Path) -> dict:
    from recipekit.evaluation import EvalProtocol, evaluate
    from recipekit.training import train

    run = work / corpus / "runs" / f"{prepared.name}-s{seed}"
    if run.exists():
        shutil.rmtree(run)
    cfg = method_config(ROWS[corpus], corpus, prepared, work / corpus / f"features-{prepared.name}", seed,
                        EPOCHS[corpus])
    train(cfg, run, device="cpu")
    ev = evaluate(run, split="test", protocol=EvalProtocol(bag_size=1000, n_bags=10, n_bags_large=0),
                  device="cpu", batch_size=32)
    return ev.report["bags"][0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "word2vec_preset_effect")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    results: dict[str, dict] = {}
    for corpus in args.corpus:
        prepared = prepare_twice(corpus, args.work)
        results[corpus] = {p: {"w2v_s": s, "runs": [train_eval(corpus, d, seed, args.work) for seed in args.seeds]}
                           for p, (d, s) in prepared.items()}
        (args.work / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    lines = [
        f"Machine: {machine()}; torch {torch.__version__} on {args.threads} thread(s), CPU only. Date: {today()}. "
        f"Load average (1 min) at start and end: {load0:.2f}, {os.getloadavg()[0]:.2f}.",
        "",
        f"Command: `python benchmarks/word2vec_preset_effect.py {' '.join(sys.argv[1:])}` "
        f"({(time.perf_counter() - t_start) / 60:.1f} min). Seeds {', '.join(map(str, args.seeds))}; test split, "
        "one bag of all test pairs; mean ± sd over the seeds. *stage s*: the word2vec stage's wall time, from its "
        "manifest (2 workers; the machine was shared with the GAN runs of docs/results.md, so compare the retrieval "
        "columns, and the stage times only with each other).",
        "",
        "| corpus (row) | word2vec | stage s | i→r medR | i→r R@1 | i→r R@10 | r→i medR | r→i R@1 | r→i R@10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for corpus, by_preset in results.items():
        for preset, res in by_preset.items():
            cells = []
            for d in DIRS:
                for m in ("medR", "R@1", "R@10"):
                    cells.append(_fmt(*_agg([r[d][m]["mean"] for r in res["runs"]]), m))
            label = "im2recipe settings" if preset == "im2recipe" else "`fast` preset"
            lines.append(f"| {corpus} (`{ROWS[corpus]}`) | {label} | {res['w2v_s']:.1f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_section(DOC, "word2vec_preset_effect", text,
                        "word2vec presets in a training run (benchmarks/word2vec_preset_effect.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
