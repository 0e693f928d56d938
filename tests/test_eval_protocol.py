"""`recipekit eval`: the shared-matrix ranks, the bag protocol with its small-split rules, the
eval.json / eval.md outputs, the plot, the CLI and its errors. (Metrics on single bags are
covered by tests/test_evaluation.py.)"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from recipekit.evaluation import EvalProtocol, evaluate_bags, paired_ranks, render_table, score_protocol
from recipekit.evaluation.metrics import ranks


def _brute_ranks(q, c):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    return np.array([1 + sum(float(q[i] @ c[j]) > float(q[i] @ c[i]) for j in range(len(c))) for i in range(len(q))])


@pytest.mark.parametrize("n, chunk", [(60, 7), (150, 2048)])
def test_shared_matrix_ranks_match_brute_force_and_the_fallback(n, chunk):
    rng = np.random.default_rng(n)
    img = rng.normal(size=(n, 8))
    rec = img + rng.normal(size=(n, 8))
    i2r, r2i = paired_ranks(img, rec, chunk=chunk)
    assert i2r.tolist() == _brute_ranks(img, rec).tolist() and r2i.tolist() == _brute_ranks(rec, img).tolist()
    small = paired_ranks(img, rec, chunk=chunk, max_bytes=0)  # one chunked product per direction
    assert small[0].tolist() == i2r.tolist() and small[1].tolist() == r2i.tolist()
    assert ranks(img, rec).tolist() == i2r.tolist()


def test_ties_count_for_the_true_match_in_both_directions():
    # Pairs 0 and 1 are identical (duplicate photos and recipes): both still rank 1.
    img = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    i2r, r2i = paired_ranks(img, img.copy())
    assert i2r.tolist() == r2i.tolist() == [1, 1, 1]


def test_torch_shares_the_matrix_too():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    img, rec = rng.normal(size=(120, 16)), rng.normal(size=(120, 16))
    a = paired_ranks(torch.tensor(img, dtype=torch.float32), torch.tensor(rec, dtype=torch.float32), chunk=50)
    b = paired_ranks(img, rec, chunk=50)
    assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()


def test_perfect_and_adversarial_protocol_rows():
    n = 40
    eye = np.eye(n)
    proto = EvalProtocol(bag_size=10, n_bags=3, bag_size_large=20, n_bags_large=2)
    for entry in score_protocol(eye, eye, proto):
        for d in ("image_to_recipe", "recipe_to_image"):
            assert entry[d]["medR"] == {"mean": 1.0, "std": 0.0} and entry[d]["R@1"]["mean"] == 100.0
    worst = np.ones((n, n)) - 2 * eye  # every true match is the least similar candidate
    (entry,) = score_protocol(eye, worst, EvalProtocol(bag_size=n, n_bags=1, bag_size_large=None))
    for d in ("image_to_recipe", "recipe_to_image"):
        assert entry[d]["medR"]["mean"] == n and entry[d]["R@10"]["mean"] == 0.0


def test_small_split_rules():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(250, 8))
    rec = img + rng.normal(size=img.shape)
    proto = EvalProtocol(bag_size=100, n_bags=4, bag_size_large=1000, n_bags_large=2, seed=9)
    small, large = score_protocol(img, rec, proto)  # 100 <= 250 < 1000
    assert small["applicable"] and small["n_bags"] == 4 and small["bag_size"] == 100 and "note" not in small
    assert small["image_to_recipe"] == evaluate_bags(img, rec, bag_size=100, n_bags=4, seed=9)["image_to_recipe"]
    assert large["applicable"] and large["n_bags"] == 1 and large["bag_size"] == 250
    assert "one bag of all 250" in large["note"]
    tiny, na = score_protocol(img[:60], rec[:60], proto)  # both sizes collapse: scored once
    assert tiny["bag_size"] == 60 and "one bag of all 60" in tiny["note"]
    assert na["applicable"] is False and na["n_bags"] == 0 and "not applicable" in na["note"]
    assert "image_to_recipe" not in na
    table = render_table({"bags": [tiny, na]})
    assert "| 1 × all 60 | image → recipe |" in table and "| 1k | both | n/a" in table
    chunks = score_protocol(img, rec, EvalProtocol(bag_size=100, n_bags=5, sampling="chunks", bag_size_large=None))
    assert chunks[0]["n_bags"] == 2 and "disjoint chunks" in chunks[0]["note"]


def test_protocol_options_are_checked():
    with pytest.raises(ValueError, match="sampling"):
        EvalProtocol(sampling="bootstrap")
    with pytest.raises(ValueError, match="image pick"):
        EvalProtocol(image_pick="best")
    with pytest.raises(ValueError, match="bag_size"):
        EvalProtocol(bag_size=0)
    assert EvalProtocol(n_bags_large=0).bag_specs() == [(1000, 10)]


def test_table_cells_are_mean_plus_minus_std():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(300, 8))
    rec = img + 0.5 * rng.normal(size=img.shape)
    bags = score_protocol(img, rec, EvalProtocol(bag_size=100, n_bags=3, bag_size_large=None))
    lines = render_table({"bags": bags}).splitlines()
    assert lines[0] == "| bags | direction | medR | R@1 | R@5 | R@10 |" and len(lines) == 4
    medr = bags[0]["recipe_to_image"]["medR"]
    assert lines[3].startswith("| 3 × 100 | recipe → image | ") and f"{medr['mean']:.1f} ± {medr['std']:.1f}" in lines[3]


# -- evaluate() and the CLI on a tiny saved model ------------------------------------------------

torch_needed = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

TOP_KEYS = {"format", "recipekit_version", "date", "checkpoint", "data", "protocol", "bags", "notes", "timing", "outputs"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("webdataset")
    pytest.importorskip("torchvision")
    try:
        from evalkit import prepared_folder
    except ImportError:  # pragma: no cover
        from tests.evalkit import prepared_folder
    return prepared_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def run(prepared, tmp_path_factory):
    try:
        from evalkit import fake_run, tiny_model
    except ImportError:  # pragma: no cover
        from tests.evalkit import fake_run, tiny_model
    return fake_run(tmp_path_factory.mktemp("run") / "run", prepared, tiny_model(prepared))


@torch_needed
def test_evaluate_a_run_folder_writes_the_documented_report(run, prepared):
    import hashlib

    from recipekit.evaluation import embed_split, evaluate, retrieval_metrics
    from recipekit.embedders import load_embedder

    result = evaluate(run, device="cpu")
    assert result.out == (run / "eval" / "test").resolve()
    report = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert set(report) == TOP_KEYS and report == result.report
    assert report["format"] == "recipekit.eval/1"
    ck = report["checkpoint"]
    assert ck["path"] == str((run / "best.pt").resolve()) and ck["run"] == str(run.resolve())
    assert ck["sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest() and ck["embedder"] == "ht_resnet18"
    emb = embed_split(load_embedder(run / "best.pt"), prepared, "test")
    from recipekit.evaluation.corpus import corpus_fingerprint

    assert report["data"] == {"prepared": str(prepared.resolve()), "fingerprint": corpus_fingerprint(prepared),
                              "split": "test", "splits": ["test"], "pairs": len(emb), "split_pairs": {"test": len(emb)},
                              "limit": None}
    proto = report["protocol"]
    assert {k: proto[k] for k in ("bag_size", "n_bags", "bag_size_large", "n_bags_large", "sampling", "seed",
                                  "image_pick")} == {"bag_size": 1000, "n_bags": 10, "bag_size_large": 10000,
                                                     "n_bags_large": 5, "sampling": "independent", "seed": 1234,
                                                     "image_pick": "first"}
    assert proto["bag_sizes"] == [1000, 10000] and proto["ks"] == [1, 5, 10]
    one, na = report["bags"]  # the demo test split is far below 1k: one all-pairs bag, 10k n/a
    want = retrieval_metrics(emb.image, emb.recipe)
    assert {m: v["mean"] for m, v in one["image_to_recipe"].items()} == want["image_to_recipe"]
    assert one["bag_size"] == len(emb) and "one bag of all" in one["note"] and na["applicable"] is False
    assert len(report["notes"]) == 2 and report["outputs"] == {"json": "eval.json", "markdown": "eval.md", "plot": None}
    md = result.md_path.read_text(encoding="utf-8")
    assert render_table(report) in md and "not applicable" in md and report["date"] in md
    assert sorted(p.name for p in result.out.iterdir()) == ["eval.json", "eval.md"]  # no temporary files left


@torch_needed
def test_checkpoint_file_random_pick_and_plot(run, prepared, tmp_path):
    from recipekit.evaluation import evaluate

    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes((run / "best.pt").read_bytes())
    with pytest.raises(ValueError, match=re.escape(str(ckpt)) + ".*needs --data"):
        evaluate(ckpt)
    proto = EvalProtocol(bag_size=20, n_bags=3, bag_size_large=40, n_bags_large=2, image_pick="random", seed=5)
    result = evaluate(ckpt, data=prepared, split="val", protocol=proto, plot=True, device="cpu")
    assert result.out == (tmp_path / "eval" / "model" / "val").resolve()
    r = result.report
    assert r["checkpoint"]["run"] is None and r["protocol"]["image_pick"] == "random" and r["data"]["split"] == "val"
    assert [b["n_bags"] for b in r["bags"]] == [3, 2] and r["bags"][0]["image_to_recipe"]["R@1"]["std"] >= 0
    png = result.plot_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert r["outputs"]["plot"] == "retrievals.png" and "retrievals.png" in result.md_path.read_text(encoding="utf-8")


@torch_needed
def test_bad_inputs_name_the_path(run, prepared, tmp_path):
    from recipekit.evaluation import evaluate

    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty / 'best.pt'}: missing")):
        evaluate(empty)
    with pytest.raises(FileNotFoundError, match=re.escape(str(prepared / "shards" / "nosuch"))):
        evaluate(run, split="nosuch")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        evaluate(run, data=tmp_path / "nowhere")
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(f"{bogus}: not a readable recipekit embedder file")):
        evaluate(bogus, data=prepared)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "best.pt").write_bytes((run / "best.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match=re.escape(str(lonely / "config.resolved.json"))):
        evaluate(lonely)


@torch_needed
def test_cli(run, prepared, tmp_path):
    from click.testing import CliRunner
    from recipekit.cli.main import main

    out = tmp_path / "cli-out"
    res = CliRunner().invoke(main, ["eval", str(run), "--data", str(prepared), "--split", "val", "--bag-size", "16",
                                    "--bags", "2", "--bags-large", "0", "--sampling", "chunks", "--seed", "3",
                                    "--device", "cpu", "--batch-size", "32", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out.resolve() / 'eval.json'}" in res.output
    assert "| 2 × 16 | image → recipe |" in res.output and "| 2 × 16 | recipe → image |" in res.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["protocol"]["sampling"] == "chunks" and report["protocol"]["bag_sizes"] == [16]
    bad = CliRunner().invoke(main, ["eval", str(tmp_path / "missing-run")])
    assert bad.exit_code == 1 and str(tmp_path / "missing-run") in bad.output
    ckpt = CliRunner().invoke(main, ["eval", str(run / "best.pt"), "--bag-size", "0"])
    assert ckpt.exit_code == 2 and "--bag-size" in ckpt.output
