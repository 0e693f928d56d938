"""GPU checks and throughput: the trainer's CUDA paths, measured on one GPU.

Two steps, because the GPU machine is not where the docs are written:

    # on the GPU machine, over a prepared corpus (`recipekit prepare` with shards):
    python benchmarks/gpu.py run --prepared PREPARED --json gpu.json [--workers 14]
    # here: render the JSON into docs/benchmarks.md (section "GPU training throughput"); with
    # several files (runs of some --parts each) a later file's parts replace an earlier one's
    python benchmarks/gpu.py write gpu.json [more.json ...]

`run` measures, in this order:
1. model alone: one optimiser step (forward, loss, backward, Adam) of a full image-recipe model
   on a batch that stays on the GPU (a real recipe batch from the loader, repeated), for
   ResNet-50 and ViT-B/16 image towers with the H-T recipe tower, batch 128 and 256, fp32 (TF32
   matmuls) against bf16 autocast, channels-last against contiguous for the ResNet;
2. the loader alone: uint8 batches of 128 from the train shards with N workers (pinned);
3. `recipekit.training.train` itself (loader included, bf16, channels-last) - its images/s
   against (1) at the same batch size;
4. the other CUDA paths once each: fp16 autocast with GradScaler; DDP through torchrun with two
   ranks on the one GPU over gloo (NCCL refuses two ranks on one device) and torchrun with one
   rank; `recipekit.evaluation.evaluate` on the GPU.

``--parts loop`` is the short check of the training loop alone (a few minutes of GPU time): the
model alone with ResNet-50, bf16 and channels-last, eager and under ``torch.compile``, then
``recipekit train`` with the real loader at the same settings; `write` reports the trainer's
last-epoch images/s as a fraction of the eager model-alone rate (target: >= 0.9). ``--device cpu
--quick`` runs the same path on a CPU with tiny batches, to check the script before GPU time is
spent on it:

    python benchmarks/gpu.py run --prepared PREPARED --json loop.json --parts loop --workers 14
    python benchmarks/gpu.py run --prepared demo-run/prepared --json /tmp/loop.json --parts loop \
        --device cpu --quick --no-compile --loop-embedder ht_resnet18 --amp off --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recipekit.core import Run

ROOT = Path(__file__).resolve().parents[1]
SECTION = "GPU training throughput"


def _cfg(prepared: str, embedder: str, batch: int, amp: str, channels_last: bool, **data):
    from recipekit.training.config import load_config

    return load_config({
        "data": {"prepared": prepared, "batch_size": batch, "num_workers": 0, **data},
        "model": {"embedder": embedder, "word2vec": False, "overrides": {"image": {"weights": None}}},
        "loss": {"name": "triplet", "margin": 0.3},
        "train": {"amp": amp, "channels_last": channels_last, "val_every": 0},
        "log": {"progress": False, "tensorboard": False, "curves": False},
    })


def model_alone(prepared: str, embedder: str, batch: int, amp: str, channels_last: bool, *,
                steps: int = 20, warmup: int = 5, device: str = "cuda", compile: bool = False) -> dict:
    """Images/s of full optimiser steps on one batch kept on the GPU (no loader); with ``compile``,
    both towers run under ``torch.compile`` (the warm-up steps include the compilation)."""
    import torch

    from recipekit.training import build, data
    from recipekit.training.distributed import DistInfo

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cfg = _cfg(prepared, embedder, batch, amp, channels_last)
    info = DistInfo(device=dev)
    torch.manual_seed(0)
    model = build.build_model(cfg)
    loss, recipe_loss = build.build_losses(cfg, model, info)
    model.to(dev)
    loss.to(dev)
    cl = channels_last and not model.config["image"]["backbone"].startswith("vit")
    if cl:
        model.image_tower.to(memory_format=torch.channels_last)
    if compile:
        model.image_tower = torch.compile(model.image_tower)
        model.recipe_tower = torch.compile(model.recipe_tower)
    amp_s = build.amp_settings(amp, dev)
    step = build.TrainStep(model, loss, recipe_loss, cfg, info, amp_s)
    opt = build.build_optimizer(cfg, model, [loss])
    scaler = torch.amp.GradScaler("cuda") if amp_s.scaler else None
    loader, linfo = data.paired_loader(cfg, model, rank=0, world_size=1, on_gpu=dev.type == "cuda")
    b = next(iter(loader))
    recipes = {k: v.to(dev) for k, v in b["recipes"].items()}
    images = b["images"].to(dev)
    images = linfo.normalise(images) if dev.type == "cuda" else images
    if cl:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = b["class_ids"].to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        out = step("pair", recipes=recipes, images=images, labels=labels)
        (scaler.scale(out["total"]) if scaler else out["total"]).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"embedder": embedder, "batch": batch, "amp": amp_s.name, "channels_last": cl, "compile": compile,
            "device": dev.type, "step_ms": round(med * 1e3, 2), "images_per_s": round(batch / med, 1),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
            "loss_finite": bool(torch.isfinite(out["total"]).item())}


def loader_alone(prepared: str, batch: int, workers: int, batches: int = 60) -> dict:
    """Images/s of the training loader by itself (uint8 batches, pinned, as on GPU runs)."""
    from recipekit.training import build, data

    cfg = _cfg(prepared, "ht_resnet50", batch, "bf16", True, num_workers=workers, epoch_length=batch * (batches + 10))
    model = build.build_model(cfg)
    loader, _ = data.paired_loader(cfg, model, rank=0, world_size=1, on_gpu=True)
    it = iter(loader)
    for _ in range(5):  # workers started and warm
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)["ids"])
    dt = time.perf_counter() - t0
    return {"batch": batch, "workers": workers, "images_per_s": round(n / dt, 1)}


def _images_per_s(run: Path) -> list[float]:
    out = []
    for rec in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()):
        for key, value in rec.items():
            if key.endswith("images_per_s"):
                out.append(float(value))
    return out


def trainer_run(prepared: str, tmp: Path, name: str, *, embedder="ht_resnet50", batch=128, workers=14,
                amp="bf16", steps=40, epochs=2, device="cuda", nproc: int = 0, extra=()) -> dict:
    """``recipekit train`` itself, loader included; images/s per epoch from metrics.jsonl."""
    run = tmp / name
    sets = [f"data.prepared={json.dumps(prepared)}", f"data.batch_size={batch}", f"data.num_workers={workers}",
            f"data.epoch_length={batch * steps}", f"model.embedder={json.dumps(embedder)}", "model.word2vec=false",
            'model.overrides={image={weights=""}}', f"train.amp={json.dumps(amp)}", f"train.epochs={epochs}",
            "train.val_every=0", "log.progress=false", "log.tensorboard=false", "log.curves=false",
            'loss.name="triplet"', "loss.recipe_weight=0.0", "data.recipe_only_ratio=0.0",
            "train.cache_features=false", "train.freeze_backbone_epochs=0", *extra]
    # recipekit.training.train itself (what `recipekit train --config ht` calls), in a child process
    args = [__file__, "_train", str(run), device, *sets]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone", *args]
    else:
        cmd = [sys.executable, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = {"name": name, "embedder": embedder, "batch": batch, "workers": workers, "amp": amp,
           "returncode": proc.returncode, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        res["error"] = (proc.stdout + proc.stderr)[-3000:]
        return res
    res["images_per_s_per_epoch"] = _images_per_s(run)
    env = run / "environment.json"
    if env.exists():
        e = json.loads(env.read_text())
        res["environment"] = {k: e.get(k) for k in ("device", "world_size", "backend", "amp", "channels_last")}
    res["best_pt"] = Run(run).best.exists() or Run(run).last.exists()
    return res


def eval_on_gpu(run: Path, device: str = "cuda") -> dict:
    from recipekit.evaluation import evaluate

    t0 = time.perf_counter()
    result = evaluate(run, split="test", device=device, batch_size=128, num_workers=8, write=False)
    text = json.dumps(result.report, default=str)
    return {"seconds": round(time.perf_counter() - t0, 1), "report_excerpt": text[:1500]}


def cmd_run(a) -> None:
    import torch

    gpu = torch.cuda.get_device_name(0) if a.device == "cuda" else f"CPU only ({a.device}, a check of the script)"
    out: dict = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                 "gpu": gpu, "cpus": os.cpu_count(), "results": {}, "errors": []}
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    def save():
        Path(a.json).write_text(json.dumps(out, indent=1))

    def attempt(key, fn, *args, **kw):
        try:
            r = fn(*args, **kw)
            out["results"].setdefault(key, []).append(r)
            print(key, json.dumps(r)[:400], flush=True)
        except Exception as exc:  # keep measuring the rest; the error is reported
            import traceback

            out["errors"].append({"what": key, "args": repr(args), "error": traceback.format_exc()[-2000:]})
            print("ERROR", key, repr(exc), flush=True)
        save()

    tmp = Path(tempfile.mkdtemp(prefix="rk-gpu-"))
    if "loop" in a.parts:
        # The training loop against the model alone: ResNet-50, bf16, channels-last, real loader.
        batch, steps, warmup, train_steps = (8, 3, 1, 4) if a.quick else (128, 20, 5, 200)
        for compile in (False,) if a.no_compile else (False, True):
            attempt("loop_model", model_alone, a.prepared, a.loop_embedder, batch, a.amp, True, steps=steps,
                    warmup=warmup, device=a.device, compile=compile)
        attempt("loop_train", trainer_run, a.prepared, tmp, f"loop_{a.loop_embedder}_{a.amp}", embedder=a.loop_embedder,
                batch=batch, workers=a.workers, steps=train_steps, epochs=2, device=a.device, amp=a.amp)
        if a.device == "cuda":
            torch.cuda.empty_cache()
    if "model" in a.parts:
        for emb in ("ht_resnet50", "ht_vit_b16"):
            for batch in (128, 256):
                for amp in ("off", "bf16"):
                    for cl in ((True, False) if emb == "ht_resnet50" and amp == "bf16" else (emb == "ht_resnet50",)):
                        attempt("model_alone", model_alone, a.prepared, emb, batch, amp, cl)
        torch.cuda.empty_cache()
    if "loader" in a.parts:
        attempt("loader_alone", loader_alone, a.prepared, 128, a.workers)
    if "train" in a.parts:
        # epochs long enough that the workers' start and shuffle-buffer fill do not dominate
        attempt("trainer", trainer_run, a.prepared, tmp, "resnet50_bf16", workers=a.workers, steps=200)
        attempt("trainer", trainer_run, a.prepared, tmp, "vit_bf16", embedder="ht_vit_b16", workers=a.workers, steps=120)
    if "paths" in a.parts:
        attempt("trainer", trainer_run, a.prepared, tmp, "resnet50_fp16", amp="fp16", workers=a.workers, steps=40, epochs=1)
        # one GPU: NCCL refuses two ranks on one device, so the DDP path runs 2 ranks over gloo on cuda:0
        attempt("trainer", trainer_run, a.prepared, tmp, "ddp_2ranks_gloo", workers=a.workers // 2, steps=40, epochs=1,
                nproc=2, extra=('ddp.backend="gloo"',))
        attempt("trainer", trainer_run, a.prepared, tmp, "torchrun_1rank", workers=a.workers, steps=40, epochs=1, nproc=1)
        if Run(tmp / "resnet50_bf16").best.exists() or Run(tmp / "resnet50_bf16").checkpoints.exists():
            attempt("eval", eval_on_gpu, tmp / "resnet50_bf16")
    save()


def cmd_write(a) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _measure import replace_section

    d = {"results": {}, "errors": []}
    for path in a.json:  # several runs: a later file's results replace an earlier one's, key by key
        part = json.loads(Path(path).read_text())
        d.update({k: v for k, v in part.items() if k not in ("results", "errors")})
        d["results"].update(part["results"])
        d["errors"] = [e for e in d["errors"] if e["what"] not in part["results"]] + part["errors"]
    r = d["results"]
    lines = [f"Measured {d['date']} on one {d['gpu']} ({d['cpus']} CPU cores), torch {d['torch']}, with",
             "`python benchmarks/gpu.py run --prepared PREPARED --json gpu.json` (PREPARED: a 3,000-recipe demo",
             "corpus, 60 % with 320 px photos, `recipekit prepare` defaults) and rendered by `gpu.py write`.",
             "One optimiser step = forward of both towers, triplet loss, backward, Adam; medians of 20 steps",
             "after 5 warm-up steps. fp32 allows TF32 matmuls. Image weights random (throughput only).", "",
             "Model alone (one batch kept on the GPU):", "",
             "| image tower | batch | precision | channels-last | step ms | images/s | peak GiB |",
             "|---|---:|---|---|---:|---:|---:|"]
    for m in r.get("model_alone", []):
        lines.append(f"| {m['embedder']} | {m['batch']} | {m['amp'] if m['amp'] != 'off' else 'fp32/TF32'} | "
                     f"{'yes' if m['channels_last'] else 'no'} | {m['step_ms']} | {m['images_per_s']:.0f} | {m['peak_mem_gib']} |")
    base = {(m["embedder"], m["batch"], m["amp"], m["channels_last"]): m["images_per_s"] for m in r.get("model_alone", [])}
    lines += ["", "Loader included (`recipekit train`, batch 128, bf16; images/s of each epoch from metrics.jsonl):", "",
              "| run | workers | images/s per epoch | model-alone images/s | ratio (last epoch) |", "|---|---:|---|---:|---:|"]
    for t in r.get("trainer", []):
        if t.get("returncode") != 0:
            lines.append(f"| {t['name']} | {t['workers']} | FAILED (rc {t['returncode']}) | | |")
            continue
        rates = t.get("images_per_s_per_epoch", [])
        env = t.get("environment") or {}
        name = f"{t['name']} ({env.get('world_size')} rank(s), {env.get('backend') or 'no DDP'}, {env.get('amp')})"
        if len(rates) < 2:  # one short epoch: start-up and cuDNN autotuning included, a path check only
            lines.append(f"| {name} | {t['workers']} | {', '.join(f'{x:.0f}' for x in rates)} (path check: one "
                         "short epoch) | | |")
            continue
        cl = t["embedder"] == "ht_resnet50"
        ref = base.get((t["embedder"], t["batch"], t["amp"], cl))
        ratio = f"{rates[-1] / ref:.2f}" if ref and rates else ""
        lines.append(f"| {name} | {t['workers']} | {', '.join(f'{x:.0f}' for x in rates)} | {ref or ''} | {ratio} |")
    for la in r.get("loader_alone", []):
        lines += ["", f"Loader alone: {la['images_per_s']:.0f} images/s (batch {la['batch']}, {la['workers']} workers, "
                      "uint8, pinned)."]
    for e in r.get("eval", []):
        lines += ["", f"`evaluate()` on the GPU (test split): {e['seconds']} s."]
    loop_model, loop_train = r.get("loop_model", []), r.get("loop_train", [])
    if loop_model or loop_train:
        eager = next((m for m in loop_model if not m.get("compile")), None)
        compiled = next((m for m in loop_model if m.get("compile")), None)
        name = (eager or compiled or {}).get("embedder", "ht_resnet50")
        amp = (eager or compiled or {}).get("amp", "bf16")
        lines += ["", f"Training loop against the model alone (`--parts loop`: {name}, {amp}, channels-last):", ""]
        if eager:
            lines.append(f"- model alone, eager: {eager['images_per_s']:.0f} images/s (batch {eager['batch']}, "
                         f"step {eager['step_ms']} ms)")
        if compiled:
            speed = f", {compiled['images_per_s'] / eager['images_per_s']:.2f}x eager" if eager else ""
            lines.append(f"- model alone, `torch.compile`: {compiled['images_per_s']:.0f} images/s{speed}")
        for t in loop_train:
            rates = t.get("images_per_s_per_epoch", [])
            if t.get("returncode") != 0 or not rates:
                lines.append(f"- `recipekit train` ({t['workers']} loader workers): FAILED (rc {t.get('returncode')})")
                continue
            ratio = rates[-1] / eager["images_per_s"] if eager else float("nan")
            lines.append(f"- `recipekit train` with the real loader ({t['workers']} workers): "
                         f"{', '.join(f'{x:.0f}' for x in rates)} images/s per epoch; last epoch {ratio:.2f} of the "
                         f"eager model-alone rate (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
    if d.get("errors"):
        lines += ["", "Errors: " + "; ".join(f"{x['what']}: {x['error'].strip().splitlines()[-1]}" for x in d["errors"])]
    replace_section(ROOT / "docs" / "benchmarks.md", "gpu-training", "\n".join(lines) + "\n", SECTION)
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--prepared", required=True)
    r.add_argument("--json", required=True)
    r.add_argument("--workers", type=int, default=14)
    r.add_argument("--parts", nargs="+", default=["model", "loader", "train", "paths"],
                   choices=["loop", "model", "loader", "train", "paths"])
    r.add_argument("--device", default="cuda", help="cpu: check the script without a GPU (with --quick)")
    r.add_argument("--quick", action="store_true", help="tiny batches and few steps (a check of the script)")
    r.add_argument("--no-compile", action="store_true", help="loop: skip the torch.compile model-alone run")
    r.add_argument("--loop-embedder", default="ht_resnet50", help="loop: the model (ht_resnet18 for a CPU check)")
    r.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"],
                   help="loop: precision (off for a CPU check: bf16 is emulated on most CPUs)")
    w = sub.add_parser("write")
    w.add_argument("json", nargs="+")
    t = sub.add_parser("_train")  # the child of trainer_run
    t.add_argument("run")
    t.add_argument("device")
    t.add_argument("sets", nargs="*")
    a = p.parse_args()
    if a.cmd == "_train":
        from recipekit.training import train

        train("ht", a.run, device=a.device, overrides=a.sets)
        return
    (cmd_run if a.cmd == "run" else cmd_write)(a)


if __name__ == "__main__":
    main()
