"""Model folders (model.safetensors + config.json), the names load_embedder takes, hf-hub: offline."""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("safetensors")

try:
    from conftest_torch import RECIPES, WORDS, small_overrides
except ImportError:  # tests/ imported as a package
    from tests.conftest_torch import RECIPES, WORDS, small_overrides

from recipekit.embedders import Vocabulary, create_embedder, load_embedder  # noqa: E402
from recipekit.embedders.modelfile import (  # noqa: E402
    ModelNotFoundError,
    export_run,
    model_digest,
    resolve_model,
)

REV = "0123456789abcdef0123456789abcdef01234567"


def _model(name="ht_resnet18", **extra):
    torch.manual_seed(0)
    return create_embedder(name, **small_overrides(name, Vocabulary(WORDS), **extra)).eval()


def _same_outputs(a, b):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    batch = a.collate(RECIPES)
    with torch.no_grad():
        x, y = a(images, batch), b.eval()(images, batch)
    torch.testing.assert_close(x.image, y.image)  # channels-last on loading: equal up to rounding
    torch.testing.assert_close(x.recipe, y.recipe)
    theirs = b.state_dict()
    assert set(theirs) == set(a.state_dict()) and all(torch.equal(v, theirs[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("name", ["ht_resnet18", "je_resnet50"])
def test_model_folder_round_trip_is_plain_json_and_safetensors(name, tmp_path):
    model = _model(name)
    folder = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert cfg["format"] == "recipekit.model/1" and cfg["vocab"] == WORDS and cfg["embedder"] == model.config
    assert cfg["preprocessing"] == {"image_size": 64, "resize": 73, "mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225]}
    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])  # safetensors: a JSON header, then bytes
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    again = load_embedder(folder)
    assert again.config == model.config and again.vocab.words == WORDS
    _same_outputs(model, again)


def test_old_pt_files_and_run_folders_still_load(tmp_path):
    model = _model()
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "best.pt")
    _same_outputs(model, load_embedder(tmp_path / "run" / "best.pt"))
    _same_outputs(model, load_embedder(tmp_path / "run"))  # a run folder without model/: its best.pt
    out = export_run(tmp_path / "run")
    assert out == tmp_path / "run" / "model" and resolve_model(tmp_path / "run") == out  # model/ is preferred
    _same_outputs(model, load_embedder(str(tmp_path / "run")))
    assert model_digest(out) != model_digest(tmp_path / "run" / "best.pt")
    with pytest.raises(ValueError, match="give --out"):
        export_run(tmp_path / "run" / "best.pt")


def test_channels_last_model_saves_contiguous_tensors(tmp_path):
    model = _model()
    model.image_tower.use_channels_last(True)
    _same_outputs(model, load_embedder(model.save_pretrained(tmp_path / "m"), channels_last=False))


def test_bad_names_give_one_line_errors_listing_the_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        load_embedder("ht_efficientnet_lite0")
    text = str(info.value)
    assert "\n" not in text and "is an embedder config, not trained weights" in text and "recipekit train" in text
    assert "hf-hub:ORG/NAME[@REVISION]" in text
    with pytest.raises(FileNotFoundError, match=re.escape("nowhere/m: no such file or folder; name a model as a model "
                                                          "folder (model.safetensors + config.json)")):
        load_embedder("nowhere/m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="without model.safetensors"):
        load_embedder(tmp_path / "empty")
    with pytest.raises(ValueError, match="hf-hub:ORG/NAME"):
        load_embedder("hf-hub:no-slash")


def test_damaged_model_folders_are_refused_with_the_file_named(tmp_path):
    folder = _model().save_pretrained(tmp_path / "m")
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=re.escape(f"{weights}: unreadable safetensors file")) as info:
        load_embedder(folder)
    assert "\n" not in str(info.value)
    weights.write_bytes(good)
    cfg = folder / "config.json"
    cfg.write_text(json.dumps({"format": "something/else"}), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{cfg}: not a recipekit model config")):
        load_embedder(folder)
    cfg.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_embedder(folder)


def _hub_cache(root, model, org="acme", name="tiny-ht"):
    """A Hugging Face cache folder as hf_hub_download leaves it (models--ORG--NAME/...)."""
    repo = root / f"models--{org}--{name}"
    snapshot = model.save_pretrained(repo / "snapshots" / REV)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV, encoding="utf-8")
    return snapshot


def test_hf_hub_names_load_from_a_local_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets: no network at all
    model = _model()
    snapshot = _hub_cache(tmp_path / "hf", model)
    assert resolve_model("hf-hub:acme/tiny-ht", cache_dir=tmp_path / "hf") == snapshot
    _same_outputs(model, load_embedder("hf-hub:acme/tiny-ht", cache_dir=tmp_path / "hf"))
    _same_outputs(model, load_embedder(f"hf-hub:acme/tiny-ht@{REV}", cache_dir=tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # the hub's default cache
    assert resolve_model("hf-hub:acme/tiny-ht") == snapshot
    from recipekit.evaluation.protocol import resolve_target

    (tmp_path / "prepared").mkdir()
    monkeypatch.chdir(tmp_path)
    found = resolve_target(f"hf-hub:acme/tiny-ht@{REV}", tmp_path / "prepared")  # what `recipekit eval` calls
    assert found.checkpoint == snapshot.resolve() and found.run is None
    assert found.default_out == tmp_path / "eval" / f"acme--tiny-ht@{REV}" / "test"  # not inside the cache
    with pytest.raises(ValueError, match="a hf-hub: model needs --data PREPARED"):
        resolve_target("hf-hub:acme/tiny-ht")
    with pytest.raises(ModelNotFoundError, match=r"hf-hub:acme/other: not found on the Hugging Face Hub nor in the "
                                                 r"local cache") as info:
        load_embedder("hf-hub:acme/other", cache_dir=tmp_path / "hf")
    assert "\n" not in str(info.value)


def test_eval_takes_a_model_folder(tmp_path):
    from recipekit.evaluation.protocol import file_sha256, resolve_target

    folder = _model().save_pretrained(tmp_path / "run" / "model")
    (tmp_path / "prepared").mkdir()
    found = resolve_target(folder, tmp_path / "prepared")
    assert found.checkpoint == folder.resolve() and found.default_out == folder.parent / "eval" / "model" / "test"
    assert file_sha256(folder) == model_digest(folder)
    with pytest.raises(ValueError, match="a model folder needs --data PREPARED"):
        resolve_target(folder)
    (tmp_path / "run" / "config.resolved.json").write_text(
        json.dumps({"data": {"prepared": str(tmp_path / "prepared")}}), encoding="utf-8")
    found = resolve_target(folder)  # RUN/model: the run's config one folder up names the data
    assert found.run == (tmp_path / "run").resolve() and found.prepared == (tmp_path / "prepared").resolve()


def test_index_and_search_take_a_model_folder(tmp_path, tmp_path_factory):
    pytest.importorskip("faiss")
    pytest.importorskip("webdataset")
    from click.testing import CliRunner

    from recipekit.cli.main import main
    from recipekit.search import SearchEngine
    from recipekit.search.index import build_index

    try:
        from evalkit import prepared_folder, tiny_model
    except ImportError:  # pragma: no cover
        from tests.evalkit import prepared_folder, tiny_model
    prepared = prepared_folder(tmp_path_factory)
    (tmp_path / "run").mkdir()
    tiny_model(prepared).save(tmp_path / "run" / "best.pt")
    res = CliRunner().invoke(main, ["export", str(tmp_path / "run")])
    assert res.exit_code == 0 and f"wrote {tmp_path / 'run' / 'model'}" in res.output, res.output
    folder = tmp_path / "run" / "model"
    index = build_index(folder, prepared, device="cpu")
    assert index == tmp_path / "run" / "index"
    meta = json.loads((index / "meta.json").read_text(encoding="utf-8"))
    assert meta["checkpoint"]["sha256"] == model_digest(folder)
    engine = SearchEngine.open(folder)
    rid = engine.images["recipe_id"][0]
    assert engine.by_image(engine.image_bytes(rid, 0), k=3)
    bad = CliRunner().invoke(main, ["export", str(tmp_path / "nowhere")])
    assert bad.exit_code == 1 and "nowhere: no such run folder or .pt file" in bad.output
