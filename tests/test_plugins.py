"""Registries: built-ins register like a user's module does, and tests/plugins/recipekit_example_plugin.py
plugs its own loss, recipe tower and embedder into a CLI training run without editing recipekit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("webdataset")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

from recipekit.embedders import list_recipe_towers, recipe_tower_spec  # noqa: E402
from recipekit.evaluation import EvalProtocol, evaluate  # noqa: E402
from recipekit.losses import create_loss, list_losses, loss_spec  # noqa: E402
from recipekit.training import ConfigError, load_config  # noqa: E402

PLUGINS = Path(__file__).resolve().parent / "plugins"
PLUGIN = "recipekit_example_plugin"


@pytest.fixture
def example_plugin(monkeypatch):
    """The example module importable by name; its registrations are undone afterwards."""
    from recipekit.embedders import registry as towers
    from recipekit.evaluation import metrics
    from recipekit.losses import registry as losses

    list_losses(), list_recipe_towers()  # the built-ins first
    monkeypatch.setattr(losses, "_REGISTRY", dict(losses._REGISTRY))
    monkeypatch.setattr(towers, "_TOWERS", dict(towers._TOWERS))
    monkeypatch.setattr(towers, "_EMBEDDERS", dict(towers._EMBEDDERS))
    monkeypatch.setattr(metrics, "_METRICS", dict(metrics._METRICS))
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield PLUGIN
    sys.modules.pop(PLUGIN, None)


def test_builtin_builders_declare_what_they_need_from_the_run():
    assert dict(loss_spec("infonce").needs) == {"rank": False, "world_size": False}
    assert dict(loss_spec("adamine_ins_cls").needs) == {"num_classes": True, "embed_dim": False}
    assert loss_spec("triplet").needs == {} and loss_spec("triplet").dynamic_margin
    assert not loss_spec("pairwise").dynamic_margin and "margin" in loss_spec("pairwise").options
    assert list_losses(kind="recipe") == ["ht_recipe"] and "ht_recipe" not in list_losses(kind="pair")
    spec = loss_spec("adamine_ins_cls")
    loss = spec.build({}, {"num_classes": lambda: 4, "embed_dim": lambda: 8, "rank": lambda: 1 / 0})
    assert loss.classifier.weight.shape == (4, 8)  # rank is not declared: never asked for
    with pytest.raises(ValueError, match="adamine_ins_cls: needs num_classes"):
        spec.build({}, {"embed_dim": lambda: 8})
    assert create_loss("pairwise", margin=0.25).neg_margin == 0.75
    assert {"je", "ht", "minilm"} <= set(list_recipe_towers())
    assert set(recipe_tower_spec("ht").needs) == {"vocab", "embed_dim", "embedding_matrix"}
    assert recipe_tower_spec("minilm").vocabulary is not None and "vocab" not in recipe_tower_spec("minilm").needs
    assert "hidden" in recipe_tower_spec("ht").options and "vocab_size" not in recipe_tower_spec("ht").options


def test_a_name_is_registered_once(example_plugin):
    from recipekit.losses import register_loss

    with pytest.raises(ValueError, match="'triplet' is already registered"):
        register_loss("triplet")(lambda: None)


def test_unknown_plugin_and_plugin_names_in_config_errors(example_plugin, tmp_path):
    raw = {"data": {"prepared": str(tmp_path)}, "train": {"plugins": ["no_such_module_here"]}}
    with pytest.raises(ConfigError, match="train.plugins: cannot import 'no_such_module_here'"):
        load_config(raw)
    raw["train"]["plugins"] = ["../evil.py"]
    with pytest.raises(ConfigError, match="not a module name"):
        load_config(raw)
    raw["train"]["plugins"] = []
    raw["model"] = {"embedder": "example_bow"}
    with pytest.raises(ConfigError, match="model.embedder: unknown embedder 'example_bow'"):
        load_config(raw)
    raw["model"] = {"embedder": "ht_resnet18", "overrides": {"recipe": {"tower": "example_bow"}}}
    with pytest.raises(ConfigError, match="model.overrides.recipe.tower: unknown recipe tower 'example_bow'"):
        load_config(raw)
    raw["train"]["plugins"] = [example_plugin]
    assert load_config(raw).model.overrides["recipe"]["tower"] == "example_bow"
    raw["loss"] = {"name": "example_hinge", "margn": 0.1}
    with pytest.raises(ConfigError, match=r"unknown key loss\.margn for loss 'example_hinge'.*takes margin"):
        load_config(raw)


def test_example_plugin_trains_from_the_cli(example_plugin, prepared_demo, tmp_path):
    from click.testing import CliRunner
    from recipekit.cli.main import main
    from recipekit.embedders import load_embedder

    path = tmp_path / "plugin.toml"
    path.write_text(f"""
