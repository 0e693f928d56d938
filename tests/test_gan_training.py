"""[gan] runs end to end on the tiny demo corpus (CPU): which parameters each optimiser moves,
bit-for-bit resume, DDP, the run folder (per-term losses, image grids), config errors,
`recipekit generate` and the generation block of eval.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("webdataset")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

try:
    from stand_ins import local_init_method, state_differences
except ImportError:  # tests/ imported as a package
    from tests.stand_ins import local_init_method, state_differences

from recipekit.training import ConfigError, train  # noqa: E402

GAN_MODEL = {
    "embedder": "ht_resnet18",
    "overrides": {"embed_dim": 16, "image": {"image_size": 64, "weights": None},
                  "recipe": {"hidden": 16, "heads": 2, "layers": 1, "ff_dim": 32},
                  "generator": {"channels": 4, "cond_dim": 8, "noise_dim": 8}},
}


def gan_config(prepared: Path, method: str = "acme", **sections) -> dict:
    cfg = {
        "data": {"prepared": str(prepared), "batch_size": 16, "num_workers": 0, "epoch_length": 32},
        "model": copy.deepcopy(GAN_MODEL),
        "loss": {"name": "triplet", "recipe_weight": 1.0 if method == "tnlbt" else 0.0},
        "optim": {"lr": 1e-3, "schedule": "cosine"},
        "train": {"epochs": 2, "seed": 0},
        "log": {"progress": False, "curves": False},
        "gan": {"method": method, "disc_channels": 8, "ingredient_vocab": 64, "grid_size": 4, "n_critic": 2,
                "translation_weight": 0.1},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


@pytest.fixture(scope="module")
def acme_run(prepared_demo, tmp_path_factory):
    run = tmp_path_factory.mktemp("gan") / "acme"
    return train(gan_config(prepared_demo), run, device="cpu")


# -- the alternation -----------------------------------------------------------------------------
def test_each_optimiser_moves_only_its_parameters(prepared_demo, tmp_path):
    from recipekit.training.config import load_config
    from recipekit.training.distributed import setup
    from recipekit.training.trainer import _Run

    cfg = load_config(gan_config(prepared_demo))
    run = _Run(cfg, tmp_path / "run", setup("cpu"), resume=False)
    run.prepare()
    adv, model = run.adv, run.model
    groups = {
        "embedders": [p for g in run.optimizer.param_groups for p in g["params"]],
        "generator": list(model.generator.parameters()),
        "discriminators": list(adv.discs.parameters()),
    }
    ids = {k: {id(p) for p in v} for k, v in groups.items()}
    assert not (ids["embedders"] & ids["generator"]) and not (ids["embedders"] & ids["discriminators"])
    assert ids["generator"] == {id(p) for g in adv.g_opt.param_groups for p in g["params"]}
    assert ids["discriminators"] == {id(p) for g in adv.d_opt.param_groups for p in g["params"]}
    assert {id(p) for p in adv.heads.parameters()} <= ids["embedders"]  # translation heads train with them
    everything = {id(p): p for ps in groups.values() for p in ps}

    def snapshot():
        return {i: p.detach().clone() for i, p in everything.items()}

    def moved(before):
        return {i for i, p in everything.items() if not torch.equal(p.detach(), before[i])}

    run.step.train()
    batch = next(iter(run.loader))
    losses = run.step("pair", **run._inputs("pair", batch))
    losses["total"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["generator"])
    before = snapshot()
    run.optimizer.step()
    changed = moved(before)
    assert changed and changed <= ids["embedders"]
    before = snapshot()
    adv.step_generator(None)
    changed = moved(before)
    assert changed and changed <= ids["generator"]
    before = snapshot()
    logs = adv.discriminator_step(run.step.stash)
    changed = moved(before)
    # (the critic's output bias cancels in mean D(r) - mean D(v): it gets no gradient)
    critic = {id(p) for p in adv.discs.critic.parameters() if p.dim() > 1}
    image_d = {id(p) for p in adv.discs.image.parameters()}
    assert changed <= ids["discriminators"] and critic <= changed and changed & image_d
    assert {"gan_critic", "gan_gp", "gan_d_image"} <= set(logs)
    assert all(p.grad is None for p in groups["discriminators"])  # zeroed after the step
    run.logger.close()


# -- runs ------------------------------------------------------------------------------------------
def test_gan_run_folder_and_per_term_losses(acme_run):
    run = acme_run.run_dir
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for r in lines:
        for key in ("loss_gan_total", "loss_gan_align", "loss_gan_img", "loss_gan_text", "loss_gan_critic",
                    "loss_gan_gp", "loss_gan_d_image", "loss_gan_ingredients", "loss_gan_class_fake"):
            assert isinstance(r[key], float), key
        assert r["loss"] == pytest.approx(r["loss_pair"] + r["loss_gan_total"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss_gan_critic", "train/loss_gan_d_image", "train/loss_gan_img", "train/loss_pair"} <= tags
    assert [e.value for e in events.Scalars("train/loss_gan_critic")] == pytest.approx(
        [r["loss_gan_critic"] for r in lines], rel=1e-6)
    for epoch in (1, 2):
        png = run / "generated" / f"epoch_{epoch:03d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(run / "generated" / "epoch_002.png") as im:  # 2 rows of 4 images of 64 px, 2 px padding
        assert im.size == (4 * 66 + 2, 2 * 66 + 2)
    from recipekit.embedders import load_embedder

    model = load_embedder(run / "best.pt")
    assert model.generator is not None and model.generator.image_size == 64
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert set(blob["extra"]["adversarial"]) >= {"discriminators", "d_opt", "d_sched", "g_opt", "g_sched"}
    assert "adversarial_heads" in blob["losses"]


@pytest.mark.slow
def test_gan_resume_is_bit_exact(acme_run, prepared_demo, tmp_path):
    cfg = gan_config(prepared_demo)
    stopped = train(cfg, tmp_path / "run", device="cpu", stop_after=1)
    assert stopped.epochs == 1
    resumed = train(cfg, tmp_path / "run", device="cpu", resume=True)
    a = torch.load(acme_run.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    for part in ("model", "losses", "optimizer", "scheduler", "rng", "extra"):
        assert state_differences(a[part], b[part], part) == [], part
    drop = ("seconds", "images_per_s", "val_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in acme_run.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in resumed.history]


@pytest.mark.slow
def test_r2gan_and_tnlbt_train_with_bf16_autocast(prepared_demo, tmp_path):
    r2 = train(gan_config(prepared_demo, "r2gan", train={"epochs": 1, "amp": "bf16"}), tmp_path / "r2", device="cpu")
    rec = r2.history[0]
    for key in ("loss_gan_source", "loss_gan_d_source", "loss_gan_rank_img", "loss_gan_recon", "loss_gan_semantic"):
        assert rec[key] is not None and rec[key] == rec[key], key  # present and not NaN
    assert "loss_gan_critic" not in rec  # no modality critic in R2GAN
    tn = train(gan_config(prepared_demo, "tnlbt", train={"epochs": 1},
                          data={"recipe_only_ratio": 1.0, "recipe_only_batch_size": 16}), tmp_path / "tn", device="cpu")
    rec = tn.history[0]
    assert rec["loss_recipe"] is not None and rec["loss_recipe_only"] is not None and rec["loss_gan_critic"] is not None


def _ddp_worker(rank: int, cfg: dict, run: str, init: str) -> None:
    from recipekit.training import trainer

    torch.set_num_threads(1)
    seen = []
    fit = trainer._Run.fit

    def spy(self, *args, **kwargs):  # the discriminators' weights after training, per rank
        out = fit(self, *args, **kwargs)
        seen.append({k: v.clone() for k, v in self.adv.discs.state_dict().items() if v.is_floating_point()})
        return out

    trainer._Run.fit = spy
    try:
        train(cfg, run, device="cpu", rank=rank, world_size=2, init_method=init)
    finally:
        trainer._Run.fit = fit
    torch.save(seen[0], f"{run}-discs{rank}.pt")


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
@pytest.mark.parametrize("chunk", [0, 3], ids=["plain", "grad_cache"])
def test_gan_ddp_with_two_gloo_processes(prepared_demo, tmp_path, chunk):
    """Two ranks, plain and with the gradient cache (8 pairs per rank in chunks of 3, 3 and 2)."""
    import torch.multiprocessing as mp

    cfg = gan_config(prepared_demo, data={"batch_size": 8}, train={"epochs": 1, "seed": 0, "grad_cache_chunk": chunk})
    run = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(cfg, str(run), local_init_method()), nprocs=2, join=True)
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert blob["world_size"] == 2 and blob["extra"]["adversarial"]["d_opt"]["state"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["loss_gan_d_image"] is not None
    assert (run / "generated" / "epoch_001.png").is_file()
    d0, d1 = (torch.load(f"{run}-discs{r}.pt", weights_only=True) for r in range(2))
    # same initial weights and averaged gradients: the ranks' discriminators stay equal
    # (BatchNorm running statistics are per rank: they are not weights)
    for key in d0:
        if "running" not in key:
            torch.testing.assert_close(d0[key], d1[key], rtol=1e-5, atol=1e-6, msg=key)


# -- config errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"gan": {"method": "stylegan"}}, "gan.method must be one of"),
    ({"model": {"overrides": {"embed_dim": 16}}}, "needs a generator in the model"),
    ({"train": {"cache_features": True}}, "needs the photos"),
    ({"train": {"accumulate": 2}}, "train.accumulate = 1"),
    ({"gan": {"method": "tnlbt"}}, "loss.recipe_weight > 0"),
    ({"gan": {"n_critic": 0}}, "gan.n_critic must be > 0"),
])
def test_gan_config_errors(prepared_demo, change, message):
    from recipekit.training.config import load_config

    cfg = gan_config(prepared_demo)
    for section, values in change.items():
        cfg[section].update(values)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


# -- generation: eval.json and `recipekit generate` ------------------------------------------------------
def test_frechet_distance_against_scipy():
    import numpy as np
    from scipy import linalg

    from recipekit.evaluation.generation import frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(loc=0.5, scale=2.0, size=(300, 4))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    direct = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(direct, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(rng.normal(size=(5, 16)), rng.normal(size=(6, 16))) > 0  # N < D works


def test_eval_adds_the_generation_block(acme_run):
    from recipekit.evaluation import EvalProtocol, evaluate
    from recipekit.evaluation.metrics import evaluate_bags
    from recipekit.evaluation.generation import frechet_distance, generated_embeddings

    protocol = EvalProtocol(bag_size=20, n_bags=3, n_bags_large=0)
    result = evaluate(acme_run.run_dir, split="val", protocol=protocol, device="cpu", batch_size=16)
    saved = json.loads(result.json_path.read_text())
    gen = saved["generation"]
    assert gen["pairs"] == saved["data"]["pairs"] == 42
    (row,) = [r for r in gen["retrieval"] if r.get("applicable", True)]
    assert row["bag_size"] == 20 and row["n_bags"] == 3
    stats = row["generated_image_to_recipe"]
    assert set(stats) == {"medR", "R@1", "R@5", "R@10"} and 1 <= stats["medR"]["mean"] <= 20
    assert gen["frechet_image_tower"] > 0 and "not Inception FID" in gen["frechet_features"]
    # the same figures from the parts: generated-photo embeddings as queries over the same bags
    from recipekit.embedders import load_embedder

    model = load_embedder(acme_run.run_dir / "best.pt")
    queries = generated_embeddings(model, result.embeddings.recipe, seed=protocol.seed, batch_size=7)
    again = evaluate_bags(queries, result.embeddings.recipe, bag_size=20, n_bags=3, seed=protocol.seed)
    assert again["image_to_recipe"]["medR"]["mean"] == pytest.approx(stats["medR"]["mean"])
    assert frechet_distance(result.embeddings.image, queries) == pytest.approx(gen["frechet_image_tower"], rel=1e-4)
    assert "Generation: recipe -> generated photo -> recipe" in result.md_path.read_text()


RECIPE = {"title": "Tomato soup", "ingredients": [{"text": "4 tomatoes"}, {"text": "1 onion"}, {"text": "salt"}],
          "instructions": [{"text": "Chop the onion."}, {"text": "Simmer the tomatoes with the onion."}]}


def test_cli_generate_end_to_end(acme_run, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from recipekit.cli.main import main

    recipe = tmp_path / "soup.json"
    recipe.write_text(json.dumps(RECIPE))
    runner = CliRunner()
    out = tmp_path / "out" / "soup.png"
    res = runner.invoke(main, ["generate", str(acme_run.run_dir), "--recipe", str(recipe), "--out", str(out),
                               "--n", "3", "--seed", "5", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    with Image.open(out) as im:
        assert im.size == (3 * 66 + 2, 66 + 2)
        first = np.asarray(im.convert("RGB"))
    assert first[2:66, 2:66].std() > 0  # not a blank tile
    again = tmp_path / "again.png"
    assert runner.invoke(main, ["generate", str(acme_run.run_dir), "--recipe", str(recipe), "--out", str(again),
                                "--n", "3", "--seed", "5", "--device", "cpu"]).exit_code == 0
    with Image.open(again) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), first)  # the seed fixes the noise
    other = tmp_path / "other.png"
    runner.invoke(main, ["generate", str(acme_run.run_dir), "--recipe", str(recipe), "--out", str(other),
                         "--n", "3", "--seed", "6", "--device", "cpu"])
    with Image.open(other) as im:
        assert not np.array_equal(np.asarray(im.convert("RGB")), first)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"title": "Water", "ingredients": [], "instructions": [{"text": "Pour."}]}))
    res = runner.invoke(main, ["generate", str(acme_run.run_dir), "--recipe", str(bare), "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and "the recipe has no ingredients" in res.output and str(bare) in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_generate_refuses_a_model_without_generator(trained_demo_run, tmp_path):
    from recipekit.evaluation.generation import generate

    with pytest.raises(ValueError, match="has no generator"):
        generate(trained_demo_run, RECIPE, tmp_path / "x.png")


@pytest.mark.parametrize("name, method", [("demo_acme", "acme"), ("demo_r2gan", "r2gan"), ("demo_tnlbt", "tnlbt"),
                                          ("acme", "acme"), ("r2gan", "r2gan"), ("tnlbt", "tnlbt")])
def test_packaged_gan_configs_load(name, method):
    from recipekit.training.config import load_config

    cfg = load_config(name)
    assert cfg.gan.method == method and not cfg.train.cache_features
    assert cfg.model.overrides["generator"]["image_size"] in (64, 128)


def test_demo_takes_the_gan_configs(tmp_path):
    from click.testing import CliRunner

    from recipekit.cli.main import main
    from recipekit.training.demo import DEMO_CONFIGS, run_full_demo

    assert DEMO_CONFIGS == ("demo", "demo_acme", "demo_r2gan", "demo_tnlbt")
    with pytest.raises(ValueError, match="choose from demo, demo_acme"):
        run_full_demo(tmp_path / "d", config="acme")
    res = CliRunner().invoke(main, ["demo", "--help"])
    assert res.exit_code == 0 and "demo_tnlbt" in res.output
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--config", "nope"])
    assert res.exit_code == 2 and "nope" in res.output


# -- the gradient cache with the [gan] terms -----------------------------------------------------
@pytest.mark.parametrize("method", ["acme", "r2gan", "tnlbt"])
def test_grad_cache_gives_the_gradient_of_the_whole_batch_loss_plus_the_chunked_gan_terms(prepared_demo, tmp_path,
                                                                                           method):
    """``train.grad_cache_chunk`` on a [gan] run: every parameter's gradient equals that of an
    ordinary graph over the whole batch's retrieval loss (all in-batch negatives) plus each
    chunk's joint adversarial terms weighted by its share of the batch (the same random draws:
    no dropout, a frozen backbone); the discriminator step gets the whole batch's tensors."""
    from recipekit.training.config import load_config
    from recipekit.training.distributed import setup
    from recipekit.training.gradcache import GradCache, split_inputs
    from recipekit.training.trainer import _Run

    cfg = gan_config(prepared_demo, method)
    cfg["model"]["overrides"]["image"]["freeze_backbone"] = True
    cfg["model"]["overrides"]["recipe"]["dropout"] = 0.0
    run = _Run(load_config(cfg), tmp_path / "run", setup("cpu"), resume=False)
    run.prepare()
    step = run.step.train()
    inputs = run._inputs("pair", next(iter(run.loader)))
    size, chunk = len(inputs["labels"]), 6  # 16 pairs: chunks of 6, 5 and 5
    params = dict(step.named_parameters()) | {f"generator:{n}": p for n, p in run.model.generator.named_parameters()}
    params = {n: p for n, p in params.items() if p.requires_grad}
    state = torch.get_rng_state()

    def grads():
        out = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
        for p in params.values():
            p.grad = None
        return out

    # the reference: an ordinary graph, the retrieval loss on the whole batch ...
    torch.set_rng_state(state)
    losses = step.objective("pair", step.embed("pair", inputs["recipes"], inputs["images"]), inputs["labels"])
    losses["total"].backward()
    # ... plus each chunk's joint terms, drawn from the state the cache replays that chunk with
    gan_logs, stashes = {}, []
    for part in split_inputs(inputs, chunk, extra=("labels", "ingredients")):
        n = len(part["labels"])
        torch.set_rng_state(state)  # no dropout: embedding a chunk draws nothing
        out = step.embed("pair", part["recipes"], part["images"])
        extra, logs, stash = step._joint_terms(out, part["images"], part["labels"], part["ingredients"])
        (extra * n / size).backward()
        stashes.append(stash)
        for k, v in logs.items():
            gan_logs[k] = gan_logs.get(k, 0.0) + float(v) * n / size
    want = grads()

    torch.set_rng_state(state)
    got_losses = GradCache(step, chunk).step(step, "pair", inputs)
    got = grads()
    assert sum(g is not None for g in want.values()) > 10
    assert any(n.startswith("generator:") and g is not None for n, g in want.items())
    for name, b in want.items():
        a = got[name]
        assert (a is None) == (b is None), name
        if b is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()) + 1e-9,
                                       msg=lambda m: f"{name}: {m}")
    assert float(got_losses["pair"]) == pytest.approx(float(losses["pair"]), rel=1e-5)
    for k, v in gan_logs.items():
        assert float(got_losses[k]) == pytest.approx(v, rel=1e-5, abs=1e-7), k
    for k, v in step.stash.items():
        assert v.shape[0] == size, k
        torch.testing.assert_close(v, torch.cat([s[k] for s in stashes]), msg=lambda m: f"stash {k}: {m}")
    assert {"gan_d_image"} <= set(run.adv.discriminator_step(step.stash))
    run.logger.close()


