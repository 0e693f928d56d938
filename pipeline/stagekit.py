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

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .backends import PoolExecutor
from .stageparams import StageParams
# The atomic writes live in recipekit.core.io; re-exported here for code written against this module.
from recipekit.core.io import (  # noqa: F401
    TMP_MARK,
    atomic_dir,
    atomic_path,
    file_digest,
    pid_alive,
    remove_dead_tmp,
    remove_stale_tmp,
    stage_commit,
    staged,
    write_json_atomic,
)
log = logging.getLogger(__name__)

__all__ = [
    "Stage",
    "StageParams",
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


def package_version(name: str = "recipekit") -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


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
    """A named step of `prepare`. ``inputs``/``outputs`` are relative to SRC/OUT; ``params`` is
    the stage's :class:`StageParams` dataclass."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    src_inputs: tuple[str, ...] = ()
    out_inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    description: str = ""
    params: type[StageParams] | None = None


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
    own_executor = executor is None
    if own_executor:
        executor = PoolExecutor(max(1, workers))
    try:
        return _run_and_commit(stage, src, out, params, workers, quiet, executor, mp)
    finally:  # a pool's idle workers do not outlive the stage (the next one may need none)
        if own_executor:
            executor.close()
        elif hasattr(executor, "release"):
            executor.release()


def _run_and_commit(stage: Stage, src: Path | None, out: Path, params: dict[str, Any], workers: int, quiet: bool,
                    executor: Any, mp: Path) -> StageReport:
    missing = [rel for rel in stage.src_inputs if src is None or not (src / rel).exists()]
    ctx = StageContext(src=src, out=out, params=params, workers=max(1, workers), quiet=quiet, executor=executor)
    ctx.extra["missing_src"] = missing
    inputs = _input_fingerprints(stage, src, out)
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    with stage_commit(out, stage.outputs) as commit:  # a failed stage's outputs are discarded
        counts = stage.run(ctx)
        # All or nothing: the old manifest goes first (a kill among the renames leaves no
        # manifest, so the stage runs again), then every output, then the new manifest.
        mp.unlink(missing_ok=True)
        commit.commit()
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
