"""What every `prepare` stage shares: atomic outputs, fingerprints, manifests, skipping.

A stage is a function ``run(ctx) -> counts`` plus the list of files it reads and
writes. :func:`run_stage` decides whether it must run (its manifest is missing,
or its parameters, input fingerprints, code version or outputs changed, or
``force``), runs it, and writes ``OUT/manifests/<stage>.json`` last: a manifest
on disk means the stage finished and its outputs are complete. Outputs are
written under a temporary name and renamed, so a stage killed at any moment
leaves either the previous complete output or nothing, and simply runs again.

A stage commits all of its outputs or none of them: while :func:`run_stage` runs a stage,
every :func:`atomic_path` / :func:`atomic_dir` of the stage's own process keeps its finished
temporary file aside (:func:`staged` names it, for a stage that reads back what it wrote), and
only once the stage returns are they renamed over the old outputs together, then the manifest
written. A stage that fails leaves the previous outputs and the previous manifest untouched.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "Stage",
    "StageContext",
    "StageReport",
    "atomic_path",
    "atomic_dir",
    "file_digest",
    "run_stage",
    "read_manifest",
    "write_json_atomic",
    "package_version",
    "staged",
    "remove_dead_tmp",
]

TMP_MARK = ".tmp-"


def package_version(name: str = "recipekit") -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


# Every stage may write its rows into this shared file (see .quarantine): part of its commit.
SHARED_OUTPUTS = ("quarantine.parquet",)


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
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success (inside a
    running stage: when the whole stage succeeds, together with its other outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    keep = False
    try:
        yield tmp
        commit = _pending_commit()
        if commit is not None and commit.covers(path):
            commit.add(path, tmp)
            keep = True
        else:
            os.replace(tmp, path)
    finally:
        if not keep and tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (old one removed; inside a
    running stage: when the whole stage succeeds)."""
    path = Path(path)
    tmp = _tmp_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    keep = False
    try:
        yield tmp
        commit = _pending_commit()
        if commit is not None and commit.covers(path):
            commit.add(path, tmp)
            keep = True
        else:
            _replace(tmp, path)
    finally:
        if not keep and tmp.exists():
            shutil.rmtree(tmp)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
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


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) within the process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(4 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def fingerprint(path: Path) -> dict[str, Any]:
    """Fingerprint of an input: a file's size and digest, a folder's digest of file names."""
    if not path.exists():
        return {"missing": True}
    if path.is_dir():
        # Names only: a folder input (the image tree) matters to `parse` by which files exist.
        h = hashlib.sha256()
        n = 0
        for root, dirs, files in os.walk(path):
            dirs.sort()
            rel = os.path.relpath(root, path)
            for f in sorted(files):
                h.update(f"{rel}/{f}\n".encode())
                n += 1
        return {"files": n, "listing_sha256": h.hexdigest()}
    return {"bytes": path.stat().st_size, "sha256": file_digest(path)}


@dataclass
class StageContext:
    """What a stage's ``run`` receives: where to read and write, and how."""

    src: Path | None
    out: Path
    params: dict[str, Any]
    workers: int
    quiet: bool
    extra: dict[str, Any] = field(default_factory=dict)
    # Where parallel work runs (`.backends.Executor`); run_stage gives a process pool by default.
    executor: Any = None

    def log(self, message: str) -> None:
        if not self.quiet:
            log.info(message)


@dataclass(frozen=True)
class Stage:
    """A named step of `prepare`. ``inputs``/``outputs`` are relative to SRC/OUT."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    src_inputs: tuple[str, ...] = ()
    out_inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    description: str = ""


@dataclass
class StageReport:
    name: str
    status: str  # "ran" or "skipped"
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest.get("counts", {})

    @property
    def wall_s(self) -> float:
        return float(self.manifest.get("timings", {}).get("wall_s", 0.0))


def manifest_path(out: Path, stage: str) -> Path:
    return out / "manifests" / f"{stage}.json"


def read_manifest(out: str | os.PathLike, stage: str) -> dict[str, Any] | None:
    p = manifest_path(Path(out), stage)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _input_fingerprints(stage: Stage, src: Path | None, out: Path) -> dict[str, Any]:
    fps: dict[str, Any] = {}
    for rel in stage.src_inputs:
        fps[f"SRC/{rel}"] = fingerprint(src / rel) if src is not None else {"missing": True}
    for rel in stage.out_inputs:
        fps[f"OUT/{rel}"] = fingerprint(out / rel)
    return fps


def _output_fingerprints(stage: Stage, out: Path) -> dict[str, Any]:
    return {rel: fingerprint(out / rel) for rel in stage.outputs}


def _versions() -> dict[str, str]:
    names = ["recipekit", "pyarrow", "polars", "gensim", "spacy", "numpy"]
    v = {n: package_version(n) for n in names}
    v["python"] = platform.python_version()
    return v


def _peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(self_kb, child_kb) / 1024, 1)


def is_up_to_date(stage: Stage, src: Path | None, out: Path, params: dict[str, Any]) -> bool:
    m = read_manifest(out, stage.name)
    if m is None:
        return False
    if m.get("params") != params or m.get("recipekit_version") != package_version():
        return False
    if m.get("inputs") != _input_fingerprints(stage, src, out):
        return False
    return m.get("outputs") == _output_fingerprints(stage, out)


def run_stage(
    stage: Stage,
    *,
    src: str | os.PathLike | None,
    out: str | os.PathLike,
    params: dict[str, Any],
    workers: int = 1,
    force: bool = False,
    quiet: bool = False,
    executor: Any = None,
) -> StageReport:
    """Run ``stage`` unless its manifest says it is up to date; write the manifest last.

    ``executor`` (:mod:`.backends`; default: a process pool of ``workers``) runs the stage's
    parallel part. It is not a parameter: every backend writes the same bytes, so switching
    backends does not make a finished stage run again.
    """
    src = Path(src) if src is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = json.loads(json.dumps(params))  # normalise (tuples to lists) for comparison
    if not force and is_up_to_date(stage, src, out, params):
        return StageReport(stage.name, "skipped", read_manifest(out, stage.name) or {})
    mp = manifest_path(out, stage.name)
    for folder in {out, mp.parent, *((out / rel).parent for rel in stage.outputs)}:
        remove_stale_tmp(folder)
    missing = [rel for rel in stage.src_inputs if src is None or not (src / rel).exists()]
    if executor is None:
        from .backends import PoolExecutor

        executor = PoolExecutor(max(1, workers))
    ctx = StageContext(src=src, out=out, params=params, workers=max(1, workers), quiet=quiet, executor=executor)
    ctx.extra["missing_src"] = missing
    inputs = _input_fingerprints(stage, src, out)
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    global _COMMIT
    outer, _COMMIT = _COMMIT, _Commit(out, stage.outputs)
    commit = _COMMIT
    try:
        counts = stage.run(ctx)
        # All or nothing: the old manifest goes first (a kill among the renames leaves no
        # manifest, so the stage runs again), then every output, then the new manifest.
        mp.unlink(missing_ok=True)
        commit.commit()
    finally:
        commit.discard()  # what a failed stage wrote; the previous outputs stay
        _COMMIT = outer
    wall = time.perf_counter() - t0
    manifest = {
        "stage": stage.name,
        "recipekit_version": package_version(),
        "params": params,
        "inputs": inputs,
        "outputs": _output_fingerprints(stage, out),
        "counts": counts,
        "timings": {
            "started_at": started.isoformat(timespec="seconds"),
            "wall_s": round(wall, 3),
            "cpu_s_main_process": round(time.process_time() - cpu0, 3),
        },
        "peak_rss_mb": _peak_rss_mb(),
        "workers": ctx.workers,
        "backend": executor.name,
        "versions": _versions(),
    }
    write_json_atomic(mp, manifest)
    return StageReport(stage.name, "ran", manifest)
