"""Shards read from a URL: a local HTTP server (127.0.0.1, started here) serves a prepared demo
corpus's shards folder; loaders, training and evaluation read it as they read the local folder."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("webdataset")
pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

from recipekit.loaders import make_loader, resolve_shards  # noqa: E402
from recipekit.loaders.remote import split_shards  # noqa: E402
from recipekit.loaders.tario import tar_samples  # noqa: E402
from recipekit.pipeline.vocab import Vocabulary  # noqa: E402
from stand_ins import tiny_run_config  # noqa: E402


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines in the test output
        pass


@pytest.fixture(scope="module")
def server(prepared_demo):
    """``http://127.0.0.1:PORT`` serving ``PREPARED/shards`` (train/, val/, test/, index.json)."""
    handler = functools.partial(_Quiet, directory=str(prepared_demo / "shards"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def vocab(prepared_demo):
    return Vocabulary.from_file(prepared_demo / "word2vec" / "vocab.txt")


def _pattern(prepared: Path, base: str, split: str) -> str:
    """``BASE/split/split-{000000..00000N}.tar`` covering every shard in sizes.json."""
    names = sorted(json.loads((prepared / "shards" / split / "sizes.json").read_text()))
    assert names[0] == f"{split}-000000.tar"
    return f"{base}/{split}/{split}-{{000000..{len(names) - 1:06d}}}.tar"


def _raw(urls) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "__url__"} for s in tar_samples()({"url": u} for u in urls)]


def _batches(loader) -> list[dict]:
    return [{"ids": b["ids"], "images": b["images"], **b["recipes"]} for b in loader]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and x["ids"] == y["ids"]
        for k in x:
            if k != "ids":
                assert torch.equal(x[k], y[k]), k


# -- loaders ------------------------------------------------------------------------------------------
def test_http_brace_pattern_gives_the_local_samples(prepared_demo, server, vocab):
    local = resolve_shards(prepared_demo / "shards" / "train")
    remote = resolve_shards(_pattern(prepared_demo, server, "train"))
    assert remote.urls[0].startswith("http://127.0.0.1:") and len(remote.urls) == len(local.urls) > 1
    assert remote.sizes == local.sizes  # from sizes.json, fetched over HTTP
    assert resolve_shards(f"{server}/train").urls == remote.urls  # a remote split folder: its sizes.json
    raw_local, raw_remote = _raw(local.urls), _raw(remote.urls)
    assert [s["__key__"] for s in raw_remote] == [s["__key__"] for s in raw_local]
    assert raw_remote == raw_local  # every member, byte for byte
    # decoded batches: eval order, and the shuffled training stream split over 2 worker processes
    kw = dict(vocab=vocab, batch_size=16, image_size=64, store=None)
    _assert_same_batches(_batches(make_loader(remote.urls, train=False, **kw)[0]),
                         _batches(make_loader(local.urls, train=False, **kw)[0]))
    loader, info = make_loader(list(remote.urls), train=True, num_workers=2, seed=3, **kw)
    assert info.num_samples == local.total and info.split == "shards"
    _assert_same_batches(_batches(loader), _batches(make_loader(list(local.urls), train=True, num_workers=2,
                                                                seed=3, **kw)[0]))


def test_pipe_and_file_urls(prepared_demo, vocab):
    local = resolve_shards(prepared_demo / "shards" / "val")
    piped = resolve_shards([f"pipe:cat {u}" for u in local.urls])
    assert piped.sizes is None  # a command has no sizes.json: the epoch length must be given
    assert _raw(piped.urls) == _raw(local.urls)
    assert resolve_shards(f"file://{prepared_demo / 'shards' / 'val'}").urls == local.urls
    loader, info = make_loader(piped.urls, vocab=vocab, train=True, batch_size=4, image_size=64, store=None)
    with pytest.raises(TypeError, match="give epoch_length"):
        len(loader)
    loader, info = make_loader(piped.urls, vocab=vocab, train=True, batch_size=4, image_size=64, store=None,
                               epoch_length=local.total)
    assert len(loader) == local.total // 4 == len(list(loader))


def test_missing_and_unreachable_urls_are_named(prepared_demo, server):
    url = f"{server}/train/train-999999.tar"
    with pytest.raises(FileNotFoundError, match=f"{url}: not found"):
        _raw(resolve_shards(url).urls)
    with pytest.raises(FileNotFoundError, match=f"{server}/nope/train/sizes.json: not found"):
        split_shards(f"{server}/nope", "train")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/train/train-000000.tar"
    with pytest.raises(OSError, match=f"{dead}: cannot open"):
        _raw([dead])
    with pytest.raises(OSError, match="pipe:false"):
        _raw(["pipe:false"])


def test_split_locations(prepared_demo, server):
    shards = prepared_demo / "shards"
    assert split_shards(server, "val") == f"{server}/val"  # a copy of PREPARED/shards
    assert split_shards(f"{server}/val/", "val") == f"{server}/val"  # the split folder itself
    assert split_shards(str(shards), "test") == f"{shards}/test"
    pattern = _pattern(prepared_demo, server, "test")
    assert split_shards(pattern, "test") == pattern


