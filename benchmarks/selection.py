#!/usr/bin/env python
"""docs/results.md, "Model selection on small validation sets": selection rules compared over seeds.

    python benchmarks/selection.py --write                               # recipes-en and recipes-zh, H-T and AdaMine
    python benchmarks/selection.py --corpus recipes-en --methods ht --seeds 0 1 2
    python benchmarks/selection.py --render --write                      # the section again from selection.json
    python benchmarks/selection.py --reuse --write                       # keep the runs an earlier call finished

Every run is a results.py run (benchmarks/results.py: same corpora under ``--work``, same cached
features, same config) with only ``train.select`` / ``train.select_window`` changed. The rule does
not change training (the trajectories of one seed are the same under every rule), only which
epoch's model becomes ``best.pt``, which is then scored on ``test`` with results.py's protocol.
The H-T config is checked to be ``configs/real_small.toml`` with the rule's keys. Raw numbers go to
``WORK/selection.json``; with ``--write`` the section between the ``results-selection`` markers of
docs/results.md is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import results as R  # noqa: E402
from _measure import load_average, machine, replace_section, today  # noqa: E402

# rule name -> (train.select, train.select_window)
RULES = {"i2r": ("image_to_recipe", 1), "rsum": ("rsum", 1), "rsum_w3": ("rsum", 3), "rsum_w5": ("rsum", 5)}
RULE_TEXT = {"i2r": "image→recipe medR, then R@1 (window 1)", "rsum": "rsum (window 1)",
             "rsum_w3": "rsum, mean of the last 3 validations", "rsum_w5": "rsum, mean of the last 5 validations"}
CORPORA = ("recipes-en", "recipes-zh")
KEYS = [("image_to_recipe", "medR"), ("image_to_recipe", "R@10"), ("recipe_to_image", "medR"), ("recipe_to_image", "R@10")]


def check_real_small(cfg: dict) -> None:
    """The H-T config of results.py is configs/real_small.toml (up to where its data and logs go)."""
    from recipekit.training.config import load_config

    ours = load_config(cfg).to_dict()
    packaged = load_config("real_small", [f"data.prepared={cfg['data']['prepared']}",
                                          f"train.seed={cfg['train']['seed']}"]).to_dict()
    for d in (ours, packaged):
        d["data"]["feature_cache"] = ""
        d.pop("log")
        d["train"]["select"], d["train"]["select_window"] = "-", 0
    if ours != packaged:
        diff = {k: (ours[k], packaged[k]) for k in ours if ours[k] != packaged[k]}
        raise SystemExit(f"configs/real_small.toml differs from results.py's H-T config: {diff}")


def _same_config(run: Path, cfg: dict) -> bool:
    from recipekit.training.config import load_config

    path = run / "config.resolved.json"
    return path.exists() and json.loads(path.read_text(encoding="utf-8")) == json.loads(
        json.dumps(load_config(cfg).to_dict()))


def run_one(corpus: str, method: str, seed: int, rule: str, work: Path, protocol, reuse: bool = False) -> dict:
    import shutil

    from recipekit.evaluation import evaluate
    from recipekit.training import train

    prepared, cache = work / corpus / "prepared", work / corpus / "features"
    cfg = R.method_config(method, corpus, prepared, cache, seed, R.SETTINGS[corpus]["epochs"])
    if method == "ht":
        check_real_small(cfg)
    cfg["train"]["select"], cfg["train"]["select_window"] = RULES[rule]
    run = work / corpus / "runs" / f"sel-{method}-{rule}-s{seed}"
    done = run / "eval" / "test" / "eval.json"
    if reuse and done.exists() and _same_config(run, cfg):  # finished earlier with this config
        test, epoch, train_s = json.loads(done.read_text(encoding="utf-8"))["bags"][0], None, None
        epoch = json.loads((run / "best.json").read_text(encoding="utf-8"))["epoch"]
    else:
        if run.exists():
            shutil.rmtree(run)
        t0 = time.perf_counter()
        epoch = train(cfg, run, device="cpu").best_epoch
        train_s = time.perf_counter() - t0
        test = evaluate(run, split="test", protocol=protocol, device="cpu", batch_size=32).report["bags"][0]
        (run / "checkpoints" / "last.pt").unlink(missing_ok=True)
    out = {"corpus": corpus, "method": method, "seed": seed, "rule": rule, "epoch": epoch,
           "train_s": train_s, "test": {d: {m: test[d][m]["mean"] for m in ("medR", "R@1", "R@5", "R@10")}
                                        for d in ("image_to_recipe", "recipe_to_image")}}
    R.log(f"[{corpus}] {method} {rule} seed {seed}: epoch {out['epoch']}, test i->r medR "
          f"{out['test']['image_to_recipe']['medR']:.1f}, r->i medR {out['test']['recipe_to_image']['medR']:.1f} "
          + (f"({train_s:.0f} s)" if train_s is not None else "(reused)"))
    return out


def _ms(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def render(data: dict) -> str:
    meta, runs = data["meta"], data["runs"]
    seeds = meta["seeds"]
    lines = [
        f"Machine: {meta['machine']}. Date: {meta['date']}. Load average (1/5/15 min) at start and end: "
        f"{meta['load_start']}; {meta['load_end']} (shared machine).",
        "",
        f"Command: `{meta['command']}` ({meta['wall_s'] / 60:.1f} min"
        + (f"; {sum(r['train_s'] is None for r in runs)} of the {len(runs)} runs were finished by earlier calls and "
           "reused, their time not counted)." if any(r["train_s"] is None for r in runs) else ")."),
        "",
        f"Each row: one method, one corpus, one rule, seeds {', '.join(map(str, seeds))}; every other setting is "
        "the corpus's table above (a seed's training is the same under every rule; only the kept epoch "
        "differs). Cells: test mean ± sample std over the seeds (one bag of all test pairs); *epochs*: the "
        "kept epoch per seed. *rsum*: R@1 + R@5 + R@10 of both directions on val (ties: their mean medR).",
        "",
        "| corpus | method | rule | i→r medR | i→r R@10 | r→i medR | r→i R@10 | epochs |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for corpus in meta["corpora"]:
        for method in meta["methods"]:
            for rule in meta["rules"]:
                rs = sorted((r for r in runs if (r["corpus"], r["method"], r["rule"]) == (corpus, method, rule)),
                            key=lambda r: r["seed"])
                if not rs:
                    continue
                cells = [_ms([r["test"][d][m] for r in rs]) for d, m in KEYS]
                lines.append(f"| {corpus} | {R.LABELS[method]} | {RULE_TEXT[rule]} | " + " | ".join(cells)
                             + f" | {', '.join(str(r['epoch']) for r in rs)} |")
    lines += ["", "Over every corpus, method and seed above (the same runs, pooled):", "",
              "| rule | mean i→r medR | mean r→i medR | mean i→r R@10 | mean std of i→r medR over seeds |",
              "|---|---:|---:|---:|---:|"]
    for rule in meta["rules"]:
        rs = [r for r in runs if r["rule"] == rule]
        groups = {}
        for r in rs:
            groups.setdefault((r["corpus"], r["method"]), []).append(r["test"]["image_to_recipe"]["medR"])
        spread = [statistics.stdev(v) for v in groups.values() if len(v) > 1]
        lines.append(f"| {RULE_TEXT[rule]} | {statistics.fmean(r['test']['image_to_recipe']['medR'] for r in rs):.2f} | "
                     f"{statistics.fmean(r['test']['recipe_to_image']['medR'] for r in rs):.2f} | "
                     f"{statistics.fmean(r['test']['image_to_recipe']['R@10'] for r in rs):.1f} | "
                     + (f"{statistics.fmean(spread):.2f}" if spread else "—") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", nargs="+", choices=CORPORA, default=list(CORPORA))
    ap.add_argument("--methods", nargs="+", choices=list(R.LEARNED), default=["ht", "adamine"])
    ap.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "results")
    ap.add_argument("--write", action="store_true", help="replace the results-selection section of docs/results.md")
    ap.add_argument("--render", action="store_true", help="no runs: the section from WORK/selection.json")
    ap.add_argument("--pairs", nargs="+", default=None, metavar="CORPUS:METHOD",
                    help="only these corpus:method pairs (instead of every --corpus x --methods)")
    ap.add_argument("--reuse", action="store_true", help="keep the run folders already finished with the same config")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    out_json = args.work / "selection.json"
    if args.render:
        data = json.loads(out_json.read_text(encoding="utf-8"))
    else:
        import torch

        from recipekit.evaluation import EvalProtocol

        torch.set_num_threads(args.threads)
        protocol = EvalProtocol(bag_size=1000, n_bags=10, n_bags_large=0)
        t0, load0 = time.perf_counter(), load_average()
        runs = []
        pairs = [tuple(p.split(":")) for p in args.pairs] if args.pairs else [(c, m) for c in args.corpus
                                                                              for m in args.methods]
        args.corpus = [c for c in CORPORA if any(p[0] == c for p in pairs)]
        args.methods = [m for m in R.LEARNED if any(p[1] == m for p in pairs)]
        for corpus in args.corpus:
            prepared = R.prepare_corpus(corpus, args.work)
            for split in ("train", "val"):  # the shared feature cache, as results.py
                R.first_photo_features(prepared, args.work / corpus / "features", split)
            for method in [m for m in args.methods if (corpus, m) in pairs]:
                for seed in args.seeds:
                    for rule in args.rules:
                        runs.append(run_one(corpus, method, seed, rule, args.work, protocol, args.reuse))
        data = {"meta": {"machine": machine() + f"; torch {torch.__version__} on {torch.get_num_threads()} thread(s), "
                         "CPU only", "date": today(), "load_start": load0, "load_end": load_average(),
                         "command": " ".join(["python", "benchmarks/selection.py", *sys.argv[1:]]),
                         "wall_s": time.perf_counter() - t0, "corpora": args.corpus, "methods": args.methods,
                         "rules": args.rules, "seeds": args.seeds}, "runs": runs}
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_name(f"{out_json.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(out_json)
    body = render(data)
    print(body, flush=True)
    if args.write:
        replace_section(R.DOC, "results-selection", body, "Model selection on small validation sets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
