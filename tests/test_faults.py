"""Faults a user can hit with a run folder: unreadable checkpoints (search, serve, index, eval,
train --resume) end in one line naming the file, never a traceback, and nothing in them runs;
a resumed run removes the temporary files a killed writer left (docs/faults.md)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

from click.testing import CliRunner  # noqa: E402

from recipekit.cli.main import main  # noqa: E402


class _Boom:
    """Unpickling this runs code: what a hostile checkpoint could hold."""

    target = ""

    def __reduce__(self):
        return (os.mkdir, (_Boom.target,))


def _broken(kind: str, good: bytes, tmp_path: Path) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "pickle":
        import io

        import torch

        _Boom.target = str(tmp_path / "code-ran")
        buf = io.BytesIO()
        torch.save({"format": "recipekit.embedder/1", "x": _Boom()}, buf)
        return buf.getvalue()
    return b"not a checkpoint at all\n"


def _one_line_error(res, path: Path) -> str:
    """The command failed with one `Error: ...` line naming ``path`` (after any progress notes)."""
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.strip().splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and res.output.strip().endswith(errors[0]) and str(path) in errors[0], res.output
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "pickle", "text"])
def test_unloadable_checkpoints_give_one_line_errors(trained_demo_run, prepared_demo, tmp_path, kind):
    run = tmp_path / "run"
    shutil.copytree(trained_demo_run, run, ignore=shutil.ignore_patterns("index", "eval", "features"))
    good = (run / "best.pt").read_bytes()
    bad = _broken(kind, good, tmp_path)
    (run / "best.pt").write_bytes(bad)
    words = {"truncated": "unreadable embedder file (truncated or corrupt", "text": "unreadable embedder file (not a torch",
             "pickle": "holds Python objects (posix.mkdir) that could run code"}[kind]
    runner = CliRunner()
    index = tmp_path / "index"
    line = _one_line_error(runner.invoke(main, ["index", str(run), str(prepared_demo), "--out", str(index),
                                                "--device", "cpu", "--quiet"]), run / "best.pt")
    assert words in line
    line = _one_line_error(runner.invoke(main, ["serve", str(run), str(prepared_demo), "--port", "0",
                                                "--index", str(tmp_path / "index2")]), run / "best.pt")
    assert words in line
    # an index that names this very file (its digest) still does not make it loadable
    (run / "best.pt").write_bytes(good)
    from recipekit.search import build_index

    build_index(run, prepared_demo, index, device="cpu", progress=False)
    (run / "best.pt").write_bytes(bad)
    meta = json.loads((index / "meta.json").read_text())
    from recipekit.evaluation.protocol import file_sha256

    meta["checkpoint"]["sha256"] = file_sha256(run / "best.pt")
    (index / "meta.json").write_text(json.dumps(meta))
    line = _one_line_error(runner.invoke(main, ["search", str(run), "--index", str(index), "--ingredients", "tomato"]),
                           run / "best.pt")
    assert words in line
    line = _one_line_error(runner.invoke(main, ["eval", str(run), "--device", "cpu", "--limit", "4"]), run / "best.pt")
    assert words in line
    assert not (tmp_path / "code-ran").exists()
