import json
import os

import pytest

from recipekit.pipeline.parse import parse
from recipekit.pipeline.stagekit import atomic_dir, atomic_path, read_manifest


def _corpus(root, titles=("Tomato Soup",)):
    root.mkdir(parents=True, exist_ok=True)
    layer1 = [
        {"id": f"r{i}", "title": t, "ingredients": [{"text": "salt"}], "instructions": [{"text": "Cook."}],
         "partition": "train", "url": None}
        for i, t in enumerate(titles)
    ]
    (root / "layer1.json").write_text(json.dumps(layer1))
    (root / "layer2.json").write_text("[]")
    return root


def test_manifest_records_params_inputs_outputs_counts(tmp_path):
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    report = parse(src, out)
    m = read_manifest(out, "parse")
    assert report.status == "ran" and m == report.manifest
    assert m["counts"]["recipes"] == 1
    assert m["inputs"]["SRC/layer1.json"]["bytes"] == (src / "layer1.json").stat().st_size
    assert m["inputs"]["SRC/det_ingrs.json"] == {"missing": True}
    assert set(m["outputs"]) == {"recipes.parquet", "images.parquet", "det_ingrs.parquet"}
    assert m["timings"]["wall_s"] >= 0 and m["versions"]["pyarrow"]


def test_skip_when_unchanged_rerun_when_input_or_output_changes(tmp_path):
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    assert parse(src, out).status == "ran"
    assert parse(src, out).status == "skipped"
    assert parse(src, out, force=True).status == "ran"
    os.utime(src / "layer1.json")  # touching alone changes nothing: inputs are content-addressed
    assert parse(src, out).status == "skipped"
    _corpus(src, titles=("Tomato Soup", "Pea Soup"))
    report = parse(src, out)
    assert report.status == "ran" and report.counts["recipes"] == 2
    (out / "recipes.parquet").write_bytes(b"damaged")
    assert parse(src, out).status == "ran"  # a tampered output is rebuilt
    (src / "images" / "train").mkdir(parents=True)
    (src / "images" / "train" / "x.jpg").write_bytes(b"")
    assert parse(src, out).status == "ran"  # the image tree is an input too


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
