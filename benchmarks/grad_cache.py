"""Benchmark: the gradient cache (``train.grad_cache_chunk``) against plain batches.

For each batch size, one fresh process per mode builds the trainer's step (an H-T-style model:
image tower + hierarchical transformer recipe tower, the triplet loss plus H-T's recipe loss, as
``recipekit train`` builds them) on synthetic inputs and runs forward + backward steps: plain
(the whole batch in one graph) and cached (``GradCache``, ``--chunk`` samples at a time). It
records the peak memory (CPU: the process's peak RSS; CUDA: ``torch.cuda.max_memory_allocated``)
and the median step time, and finds the largest batch of the sweep whose peak stays under the
memory cap (``--cap-mb``). A mode's sweep stops at the first batch over the cap.

    python benchmarks/grad_cache.py --write                      # CPU, the figures in docs/benchmarks.md
    python benchmarks/grad_cache.py --device cuda --backbone vit_b_16 --image-size 224 --amp bf16 \\
        --batches 128 256 512 1024 2048 --chunk 128 --cap-mb 40000
    python benchmarks/grad_cache.py --gan tnlbt --prepared demo-run/prepared --write   # the GAN family

``--gan METHOD`` adds that method's ``[gan]`` terms (a 64 px generator 16 channels wide, its
discriminators, the translation heads; ``--prepared``: a prepared folder for the ingredient
vocabulary and the classes) and its discriminator step to every step, as the trainer runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine, replace_section, today

ROOT = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(500)]


def _recipes(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)

    def text(k):
        return " ".join(rnd.choice(WORDS) for _ in range(k))

    return [{"title": text(rnd.randint(2, 6)),
             "ingredients": [{"text": text(rnd.randint(2, 5))} for _ in range(rnd.randint(5, 12))],
             "instructions": [{"text": text(rnd.randint(6, 15))} for _ in range(rnd.randint(4, 10))]}
            for _ in range(n)]


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(a) -> dict:
    """One mode at one batch size, in this process: peak memory and median step time."""
    import torch

    from recipekit.embedders import Vocabulary, create_embedder
    from recipekit.training.build import TrainStep, amp_settings, build_losses
    from recipekit.training.config import load_config
    from recipekit.training.distributed import DistInfo
    from recipekit.training.gradcache import GradCache

    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    gan = {"generator": {"image_size": 64, "cond_dim": 32, "noise_dim": 32, "channels": 16}} if a.gan else {}
    model = create_embedder("ht_resnet50", vocab=Vocabulary(WORDS), embed_dim=a.embed_dim,
                            image={"backbone": a.backbone, "image_size": a.image_size, "weights": None},
                            recipe={"hidden": a.hidden, "heads": 4, "layers": 2, "ff_dim": 2 * a.hidden}, **gan)
    if model.image_tower.convolutional:
        model.image_tower.use_channels_last(True)
    sections = {"data": {"prepared": str(a.prepared or "/unused")}, "loss": {"name": "triplet", "recipe_weight": 1.0},
                "train": {"amp": a.amp}}
    if a.gan:
        sections["gan"] = {"method": a.gan, "ingredient_vocab": 512, "disc_channels": 16}
        sections["model"] = {"overrides": dict(gan)}
    cfg = load_config(sections)
    info = DistInfo(device=dev)
    loss, recipe_loss = build_losses(cfg, model, info)
    amp = amp_settings(a.amp, dev)
    step = TrainStep(model, loss, recipe_loss, cfg, info, amp).to(dev).train()
    scaler = torch.amp.GradScaler("cuda") if amp.scaler else None
    g = torch.Generator().manual_seed(1)
    batch = {"recipes": {k: v.to(dev) for k, v in model.collate(_recipes(a.batch, 1)).items()},
             "images": torch.randn(a.batch, 3, a.image_size, a.image_size, generator=g).to(dev),
             "labels": torch.zeros(a.batch, dtype=torch.long, device=dev)}
    adv = None
    if a.gan:  # the [gan] terms and the discriminator step, as the trainer runs them
        from recipekit.training.adversarial import Adversary
        from recipekit.training.data import num_classes

        adv = Adversary(cfg, model, info, amp, steps_per_epoch=a.runs + 1)
        step.attach_adversary(adv)
        batch["labels"] = torch.randint(0, num_classes(a.prepared), (a.batch,), generator=g).to(dev)
        batch["ingredients"] = (torch.rand(a.batch, len(adv.targets), generator=g) < 0.02).float().to(dev)
    cache = GradCache(step, a.chunk) if a.mode == "cached" else None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev) / 2**20 if dev.type == "cuda" else _peak_rss_mb()
    times, losses = [], []
    for i in range(a.runs + 1):  # the first step is a warm-up
        step.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        if cache is not None:
            out = cache.step(step, "pair", batch, scaler=scaler)
        else:
            out = step("pair", **batch)
            (scaler.scale(out["total"]) if scaler is not None else out["total"]).backward()
        if adv is not None:
            adv.discriminator_step(step.stash)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:
            times.append(time.perf_counter() - t0)
        losses.append(float(out["pair"]))
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _peak_rss_mb()
    return {"mode": a.mode, "batch": a.batch, "peak_mb": round(peak, 1), "before_mb": round(before, 1),
            "step_s": statistics.median(times), "loss": losses[0]}


def _child(a, mode: str, batch: int) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--batch", str(batch)]
    for key in ("device", "backbone", "image_size", "embed_dim", "hidden", "chunk", "runs", "threads", "amp",
                "gan", "prepared"):
        if getattr(a, key) is not None:
            cmd += [f"--{key.replace('_', '-')}", str(getattr(a, key))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:  # e.g. CUDA out of memory: over any cap
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        print(f"  {mode} batch {batch}: failed ({tail[0]})", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--hidden", type=int, default=128, help="width of the recipe tower")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--chunk", type=int, default=32, help="train.grad_cache_chunk of the cached mode")
    p.add_argument("--cap-mb", type=float, default=2048.0, help="the memory budget (MiB)")
    p.add_argument("--runs", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--amp", default="off", help="off | bf16 | fp16 (fp16: CUDA, with a GradScaler)")
    p.add_argument("--gan", choices=["acme", "r2gan", "tnlbt"], default=None,
                   help="add this method's [gan] terms and discriminator step (needs --prepared)")
    p.add_argument("--prepared", type=Path, default=None, help="with --gan: a prepared folder (ingredients, classes)")
    p.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.gan and a.prepared is None:
        p.error("--gan needs --prepared (the ingredient vocabulary and the classes of a prepared folder)")
    if a.worker:
        print(json.dumps(worker(a)))
        return
    import torch

    load_start = os.getloadavg()[0]
    rows: dict[tuple[str, int], dict | None] = {}
    going = {"plain": True, "cached": True}
    for batch in sorted(a.batches):  # both modes at each batch size, one after the other (same machine load)
        for mode in ("plain", "cached"):
            if not going[mode]:
                continue
            r = rows[(mode, batch)] = _child(a, mode, batch)
            if r is not None:
                print(f"{mode:6s} batch {batch:5d}: peak {r['peak_mb']:8.1f} MiB, {r['step_s']:.3f} s/step, "
                      f"loss {r['loss']:.5f}", flush=True)
            going[mode] = r is not None and r["peak_mb"] <= a.cap_mb  # larger batches need more
    fits = {m: max((b for (mm, b), r in rows.items() if mm == m and r and r["peak_mb"] <= a.cap_mb), default=None)
            for m in ("plain", "cached")}
    memory = "peak RSS of the process" if a.device == "cpu" else "torch.cuda.max_memory_allocated"
    cmd = " ".join(["python benchmarks/grad_cache.py"] + sys.argv[1:])
    dev_name = machine() if a.device == "cpu" else torch.cuda.get_device_name(torch.device(a.device))
    lines = [f"Machine: {dev_name}. Date: {today()}. torch {torch.__version__}, device {a.device}, "
             f"{a.threads} threads, amp {a.amp}.", f"Command: `{cmd}`", "",
             f"The trainer's step (TrainStep: triplet loss + H-T's recipe loss"
             + (f", plus `[gan] method = \"{a.gan}\"`: its joint terms with a 64 px generator 16 channels wide, "
                "and its discriminator step" if a.gan else "")
             + f") on a {a.backbone} image tower at "
             f"{a.image_size} px, fine-tuned, and a 2-layer H-T recipe tower (width {a.hidden}), synthetic inputs; "
             f"forward + backward per step (no optimiser), median of {a.runs} steps after a warm-up, one fresh "
             f"process per cell. Memory: {memory} (MiB), cap {a.cap_mb:.0f} MiB; cached = "
             f"`train.grad_cache_chunk = {a.chunk}`. Each mode's sweep stops at its first batch over the cap.", "",
             "| batch | plain peak MiB | plain s/step | cached peak MiB | cached s/step | cached / plain time |",
             "|---:|---:|---:|---:|---:|---:|"]
    for batch in sorted(a.batches):
        p_, c_ = rows.get(("plain", batch)), rows.get(("cached", batch))
        if p_ is None and c_ is None:
            continue

        def cell(r, key, fmt):
            return "-" if r is None else format(r[key], fmt)

        ratio = f"{c_['step_s'] / p_['step_s']:.2f}x" if p_ and c_ else "-"
        lines.append(f"| {batch} | {cell(p_, 'peak_mb', '.0f')} | {cell(p_, 'step_s', '.2f')} | "
                     f"{cell(c_, 'peak_mb', '.0f')} | {cell(c_, 'step_s', '.2f')} | {ratio} |")
    lines += ["", f"Largest batch of the sweep under {a.cap_mb:.0f} MiB: plain {fits['plain']}, "
              f"cached {fits['cached']}."]
    same = [b for b in a.batches if rows.get(("plain", b)) and rows.get(("cached", b))]
    if same:
        gap = max(abs(rows[("cached", b)]["loss"] - rows[("plain", b)]["loss"]) / abs(rows[("plain", b)]["loss"])
                  for b in same)
        lines.append(f"First-step loss, cached against plain, largest relative difference over the batches both "
                     f"ran: {gap:.1e} (BatchNorm of the fine-tuned backbone sees per-chunk statistics).")
    lines.append(f"1-minute load average of the machine at the start and the end of the sweep: {load_start:.1f}, "
                 f"{os.getloadavg()[0]:.1f} (on a shared machine other jobs' load moves the times; compare the "
                 f"cells of one row, measured one after the other).")
    if a.device == "cpu":
        lines.append("The CUDA path of the script (`--device cuda`: torch.cuda.max_memory_allocated, e.g. "
                     "`--backbone vit_b_16 --image-size 224 --amp bf16`) has not run on a GPU yet.")
    text = "\n".join(lines)
    print(text)
    if a.write:
        where = ("cpu" if a.device == "cpu" else "cuda") + (f"_{a.gan}" if a.gan else "")
        replace_section(ROOT / "docs" / "benchmarks.md", f"grad_cache_{where}", text,
                        f"Gradient cache on {where.split('_')[0].upper()}"
                        + (f" with the {a.gan} terms" if a.gan else "")
                        + ": large batches in a memory budget (benchmarks/grad_cache.py)")


if __name__ == "__main__":
    main()