[data]
prepared = "{prepared_demo}"
batch_size = 16
num_workers = 0

[model]
embedder = "example_bow"

[loss]
name = "example_hinge"
margin = 0.1

[train]
epochs = 1
plugins = ["{example_plugin}"]

[log]
progress = false
""", encoding="utf-8")
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--config", str(path), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    plugin = sys.modules[example_plugin]
    loss = next(m for m in plugin.BUILT if isinstance(m, plugin.HardestNegativeHinge))
    assert (loss.margin, loss.embed_dim) == (0.1, 16)  # the option from [loss], embed_dim from the run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert metrics and all(m["loss"] == m["loss"] and m["loss"] > 0 for m in metrics if "loss" in m)
    model = load_embedder(out / "best.pt")
    assert isinstance(model.recipe_tower, plugin.BagOfWordsTower)
    emb = model.embed_recipes([{"title": "tomato soup", "ingredients": [{"text": "tomato"}], "instructions": []}])
    assert emb.shape == (1, 16) and abs(float((emb ** 2).sum()) - 1.0) < 1e-5
    sys.modules.pop(example_plugin)  # `recipekit --plugin` imports it again (same builders: no clash)
    res = CliRunner().invoke(main, ["--plugin", example_plugin, "eval", str(out), "--device", "cpu",
                                    "--metric", "recall", "--metric", "example_mrr", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    bag = json.loads((tmp_path / "ev" / "eval.json").read_text())["bags"][0]["recipe_to_image"]
    assert list(bag) == ["R@1", "R@5", "R@10", "MRR"]
    res = CliRunner().invoke(main, ["--plugin", "no_such_module_here", "eval", str(out)])
    assert res.exit_code == 2 and "--plugin: cannot import 'no_such_module_here'" in res.output
    protocol = EvalProtocol(bag_size=20, n_bags=2, bag_size_large=None, metrics=("medR", "example_mrr"))
    report = evaluate(out, protocol=protocol, device="cpu").report
    bag = report["bags"][0]["image_to_recipe"]
    assert list(bag) == ["medR", "MRR"] and 0 < bag["MRR"]["mean"] <= 100
    assert list(report["protocol"]["metrics"]) == ["medR", "example_mrr"]
    assert "| MRR |" in (out / "eval" / "test" / "eval.md").read_text()
    default = evaluate(out, protocol=EvalProtocol(bag_size=20, n_bags=2, bag_size_large=None), write=False).report
    assert "metrics" not in default["protocol"]  # the default protocol's eval.json is as before
    assert list(default["bags"][0]["recipe_to_image"]) == ["medR", "R@1", "R@5", "R@10"]


def test_metrics_are_registered_functions_and_the_default_report_is_unchanged():
    import numpy as np

    from recipekit.evaluation import DEFAULT_METRICS, list_metrics, retrieval_metrics

    assert DEFAULT_METRICS == ("medR", "recall") and {"medR", "recall"} <= set(list_metrics())
    v = np.eye(4, dtype=np.float32)
    out = retrieval_metrics(v, v)["image_to_recipe"]
    assert out == {"medR": 1.0, "R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
    assert list(retrieval_metrics(v, v, metrics=("recall",))["recipe_to_image"]) == ["R@1", "R@5", "R@10"]
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        EvalProtocol(metrics=("nope",))


def test_a_checkpoint_from_before_train_plugins_still_resumes(tmp_path):
    from recipekit.training.checkpoint import check_resume_config

    cfg = load_config({"data": {"prepared": str(tmp_path)}})
    saved = cfg.to_dict()
    del saved["train"]["plugins"]
    check_resume_config(saved, cfg)  # no error: the key is new, and empty
    saved["train"]["plugins"] = ["my_pkg.losses"]
    with pytest.raises(ConfigError, match=r"train\.plugins: \['my_pkg.losses'\] -> \[\]"):
        check_resume_config(saved, cfg)