# -- training and evaluation ---------------------------------------------------------------------
def _config(prepared: Path, **data) -> dict:
    # 4 batches of one epoch: the data path is the point
    return tiny_run_config(data={"prepared": str(prepared), "epoch_length": 64, **data}, train={"epochs": 1})


@pytest.fixture(scope="module")
def remote_run(prepared_demo, server, tmp_path_factory):
    """A 1-epoch run whose train and val shards come from the HTTP server (data.shards).
    (That the batches equal the local ones is test_http_brace_pattern_gives_the_local_samples.)"""
    from recipekit.training import train

    return train(_config(prepared_demo, shards=server), tmp_path_factory.mktemp("remote-runs") / "run",
                 device="cpu")


@pytest.mark.slow
def test_training_reads_remote_shards(remote_run, prepared_demo, server):
    remote = remote_run
    assert remote.best_path == remote.run_dir / "best.pt" and remote.best_path.is_file()
    resolved = json.loads((remote.run_dir / "config.resolved.json").read_text())
    assert resolved["data"]["shards"] == server
    env = json.loads((remote.run_dir / "environment.json").read_text())
    assert env["batch"] == {"batch_size_per_rank": 16, "world_size": 1, "accumulate": 1, "effective_batch": 16,
                            "loss_batch": 16, "recipe_only_ratio": 0.0, "paired_per_step": 16.0}
    record = remote.history[0]
    assert record["step"] == 4 and record["loss"] > 0  # epoch_length 64 / batch 16
    local_val = sum(json.loads((prepared_demo / "shards" / "val" / "sizes.json").read_text()).values())
    assert record["val"]["pairs"] == local_val  # validation read every val pair over HTTP


@pytest.mark.slow
def test_train_shards_from_a_pipe_need_an_epoch_length(prepared_demo, tmp_path):
    from recipekit.training import ConfigError, train

    urls = resolve_shards(prepared_demo / "shards" / "train").urls
    cfg = _config(prepared_demo, train_shards=f"pipe:cat {{{','.join(urls)}}}", epoch_length=0)
    with pytest.raises(ConfigError, match="set data.epoch_length"):
        train(cfg, tmp_path / "run", device="cpu")


@pytest.mark.slow
def test_evaluation_over_remote_shards_gives_the_local_embeddings(remote_run, prepared_demo, server, tmp_path):
    import numpy as np
    from click.testing import CliRunner
    from recipekit.cli.main import main
    from recipekit.embedders import load_embedder
    from recipekit.evaluation import embed_split, evaluate

    run = remote_run.run_dir
    model = load_embedder(remote_run.best_path)
    a = embed_split(model, prepared_demo, "val", batch_size=16)
    b = embed_split(model, prepared_demo, "val", batch_size=16, shards=_pattern(prepared_demo, server, "val"))
    assert a.ids == b.ids and np.array_equal(a.image, b.image) and np.array_equal(a.recipe, b.recipe)
    here = evaluate(run, split="test", write=False, data=prepared_demo)  # another --data: its own shards
    there = evaluate(run, split="test", write=False, shards=server)
    assert "shards" not in here.report["data"] and there.report["data"]["shards"] == f"{server}/test"
    assert here.embeddings.ids == there.embeddings.ids
    assert np.array_equal(here.embeddings.image, there.embeddings.image)
    assert here.report["bags"] == there.report["bags"]
    # a run trained on remote shards evaluates from them by default
    default = evaluate(run, split="test", write=False, limit=8)
    assert default.report["data"]["shards"] == f"{server}/test"
    res = CliRunner().invoke(main, ["eval", str(run), "--split", "test", "--device", "cpu",
                                    "--shards", f"{server}/test", "--out", str(tmp_path / "ev"), "--limit", "8"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["data"]["shards"] == f"{server}/test" and report["data"]["pairs"] == 8
    res = CliRunner().invoke(main, ["eval", str(run), "--shards", f"{server}/gone", "--device", "cpu"])
    assert res.exit_code == 1 and f"{server}/gone/test/sizes.json: not found" in res.output


def test_a_pipe_command_saved_in_a_run_folder_is_never_run(prepared_demo, tmp_path):
    """Someone hands you a run folder whose config.resolved.json holds data.shards = "pipe:...":
    `recipekit eval RUN` refuses it before anything runs; the same command given by the
    person running eval (--shards) is theirs to run."""
    from click.testing import CliRunner
    from recipekit.cli.main import main
    from recipekit.evaluation import evaluate
    from recipekit.evaluation.protocol import resolve_target, split_location

    mark = tmp_path / "ran"
    run = tmp_path / "handed-run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")  # never loaded: the refusal comes first
    command = f"pipe:touch {mark}; cat {prepared_demo}/shards/test/test-000000.tar"
    (run / "config.resolved.json").write_text(json.dumps({"data": {"prepared": str(prepared_demo), "shards": command}}))
    with pytest.raises(ValueError, match=r"config.resolved.json: data.shards is a shell command .* never run"):
        evaluate(run, split="test", write=False)
    res = CliRunner().invoke(main, ["eval", str(run), "--device", "cpu"])
    assert res.exit_code == 1 and "commands saved in a run folder are never run" in res.output
    assert "Traceback" not in res.output and not mark.exists()
    found = resolve_target(run, split="test")
    assert split_location(found, "test", command) == command  # given by the user: accepted
