"""`recipekit eval` on any corpus: --split all / lists, what was scored recorded in eval.json, and
results of another corpus in their own folder, never over the run's own result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("webdataset")
pytest.importorskip("torchvision")

try:
    from evalkit import fake_run, prepared_folder, tiny_model
except ImportError:  # pragma: no cover
    from tests.evalkit import fake_run, prepared_folder, tiny_model

from recipekit.cli.main import main  # noqa: E402
from recipekit.evaluation import EvalProtocol, evaluate  # noqa: E402
from recipekit.evaluation.corpus import corpus_fingerprint, parse_splits  # noqa: E402

SMALL = EvalProtocol(bag_size=20, n_bags=2, n_bags_large=0)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Two different prepared corpora: the run's own (A) and another one (B)."""
    return prepared_folder(tmp_path_factory), prepared_folder(tmp_path_factory, recipes=120)


@pytest.fixture(scope="module")
def run(corpora, tmp_path_factory):
    own, _ = corpora
    return fake_run(tmp_path_factory.mktemp("anycorpus") / "run", own, tiny_model(own))


def _samples(prepared: Path) -> dict[str, int]:
    index = json.loads((prepared / "shards" / "index.json").read_text(encoding="utf-8"))
    return {k: v["samples"] for k, v in index.items()}


def test_split_all_and_lists_score_every_pair_named(run, corpora):
    own, _ = corpora
    samples = _samples(own)
    result = evaluate(run, split="all", protocol=SMALL, device="cpu")
    data = result.report["data"]
    assert data["splits"] == ["train", "val", "test"] and data["split"] == "all"
    assert data["split_pairs"] == {s: samples[s] for s in ("train", "val", "test")}
    assert data["pairs"] == sum(samples.values()) == len(result.embeddings)
    assert data["fingerprint"] == corpus_fingerprint(own) and len(data["fingerprint"]) == 64
    assert result.out == (run / "eval" / "all").resolve()
    result = evaluate(run, split="train,val", protocol=SMALL, device="cpu")
    assert result.report["data"]["splits"] == ["train", "val"] and result.out == (run / "eval" / "train+val").resolve()
    assert result.report["data"]["pairs"] == samples["train"] + samples["val"]
    assert "split `train+val` (train " in result.md_path.read_text(encoding="utf-8")


def test_another_corpus_goes_to_its_own_folder_and_never_over_the_run_result(run, corpora, tmp_path):
    own, other = corpora
    fp_own, fp_other = corpus_fingerprint(own), corpus_fingerprint(other)
    assert fp_own != fp_other and corpus_fingerprint(other) == fp_other  # stable, and tells corpora apart
    mine = evaluate(run, protocol=SMALL, device="cpu")
    assert mine.out == (run / "eval" / "test").resolve()
    before = mine.json_path.read_bytes()
    theirs = evaluate(run, data=other, protocol=SMALL, device="cpu")
    assert theirs.out == (run / "eval" / f"out-{fp_other[:8]}" / "test").resolve()
    assert theirs.report["data"]["prepared"] == str(other.resolve()) and theirs.report["data"]["fingerprint"] == fp_other
    assert theirs.report["data"]["pairs"] == _samples(other)["test"]
    assert mine.json_path.read_bytes() == before  # the run's own result is untouched
    with pytest.raises(ValueError, match=r"eval\.json: holds the result of another corpus .*never replaced"):
        evaluate(run, data=other, protocol=SMALL, device="cpu", out=run / "eval" / "test")
    assert mine.json_path.read_bytes() == before
    again = evaluate(run, data=other, protocol=SMALL, device="cpu")  # the same corpus again: its own folder
    assert again.out == theirs.out


def test_cli_eval_of_another_corpus_whole(run, corpora):
    _, other = corpora
    res = CliRunner().invoke(main, ["eval", str(run), "--data", str(other), "--split", "all", "--bag-size", "20",
                                    "--bags", "2", "--bags-large", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    fp = corpus_fingerprint(other)
    assert f"pairs of splits train (" in res.output and f"(fingerprint {fp[:8]})" in res.output
    written = run / "eval" / f"out-{fp[:8]}" / "all" / "eval.json"
    assert f"wrote {written.resolve()}" in res.output
    assert json.loads(written.read_text())["data"]["pairs"] == sum(_samples(other).values())
    res = CliRunner().invoke(main, ["eval", str(run), "--split", "train,,val", "--device", "cpu"])
    assert res.exit_code != 0 and res.output.strip().splitlines() == [
        "Error: --split 'train,,val': give a split name, a comma-separated list (train,val) or all"]


def test_parse_splits(corpora, tmp_path):
    own, _ = corpora
    assert parse_splits("test", own) == ["test"] and parse_splits(" val , test ", own) == ["val", "test"]
    assert parse_splits("all", own) == ["train", "val", "test"]
    for bad, message in (("", "give a split name"), ("a/b", "not a split name"), ("val,val", "named twice")):
        with pytest.raises(ValueError, match=message):
            parse_splits(bad, own)
    with pytest.raises(FileNotFoundError, match="no shards of any split"):
        parse_splits("all", tmp_path)
