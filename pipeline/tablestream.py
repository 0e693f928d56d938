"""Read Parquet tables in bounded chunks of rows, several row-aligned files in step.

The stages after `parse` write one row per recipe in ``recipes.parquet`` order
(``ingredients.parquet``, ``recipe_classes.parquet``), so a stage that needs columns of
several of them can read them side by side, chunk by chunk, instead of loading and
joining whole tables: memory is bounded by the chunk (plus one Parquet row group per
file), whatever the corpus size. :func:`iter_aligned` checks that the files agree on
the ``id`` of every row and names the file and row where they do not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["CHUNK_ROWS", "iter_chunks", "iter_aligned", "num_rows"]

CHUNK_ROWS = 50_000


def num_rows(path: str | os.PathLike) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def iter_chunks(path: str | os.PathLike, columns: Sequence[str] | None = None,
                rows: int | None = None) -> Iterator[pl.DataFrame]:
    """Frames of exactly ``rows`` rows (default :data:`CHUNK_ROWS`; the last one shorter) of
    ``path``, in file order."""
    rows = CHUNK_ROWS if rows is None else rows
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    pf = pq.ParquetFile(path)
    columns = list(columns) if columns is not None else None
    schema = pf.schema_arrow if columns is None else pa.schema([pf.schema_arrow.field(c) for c in columns])
    pending: list[pa.RecordBatch] = []
    n = 0
    for batch in pf.iter_batches(batch_size=rows, columns=columns):
        pending.append(batch)
        n += batch.num_rows
        while n >= rows:
            table = pa.Table.from_batches(pending, schema=schema)
            yield pl.from_arrow(table.slice(0, rows))
            rest = table.slice(rows)
            pending, n = rest.to_batches(), rest.num_rows
    if n:
        yield pl.from_arrow(pa.Table.from_batches(pending, schema=schema))


def iter_aligned(specs: Sequence[tuple[str | os.PathLike, Sequence[str]]],
                 rows: int | None = None) -> Iterator[tuple[pl.DataFrame, ...]]:
    """One frame per ``(path, columns)`` for each chunk of ``rows`` rows, the files read in step.

    Every file must have an ``id`` column (read whether listed or not) with the same ids in
    the same order as the first file's; the frames keep only the listed columns.
    """
    paths = [Path(p) for p, _ in specs]
    counts = [num_rows(p) for p in paths]
    if len(set(counts)) > 1:
        raise ValueError("row counts differ: " + ", ".join(f"{p} has {c:,}" for p, c in zip(paths, counts))
                         + "; re-run the stage that wrote the shorter file")
    want = [list(cols) for _, cols in specs]
    readers = [iter_chunks(p, cols if "id" in cols else ["id", *cols], rows) for p, cols in zip(paths, want)]
    offset = 0
    for frames in zip(*readers):
        ids = frames[0].get_column("id")
        for p, f in zip(paths[1:], frames[1:]):
            other = f.get_column("id")
            if not ids.equals(other):
                bad = int((ids != other).arg_max() or 0)
                raise ValueError(f"{p}: row {offset + bad:,} has id {other[bad]!r} where {paths[0].name} has "
                                 f"{ids[bad]!r}: not in {paths[0].name} order; re-run the stage that wrote it")
        yield tuple(f.select(cols) for f, cols in zip(frames, want))
        offset += frames[0].height
