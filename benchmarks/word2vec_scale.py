"""Benchmark: the word2vec stage against gensim alone on the same sentences, and the `fast` preset.

Builds a real-text corpus of SIZE recipes (``parse_scale.make_corpus``: the recipes of
``--source`` resampled with fresh ids) and prepares it up to `ingredients`. Then, each in its own
process, with wall time, CPU time (process and children) and peak RSS:

* ``recipekit prepare --stages word2vec --workers W`` with the im2recipe settings (corpus
  tokenised by the workers, then gensim from the corpus file), and with ``--w2v-preset fast``;
* gensim alone: ``Word2Vec(corpus_file=...)`` with the same settings and threads on the corpus
  file the stage writes (written beforehand, not timed): the per-core rate the stage is held to.

Quality of the fast preset: for the most frequent ingredient tokens, the overlap of their 10
nearest neighbours with the im2recipe model's, beside the overlap of two im2recipe models
trained with different seeds (the run-to-run noise of the reference itself).

    python benchmarks/word2vec_scale.py --size 20000 --workers 2

Writes the ``word2vec_scale`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import load_average, machine, replace_section, run_measured, today  # noqa: E402
from parse_scale import make_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_GENSIM_ALONE = """
import json, sys, time
from dataclasses import asdict
from gensim.models import Word2Vec
from recipekit.pipeline.word2vec import Word2VecParams
corpus, workers, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
params = asdict(Word2VecParams.preset("im2recipe", seed=seed, **json.loads(sys.argv[4])))
t = time.perf_counter()
model = Word2Vec(corpus_file=corpus, workers=workers, **params)
if len(sys.argv) > 6:
    kv, words = model.wv, json.loads(sys.argv[6])
    nn = {w: [n for n, _ in kv.most_similar(w, topn=10)] for w in words if w in kv.key_to_index}
    open(sys.argv[5], "w").write(json.dumps(nn))
