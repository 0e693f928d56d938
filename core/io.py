"""Atomic outputs and file hashing: how every recipekit writer puts a file in place.

Every file or folder is written under a temporary name beside its final one (``NAME.tmp-PID``)
and renamed when complete (:func:`atomic_path`, :func:`atomic_dir`), so a process killed at any
moment leaves either the previous complete output or nothing; leftovers of a killed writer are
removed by :func:`remove_stale_tmp` / :func:`remove_dead_tmp`.

A ``prepare`` stage commits all of its outputs or none of them: inside :func:`stage_commit`
(entered by :func:`recipekit.pipeline.stagekit.run_stage`), every :func:`atomic_path` /
:func:`atomic_dir` of the stage's own process keeps its finished temporary file aside
(:func:`staged` names it, for a stage that reads back what it wrote), and only once the stage
returns are they renamed over the old outputs together. Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TMP_MARK",
    "atomic_dir",
    "atomic_path",
    "file_digest",
    "file_sha256",
    "pid_alive",
    "remove_dead_tmp",
    "remove_stale_tmp",
    "stage_commit",
    "staged",
    "tmp_name",
    "write_json_atomic",
]

TMP_MARK = ".tmp-"

# Every stage may write its rows into this shared file (pipeline/quarantine.py): part of its commit.
SHARED_OUTPUTS = ("quarantine.parquet",)


def tmp_name(path: Path) -> Path:
    """The temporary name of ``path`` for this process: ``NAME.tmp-PID`` beside it."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


class _Commit:
    """The finished temporary outputs of the stage now running, renamed together at its end.

    It covers the stage's declared outputs (and the folders holding them, for
    :func:`atomic_dir`) and OUT/quarantine.parquet; anything else a stage writes atomically
    (a shard's tar, written and reused one at a time) is renamed at once as usual."""

    def __init__(self, out: Path, outputs: tuple[str, ...]) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.pending: dict[Path, Path] = {}  # final path -> finished temporary path
        root = Path(os.path.abspath(out))
        self.targets: set[Path] = set()
        for rel in (*outputs, *SHARED_OUTPUTS):
            p = root / rel
            while p != root and root in p.parents:
                self.targets.add(p)
                p = p.parent

    def active(self) -> bool:
        # A forked pool worker inherits this object: its own outputs are not the stage's commit.
        return os.getpid() == self.pid

    def covers(self, path: Path) -> bool:
        return Path(os.path.abspath(path)) in self.targets

    def add(self, path: Path, tmp: Path) -> None:
        key = Path(os.path.abspath(path))
        with self.lock:
            old = self.pending.get(key)
            if old is not None and old != tmp:
                _remove(old)
            self.pending[key] = tmp

    def commit(self) -> None:
        for path, tmp in self.pending.items():
            _replace(tmp, path)
        self.pending.clear()

    def discard(self) -> None:
        for tmp in self.pending.values():
            _remove(tmp)
        self.pending.clear()


_COMMIT: _Commit | None = None


@contextlib.contextmanager
def stage_commit(out: str | os.PathLike, outputs: tuple[str, ...]) -> Iterator[_Commit]:
    """While inside, atomic writes of this process to ``outputs`` (relative to ``out``) and to
    ``quarantine.parquet`` wait in their temporary names; ``.commit()`` renames them all, and
    whatever was not committed when the block ends is removed."""
    global _COMMIT
    outer, _COMMIT = _COMMIT, _Commit(Path(out), tuple(outputs))
    commit = _COMMIT
    try:
        yield commit
    finally:
        commit.discard()  # what a failed stage wrote; the previous outputs stay
        _COMMIT = outer


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink(missing_ok=True)


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path``; a folder replaces the old folder (removed)."""
    if tmp.is_dir() and path.exists():
        old = path.with_name(f"{path.name}{TMP_MARK}old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def _pending_commit() -> _Commit | None:
    commit = _COMMIT
    return commit if commit is not None and commit.active() else None


def staged(path: str | os.PathLike) -> Path:
    """Where ``path`` is now: the finished temporary file of the running stage when the stage
    wrote it (committed only when the stage ends), else ``path`` itself."""
    path = Path(path)
    commit = _pending_commit()
    if commit is not None:
        return commit.pending.get(Path(os.path.abspath(path)), path)
    return path


@contextlib.contextmanager
def _published(path: Path, tmp: Path, replace, remove) -> Iterator[Path]:
    """Yield ``tmp``; on success hand it to the running stage's commit when that covers ``path``,
    else ``replace(tmp, path)`` now; on an error (or after a failed replace) ``remove(tmp)``."""
    keep = False
    try:
        yield tmp
        commit = _pending_commit()
        if commit is not None and commit.covers(path):
            commit.add(path, tmp)
            keep = True
        else:
            replace(tmp, path)
    finally:
        if not keep and tmp.exists():
            remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success (inside a
    running stage: when the whole stage succeeds, together with its other outputs). On an
    error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _published(path, tmp_name(path), os.replace, Path.unlink) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (old one removed; inside a
    running stage: when the whole stage succeeds)."""
    path = Path(path)
    tmp = tmp_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with _published(path, tmp, _replace, shutil.rmtree) as tmp:
        yield tmp


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented UTF-8 JSON (keys in their order, one trailing newline), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def remove_stale_tmp(folder: Path) -> int:
    """Remove what a killed run left in ``folder``: entries named ``*.tmp-*``."""
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if TMP_MARK in p.name]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``*.tmp-PID`` entries of ``folder`` whose writer (process PID) is dead; those
    of a live process (another run writing now) stay. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        head, mark, tail = p.name.rpartition(TMP_MARK)
        if not mark or not head:
            continue
        digits = tail.removeprefix("old-")
        if not digits.isdigit() or (int(digits) != os.getpid() and pid_alive(int(digits))):
            continue
        _remove(p)
        removed.append(p)
    return removed


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks; of a model folder (``model.safetensors`` +
    ``config.json``), the digest of its config.json's then its weights' bytes."""
    path = Path(path)
    files = [path / "config.json", path / "model.safetensors"] if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(4 << 20), b""):
                h.update(block)
    return h.hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """:func:`file_sha256`, memoised per (path, size, mtime) within the process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]
