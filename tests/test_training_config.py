"""Run configs of `recipekit train`: parsing, dotted overrides, validation errors that name the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipekit.training.config import ConfigError, TrainConfig, load_config, parse_override

MINIMAL = {"data": {"prepared": "/data/prepared"}}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_and_sections_from_a_file(tmp_path):
    path = _write(tmp_path, """
[data]
prepared = "/data/prepared"
batch_size = 32
class_aware = true

[model]
embedder = "ht_resnet18"
[model.overrides]
embed_dim = 64
image = { weights = "IMAGENET1K_V1" }

[loss]
name = "adamine"
margin = 0.2
semantic_weight = 0.3

[optim]
lr = 3e-4
schedule = "cosine"

[train]
epochs = 5
""")
    cfg = load_config(path)
    assert cfg.source == str(path.resolve())
    assert cfg.data.batch_size == 32 and cfg.data.class_aware and cfg.data.num_workers == 4
    assert cfg.model.overrides == {"embed_dim": 64, "image": {"weights": "IMAGENET1K_V1"}}
    assert cfg.loss.name == "adamine" and cfg.loss.options == {"margin": 0.2, "semantic_weight": 0.3}
    assert cfg.optim.lr == 3e-4 and cfg.optim.schedule == "cosine" and cfg.optim.grad_clip == 0.0
    assert cfg.train.epochs == 5 and cfg.train.amp == "auto" and cfg.ddp.backend == "auto"
    # the flattened dict reads back to the same config
    again = load_config(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert load_config(cfg) == cfg


def test_dotted_overrides_parse_toml_values():
    assert parse_override("optim.lr=3e-4") == (["optim", "lr"], 3e-4)
    assert parse_override("train.amp=bf16") == (["train", "amp"], "bf16")  # bare word: a string
    assert parse_override('model.embedder="je_resnet50"') == (["model", "embedder"], "je_resnet50")
    assert parse_override("loss.dynamic_margin={start=0.05, step=0.005, cap=0.3}")[1] == {
        "start": 0.05, "step": 0.005, "cap": 0.3}
    cfg = load_config(MINIMAL, ["optim.lr=3e-4", "train.epochs=3", "data.class_aware=true",
                                "model.overrides.embed_dim=256", "loss.name=adamine_avg", "loss.margin=0.25"])
    assert cfg.optim.lr == 3e-4 and cfg.train.epochs == 3 and cfg.data.class_aware is True
    assert cfg.model.overrides == {"embed_dim": 256}
    assert cfg.loss.name == "adamine_avg" and cfg.loss.options == {"margin": 0.25}
    assert load_config(MINIMAL, {"optim.lr": 0.5}).optim.lr == 0.5
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.lr")


@pytest.mark.parametrize("raw, overrides, message", [
    ({"data": {"prepared": "/p", "batchsize": 3}}, [], r"unknown key data\.batchsize"),
    ({"dat": {}}, [], r"unknown section\(s\) dat"),
    (MINIMAL, ["optim.lrr=1"], r"unknown key optim\.lrr"),
    (MINIMAL, ["optimizer.lr=1"], r"unknown section 'optimizer'"),
    (MINIMAL, ["train.epochs=2.5"], r"train\.epochs: expected an integer"),
    (MINIMAL, ["train.epochs=0"], r"train\.epochs must be > 0"),
    (MINIMAL, ["optim.lr=fast"], r"optim\.lr: expected a number"),
    (MINIMAL, ["data.class_aware=1"], r"data\.class_aware: expected true or false"),
    (MINIMAL, ["train.amp=fp8"], r"train\.amp must be one of auto, bf16, fp16, off"),
    (MINIMAL, ["optim.schedule=linear"], r"optim\.schedule must be one of"),
    ({}, [], r"data\.prepared is required"),
    (MINIMAL, ["loss.name=contrastive"], r"loss\.name must be one of"),
    (MINIMAL, ["loss.name=ht_recipe"], r"ht_recipe is loss\.recipe_weight"),
    (MINIMAL, ["loss.semantic_weight=0.1"], r"unknown key loss\.semantic_weight for loss 'triplet'"),
    (MINIMAL, ["loss.name=infonce", "loss.rank=1"], r"loss\.rank is set by the trainer"),
    (MINIMAL, ["loss.dynamic_margin={start=0.05, step=0.005}"], r"loss\.dynamic_margin takes exactly start, step, cap"),
    (MINIMAL, ["loss.dynamic_margin={start=0.05, step=0.005, cap=0.3}", "loss.margin=0.3"], r"not both"),
    (MINIMAL, ["loss.name=infonce", "loss.dynamic_margin={start=0.05, step=0.005, cap=0.3}"],
     r"dynamic_margin needs a loss with a margin"),
    (MINIMAL, ["data.recipe_only_ratio=1"], r"recipe_only_ratio > 0 needs loss\.recipe_weight"),
    (MINIMAL, ["data.recipe_only_set=some"], r"data\.recipe_only_set must be one of no_images, all"),
    (MINIMAL, ["model.overrides=3"], r"model\.overrides: expected a table"),
])
def test_errors_name_the_key(raw, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(raw, overrides)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = _write(tmp_path, "[data\nprepared = 1")
    with pytest.raises(ConfigError, match=f"{bad}: not valid TOML"):
        load_config(bad)
    typo = _write(tmp_path, '[data]\nprepared = "/p"\n[train]\nepoch = 3\n')
    with pytest.raises(ConfigError, match=rf"{typo}: unknown key train\.epoch "):
        load_config(typo)


def test_relative_prepared_is_resolved_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config({"data": {"prepared": "demo-run/prepared", "feature_cache": "cache"}})
    assert cfg.data.prepared == os.path.join(str(tmp_path), "demo-run", "prepared")
    assert cfg.data.feature_cache == os.path.join(str(tmp_path), "cache")
    assert isinstance(cfg, TrainConfig)


def test_loss_options_are_checked_against_the_loss_class():
    pytest.importorskip("torch")
    cfg = load_config(MINIMAL, ["loss.name=pairwise", "loss.margin=0.1", "loss.num_classes=\"auto\""])
    assert cfg.loss.options == {"margin": 0.1, "num_classes": "auto"}
    cfg = load_config(MINIMAL, ["loss.name=infonce", "loss.temperature=0.05", "loss.local_loss=true"])
    assert cfg.loss.options == {"temperature": 0.05, "local_loss": True}
    with pytest.raises(ConfigError, match="InfoNCELoss takes"):
        load_config(MINIMAL, ["loss.name=infonce", "loss.margin=0.2"])


def test_override_errors_name_the_set_and_suggest_the_key():
    with pytest.raises(ConfigError) as info:
        load_config("demo", ["train.epoch=3"])
    message = str(info.value)
    assert message.startswith("--set train.epoch=3: unknown key train.epoch (did you mean epochs? known: epochs,")
    assert "demo.toml" not in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^--set trian\.epochs=3: unknown section 'trian' \(did you mean train\? sections:"):
        load_config("demo", ["trian.epochs=3"])
    with pytest.raises(ConfigError, match=r"^--set train\.epochs=many: train\.epochs: expected an integer"):
        load_config("demo", ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"unknown key train\.epoch \(did you mean epochs\? known"):  # in a file too
        load_config({"data": {"prepared": "/p"}, "train": {"epoch": 3}})