@pytest.mark.slow
def test_a_gan_epoch_with_the_grad_cache_trains(prepared_demo, tmp_path):
    """The trainer end to end: an ACME epoch with chunks of at most 5 of the 16 pairs logs every term,
    finite, and writes its grid and checkpoint as a plain run does."""
    cfg = gan_config(prepared_demo, train={"epochs": 1, "seed": 0, "grad_cache_chunk": 5})
    result = train(cfg, tmp_path / "cached", device="cpu")
    rec = result.history[0]
    for key in ("loss_pair", "loss_gan_total", "loss_gan_align", "loss_gan_critic", "loss_gan_d_image"):
        assert rec[key] is not None and np.isfinite(rec[key]), key
    assert (tmp_path / "cached" / "best.pt").exists()


def test_serve_shows_the_generated_photo_of_an_ingredient_query(acme_run, prepared_demo, tmp_path):
    """A [gan] run's server says it has a generator and answers /api/generated with the PNG
    its generator makes from the ingredient query's embedding (the seed fixes the noise)."""
    import io
    import urllib.error
    import urllib.request

    from PIL import Image

    pytest.importorskip("faiss")
    from recipekit.search.server import make_server

    srv = make_server(acme_run.run_dir, prepared_demo, port=0, index=tmp_path / "index", echo=lambda _: None).start()
    try:
        def get(path):
            with urllib.request.urlopen(srv.url + path, timeout=60) as r:
                return r.status, r.headers.get("Content-Type"), r.read()

        status, _, body = get("api/classes")
        assert status == 200 and json.loads(body)["generator"] is True
        want = srv.engine.ingredients.names[0]
        status, ctype, png = get(f"api/generated?q={want}&seed=3")
        assert status == 200 and ctype == "image/png"
        with Image.open(io.BytesIO(png)) as im:
            assert im.size == (64, 64) and np.asarray(im.convert("RGB")).std() > 0
        assert get(f"api/generated?q={want}&seed=3")[2] == png
        assert get(f"api/generated?q={want}&seed=4")[2] != png
        assert srv.engine.generated_photo(want, seed=3) == png
        with pytest.raises(urllib.error.HTTPError) as err:
            get("api/generated?q=unobtainium")
        assert err.value.code == 400 and "unobtainium" in err.value.read().decode()
    finally:
        srv.stop()

