"""Build what a run trains from its config: model, losses, optimiser, LR schedule, AMP, and the
:class:`TrainStep` module that computes a batch's losses (the module DDP wraps)."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from recipekit.embedders import Vocabulary, create_embedder, get_config, load_word2vec_matrix, recipe_tower_spec
from recipekit.losses import DynamicMargin, create_loss, loss_spec

from .config import ConfigError, TrainConfig
from .data import num_classes
from .distributed import DistInfo, gather_labels, gather_with_local_grad, scale_grad

__all__ = ["build_model", "build_losses", "build_optimizer", "LRFactor", "AmpSettings", "amp_settings",
           "TrainStep", "set_backbone_frozen", "backbone_frozen_at"]


def build_model(cfg: TrainConfig):
    """The :class:`~recipekit.embedders.JointEmbedder` of ``[model]``, with the prepared
    vocabulary and (``model.word2vec``) word2vec-initialised word embeddings."""
    prepared = Path(cfg.data.prepared)
    vocab_file = prepared / "word2vec" / "vocab.txt"
    if not vocab_file.exists():
        raise FileNotFoundError(f"{vocab_file}: missing (data.prepared must be a folder `recipekit prepare` wrote)")
    overrides = copy.deepcopy(cfg.model.overrides)
    for key in ("vocab", "embedding_matrix"):
        if key in overrides:
            raise ConfigError(f"model.overrides.{key}: set by the trainer from data.prepared")
    try:
        base = get_config(cfg.model.embedder)
    except ValueError as exc:
        raise ConfigError(f"model.embedder: {exc}") from None
    tower = (overrides.get("recipe") or {}).get("tower", base["recipe"]["tower"])
    vocab = Vocabulary.from_file(vocab_file)
    matrix = None
    try:
        takes_vectors = "embedding_matrix" in recipe_tower_spec(tower).needs  # towers over the prepared words
    except ValueError as exc:
        raise ConfigError(f"model.overrides: {exc}") from None
    if cfg.model.word2vec and takes_vectors:
        folder = prepared / "word2vec"
        if not (folder / "vectors.npy").exists() and not (folder / "word2vec.kv").exists():
            raise FileNotFoundError(f"{folder / 'vectors.npy'}: missing (or set model.word2vec = false)")
        from recipekit.pipeline.word2vec import UnsafeArtefactError

        try:
            matrix = load_word2vec_matrix(folder, vocab, allow_pickle=cfg.data.allow_pickle)
        except UnsafeArtefactError as exc:
            raise ConfigError(str(exc)) from None
    try:
        return create_embedder(cfg.model.embedder, vocab=vocab, embedding_matrix=matrix, **overrides)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model.overrides: {exc}") from None


def build_losses(cfg: TrainConfig, model, info: DistInfo):
    """(image-recipe loss, H-T recipe loss or None). The loss's builder gets the run quantities
    it declares (:data:`recipekit.losses.RUN_KEYS`), and only those."""
    lc = cfg.loss
    kwargs = dict(lc.options)
    if lc.dynamic_margin is not None:
        kwargs["margin"] = DynamicMargin(**{k: float(v) for k, v in lc.dynamic_margin.items()})
    prepared = Path(cfg.data.prepared)
    run = {"embed_dim": lambda: model.embed_dim, "num_classes": lambda: num_classes(prepared),
           "rank": lambda: info.rank, "world_size": lambda: info.world_size, "vocab": lambda: model.vocab}
    try:
        loss = loss_spec(lc.name).build(kwargs, run)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[loss] {lc.name}: {exc}") from None
    recipe_loss = None
    if lc.recipe_weight > 0:
        tower = model.config["recipe"]["tower"]
        if getattr(model.recipe_tower, "hidden", None) is None:  # component vectors of one width
            raise ConfigError("loss.recipe_weight: H-T's recipe loss needs the ht or minilm recipe tower "
                              f"(title / ingredients / instructions vectors of one width), not {tower}")
        parts = tuple(getattr(model.recipe_tower, "components", ("title", "ingredients", "instructions")))
        if len(parts) < 2:
            raise ConfigError(f"loss.recipe_weight: H-T's recipe loss relates recipe components to each other; the "
                              f"tower reads only {', '.join(parts)} (model.overrides recipe.components)")
        recipe_loss = create_loss("ht_recipe", dim=int(model.recipe_tower.hidden), margin=lc.recipe_margin,
                                  components=parts)
    if lc.matching_weight > 0 and model.matching is None:
        raise ConfigError(f"loss.matching_weight: the embedder {cfg.model.embedder!r} has no matching head")
    return loss, recipe_loss


def backbone_frozen_at(cfg: TrainConfig, model, epoch: int) -> bool:
    """Whether the image backbone is frozen during ``epoch`` (0-based)."""
    return bool(model.config["image"].get("freeze_backbone")) or epoch < cfg.train.freeze_backbone_epochs


def set_backbone_frozen(model, frozen: bool) -> None:
    tower = model.image_tower
    tower.freeze_backbone = frozen
    tower.backbone.requires_grad_(not frozen)
    tower.train(tower.training)  # a frozen backbone stays in eval mode


def build_optimizer(cfg: TrainConfig, model, extra: list[nn.Module]) -> torch.optim.Optimizer:
    """Adam/AdamW with two groups: the image backbone (lr x backbone_lr_mult) and the rest
    (heads, recipe tower, loss parameters). Frozen parameters are in their group too: without
    a gradient they are skipped, and they train once unfrozen."""
    o = cfg.optim
    backbone = list(model.image_tower.backbone.parameters())
    ids = {id(p) for p in backbone}
    if getattr(model, "generator", None) is not None:  # [gan]: the generator has its own optimiser (adversarial.py)
        ids |= {id(p) for p in model.generator.parameters()}
    rest = [p for p in model.parameters() if id(p) not in ids]
    for module in extra:
        if module is not None:
            rest.extend(module.parameters())
    groups = [{"params": rest, "lr": o.lr, "name": "main"},
              {"params": backbone, "lr": o.lr * o.backbone_lr_mult, "name": "backbone"}]
    klass = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return klass(groups, lr=o.lr, weight_decay=o.weight_decay)


class LRFactor:
    """LR multiplier after ``step`` optimiser steps (LambdaLR): linear warm-up over
    ``warmup_epochs``, then ``step`` (x gamma every ``step_size`` epochs) or ``cosine`` (to
    ``min_lr_ratio`` at the last epoch) or constant. Epochs are fractional: step / steps_per_epoch."""

    def __init__(self, schedule: str, steps_per_epoch: int, epochs: int, step_size: float = 30.0,
                 gamma: float = 0.1, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0):
        self.schedule, self.steps_per_epoch, self.epochs = schedule, max(1, steps_per_epoch), epochs
        self.step_size, self.gamma, self.warmup, self.min_ratio = step_size, gamma, warmup_epochs, min_lr_ratio

    def __call__(self, step: int) -> float:
        e = step / self.steps_per_epoch
        f = 1.0
        if self.warmup > 0 and e < self.warmup:
            f = min(1.0, (step + 1) / (self.warmup * self.steps_per_epoch))
        if self.schedule == "step":
            f *= self.gamma ** math.floor(e / self.step_size)
        elif self.schedule == "cosine":
            span = max(self.epochs - self.warmup, 1e-9)
            t = min(max((e - self.warmup) / span, 0.0), 1.0)
            f *= self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
        return f


def build_scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    o = cfg.optim
    factor = LRFactor(o.schedule, steps_per_epoch, cfg.train.epochs, o.step_size, o.gamma, o.warmup_epochs,
                      o.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class AmpSettings:
    enabled: bool
    dtype: torch.dtype | None
    scaler: bool  # fp16 on CUDA: a GradScaler

    @property
    def name(self) -> str:
        return "off" if not self.enabled else ("bf16" if self.dtype == torch.bfloat16 else "fp16")


def amp_settings(mode: str, device: torch.device) -> AmpSettings:
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return AmpSettings(False, None, False)
    if device.type != "cuda":
        if mode == "fp16":
            raise ConfigError("train.amp = \"fp16\" needs CUDA (on CPU use \"bf16\" or \"off\")")
        return AmpSettings(True, torch.bfloat16, False)
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "bf16":
        return AmpSettings(True, torch.bfloat16, False)
    return AmpSettings(True, torch.float16, True)


class TrainStep(nn.Module):
    """Model + losses; ``forward`` returns a batch's losses (so DDP syncs the gradients of the
    loss modules' parameters too). ``total`` is what to back-propagate: the image-recipe loss
    (computed on the gathered global batch, its gradient into this rank's embeddings x
    world_size: see :mod:`recipekit.training.distributed`) + recipe_weight x H-T's recipe loss +
    matching_weight x T-Food's matching loss; the other entries are unscaled, for logging.
    :meth:`embed` (the towers) and :meth:`objective` (the losses) are its two halves: the gradient
    cache (:mod:`recipekit.training.gradcache`) calls them apart."""

    def __init__(self, model, loss, recipe_loss, cfg: TrainConfig, info: DistInfo, amp: AmpSettings):
        super().__init__()
        self.model, self.loss, self.recipe_loss = model, loss, recipe_loss
        self.recipe_weight, self.matching_weight = cfg.loss.recipe_weight, cfg.loss.matching_weight
        self.info, self.amp = info, amp
        # [gan] runs (training/adversarial.py): the translation heads train with the embedders
        # (registered: DDP syncs them); the Adversary (not a module) holds the discriminators.
        self.cfg, self.adversary, self.adv_heads, self.stash = cfg, None, None, None
        self.stash_parts: list[dict] = []  # the gradient cache's replay: each chunk's stash
        # InfoNCE gathers by itself; every other loss sees the global batch gathered here
        self.gather = info.distributed and cfg.loss.name != "infonce"
        local_with_grad = cfg.loss.options.get("local_loss") and cfg.loss.options.get("gather_with_grad")
        # the gradient reaching this rank's embeddings is scaled (not the loss: the loss's own
        # parameters, e.g. InfoNCE's temperature, see the global batch on every rank already)
        self.pair_scale = float(info.world_size) if info.distributed and not local_with_grad else 1.0

    def attach_adversary(self, adversary) -> None:
        self.adversary, self.adv_heads = adversary, adversary.heads

    def _autocast(self):
        if not self.amp.enabled:
            return nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp.dtype)

    def _recipe_term(self, components: dict) -> torch.Tensor:
        return self.recipe_loss({k: v.float() for k, v in components.items()})

    def loss_parameters(self) -> list[nn.Parameter]:
        """The parameters the losses own (a classifier head, H-T's projections, a temperature)."""
        return [p for m in (self.loss, self.recipe_loss) if m is not None for p in m.parameters()]

    def embed(self, kind: str, recipes: dict, images=None, features=None):
        """The towers' forward pass (under autocast): an :class:`~recipekit.embedders.model.EmbedderOutput`."""
        with self._autocast():
            if kind == "recipe":
                out = self.model(recipes=recipes)
            elif features is not None:
                out = self.model(recipes=recipes)
                out.image = self.model.image_tower.head(features)
            else:
                out = self.model(images=images, recipes=recipes)
        return out

    def objective(self, kind: str, out, labels=None, matching=None, partner_emb=None) -> dict:
        """The losses of a forward output (what :meth:`forward` returns); ``partner_emb``: the
        embeddings of mismatched recipes drawn from the whole train set (``loss.partners = "dataset"``,
        :mod:`recipekit.training.partners`)."""
        out_losses = {}
        with torch.autocast(self.info.device.type, enabled=False):
            if kind == "recipe":
                rl = self._recipe_term(out.components)
                return {"total": self.recipe_weight * rl, "recipe_only": rl.detach()}
            img, rec = out.image.float(), out.recipe.float()
            if self.pair_scale != 1.0:
                img, rec = scale_grad(img, self.pair_scale), scale_grad(rec, self.pair_scale)
            if self.gather:
                img, rec = gather_with_local_grad(img, self.info), gather_with_local_grad(rec, self.info)
                labels = gather_labels(labels, self.info) if labels is not None else None
            if partner_emb is not None:
                partner_emb = partner_emb.float()
                if self.pair_scale != 1.0:
                    partner_emb = scale_grad(partner_emb, self.pair_scale)
                if self.gather:
                    partner_emb = gather_with_local_grad(partner_emb, self.info)
                pair = self.loss(img, rec, labels, partner_emb=partner_emb)
            else:
                pair = self.loss(img, rec, labels)
            total = pair
            out_losses["pair"] = pair.detach()
            if self.recipe_loss is not None:
                rl = self._recipe_term(out.components)
                total = total + self.recipe_weight * rl
                out_losses["recipe"] = rl.detach()
            if matching is not None:
                total = total + self.matching_weight * matching.float()
                out_losses["matching"] = matching.detach().float()
        out_losses["total"] = total
        return out_losses

    def forward(self, kind: str, recipes: dict, images=None, features=None, labels=None, partners=None,
                ingredients=None, cached_grads=None) -> dict:
        # -- gradient cache (train.grad_cache_chunk): the second pass over one chunk ----------
        if cached_grads is not None:
            from .gradcache import surrogate

            out = self.embed(kind, recipes, images, features)
            total = surrogate(self, kind, out, cached_grads)
            if self.adversary is not None and kind == "pair":  # [gan]: this chunk's share of the joint terms
                extra, logs, stash = self._joint_terms(out, images, labels, ingredients)
                self.stash_parts.append(stash)
                return {"total": total + cached_grads["gan_weight"] * extra.float(), **logs}
            return {"total": total}
        # -- end gradient cache ---------------------------------------------------------------
        out = self.embed(kind, recipes, images, features)
        matching = partner_emb = None
        with self._autocast():
            if kind == "pair" and self.matching_weight > 0:
                matching = self.model.matching_loss(out)
            # loss.partners = "dataset": mismatched recipes drawn from the whole train set (training/partners.py)
            if partners is not None:
                partner_emb = self.model(recipes=partners).recipe
        losses = self.objective(kind, out, labels, matching, partner_emb)
        if self.adversary is not None and kind == "pair":  # [gan]: the joint step's adversarial and translation terms
            extra, logs, self.stash = self._joint_terms(out, images, labels, ingredients)
            losses["total"] = losses["total"] + extra.float()
            losses.update(logs)
        return losses

    def _joint_terms(self, out, images, labels, ingredients):
        from .adversarial import joint_terms

        with self._autocast():
            return joint_terms(self.cfg, self.model, self.adv_heads, self.adversary.discs, out, images, labels,
                               ingredients)