print(json.dumps({"train_s": time.perf_counter() - t, "words": model.corpus_total_words * params["epochs"]}))
"""


def _measured(cmd: list[str]) -> dict:
    run = run_measured(cmd, cwd=str(ROOT))
    if run.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{run.output[-3000:]}")
    return {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss_mb": run.peak_rss_mb, "output": run.output}


def _prepare(src: Path, out: Path, stages: list[str], workers: int, *extra: str) -> dict:
    return _measured([sys.executable, "-m", "recipekit.cli.main", "prepare", str(src), str(out), "--stages", *stages,
                      "--workers", str(workers), "--force", "--quiet", *extra])


def _copy_text(prepared: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("recipes.parquet", "ingredients.parquet", "images.parquet", "det_ingrs.parquet"):
        if (prepared / name).exists():
            shutil.copy(prepared / name, dest / name)
    shutil.copytree(prepared / "manifests", dest / "manifests", dirs_exist_ok=True)
    return dest


def _neighbours(out: Path, words: list[str], k: int = 10) -> dict[str, list[str]]:
    from recipekit.pipeline.word2vec import load_vectors

    kv = load_vectors(out)
    return {w: [n for n, _ in kv.most_similar(w, topn=k)] for w in words if w in kv.key_to_index}


def _common_ingredients(prepared: Path, n: int) -> list[str]:
    import polars as pl

    from recipekit.pipeline.tokenize import ingredient_token

    names = pl.read_parquet(prepared / "ingredients.parquet", columns=["ingredients"])["ingredients"].explode()
    counts = Counter(ingredient_token(x) for x in names.drop_nulls().to_list())
    return [w for w, _ in counts.most_common(n)]


def _overlap(a: dict[str, list[str]], b: dict[str, list[str]]) -> float:
    common = [w for w in a if w in b]
    return sum(len(set(a[w]) & set(b[w])) / len(a[w]) for w in common) / max(1, len(common))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "recipes-en")
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--common", type=int, default=20, help="how many frequent ingredients to compare")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "word2vec_scale")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    src, base = args.workdir / f"corpus-{args.size}", args.workdir / f"prepared-{args.size}"
    make_corpus(args.source, args.size, src)
    load = load_average()
    _prepare(src, base, ["parse,ingredients"], args.workers)
    runs = {}
    im2 = _copy_text(base, args.workdir / "im2recipe")
    runs["stage"] = _prepare(src, im2, ["word2vec"], args.workers)
    fast = _copy_text(base, args.workdir / "fast")
    runs["fast"] = _prepare(src, fast, ["word2vec"], args.workers, "--w2v-preset", "fast")
    seed2 = _copy_text(base, args.workdir / "seed2")
    corpus = args.workdir / "corpus.txt"
    _measured([sys.executable, "-c", "import sys; from pathlib import Path; from recipekit.pipeline.word2vec import "
               "write_corpus_files; write_corpus_files(Path(sys.argv[1]), Path(sys.argv[2]))", str(base), str(corpus)])
    runs["gensim"] = _measured([sys.executable, "-c", _GENSIM_ALONE, str(corpus), str(args.workers), "1234", "{}"])
    gensim_info = json.loads(runs["gensim"]["output"].strip().splitlines()[-1])
    words = _common_ingredients(base, args.common)
    sgneg = {"sg": 1, "hs": 0, "negative": 5, "epochs": 5}
    runs["sgneg"] = _measured([sys.executable, "-c", _GENSIM_ALONE, str(corpus), str(args.workers), "1234",
                               json.dumps(sgneg), str(args.workdir / "sgneg.json"), json.dumps(words)])
    runs["seed2"] = _prepare(src, seed2, ["word2vec"], args.workers, "--w2v-seed", "7")
    counts = json.loads((im2 / "manifests" / "word2vec.json").read_text())["counts"]
    nn = {name: _neighbours(out, words) for name, out in [("im2recipe", im2), ("fast", fast), ("seed2", seed2)]}
    nn["sgneg"] = json.loads((args.workdir / "sgneg.json").read_text())
    fast_overlap, noise_overlap = _overlap(nn["im2recipe"], nn["fast"]), _overlap(nn["im2recipe"], nn["seed2"])
    sgneg_overlap = _overlap(nn["im2recipe"], nn["sgneg"])
    epochs_words = gensim_info["words"]
    rate = {k: epochs_words / runs[k]["cpu_s"] for k in ("stage", "gensim", "seed2")}
    lines = [
        f"Machine: {machine()}; shared with other jobs (load average {load} at the start). Date: {today()}.",
        f"Command: `python benchmarks/word2vec_scale.py --size {args.size} --workers {args.workers}`",
        "",
        f"Corpus: {args.size:,} real recipes resampled from `recipes-en` (fresh ids, shuffled), prepared up to "
        f"`ingredients`: {counts['train_recipes']:,} train recipes, {counts['sentences']:,} sentences, "
        f"{counts['tokens']:,} tokens, vocabulary {counts['vocabulary']:,} (min_count 10). Each row is its own process; "
        "CPU includes the worker processes and gensim's threads. *gensim alone* trains `Word2Vec(corpus_file=...)` "
        "with the im2recipe settings and the same threads on the corpus file the stage writes (written beforehand, "
        "untimed). Rate: training words (tokens x epochs) per CPU second.",
        "",
        "| run | wall s | CPU s | CPU/wall | peak RSS MB | words per CPU s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"stage": "`--stages word2vec` (im2recipe settings, corpus included)", "gensim": "gensim alone (im2recipe settings)",
             "seed2": "`--stages word2vec`, im2recipe settings, seed 7",
             "fast": "`--stages word2vec --w2v-preset fast` (CBOW, 5 negatives, 5 epochs)",
             "sgneg": "gensim alone: skip-gram, 5 negatives, 5 epochs (not a preset)"}
    for key in ("gensim", "stage", "seed2", "fast", "sgneg"):
        r = runs[key]
        wps = f"{rate[key]:,.0f}" if key in rate else "—"
        lines.append(f"| {names[key]} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['cpu_s'] / r['wall_s']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {wps} |")
    stage, gensim = runs["stage"], runs["gensim"]
    lines += [
        "",
        f"- The stage (corpus tokenised by the workers, then gensim) kept {stage['cpu_s'] / stage['wall_s']:.2f} of "
        f"{args.workers} cores busy on average (target >= 1.8: {'met' if stage['cpu_s'] / stage['wall_s'] >= 1.8 else 'NOT met'}); "
        f"its words per CPU second, corpus included, are {rate['stage'] / rate['gensim']:.2f}x gensim's own on the "
        f"same sentences (gensim alone: CPU/wall {gensim['cpu_s'] / gensim['wall_s']:.2f}).",
        f"- `--w2v-preset fast` took {runs['fast']['cpu_s'] / stage['cpu_s']:.2f}x the CPU and "
        f"{runs['fast']['wall_s'] / stage['wall_s']:.2f}x the wall time of the im2recipe settings.",
        f"- Nearest ingredients ({len(nn['im2recipe'])} most frequent ingredient tokens, 10 neighbours each): the fast "
        f"model shares {fast_overlap:.0%} of the im2recipe model's neighbours; two im2recipe models (seeds 1234 and 7) "
        f"share {noise_overlap:.0%}; skip-gram with 5 negatives and 5 epochs (gensim alone, "
        f"{runs['sgneg']['cpu_s'] / gensim['cpu_s']:.2f}x gensim's CPU with the im2recipe settings) shares "
        f"{sgneg_overlap:.0%}.",
        "",
        "| ingredient | im2recipe settings: nearest 5 | fast preset: nearest 5 |",
        "|---|---|---|",
    ]
    for w in list(nn["im2recipe"])[:6]:
        lines.append(f"| {w} | {', '.join(nn['im2recipe'][w][:5])} | {', '.join(nn['fast'].get(w, [])[:5])} |")
    lines.append("")
    lines.append("The resampled corpus repeats 1,521 distinct recipes, so its vocabulary and neighbours are those of a "
                 "small corpus; the preset's effect on retrieval training runs is measured by "
                 "benchmarks/word2vec_preset_effect.py (next section).")
    text = "\n".join(lines)
    print(text)
    replace_section(args.doc, "word2vec_scale", text, "word2vec at scale (benchmarks/word2vec_scale.py)")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
