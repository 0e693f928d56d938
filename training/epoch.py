"""One training epoch of :class:`~recipekit.training.trainer` runs: the micro-batch loop over the
epoch plan (paired and recipe-only batches, gradient accumulation, DDP's ``no_sync``, the gradient
cache), the losses summed on the device and reduced over ranks once per epoch, and the optimiser
step (clipping, AMP's GradScaler, the ``[gan]`` generator and discriminator steps)."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Any

import torch
from recipekit.pipeline.progress import bar_disabled

from . import data
from .distributed import mean_over_ranks

__all__ = ["EpochLoop"]


class EpochLoop:
    """The epoch methods of the trainer's run (``trainer._Run`` derives from it): they use the
    run's model, step, loaders, optimiser, scheduler, scaler, logger and ``[gan]`` adversary, set
    up by ``_Run.prepare``."""

    def _inputs(self, kind: str, batch: dict) -> dict:
        recipes = {k: v.to(self.dev, non_blocking=True) for k, v in batch["recipes"].items()}
        if kind == "recipe":
            return {"recipes": recipes}
        labels = batch["class_ids"].to(self.dev, non_blocking=True)
        extra = {}
        if self.partners is not None:  # loss.partners = "dataset": one drawn train recipe per row
            extra["partners"] = {k: v.to(self.dev, non_blocking=True) for k, v in self.partners.draw(batch["ids"]).items()}
        if self.cached:
            return {"recipes": recipes, "features": batch["features"].to(self.dev, non_blocking=True), "labels": labels,
                    **extra}
        images = batch["images"].to(self.dev, non_blocking=True)
        if self.on_gpu:  # the loader hands uint8 on GPU runs: normalise on the device
            images = self.loader_info.normalise(images)
        out = {"recipes": recipes, "images": images, "labels": labels, **extra}  # the tower lays them out
        if self.adv is not None:  # [gan]: the image -> ingredients targets
            out["ingredients"] = self.adv.targets.multi_hot(batch["ids"], self.dev)
        return out

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        from tqdm import tqdm

        cfg, plan, acc = self.cfg, self.plan, self.cfg.train.accumulate
        module = self.ddp if self.ddp is not None else self.step
        self.step.train()
        self.loader.set_epoch(epoch)
        paired = iter(self.loader)
        recipe_only = data.recipe_only_batches(self.ro_loader, epoch) if self.ro_loader is not None else None
        sums: dict[str, Any] = defaultdict(float)  # float64 tensors on the device (see _account)
        counts: dict[str, float] = defaultdict(float)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        bar = tqdm(total=len(plan), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch", leave=False,
                   disable=bar_disabled(not (cfg.log.progress and self.info.is_main)), file=sys.stderr)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for j, kind in enumerate(plan):
            try:
                batch = next(paired) if kind == "pair" else next(recipe_only)
            except StopIteration:
                raise RuntimeError(f"the training loader ran dry after {j} batches (expected {len(plan)})") from None
            first = (j // acc) * acc
            size = min(acc, len(plan) - first)
            last = j - first == size - 1
            inputs = self._inputs(kind, batch)
            if self.adv is not None and kind == "pair" and self.info.is_main:
                self.adv.remember(inputs)  # the recipes of the per-epoch image grid
            if self.grad_cache is not None:  # train.grad_cache_chunk (training/gradcache.py)
                losses = self.grad_cache.step(module, kind, inputs, divisor=size, scaler=self.scaler, sync=last,
                                              ddp=self.ddp)
            else:
                sync = nullcontext() if last or self.ddp is None else self.ddp.no_sync()
                with sync:
                    losses = module(kind, **inputs)
                    scaled = losses["total"] / size
                    (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            objective = self._account(kind, losses, len(batch["ids"]), sums, counts)
            if last:
                self._optimizer_step(params)
                if self.adv is not None and kind == "pair":  # [gan]: then the discriminators
                    for key, value in self.adv.discriminator_step(self.step.stash).items():
                        sums[key] += value.double()
                        counts[key] += 1
                if self.info.is_main and self.global_step % cfg.log.log_every == 0:
                    self.logger.scalars({"train/step_loss": float(objective), "train/lr": self.optimizer.param_groups[0]["lr"]},
                                        self.global_step)
            bar.update(1)
        bar.close()
        for _ in paired:  # end the epoch's iterator (persistent workers)
            pass
        seconds = time.perf_counter() - start
        keys = sorted(set(sums) | set(counts))
        reduced = mean_over_ranks([float(sums[k]) for k in keys] + [counts[k] for k in keys], self.info)
        sums, counts = dict(zip(keys, reduced[: len(keys)])), dict(zip(keys, reduced[len(keys) :]))

        def mean(k):
            return sums[k] / counts[k] if counts.get(k) else None

        record = {"loss": mean("objective"), "loss_pair": mean("pair"), "loss_recipe": mean("recipe"),
                  "loss_recipe_only": mean("recipe_only"), "loss_matching": mean("matching"), "seconds": seconds,
                  "images_per_s": counts.get("images", 0) * self.info.world_size / max(seconds, 1e-9)}
        if self.adv is not None:  # [gan]: every term, per epoch
            from .adversarial import ADV_KEYS

            record.update({f"loss_{k}": mean(k) for k in ADV_KEYS if counts.get(k)})
        return record

    def _account(self, kind, losses, n, sums, counts):
        """Add a micro-batch's losses to the epoch sums and return its unscaled objective, all as
        float64 tensors on the device: reading a loss as a Python float would synchronise the host
        with the GPU every step (the GPU then idles while the host fetches and launches the next
        step); they are read once per epoch and at logging steps. Same sums, in the same order, as
        Python floats would give."""
        w, mw = self.cfg.loss.recipe_weight, self.cfg.loss.matching_weight
        if kind == "recipe":
            objective = w * losses["recipe_only"].double()
        else:
            counts["images"] += n
            objective = losses["pair"].double()
            if "recipe" in losses:
                objective = objective + w * losses["recipe"].double()
            if "matching" in losses:
                objective = objective + mw * losses["matching"].double()
            if "gan_total" in losses:
                objective = objective + losses["gan_total"].double()
        for key in ("pair", "recipe", "recipe_only", "matching") + tuple(k for k in losses if k.startswith("gan_")):
            if key in losses:
                sums[key] += losses[key].double()
                counts[key] += 1
        sums["objective"] += objective
        counts["objective"] += 1
        return objective

    def _optimizer_step(self, params) -> None:
        clip = self.cfg.optim.grad_clip
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            if self.adv is not None:  # [gan]: the generator learns from the same backward
                self.adv.step_generator(self.scaler)
            self.scaler.update()
        else:
            self.optimizer.step()
            if self.adv is not None:
                self.adv.step_generator(None)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.adv is not None:
            self.adv.after_step()
        self.global_step += 1
