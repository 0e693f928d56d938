"""The training loop behind ``recipekit train``: :func:`train` -> :class:`TrainResult`.

One call trains one run folder (layout in docs/training.md) from a config
(:mod:`recipekit.training.config`): epochs of paired batches (and H-T's recipe-only batches,
interleaved), validation on ``val`` after each epoch (or every ``train.val_every``), the best
model by validation medR / R@1 in ``RUN/best.pt``, and ``RUN/checkpoints/last.pt`` every epoch
for ``resume=True``. Under torchrun (or with ``rank``/``world_size`` given) it is one process of
a DistributedDataParallel job; only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from recipekit.core.io import atomic_path
from recipekit.core.layout import Run

from . import build, checkpoint, data
from .config import ConfigError, TrainConfig, load_config
from .distributed import DistInfo, barrier, broadcast_object, setup, teardown
from .epoch import EpochLoop
from .logs import RunLogger, write_environment, write_json
from .validate import Selector, selection_key, validate

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "train"]

@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int | None  # 1-based epoch of best.pt (None: no epoch ran)
    best_metrics: dict[str, Any] | None  # its validation metrics (None without validation)
    best_path: Path | None
    last_checkpoint: Path
    epochs: int  # epochs completed in the run folder
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl records (rank 0)


class _Run(EpochLoop):
    def __init__(self, cfg: TrainConfig, run_dir: Path, info: DistInfo, resume: bool):
        self.cfg, self.run_dir, self.info, self.resume = cfg, run_dir, info, resume
        self.last_path = Run(run_dir).last
        self.best_path = Run(run_dir).best
        self.dev = info.device
        self.on_gpu = self.dev.type == "cuda"
        self.cached = cfg.train.cache_features

    # -- setup -----------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg, info = self.cfg, self.info
        blob = checkpoint.load_checkpoint(self.last_path) if self.resume else None
        if blob is not None:
            checkpoint.check_resume_config(blob["config"], cfg)
        seed = cfg.train.seed
        torch.manual_seed(seed)  # the same initial weights on every rank
        self.model = build.build_model(cfg)
        self.loss, self.recipe_loss = build.build_losses(cfg, self.model, info)
        # then one random stream per rank (dropout, the losses' draws)
        random.seed(seed + info.rank)
        np.random.seed(seed + info.rank)
        torch.manual_seed(seed + info.rank)
        start = blob["epoch"] if blob else 0
        if self.cached and not all(build.backbone_frozen_at(cfg, self.model, e) for e in range(cfg.train.epochs)):
            raise ConfigError("train.cache_features needs the image backbone frozen for the whole run: set "
                              "train.freeze_backbone_epochs >= train.epochs or model.overrides image.freeze_backbone")
        self.branches = self._branch_switcher()  # train.freeze_schedule = "alternate" (training/alternate.py)
        self.frozen = self._backbone_frozen(start)
        build.set_backbone_frozen(self.model, self.frozen)
        self.model.to(self.dev)
        for m in (self.loss, self.recipe_loss):
            if m is not None:
                m.to(self.dev)
        # convolutional backbones in channels-last, on GPUs and CPUs alike (faster on both: measured)
        self.channels_last = (cfg.train.channels_last and not self.cached
                              and self.model.image_tower.use_channels_last())
        self.amp = build.amp_settings(cfg.train.amp, self.dev)
        self._make_data()
        from .partners import build_partner_source

        self.partners = build_partner_source(cfg, self.model, info.rank, self.loader)  # loss.partners = "dataset"
        if info.is_main:  # the model and the data are there: the run folder starts
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if cfg.source and not (self.resume and Run(self.run_dir).config.exists()):
                shutil.copyfile(cfg.source, Run(self.run_dir).config)
            write_json(Run(self.run_dir).resolved_config, cfg.to_dict())
        self.step = build.TrainStep(self.model, self.loss, self.recipe_loss, cfg, info, self.amp)
        self.grad_cache = None
        if cfg.train.grad_cache_chunk:  # the gradient cache (training/gradcache.py)
            from .gradcache import GradCache

            self.grad_cache = GradCache(self.step, cfg.train.grad_cache_chunk)
        self.plan = data.plan_epoch(self.n_paired, cfg.data.recipe_only_ratio if self.ro_loader else 0.0)
        self.steps_per_epoch = math.ceil(len(self.plan) / cfg.train.accumulate)
        self.adv = None  # [gan] runs: generator / discriminator optimisers and steps (adversarial.py)
        if cfg.gan.method != "none":
            from .adversarial import Adversary

            self.adv = Adversary(cfg, self.model, info, self.amp, self.steps_per_epoch)
            self.step.attach_adversary(self.adv)
        self.optimizer = build.build_optimizer(cfg, self.model, [self.loss, self.recipe_loss, self.step.adv_heads])
        self.scheduler = build.build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp.scaler else None
        self.epoch, self.global_step, self.best = start, 0, None
        if blob is not None:
            self.epoch, self.global_step, self.best = checkpoint.restore_training_state(
                blob, self._state(), rank=info.rank, world_size=info.world_size)
            if self.branches is not None:  # the restored schedule: which branch is frozen now
                self.frozen = self._backbone_frozen(self.epoch)
                build.set_backbone_frozen(self.model, self.frozen)
                self.branches.apply()
            if self.adv is not None:
                self.adv.load_state_dict(blob["extra"]["adversarial"])
        self.ddp = None
        self._wrap()
        from .textcache import attach_text_cache  # train.text_cache: a frozen sentence encoder runs once per sentence

        self.text_cache = attach_text_cache(self.model) if cfg.train.text_cache else None
        self.logger = RunLogger(self.run_dir, enabled=info.is_main, tensorboard=cfg.log.tensorboard,
                                curves=cfg.log.curves, resume_epoch=self.epoch, resume_step=self.global_step)
        best = self.best or {}
        self.selector = Selector(cfg.train.select, cfg.train.select_window,  # a resumed run's validations so far
                                 [selection_key(h["val"], cfg.train.select) for h in self.logger.history if h.get("val")],
                                 best.get("score") or (selection_key(best["val"], cfg.train.select) if best.get("val") else None))
        if info.is_main:
            write_environment(self.run_dir, device=self.dev, world_size=info.world_size, backend=info.backend,
                              amp=self.amp.name, channels_last=self.channels_last, cache_features=self.cached,
                              steps_per_epoch=self.steps_per_epoch, resumed_at=self.epoch if self.resume else None,
                              batch=data.batch_arithmetic(cfg, info.world_size))
            if cfg.log.progress:
                log.info(data.describe_batch(data.batch_arithmetic(cfg, info.world_size)))
            if self.grad_cache is not None and cfg.log.progress and self.model.image_tower.convolutional and not (
                    self.cached or all(build.backbone_frozen_at(cfg, self.model, e) for e in range(cfg.train.epochs))):
                log.warning(f"note: train.grad_cache_chunk = {cfg.train.grad_cache_chunk} with a fine-tuned "
                            "convolutional backbone: its BatchNorm layers normalise each chunk with that chunk's "
                            "statistics (docs/training.md, gradient cache)")
            if self.grad_cache is not None and self.adv is not None and cfg.log.progress:
                log.info(f"gradient cache with gan.method = {cfg.gan.method!r}: the retrieval loss sees the whole "
                         f"batch; the adversarial and translation terms are computed chunk by chunk "
                         f"({cfg.train.grad_cache_chunk} samples) and averaged (docs/training.md, gradient cache)")

    def _make_data(self) -> None:
        cfg, info = self.cfg, self.info
        prepared = Path(cfg.data.prepared)
        self.val_cache = None
        if self.cached:
            from .features import CachedPairLoader, TokenSource, load_or_extract

            cache_dir = Path(cfg.data.feature_cache) if cfg.data.feature_cache else Run(self.run_dir).features
            kw = dict(decoder=cfg.data.decoder, batch_size=cfg.data.val_batch_size or cfg.data.batch_size,
                      device=self.dev, progress=cfg.log.progress and info.is_main)
            sets = {}
            for write in (True, False):  # rank 0 extracts (or reads), then the others read
                if info.is_main == write:
                    sets = {s: load_or_extract(self.model, prepared, s, cache_dir, write=write, **kw)
                            for s in ("train", "val")}
                barrier(info)
            tokens = TokenSource(self.model, prepared)
            self.loader = CachedPairLoader(sets["train"], tokens, batch_size=cfg.data.batch_size,
                                           seed=cfg.train.seed, rank=info.rank, world_size=info.world_size,
                                           class_aware=cfg.data.class_aware, epoch_length=cfg.data.epoch_length)
            self.val_cache = (sets["val"], tokens)
            self.loader_info = None
        else:
            self.loader, self.loader_info = data.paired_loader(cfg, self.model, rank=info.rank,
                                                               world_size=info.world_size, on_gpu=self.on_gpu)
            if cfg.train.val_every > 0:  # fail now, not after the first epoch
                data.check_split(cfg, "val")
        self.n_paired = len(self.loader)
        if self.n_paired == 0:
            raise ConfigError(f"data.batch_size = {cfg.data.batch_size}: the train split gives no full batch per rank")
        self.ro_loader = data.recipe_only_loader(cfg, self.model, rank=info.rank, world_size=info.world_size,
                                                 on_gpu=self.on_gpu)

    def _state(self) -> checkpoint.TrainingState:
        return checkpoint.TrainingState(self.model, self._loss_modules(), self.optimizer, self.scheduler, self.scaler)

    def _loss_modules(self) -> dict:
        return {"loss": self.loss, "recipe_loss": self.recipe_loss, "adversarial_heads": self.step.adv_heads,
                **self._ablation_modules()}

    # -- ablation settings (training/alternate.py, training/partners.py) --------------------------
    def _ablation_modules(self) -> dict:
        """State the checkpoint keeps for the alternating schedule and the partner draws."""
        mods = {}
        if getattr(self, "branches", None) is not None:
            mods["branches"] = self.branches
        if getattr(self, "partners", None) is not None:
            mods["partners"] = self.partners
        return mods

    def _branch_switcher(self):
        t = self.cfg.train
        if t.freeze_schedule != "alternate":
            return None
        from .alternate import BranchSwitcher

        if t.alternate_split == "backbone" and all(build.backbone_frozen_at(self.cfg, self.model, e)
                                                   for e in range(t.epochs)):
            raise ConfigError("train.alternate_split = \"backbone\": the image backbone is frozen for the whole run "
                              "(cache_features, image.freeze_backbone or freeze_backbone_epochs), so its turns would "
                              "train nothing; use train.alternate_split = \"towers\"")
        switcher = BranchSwitcher(self.model, [self.loss, self.recipe_loss], split=t.alternate_split,
                                  patience=t.freeze_patience, patience_after=t.freeze_patience_after)
        switcher.apply()
        return switcher

    def _backbone_frozen(self, epoch: int) -> bool:
        frozen = build.backbone_frozen_at(self.cfg, self.model, epoch)
        return frozen or (self.branches is not None and self.branches.image_frozen)

    def _after_validation(self, epoch: int, improved: bool, record: dict) -> None:
        """Alternating schedule: count the validation, swap the branches when patience runs out."""
        if self.branches is None:
            return
        record["frozen_branch"] = self.branches.frozen  # during this epoch
        record["branches_swapped"] = False
        if self._due(epoch):
            improved = broadcast_object(improved, self.info)  # rank 0 validated
            if self.branches.after_validation(improved):
                self.branches.apply()
                self._wrap()
                record["branches_swapped"] = True

    def _wrap(self) -> None:
        """(Re)wrap the step module in DDP: needed whenever the set of trainable parameters changes."""
        if not self.info.distributed:
            return
        self.ddp = None
        self.ddp = DDP(self.step, device_ids=[self.dev.index] if self.on_gpu else None,
                       find_unused_parameters=self.cfg.ddp.find_unused_parameters)

    # -- the run ---------------------------------------------------------------------------------
    def _due(self, epoch: int) -> bool:
        every = self.cfg.train.val_every
        return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == self.cfg.train.epochs)

    def _save_best(self, epoch: int, metrics: dict | None) -> None:
        with atomic_path(self.best_path) as tmp:
            self.model.save(tmp)
        self.model.save_pretrained(Run(self.run_dir).model)  # the same model as safetensors + config.json
        score = list(self.selector.best_score) if metrics else None
        self.best = {"epoch": epoch + 1, "val": metrics, **({"score": score} if score else {})}
        note = None if metrics else "no validation (train.val_every = 0): the latest epoch's model"
        write_json(Run(self.run_dir).best_json, {**self.best, "select": self.cfg.train.select, "note": note,
                                                "select_window": self.cfg.train.select_window, "split": "val"})

    def _checkpoint(self, epoch: int) -> None:
        extra = {"adversarial": self.adv.state_dict()} if self.adv is not None else None
        checkpoint.save_training_state(self.last_path, self._state(), self.info, epoch=epoch + 1,
                                       global_step=self.global_step, best=self.best, config=self.cfg.to_dict(),
                                       extra=extra)
        barrier(self.info)

    def fit(self, stop_after: int | None = None) -> TrainResult:
        cfg, info = self.cfg, self.info
        end = cfg.train.epochs if stop_after is None else min(cfg.train.epochs, self.epoch + stop_after)
        try:
            for epoch in range(self.epoch, end):
                frozen = self._backbone_frozen(epoch)
                if frozen != self.frozen:
                    build.set_backbone_frozen(self.model, frozen)
                    self.frozen = frozen
                    self._wrap()
                for m in (self.loss, self.recipe_loss):
                    if hasattr(m, "set_epoch"):
                        m.set_epoch(epoch)
                record = {"epoch": epoch + 1, **self._train_epoch(epoch)}
                every = cfg.gan.grid_every
                if self.adv is not None and info.is_main and every and ((epoch + 1) % every == 0 or epoch + 1 == end):
                    self.adv.write_grid(self.run_dir / "generated" / f"epoch_{epoch + 1:03d}.png")
                metrics, val_s = None, None
                if info.is_main and self._due(epoch):
                    t0 = time.perf_counter()
                    metrics = validate(cfg, self.model, self.dev, cached=self.val_cache)
                    val_s = time.perf_counter() - t0
                improved = False
                if info.is_main:
                    if cfg.train.val_every == 0 or (metrics is not None and self.selector.offer(
                            metrics, final=epoch + 1 == cfg.train.epochs)):
                        self._save_best(epoch, metrics)
                        improved = True
                self.best = broadcast_object(self.best, info)  # every rank keeps the same best-so-far
                margin = getattr(self.loss, "margin", None)
                record.update({"step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                               "lr_backbone": self.optimizer.param_groups[1]["lr"], "backbone_frozen": frozen,
                               "margin": margin if isinstance(margin, float) else None, "val": metrics,
                               "val_seconds": val_s, "best": improved})
                self._after_validation(epoch, improved, record)
                self.logger.epoch(record, self.global_step)
                if info.is_main and cfg.log.progress:
                    v = metrics["image_to_recipe"] if metrics else None
                    log.info(f"epoch {epoch + 1}/{cfg.train.epochs}: loss {record['loss']:.4f}, {record['seconds']:.1f}s"
                             + (f", val medR {v['medR']:.1f} R@1 {v['R@1']:.1f}" if v else "")
                             + (" (best)" if improved and v else ""))
                self.epoch = epoch + 1
                self._checkpoint(epoch)
        finally:
            self.logger.close()
        best = self.best or {}
        return TrainResult(self.run_dir, best.get("epoch"), best.get("val"),
                           self.best_path if self.best_path.exists() else None, self.last_path, self.epoch,
                           list(self.logger.history))


def train(config: str | os.PathLike | Mapping[str, Any] | TrainConfig, run_dir: str | os.PathLike | None = None, *,
          resume: bool = False, device: str = "auto", overrides: Sequence[str] | Mapping[str, Any] = (),
          rank: int | None = None, world_size: int | None = None, init_method: str | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train one run. ``config``: a TOML path, a dict or a :class:`TrainConfig`; ``overrides``:
    ``["optim.lr=3e-4", ...]``. ``run_dir`` (default ``runs/<config file stem>``) must not hold
    a run unless ``resume``. ``device``: ``auto`` | ``cpu`` | ``cuda`` (``cuda:N``). ``rank`` /
    ``world_size`` / ``init_method``: for processes started without torchrun (e.g.
    ``torch.multiprocessing.spawn`` with ``init_method="tcp://127.0.0.1:29500"``; docs/training.md); under torchrun they
    come from the environment. ``stop_after``: end this call after that many epochs (the run
    stays resumable: a job with a time limit trains a few epochs per submission)."""
    cfg = load_config(config, overrides)
    if run_dir is None:
        run_dir = Path("runs") / (Path(cfg.source).stem if cfg.source else "run")
    run_dir = Path(run_dir).absolute()
    last = Run(run_dir).last
    if resume and not last.exists():
        raise FileNotFoundError(f"{last}: nothing to resume (train without --resume to start the run)")
    if not resume and last.exists():
        raise FileExistsError(f"{run_dir} already holds a run (checkpoints/last.pt): resume it with --resume "
                              "or choose another --out")
    if resume:  # what a killed writer left (NAME.tmp-PID of a dead PID); a live process's stay
        from recipekit.core.io import remove_dead_tmp

        for folder in (run_dir, Run(run_dir).checkpoints, Run(run_dir).features):
            remove_dead_tmp(folder)
    info = setup(device, rank=rank, world_size=world_size, init_method=init_method, backend=cfg.ddp.backend,
                 timeout_minutes=cfg.ddp.timeout_minutes)
    try:
        run = _Run(cfg, run_dir, info, resume)
        run.prepare()
        return run.fit(stop_after)
    finally:
        teardown(info)
