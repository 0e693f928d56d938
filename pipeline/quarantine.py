"""`quarantine.parquet`: one row per record a stage rejected, with where and why.

Several stages add rows (``parse`` now, ``shard`` for images later). Each stage
owns its rows: :func:`replace_stage_rows` swaps that stage's rows and keeps the
others, writing atomically.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recipekit.core.io import atomic_path, staged

__all__ = ["QUARANTINE_FILE", "QUARANTINE_SCHEMA", "Rejection", "reason_counts", "reason_kind", "replace_stage_rows",
           "read_quarantine"]

QUARANTINE_FILE = "quarantine.parquet"

QUARANTINE_SCHEMA = pa.schema(
    [
        ("stage", pa.large_string()),  # which stage rejected it
        ("source", pa.large_string()),  # file name the record came from (layer1.json, an image path...)
        ("offset", pa.int64()),  # byte offset of the record in `source`, when it has one
        ("record_id", pa.large_string()),  # recipe or image id, when it has one
        ("reason", pa.large_string()),  # human-readable reason
    ]
)


@dataclass(frozen=True)
class Rejection:
    stage: str
    source: str
    offset: int | None
    record_id: str | None
    reason: str


def read_quarantine(out: str | Path) -> pa.Table:
    p = staged(Path(out) / QUARANTINE_FILE)  # this stage's own rows when it wrote them already
    if not p.exists():
        return QUARANTINE_SCHEMA.empty_table()
    return pq.read_table(p).cast(QUARANTINE_SCHEMA)  # files written before: string columns


def replace_stage_rows(out: str | Path, stage: str, rows: list[Rejection]) -> int:
    """Replace ``stage``'s rows in OUT/quarantine.parquet by ``rows``; returns their count."""
    existing = read_quarantine(out)
    keep = existing.filter(pc.not_equal(existing["stage"], stage)) if existing.num_rows else existing
    new = pa.Table.from_pylist([r.__dict__ for r in rows], schema=QUARANTINE_SCHEMA)
    table = pa.concat_tables([keep.cast(QUARANTINE_SCHEMA), new])
    with atomic_path(Path(out) / QUARANTINE_FILE) as tmp:
        pq.write_table(table, tmp)
    return len(rows)


def reason_kind(reason: str) -> str:
    """A reason without its record-specific details (quoted values, a trailing parenthesis, numbers):
    ``"image of unknown or rejected recipe 'a8f8'"`` -> ``"image of unknown or rejected recipe"``."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "", str(reason))
    text = re.sub(r"\s*\([^()]*\)\s*$", "", text)
    text = re.sub(r"\d+", "N", text)
    return " ".join(text.split()).rstrip(" :,;") or "unspecified"


def reason_counts(out: str | Path) -> dict[str, list[tuple[str, int]]]:
    """{stage: [(reason kind, records), ...] most frequent first} of OUT/quarantine.parquet."""
    p = Path(out) / QUARANTINE_FILE
    if not p.exists():
        return {}
    table = pq.read_table(p, columns=["stage", "reason"]).to_pydict()
    per: dict[str, Counter] = {}
    for stage, reason in zip(table["stage"], table["reason"]):
        per.setdefault(stage, Counter())[reason_kind(reason)] += 1
    return {stage: sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) for stage, c in per.items()}
