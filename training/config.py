"""Run configs for ``recipekit train``: a TOML file -> validated dataclasses.

A config has the sections ``[data]``, ``[model]`` (+ ``[model.overrides]``), ``[loss]``,
``[optim]``, ``[train]``, ``[ddp]`` and ``[log]``; every key, its default and its meaning
is in docs/training.md and in the dataclasses below. ``[loss]`` is the one open section:
besides the trainer's own keys (``name``, ``dynamic_margin``, ``recipe_weight``,
``recipe_margin``, ``matching_weight``) every key is a keyword argument of the loss class
that ``recipekit.losses.create_loss(name)`` builds, checked against its signature.

:func:`load_config` reads a path, a dict or a :class:`TrainConfig` and applies dotted
overrides (``"optim.lr=3e-4"``; the value is read as a TOML value, and as a plain string
when it is not one). Unknown sections and keys, wrong types and out-of-range values are
errors that name the file and the key. A relative ``data.prepared`` is resolved against the
current directory and stored absolute. This module does not import torch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from recipekit.core.overrides import ConfigError, check_type, closest, parse_override, set_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .checks import validate
from .config_keys import LOSS_TRAINER_KEYS

__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "LossConfig", "OptimConfig", "TrainSection", "DDPConfig",
    "LogConfig", "GanConfig", "TrainConfig", "load_config", "parse_override", "LOSS_TRAINER_KEYS",
]


@dataclass
class DataConfig:
    prepared: str = ""  # the folder `recipekit prepare` wrote (required)
    batch_size: int = 128  # pairs per batch and per rank
    num_workers: int = 4  # DataLoader workers per rank
    epoch_length: int = 0  # samples per epoch over all ranks; 0 = every train pair once
    class_aware: bool = False  # AdaMine batches: half background, two or more per class
    recipe_only_ratio: float = 0.0  # recipe-only batches (H-T) per paired batch; 0 = none
    recipe_only_batch_size: int = 0  # 0 = 2 x batch_size (as H-T)
    recipe_only_set: str = "no_images"  # "no_images": train recipes without photos (H-T); "all"
    decoder: str = "auto"  # JPEG decoder of the loaders: auto, pil, torchvision
    shuffle_size: int = 2000  # shuffle buffer of the training loader
    val_batch_size: int = 0  # 0 = batch_size
    feature_cache: str = ""  # cached-features mode: cache folder; "" = RUN/features
    shards: str = ""  # where train/ and val/ shard folders are: "" = PREPARED/shards; a folder or URL (docs)
    train_shards: str = ""  # the train shards: split folder, URL, brace pattern or pipe:; "" = from data.shards
    val_shards: str = ""  # the val shards (validation), likewise; "" = from data.shards
    allow_pickle: bool = False  # read an older prepared folder's word2vec/word2vec.kv (a pickle: runs code)


@dataclass
class ModelConfig:
    embedder: str = "ht_resnet50"  # a registered embedder (recipekit.embedders.list_embedders())
    word2vec: bool = True  # initialise the word embeddings from PREPARED/word2vec/vectors.npy
    overrides: dict = field(default_factory=dict)  # passed to create_embedder(embedder, **overrides)


@dataclass
class LossConfig:
    name: str = "triplet"  # recipekit.losses.list_losses() (not ht_recipe: see recipe_weight)
    dynamic_margin: dict | None = None  # {start, step, cap}: margin grows per epoch (TNLBT/T-Food)
    recipe_weight: float = 0.0  # weight of H-T's self-supervised recipe loss (ht_recipe); H-T: 1
    recipe_margin: float = 0.3  # margin of that loss (H-T: 0.3)
    matching_weight: float = 0.0  # weight of T-Food's image-text matching loss (needs a matching head)
    options: dict = field(default_factory=dict)  # every other key: keyword arguments of the loss


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 = no clipping
    schedule: str = "none"  # none | step | cosine (per optimiser step, as a function of the epoch)
    step_size: float = 30.0  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    min_lr_ratio: float = 0.0  # cosine: final lr / lr
    backbone_lr_mult: float = 1.0  # lr multiplier of the image backbone's parameters


@dataclass
class TrainSection:
    epochs: int = 1
    freeze_backbone_epochs: int = 0  # backbone frozen for the first N epochs, then fine-tuned
    amp: str = "auto"  # auto (bf16 on CUDA when supported, else fp16; off on CPU) | bf16 | fp16 | off
    channels_last: bool = True  # convolutional backbones in channels-last memory format (GPU and CPU)
    accumulate: int = 1  # micro-batches per optimiser step
    seed: int = 0
    cache_features: bool = False  # CPU-friendly: frozen backbone features computed once (docs)
    val_every: int = 1  # validate every N epochs (and after the last); 0 = never
    val_limit: int = 0  # validate on the first N val pairs; 0 = all
    val_bag_size: int = 1000  # model selection: bags of this many val pairs ...
    val_bags: int = 10  # ... this many of them (one bag of all pairs when the split is smaller)
    select: str = "image_to_recipe"  # selection rule: image_to_recipe | mean (medR, R@1) | rsum (sum of recalls, both ways)
    select_window: int = 1  # the rule's score averaged over the last N validations (the window's last epoch is kept)
    text_cache: bool = True  # a frozen sentence encoder's outputs computed once per sentence (training/textcache.py)
    grad_cache_chunk: int = 0  # gradient cache: the whole batch's loss, activations of N samples at a time; 0 = off
    freeze_schedule: str = "fixed"  # fixed: freeze_backbone_epochs only | alternate: im2recipe's branch swaps (docs)
    freeze_patience: int = 1  # alternate: validations without improvement before the first swap (im2recipe: 1)
    freeze_patience_after: int = 3  # alternate: ... before each later swap (im2recipe: 3)
    alternate_split: str = "backbone"  # alternate: backbone (vs the rest, im2recipe) | towers (image vs recipe tower)
    plugins: list = field(default_factory=list)  # module names imported first: the user's own losses, towers, metrics


@dataclass
class DDPConfig:
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    find_unused_parameters: bool = True  # needed when a step leaves parameters unused (recipe-only batches)
    timeout_minutes: int = 60  # collective timeout (rank 0 validates while the others wait)


@dataclass
class LogConfig:
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = True  # RUN/tensorboard event files
    curves: bool = True  # RUN/curves.png, rewritten each epoch
    log_every: int = 50  # optimiser steps between TensorBoard training scalars


# -- [gan]: the adversarial / generative family (ACME, R2GAN, TNLBT; training/adversarial.py) ----
@dataclass
class GanConfig:
    method: str = "none"  # none | acme | r2gan | tnlbt (acme's terms + H-T's recipe loss)
    modality_weight: float = 0.005  # acme/tnlbt: weight of the encoders' WGAN term -mean D(recipe) (ACME)
    gp_weight: float = 10.0  # WGAN-GP gradient penalty weight in the critic loss (ACME)
    n_critic: int = 1  # modality-critic updates per joint step (ACME: 1)
    translation_weight: float = 0.002  # weight of the generation / translation terms (ACME: L_img + L_text)
    kl_weight: float = 2.0  # conditioning augmentation's KL term in L_img (ACME)
    balance: bool = True  # rescale the larger of L_img, L_text to the smaller (ACME)
    ingredient_vocab: int = 4096  # image -> ingredients targets: this many most frequent train ingredients
    image_rank_weight: float = 1.0  # r2gan: image-level ranking (mu)
    image_rank_margin: float = 0.1  # r2gan: its margin (mean squared pixel distance, images in [-1, 1])
    recon_weight: float = 1.0  # r2gan: L_recon (gamma)
    recon_pixel_weight: float = 1.0  # r2gan: pixel terms inside L_recon (beta)
    semantic_weight: float = 1.0  # r2gan: food-class cross-entropy on both embeddings (lambda)
    source_weight: float = 1.0  # r2gan: the source discriminator D2 (image- vs recipe-conditioned)
    generator_lr: float = 1e-4  # the generator's Adam (its own schedule: optim.schedule)
    discriminator_lr: float = 1e-4  # the discriminators' Adam (critic + image discriminators)
    beta1: float = 0.5  # Adam betas of both (ACME: 0.5, 0.999)
    beta2: float = 0.999
    disc_channels: int = 64  # width of the image discriminators' first convolution
    grid_every: int = 1  # write RUN/generated/epoch_NNN.png every N epochs; 0 = never
    grid_size: int = 8  # recipes in that grid (real photos above, generated below)


_SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig,
    "train": TrainSection, "ddp": DDPConfig, "log": LogConfig, "gan": GanConfig,
}


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    ddp: DDPConfig = field(default_factory=DDPConfig)
    log: LogConfig = field(default_factory=LogConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    source: str | None = field(default=None, compare=False)  # the file it was read from, if any

    def to_dict(self) -> dict[str, Any]:
        """The nested plain dict (``[loss]`` flattened back: its options are top-level keys)."""
        out = {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}
        options = out["loss"].pop("options")
        out["loss"].update(options)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# -- parsing (the override parser is shared with `prepare --set`: recipekit.core.overrides) --
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _section(cls: type, raw: Any, name: str, src: str):
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{src}: [{name}] must be a table, got {raw!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs, extra = {}, {}
    for key, value in raw.items():
        if key in names and not (cls is LossConfig and key == "options"):
            kwargs[key] = check_type(value, hints[key], f"{src}: {name}.{key}")
        elif cls is LossConfig:
            extra[key] = value
        else:
            raise ConfigError(f"{src}: unknown key {name}.{key} ({_did_you_mean(key, names)}known: {', '.join(names)})")
    obj = cls(**kwargs)
    if cls is LossConfig:
        obj.options = extra
    return obj


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    near = closest(word, choices)
    return f"did you mean {near}? " if near else ""


def _check_override(path_parts: list[str], value: Any, text: str) -> None:
    """An override names the ``--set`` the user typed (not the config file) when its key is unknown
    (with the closest known key) or its value has the wrong type."""
    section = path_parts[0]
    if section not in _SECTIONS:
        raise ConfigError(f"--set {text}: unknown section {section!r} "
                          f"({_did_you_mean(section, list(_SECTIONS))}sections: {', '.join(_SECTIONS)})")
    cls = _SECTIONS[section]
    if len(path_parts) < 2 or cls is LossConfig:
        return
    names = [f.name for f in dataclasses.fields(cls)]
    key = path_parts[1]
    if key not in names:
        raise ConfigError(f"--set {text}: unknown key {section}.{key} "
                          f"({_did_you_mean(key, names)}known: {', '.join(names)})")
    if len(path_parts) == 2:
        check_type(value, _hints(cls)[key], f"--set {text}: {section}.{key}")


def from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> TrainConfig:
    """Validate a nested dict (the TOML document) into a :class:`TrainConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a config is a table of sections, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in _SECTIONS]
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(sorted(unknown))} (sections: {', '.join(_SECTIONS)})")
    parts = {name: _section(cls, raw.get(name, {}), name, source) for name, cls in _SECTIONS.items()}
    cfg = TrainConfig(**parts, source=None if source.startswith("<") else source)
    cfg.data.prepared = os.path.abspath(os.path.expanduser(cfg.data.prepared)) if cfg.data.prepared else ""
    if cfg.data.feature_cache:
        cfg.data.feature_cache = os.path.abspath(os.path.expanduser(cfg.data.feature_cache))
    for key in ("shards", "train_shards", "val_shards"):  # local paths absolute, URLs and pipe: as given
        value = getattr(cfg.data, key)
        if value and "://" not in value and not value.startswith("pipe:"):
            setattr(cfg.data, key, os.path.abspath(os.path.expanduser(value)))
    validate(cfg, source)
    return cfg


def _config_path(source: str | os.PathLike) -> Path:
    """A config file path, or the packaged config of that name (``demo`` -> configs/demo.toml)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.suffix == "" and len(path.parts) == 1:
        from recipekit import configs

        try:
            return configs.path(str(path))
        except ValueError as exc:
            raise ConfigError(f"{path}: no such config file, and {exc}") from exc
    raise ConfigError(f"{path}: config file not found")


def load_config(source: str | os.PathLike | Mapping[str, Any] | TrainConfig,
                overrides: Sequence[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a TOML path, the name of a packaged config (``"demo"``,
    ``"ht"``: :mod:`recipekit.configs`), a nested dict or a config, with ``overrides``:
    ``["optim.lr=3e-4", ...]`` or ``{"optim.lr": 3e-4}``."""
    if isinstance(source, TrainConfig):
        raw, name = source.to_dict(), source.source or "<config>"
    elif isinstance(source, Mapping):
        raw, name = copy.deepcopy(dict(source)), "<dict>"
    else:
        path = _config_path(source)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        name = str(path)
    items = (((k, v, f"{k}={v!r}") for k, v in overrides.items()) if isinstance(overrides, Mapping)
             else ((*parse_override(o), o.strip()) for o in overrides))
    for key, value, typed in items:
        path_parts = key.split(".") if isinstance(key, str) else list(key)
        _check_override(path_parts, value, typed)
        set_path(raw, path_parts, value, ".".join(path_parts))
    cfg = from_dict(raw, name)
    if not isinstance(source, (TrainConfig, Mapping)):
        cfg.source = str(path.resolve())
    elif isinstance(source, TrainConfig):
        cfg.source = source.source
    return cfg
