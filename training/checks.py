"""Value checks of a run config (:func:`validate`): ranges, choices, and the ``[loss]`` name and
options against the loss registry (:func:`recipekit.losses.loss_spec`). Errors are
:class:`~recipekit.training.config.ConfigError` naming the source and the key. The modules named
in ``train.plugins`` are imported first, so the losses they register are known. No torch needed
(the loss check is skipped without it: the trainer checks again when it builds the loss)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Mapping, Sequence

from .config_keys import LOSS_TRAINER_KEYS, RESERVED_LOSS_KWARGS, ConfigError

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["validate", "import_plugins"]


def _positive(src: str, key: str, value: float, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{src}: {key} must be {'>= 0' if zero_ok else '> 0'}, got {value}")


def _choice(src: str, key: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise ConfigError(f"{src}: {key} must be one of {', '.join(options)}, got {value!r}")


def validate(cfg: TrainConfig, src: str) -> None:
    d, o, t, lo = cfg.data, cfg.optim, cfg.train, cfg.loss
    if not d.prepared:
        raise ConfigError(f"{src}: data.prepared is required (the folder `recipekit prepare` wrote)")
    for key in ("batch_size",):
        _positive(src, f"data.{key}", getattr(d, key))
    for key in ("num_workers", "epoch_length", "recipe_only_batch_size", "val_batch_size", "shuffle_size"):
        _positive(src, f"data.{key}", getattr(d, key), zero_ok=True)
    _positive(src, "data.recipe_only_ratio", d.recipe_only_ratio, zero_ok=True)
    _choice(src, "data.recipe_only_set", d.recipe_only_set, ("no_images", "all"))
    _choice(src, "data.decoder", d.decoder, ("auto", "pil", "torchvision"))
    if t.cache_features and (d.shards or d.train_shards or d.val_shards):
        raise ConfigError(f"{src}: train.cache_features reads PREPARED/shards; it cannot be combined with "
                          "data.shards / data.train_shards / data.val_shards")
    _positive(src, "optim.lr", o.lr)
    for key in ("weight_decay", "grad_clip", "warmup_epochs", "min_lr_ratio"):
        _positive(src, f"optim.{key}", getattr(o, key), zero_ok=True)
    _positive(src, "optim.step_size", o.step_size)
    _positive(src, "optim.gamma", o.gamma)
    _positive(src, "optim.backbone_lr_mult", o.backbone_lr_mult, zero_ok=True)
    _choice(src, "optim.name", o.name, ("adam", "adamw"))
    _choice(src, "optim.schedule", o.schedule, ("none", "step", "cosine"))
    _positive(src, "train.epochs", t.epochs)
    _positive(src, "train.accumulate", t.accumulate)
    for key in ("freeze_backbone_epochs", "val_every", "val_limit"):
        _positive(src, f"train.{key}", getattr(t, key), zero_ok=True)
    _positive(src, "train.grad_cache_chunk", t.grad_cache_chunk, zero_ok=True)
    if t.grad_cache_chunk and lo.matching_weight > 0:
        raise ConfigError(f"{src}: train.grad_cache_chunk cannot be combined with loss.matching_weight > 0 (the "
                          "matching head reads token features, not only embeddings; set one of them to 0)")
    if t.grad_cache_chunk == 1 and cfg.gan.method != "none":
        raise ConfigError(f"{src}: train.grad_cache_chunk = 1 cannot be combined with gan.method = "
                          f"\"{cfg.gan.method}\" (the generator's and discriminators' BatchNorm layers need at least "
                          "2 samples per chunk; use 2 or more)")
    if t.grad_cache_chunk and lo.options.get("partners", "batch") == "dataset":
        raise ConfigError(f"{src}: train.grad_cache_chunk cannot be combined with loss.partners = \"dataset\" (the "
                          "drawn partners are embedded outside the cached batch; use in-batch partners or no cache)")
    _positive(src, "train.val_bag_size", t.val_bag_size)
    _positive(src, "train.val_bags", t.val_bags)
    _choice(src, "train.amp", t.amp, ("auto", "bf16", "fp16", "off"))
    _choice(src, "train.select", t.select, ("image_to_recipe", "mean", "rsum"))
    _positive(src, "train.select_window", t.select_window)
    _choice(src, "train.freeze_schedule", t.freeze_schedule, ("fixed", "alternate"))
    _choice(src, "train.alternate_split", t.alternate_split, ("backbone", "towers"))
    _positive(src, "train.freeze_patience", t.freeze_patience)
    _positive(src, "train.freeze_patience_after", t.freeze_patience_after)
    if t.freeze_schedule == "alternate" and t.val_every == 0:
        raise ConfigError(f"{src}: train.freeze_schedule = \"alternate\" swaps the branches when validation stops "
                          "improving: it needs train.val_every > 0")
    _choice(src, "ddp.backend", cfg.ddp.backend, ("auto", "nccl", "gloo"))
    _positive(src, "ddp.timeout_minutes", cfg.ddp.timeout_minutes)
    _positive(src, "log.log_every", cfg.log.log_every)
    for key in ("recipe_weight", "matching_weight", "recipe_margin"):
        _positive(src, f"loss.{key}", getattr(lo, key), zero_ok=True)
    if d.recipe_only_ratio > 0 and lo.recipe_weight == 0:
        raise ConfigError(f"{src}: data.recipe_only_ratio > 0 needs loss.recipe_weight > 0 (recipe-only batches "
                          "train only H-T's recipe loss)")
    if lo.dynamic_margin is not None:
        keys = set(lo.dynamic_margin)
        if keys != {"start", "step", "cap"}:
            raise ConfigError(f"{src}: loss.dynamic_margin takes exactly start, step, cap (got {', '.join(sorted(keys))})")
        for k, v in lo.dynamic_margin.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{src}: loss.dynamic_margin.{k}: expected a number, got {v!r}")
        if "margin" in lo.options:
            raise ConfigError(f"{src}: give loss.margin or loss.dynamic_margin, not both")
    for key in RESERVED_LOSS_KWARGS:
        if key in lo.options:
            raise ConfigError(f"{src}: loss.{key} is set by the trainer (torch.distributed), not the config")
    import_plugins(t.plugins, src)
    _check_model(cfg, src)
    _check_loss(cfg, src)
    _check_gan(cfg, src)


def import_plugins(modules: Sequence[str], src: str = "<config>", key: str = "train.plugins") -> None:
    """Import each module named in ``train.plugins`` (importable names on ``sys.path``, the
    user's own code, never a file of a data or run folder): importing it runs its
    ``register_loss`` / ``register_embedder`` / ``register_metric`` decorators."""
    for name in modules:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{src}: {key}: {name!r} is not a module name (a.b.c)")
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{src}: {key}: cannot import {name!r} ({exc})") from None


def _check_gan(cfg: TrainConfig, src: str) -> None:
    """``[gan]``: choices, ranges, and what the adversarial step needs of the run."""
    g = cfg.gan
    _choice(src, "gan.method", g.method, ("none", "acme", "r2gan", "tnlbt"))
    for key in ("modality_weight", "gp_weight", "translation_weight", "kl_weight", "image_rank_weight",
                "image_rank_margin", "recon_weight", "recon_pixel_weight", "semantic_weight", "source_weight",
                "grid_every"):
        _positive(src, f"gan.{key}", getattr(g, key), zero_ok=True)
    for key in ("n_critic", "ingredient_vocab", "generator_lr", "discriminator_lr", "disc_channels", "grid_size"):
        _positive(src, f"gan.{key}", getattr(g, key))
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(g, key) < 1:
            raise ConfigError(f"{src}: gan.{key} must be in [0, 1), got {getattr(g, key)}")
    if g.method == "none":
        return
    if cfg.train.cache_features:
        raise ConfigError(f"{src}: gan.method = {g.method!r} needs the photos (its image discriminators see them): "
                          "set train.cache_features = false")
    if cfg.train.accumulate != 1:
        raise ConfigError(f"{src}: gan.method = {g.method!r} alternates optimiser steps per batch: set "
                          "train.accumulate = 1")
    if g.method == "tnlbt" and cfg.loss.recipe_weight <= 0:
        raise ConfigError(f"{src}: gan.method = \"tnlbt\" combines ACME's terms with H-T's recipe loss: set "
                          "loss.recipe_weight > 0")
    generator = (cfg.model.overrides or {}).get("generator")
    if not isinstance(generator, Mapping):
        raise ConfigError(f"{src}: gan.method = {g.method!r} needs a generator in the model: set "
                          "model.overrides.generator = { image_size = 64 } (or {} for the defaults)")


def _check_model(cfg: TrainConfig, src: str) -> None:
    """The embedder name, and its recipe tower, against the registries (the tower check needs torch)."""
    from recipekit.embedders import get_config

    try:
        base = get_config(cfg.model.embedder)
    except ValueError as exc:
        raise ConfigError(f"{src}: model.embedder: {exc}") from None
    recipe = (cfg.model.overrides or {}).get("recipe")
    tower = (recipe.get("tower") if isinstance(recipe, Mapping) else None) or base["recipe"].get("tower")
    try:
        from recipekit.embedders import recipe_tower_spec

        recipe_tower_spec(tower)
    except ModuleNotFoundError:  # no torch here: the trainer checks again when it builds the model
        return
    except ValueError as exc:
        raise ConfigError(f"{src}: model.overrides.recipe.tower: {exc}") from None


def _check_loss(cfg: TrainConfig, src: str) -> None:
    """Loss name and keyword arguments against the registry (what the builder's signature declares)."""
    try:
        from recipekit.losses import list_losses, loss_spec

        names = list_losses(kind="pair")
    except ModuleNotFoundError:  # no torch here: the trainer checks again when it builds the loss
        return
    name = cfg.loss.name
    if name not in names:
        raise ConfigError(f"{src}: loss.name must be one of {', '.join(names)} (ht_recipe is loss.recipe_weight), "
                          f"got {name!r}")
    spec = loss_spec(name)
    allowed = set(spec.options) - set(RESERVED_LOSS_KWARGS)
    for key in cfg.loss.options:
        if key not in allowed:
            raise ConfigError(f"{src}: unknown key loss.{key} for loss {name!r} (options: trainer keys "
                              f"{', '.join(LOSS_TRAINER_KEYS)}; {spec.target} takes {', '.join(sorted(allowed))})")
    if cfg.loss.dynamic_margin is not None and not spec.dynamic_margin:
        raise ConfigError(f"{src}: loss.dynamic_margin needs a loss with a margin (triplet, adamine*), not {name!r}")
