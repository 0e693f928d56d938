"""Which corpus and splits `recipekit eval` scores, and where each result goes.

``--split`` is one split (``test``), a comma-separated list (``train,val``) or ``all`` (every split
the prepared folder has shards of). A result is recorded with the prepared folder's fingerprint;
a run's own corpus keeps ``RUN/eval/<split>/``, another corpus goes to
``RUN/eval/<corpus-name>-<fingerprint8>/<split>/``, and no result ever replaces one of another corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["ALL", "check_not_other_corpus", "corpus_fingerprint", "corpus_out", "parse_splits", "split_label"]

ALL = "all"
SPLIT_ORDER = ("train", "val", "test")


def _local_splits(prepared: Path) -> list[str]:
    """Splits with shards in PREPARED/shards (from its index.json, else its folders), train/val/test first."""
    index = prepared / "shards" / "index.json"
    names: list[str] = []
    if index.is_file():
        try:
            table = json.loads(index.read_text(encoding="utf-8"))
            names = [k for k, v in table.items() if isinstance(v, dict) and v.get("samples", 0) > 0]
        except (OSError, json.JSONDecodeError):
            names = []
    if not names:
        names = [p.name for p in (prepared / "shards").glob("*") if p.is_dir() and any(p.glob("*.tar"))]
    return sorted(names, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


def parse_splits(split: str, prepared: str | os.PathLike) -> list[str]:
    """``"test"`` -> ["test"]; ``"train,val"`` -> ["train", "val"]; ``"all"`` -> every split of PREPARED."""
    text = str(split).strip()
    if text == ALL:
        found = _local_splits(Path(prepared))
        if not found:
            raise FileNotFoundError(f"{Path(prepared) / 'shards'}: no shards of any split (run `recipekit prepare` first)")
        return found
    names = [s.strip() for s in text.split(",")]
    if not text or any(not s for s in names):
        raise ValueError(f"--split {split!r}: give a split name, a comma-separated list (train,val) or all")
    bad = [s for s in names if not re.fullmatch(r"[A-Za-z0-9_-]+", s)]
    if bad:
        raise ValueError(f"--split {split!r}: {bad[0]!r} is not a split name (letters, digits, _ and - only)")
    if len(set(names)) != len(names):
        raise ValueError(f"--split {split!r}: a split is named twice")
    return names


def split_label(split: str, splits: list[str]) -> str:
    """The name of what was scored, used as a folder name: ``test``, ``all``, ``train+val``."""
    return ALL if str(split).strip() == ALL else "+".join(splits)


def corpus_fingerprint(prepared: str | os.PathLike) -> str:
    """SHA-256 of what identifies a prepared corpus's shards: the shard stage's manifest (its inputs,
    parameters and outputs, each with its own digest), else the names and sizes of the shard files."""
    prepared = Path(prepared)
    manifest = prepared / "manifests" / "shard.json"
    data: Any = None
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
            data = {k: m.get(k) for k in ("params", "inputs", "outputs")}
        except (OSError, json.JSONDecodeError):
            data = None
    if data is None:
        shards = prepared / "shards"
        data = sorted((str(p.relative_to(shards)), p.stat().st_size) for p in shards.rglob("*.tar"))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def _own_prepared(run_config: dict[str, Any] | None) -> Path | None:
    data = (run_config or {}).get("data")
    prepared = data.get("prepared") if isinstance(data, dict) else None
    return Path(prepared).resolve() if prepared else None


def corpus_out(default_out: Path, prepared: Path, run_config: dict[str, Any] | None, label: str,
               fingerprint: str) -> Path:
    """``default_out`` with its split replaced by ``label`` for the run's own corpus (or when the run
    names none); ``.../eval/<corpus-name>-<fingerprint8>/<label>`` for another corpus."""
    base = default_out.parent
    own = _own_prepared(run_config)
    if own is None or own == Path(prepared).resolve():
        return base / label
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(prepared).resolve().name) or "corpus"
    return base / f"{name}-{fingerprint[:8]}" / label


def check_not_other_corpus(out_dir: Path, prepared: Path, fingerprint: str) -> None:
    """Refuse to write over an eval.json that scored another corpus (a one-line ValueError)."""
    path = Path(out_dir) / "eval.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("data") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return  # not a readable result: nothing of value to protect
    theirs = data.get("fingerprint")
    same = theirs == fingerprint if theirs else Path(str(data.get("prepared", ""))).resolve() == Path(prepared).resolve()
    if not same:
        raise ValueError(f"{path}: holds the result of another corpus ({data.get('prepared')}"
                         + (f", fingerprint {theirs[:8]}" if theirs else "") + "); it is never replaced: "
                         "choose another --out, or remove that folder first")
