"""Every user mistake the command line can see is one line saying what to do instead, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipekit.cli.main import main


def one_line_error(result) -> str:
    """The single ``Error: ...`` line of a failed command (asserts there is nothing else)."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _tiny_corpus(folder: Path, recipes: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "layer1.json").write_text(json.dumps(recipes), encoding="utf-8")
    (folder / "layer2.json").write_text("[]", encoding="utf-8")
    return folder


def _recipe(rid: str, ingredients: list[str]) -> dict:
    return {"id": rid, "title": f"Soup {rid}", "partition": "train", "url": f"http://x/{rid}",
            "ingredients": [{"text": t} for t in ingredients], "instructions": [{"text": "Boil."}]}


COMMANDS = {  # the arguments each command needs to reach its --device check
    "train": ["train", "--config", "demo"],
    "eval": ["eval", "RUN"],
    "index": ["index", "RUN"],
    "search": ["search", "RUN", "--ingredients", "salt"],
    "serve": ["serve", "RUN"],
    "plot": ["plot", "RUN", "--tsne"],
    "generate": ["generate", "RUN", "--recipe", "r.json", "--out", "o.png"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_device_typo_is_one_line(command, tmp_path):
    res = CliRunner().invoke(main, [*COMMANDS[command], "--device", "gpu"])
    assert one_line_error(res) == "Error: --device: unknown device 'gpu': use auto, cpu, cuda or cuda:N"


@pytest.mark.parametrize("command", ["index", "search", "train", "eval"])
def test_cuda_without_gpu_is_one_line(command, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(main, [*COMMANDS[command], "--device", "cuda"])
    line = one_line_error(res)
    assert "'cuda' was asked for but torch sees no CUDA device" in line and "use --device cpu" in line


def test_check_device_accepts_what_torch_accepts(monkeypatch):
    torch = pytest.importorskip("torch")
    from recipekit.core.device import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [check_device(d) for d in ("auto", "cpu", "cuda", "cuda:1")] == ["auto", "cpu", "cuda", "cuda:1"]
    for bad, message in (("cuda:2", "has 2 GPU"), ("cuda:x", "unknown device"), ("cuda:", "unknown device"),
                         ("GPU", "unknown device"), ("cpu:0", "unknown device")):
        with pytest.raises(ValueError, match=message):
            check_device(bad)


def test_train_set_typo_names_the_set_and_suggests(tmp_path):
    pytest.importorskip("torch")
    res = CliRunner().invoke(main, ["train", "--config", "demo", "--set", "train.epoch=3", "--out", str(tmp_path / "r")])
    line = one_line_error(res)
    assert line.startswith("Error: --set train.epoch=3: unknown key train.epoch (did you mean epochs?")
    assert "demo.toml" not in line and not (tmp_path / "r").exists()


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path_factory, tmp_path):
    pytest.importorskip("torch")
    try:
        from evalkit import prepared_folder
    except ImportError:  # pragma: no cover
        from tests.evalkit import prepared_folder
    prepared = prepared_folder(tmp_path_factory)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    line = one_line_error(CliRunner().invoke(main, ["eval", str(notes), "--data", str(prepared)]))
    assert line == (f"Error: {notes}: not a readable recipekit embedder file (unreadable embedder file (not a torch "
                    "weights file, or corrupt)); give a run folder of `recipekit train` or the best.pt it wrote")


def test_ingredient_typos_are_all_named():
    from recipekit.search import SearchError
    from recipekit.search.ingredients import IngredientVocabulary

    vocab = IngredientVocabulary(["tomato", "basil", "garlic", "olive oil"])
    assert vocab.require_all(["tomato", "Garlic"]) == ["tomato", "garlic"]
    with pytest.raises(SearchError) as info:
        vocab.require_all(["tomatoe", "basil", "bazil", "zzqx"])
    assert str(info.value) == ("3 unknown ingredients: 'tomatoe' (close matches: tomato); 'bazil' (close matches: "
                               "basil); 'zzqx' (no close match in this index)")


def test_unknown_class_lists_the_classes_or_the_command():
    from recipekit.search.query import class_hint

    assert class_hint("pizzza", ["pizza", "soup"]) == "; classes: pizza, soup"
    many = [f"class {i}" for i in range(30)] + ["pizza"]
    hint = class_hint("pizzza", many)
    assert hint.startswith("; close matches: pizza") and "`recipekit search RUN --list-classes`" in hint
    assert class_hint("pizza", []) == "; this index has no classes (background only)"


def test_prepare_without_layer1_leaves_no_output_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "layer2.json").write_text("[]")
    out = tmp_path / "out"
    line = one_line_error(CliRunner().invoke(main, ["prepare", str(src), str(out), "--workers", "1"]))
    assert line == (f"Error: {src / 'layer1.json'}: required input missing (SRC must hold layer1.json and "
                    "layer2.json, and images/{partition}/a/b/c/d/ID.jpg: see the README)")
    assert not out.exists()


def test_prepare_summary_counts_the_records_each_reason_removed(tmp_path):
    src = _tiny_corpus(tmp_path / "src", [_recipe("a1", ["1 onion"]), _recipe("b2", []), _recipe("c3", []),
                                          _recipe("a1", ["2 leeks"])])
    res = CliRunner().invoke(main, ["prepare", str(src), str(tmp_path / "out"), "--stages", "parse", "--workers", "1",
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    removed = [ln for ln in res.output.splitlines() if "removed:" in ln]
    assert len(removed) == 1
    assert removed[0].split("removed: ")[1] == "2 empty recipe: no ingredients, 1 duplicate id"


def test_reason_kind_drops_record_details():
    from recipekit.pipeline.quarantine import reason_kind

    assert reason_kind("image of unknown or rejected recipe 'a8f805f4d1'") == "image of unknown or rejected recipe"
    assert reason_kind("duplicate id (first at byte offset 1234)") == "duplicate id"
    assert reason_kind("empty recipe: no ingredients") == "empty recipe: no ingredients"
