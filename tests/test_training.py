"""The trainer end to end on a tiny prepared demo corpus (CPU): learning, the run folder,
bit-for-bit resume, DDP with two gloo processes, cached-features mode, every example config, CLI."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("webdataset")

try:
    from stand_ins import LinearEmbedder, local_init_method, state_differences
except ImportError:  # tests/ imported as a package
    from tests.stand_ins import LinearEmbedder, local_init_method, state_differences
# torchvision 0.29 deprecates its image decoders (one warning per call); the loader still uses them
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

try:
    from conftest_torch import skip_unless_installed, small_overrides
except ImportError:  # tests/ imported as a package
    from tests.conftest_torch import skip_unless_installed, small_overrides

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from recipekit.training import ConfigError, train  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_MODEL = {
    "embedder": "ht_resnet18",
    "overrides": {"embed_dim": 16, "image": {"image_size": 64, "weights": None},
                  "recipe": {"hidden": 16, "heads": 2, "layers": 1, "ff_dim": 32}},
}


@pytest.fixture(scope="module")
def prepared(prepared_demo) -> Path:
    """The session's 600-recipe demo corpus (tests/conftest.py): 230 train / 42 val pairs, 4 train shards."""
    return prepared_demo


def tiny_config(prepared: Path, **sections) -> dict:
    cfg = {
        "data": {"prepared": str(prepared), "batch_size": 16, "num_workers": 0},
        "model": copy.deepcopy(TINY_MODEL),
        "loss": {"name": "adamine"},
        "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.5, "grad_clip": 8.0},
        "train": {"epochs": 2, "seed": 0, "accumulate": 2},
        "log": {"progress": False},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


@pytest.fixture(scope="module")
def straight_run(prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "straight"
    return train(tiny_config(prepared), run, device="cpu")


# -- learning ---------------------------------------------------------------------------------
def test_two_epochs_lower_the_loss_and_beat_chance(prepared, tmp_path):
    """Pretrained EfficientNet-Lite0 (offline weights) with its backbone frozen (by the trainer,
    freeze_backbone_epochs); the head and the recipe tower learn. (Unfreezing: the DDP test.)"""
    from recipekit.embedders import get_config

    skip_unless_installed(get_config("ht_efficientnet_lite0"))
    model = {"embedder": "ht_efficientnet_lite0", "overrides": {
        "embed_dim": 32, "image": {"image_size": 64, "weights": "packaged"},
        "recipe": {"hidden": 32, "heads": 2, "layers": 1, "ff_dim": 64}}}
    cfg = tiny_config(prepared, model=model, loss={"name": "triplet"},
                      optim={"lr": 3e-3, "schedule": "none", "grad_clip": 0.0},
                      train={"accumulate": 1, "freeze_backbone_epochs": 2})
    result = train(cfg, tmp_path / "run", device="cpu")
    first, second = result.history
    assert first["backbone_frozen"] and second["backbone_frozen"]
    assert second["loss"] < first["loss"]
    val = second["val"]
    n = val["pairs"]
    assert n == 42 and val["bags"] == 1
    # chance: medR ~ n/2 = 21, R@10 ~ 24%
    assert val["image_to_recipe"]["medR"] <= n / 3 and val["recipe_to_image"]["medR"] <= n / 3
    assert val["image_to_recipe"]["R@10"] > 40
    assert result.best_metrics["image_to_recipe"]["medR"] <= n / 3


# -- the run folder -----------------------------------------------------------------------------
def test_run_folder_layout(straight_run, prepared):
    from recipekit.embedders import load_embedder

    run = straight_run.run_dir
    assert straight_run.epochs == 2 and straight_run.last_checkpoint == run / "checkpoints" / "last.pt"
    for name in ("config.resolved.json", "environment.json", "metrics.jsonl", "best.pt", "best.json", "curves.png",
                 "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert not (run / "config.toml").exists()  # the config was a dict, not a file
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["data"]["prepared"] == str(prepared) and resolved["loss"]["name"] == "adamine"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines == straight_run.history
    for r in lines:
        assert r["val"]["pairs"] == 42 and set(r["val"]["image_to_recipe"]) == {"medR", "R@1", "R@5", "R@10"}
        assert r["images_per_s"] > 0 and r["step"] > 0 and r["loss"] == pytest.approx(r["loss_pair"])
    best = json.loads((run / "best.json").read_text())
    from recipekit.training.validate import Selector  # the configured rule replayed on the validations

    t = resolved["train"]
    assert (best["select"], best["select_window"]) == (t["select"], t["select_window"])
    selector = Selector(t["select"], t["select_window"])
    kept = [i + 1 for i, r in enumerate(lines) if selector.offer(r["val"], final=i + 1 == len(lines))]
    assert best["epoch"] == kept[-1] == straight_run.best_epoch and best["split"] == "val"
    assert best["score"] == pytest.approx(list(selector.best_score))
    model = load_embedder(straight_run.best_path)
    assert model.embed_dim == 16
    folder = load_embedder(run / "model")  # the model folder written beside best.pt holds the same weights
    assert sorted(p.name for p in (run / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert all(torch.equal(v, folder.state_dict()[k]) for k, v in model.state_dict().items())
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert blob["epoch"] == 2 and blob["best"]["epoch"] == best["epoch"] and len(blob["rng"]) == 1


def test_resume_after_one_epoch_equals_the_uninterrupted_run(straight_run, prepared, tmp_path):
    cfg = tiny_config(prepared)
    stopped = train(cfg, tmp_path / "run", device="cpu", stop_after=1)
    assert stopped.epochs == 1 and len(stopped.history) == 1
    resumed = train(cfg, tmp_path / "run", device="cpu", resume=True)
    assert resumed.epochs == 2
    a = torch.load(straight_run.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    for part in ("model", "losses", "optimizer", "scheduler", "rng"):
        assert state_differences(a[part], b[part], part) == [], part
    drop = ("seconds", "images_per_s", "val_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in straight_run.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in resumed.history]
    assert json.loads((tmp_path / "run" / "best.json").read_text()) == json.loads(
        (straight_run.run_dir / "best.json").read_text())


def test_run_folder_guards(straight_run, prepared, tmp_path):
    cfg = tiny_config(prepared)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg, straight_run.run_dir, device="cpu")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", device="cpu", resume=True)
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.001 -> 0\.5"):
        train(cfg, straight_run.run_dir, device="cpu", resume=True, overrides=["optim.lr=0.5"])
    # more epochs is a legitimate change: nothing runs when they are already done
    done = train(cfg, straight_run.run_dir, device="cpu", resume=True)
    assert done.epochs == 2 and len(done.history) == 2


def test_recipe_only_batches_refuse_a_store_of_other_limits(prepared, tmp_path):
    cfg = tiny_config(prepared, data={"batch_size": 8, "recipe_only_ratio": 1.0, "recipe_only_batch_size": 8},
                      loss={"name": "triplet", "recipe_weight": 1.0})
    cfg["model"]["overrides"]["recipe"]["max_tokens"] = 7  # the store was cut at 15 tokens
    with pytest.raises(ConfigError, match=r"recipes\.lmdb was built with limits \(20, 20, 15\), not \(20, 20, 7\)"):
        train(cfg, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()

# -- cached-features mode ------------------------------------------------------------------------
def test_cached_features_mode_trains_and_best_pt_embeds_images(prepared, tmp_path):
    from recipekit.embedders import load_embedder
    from recipekit.evaluation import embed_split, evaluate_bags

    model = copy.deepcopy(TINY_MODEL)
    model["overrides"]["image"]["freeze_backbone"] = True
    cfg = tiny_config(prepared, model=model, train={"cache_features": True, "accumulate": 1},
                      data={"class_aware": True})
    run = tmp_path / "run"
    first = train(cfg, run, device="cpu", stop_after=1)
    feats = sorted(p.name for p in (run / "features").iterdir())
    assert [n.split("-")[0] + n[n.rindex("."):] for n in feats] == ["train.json", "train.npy", "val.json", "val.npy"]
    meta = json.loads(next((run / "features").glob("train-*.json")).read_text())
    assert len(meta["ids"]) == 230 and meta["offsets"][-1] > 230  # every photo of every train recipe
    mtimes = {p.name: p.stat().st_mtime_ns for p in (run / "features").iterdir()}
    result = train(cfg, run, device="cpu", resume=True)
    assert {p.name: p.stat().st_mtime_ns for p in (run / "features").iterdir()} == mtimes  # cache reused
    assert result.history[1]["loss"] < first.history[0]["loss"]
    # best.pt is a whole embedder: through its frozen backbone, the val photos give the
    # metrics that validation computed from the cached features
    best = load_embedder(result.best_path)
    emb = embed_split(best, prepared, "val", batch_size=16)
    again = evaluate_bags(emb.image, emb.recipe, bag_size=1000, n_bags=10, seed=1234)
    for direction in ("image_to_recipe", "recipe_to_image"):
        for metric, value in result.best_metrics[direction].items():
            assert again[direction][metric]["mean"] == pytest.approx(value), (direction, metric)


def test_cached_features_need_a_frozen_backbone(prepared, tmp_path):
    with pytest.raises(ConfigError, match="cache_features needs the image backbone frozen"):
        train(tiny_config(prepared, train={"cache_features": True, "freeze_backbone_epochs": 1}), tmp_path / "r",
              device="cpu")


# -- DDP --------------------------------------------------------------------------------------------
def _ddp_train_worker(rank: int, cfg: dict, run: str, out: str, init: str) -> None:
    torch.set_num_threads(1)
    result = train(cfg, run, device="cpu", rank=rank, world_size=2, init_method=init)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"epochs": result.epochs, "history": len(result.history)}))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_with_two_gloo_processes_trains(prepared, tmp_path):
    import torch.multiprocessing as mp
    from recipekit.embedders import load_embedder

    cfg = tiny_config(prepared, data={"batch_size": 8, "recipe_only_ratio": 1.0, "recipe_only_batch_size": 8},
                      loss={"name": "triplet", "recipe_weight": 1.0},
                      train={"freeze_backbone_epochs": 1, "accumulate": 1})
    run = tmp_path / "run"
    mp.spawn(_ddp_train_worker, args=(cfg, str(run), str(tmp_path), local_init_method()), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks == [{"epochs": 2, "history": 2}, {"epochs": 2, "history": 0}]  # only rank 0 logs
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert blob["epoch"] == 2 and blob["world_size"] == 2 and len(blob["rng"]) == 2
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["backbone_frozen"] for x in lines] == [True, False]
    assert all(x["loss_recipe_only"] is not None and x["loss_pair"] is not None for x in lines)
    model = load_embedder(run / "best.pt")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert len(list((run / "tensorboard").glob("events.*"))) == 1


def _gradients(rank: int, world: int, init: str | None):
    from recipekit.training.build import AmpSettings, TrainStep
    from recipekit.training.config import load_config
    from recipekit.training.distributed import DistInfo

    torch.manual_seed(0)
    model = LinearEmbedder().double()
    cfg = load_config({"data": {"prepared": "/unused"}, "loss": {"name": "adamine", "positives": "all"}})
    g = torch.Generator().manual_seed(1)
    images, recipes = torch.randn(8, 4, generator=g).double(), torch.randn(8, 5, generator=g).double()
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 1, 0])
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    info = DistInfo(rank=rank, world_size=world, backend="gloo" if world > 1 else None)
    module = step = TrainStep(model, _loss(cfg), None, cfg, info, AmpSettings(False, None, False))
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        module = torch.nn.parallel.DistributedDataParallel(step)
    out = module("pair", recipes={"x": recipes[part]}, images=images[part], labels=labels[part])
    out["total"].backward()
    return float(out["pair"]), [p.grad for p in model.parameters()]


def _loss(cfg):
    from recipekit.losses import create_loss

    return create_loss(cfg.loss.name, **cfg.loss.options).double()


def _ddp_gradient_worker(rank: int, out: str, init: str) -> None:
    value, grads = _gradients(rank, 2, init)
    torch.save({"value": value, "grads": grads}, f"{out}/grad{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_gathered_loss_gives_the_single_process_gradient(tmp_path):
    """AdaMine (semantic terms: labels gathered too) on 2 x 4 samples == one process on 8."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_gradient_worker, args=(str(tmp_path), local_init_method()), nprocs=2, join=True)
    value, grads = _gradients(0, 1, None)
    for rank in range(2):
        got = torch.load(tmp_path / f"grad{rank}.pt", weights_only=True)
        assert got["value"] == pytest.approx(value, rel=1e-12)
        for a, b in zip(got["grads"], grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# -- the example configs ---------------------------------------------------------------------------
def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_example_config_builds_and_takes_a_step(path, prepared):
    from recipekit.embedders import get_config
    from recipekit.pipeline.store import RecipeStore
    from recipekit.training.build import AmpSettings, TrainStep, build_losses, build_model
    from recipekit.training.config import load_config
    from recipekit.training.distributed import DistInfo

    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    name = raw["model"]["embedder"]
    skip_unless_installed(get_config(name))
    small = small_overrides(name, None)
    small.pop("vocab")
    raw["model"]["overrides"] = _merge(raw["model"].get("overrides", {}), small)
    raw["data"]["prepared"] = str(prepared)
    cfg = load_config(raw)
    torch.manual_seed(0)
    model = build_model(cfg)
    loss, recipe_loss = build_losses(cfg, model, DistInfo())
    assert (recipe_loss is not None) == (cfg.loss.recipe_weight > 0)
    if cfg.loss.dynamic_margin:
        loss.set_epoch(100)
        assert loss.margin == cfg.loss.dynamic_margin["cap"]
    step = TrainStep(model, loss, recipe_loss, cfg, DistInfo(), AmpSettings(False, None, False)).train()
    store = RecipeStore(prepared / "recipes.lmdb")
    records = [store[k] for k in store.keys("train")[:6]]
    from recipekit.loaders import collate_store_records

    batch = collate_store_records(records)
    labels = torch.tensor([1, 1, 2, 2, 0, 0])  # AdaMine's semantic terms need same-class pairs
    size = model.image_tower.image_size
    # loss.partners = "dataset" (je): the trainer hands drawn train recipes; here the batch reversed
    extra = ({"partners": {k: v.flip(0) for k, v in batch["recipes"].items()}}
             if cfg.loss.options.get("partners") == "dataset" else {})
    out = step("pair", recipes=batch["recipes"], images=torch.randn(6, 3, size, size), labels=labels, **extra)
    assert torch.isfinite(out["total"])
    out["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.recipe_tower.parameters())
    if recipe_loss is not None:
        assert torch.isfinite(step("recipe", recipes=batch["recipes"])["total"])


# -- CLI ------------------------------------------------------------------------------------------------
def test_cli_train_writes_a_run_and_reports_bad_keys(prepared, tmp_path):
    from click.testing import CliRunner
    from recipekit.cli.main import main

    path = tmp_path / "tiny.toml"
    path.write_text(f"""
[data]
prepared = "{prepared}"
batch_size = 16
num_workers = 0

[model]
embedder = "ht_resnet18"
[model.overrides]
embed_dim = 16
image = {{ image_size = 64, weights = "" }}   # "" = random initialisation (TOML has no null)
recipe = {{ hidden = 16, heads = 2, layers = 1, ff_dim = 32 }}

[loss]
name = "adamine"

[train]
epochs = 1

[log]
progress = false
""", encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(main, ["train", "--config", str(path), "--out", str(out), "--device", "cpu",
                               "--set", "loss.name=triplet"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1 and Path(summary["best"]) == out / "best.pt"
    assert (out / "config.toml").read_text() == path.read_text()
    assert json.loads((out / "config.resolved.json").read_text())["loss"]["name"] == "triplet"
    res = runner.invoke(main, ["train", "--config", str(path), "--out", str(tmp_path / "r2"), "--set", "optim.lrr=1"])
    assert res.exit_code == 1 and "unknown key optim.lrr" in res.output
    res = runner.invoke(main, ["train", "--config", str(path), "--out", str(out)])
    assert res.exit_code == 1 and "--resume" in res.output
    assert os.path.exists(out / "checkpoints" / "last.pt")


def test_resume_removes_what_a_killed_writer_left_and_names_a_truncated_checkpoint(straight_run, prepared, tmp_path):
    """A run killed mid-save leaves checkpoints/last.pt.tmp-PID and curves.png.tmp-PID: --resume
    removes those of dead processes (a live writer's stay); a truncated last.pt is one error line."""
    import shutil
    import subprocess

    run = tmp_path / "run"
    shutil.copytree(straight_run.run_dir, run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = [run / "checkpoints" / f"last.pt.tmp-{dead.pid}", run / f"curves.png.tmp-{dead.pid}",
                run / f"best.pt.tmp-{dead.pid}"]
        for p in left:
            p.write_bytes(b"\0" * 1000)
        busy = run / "checkpoints" / f"last.pt.tmp-{live.pid}"
        busy.write_bytes(b"\0")
        cfg = tiny_config(prepared)
        done = train(cfg, run, device="cpu", resume=True)  # nothing left to train: the clean-up still runs
        assert done.epochs == 2
        assert not any(p.exists() for p in left) and busy.exists()
    finally:
        live.kill()
        live.wait()
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    with pytest.raises(ValueError, match=r"last.pt: unreadable training checkpoint \(truncated or corrupt"):
        train(tiny_config(prepared), run, device="cpu", resume=True)
