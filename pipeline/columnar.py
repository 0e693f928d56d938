"""The `parse` stage's columnar reading of layer1 records: a run of records decoded by Arrow's JSON
reader into columns and validated and cleaned with Arrow compute, with the same result as
:func:`.records.validate_run` on the decoded records.

Arrow decides what it can prove; everything else goes to the Python path record by record:

* The run is read as newline-delimited JSON against the fields the tables keep (``id``, ``partition``,
  ``title``, ``url``, and the ``text`` of each ``ingredients`` and ``instructions`` item), ignoring the
  others. Arrow rejects what the standard library rejects (syntax, raw control characters, invalid
  UTF-8) and more (a lone surrogate escape, a key given twice, a field of another type, a number
  beyond a double); any error, or a row count that is not one row per record, hands the whole run
  back to the element path (:func:`.jsonfast.map_array`), which reads it record by record as before.
* A record is accepted here only when every check of :func:`.records.validate_recipe` passes on
  its columns: an id of 1-64 letters, digits, ``_`` or ``-``; a known partition; a title, and lists
  whose items all carry a text, that are not empty once cleaned. Arrow reads a missing field and a
  ``null`` alike, so a null anywhere the checks look sends the record to the Python path, which
  tells the two apart and names the reason.
* Texts are cleaned by :func:`.textclean.clean_texts` (Python's :func:`~.textclean.clean_text` for
  the few it cannot prove unchanged).

The record-by-record path decodes the records the checks did not accept (orjson, as the element
path) and runs :func:`.records.validate_recipe` on each; if one of them is for the standard library
to decode, the whole run goes back to the element path.
"""

from __future__ import annotations

import io
from collections import Counter
from itertools import repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from .jsonfast import RawRun
from .records import PARTITIONS, RECIPES_SCHEMA, validate_recipe
from .textclean import clean_texts

__all__ = ["validate_run_columnar"]

_ITEMS = pa.list_(pa.struct([("text", pa.string())]))
_FIELDS = pa.schema([("id", pa.string()), ("partition", pa.string()), ("title", pa.string()),
                     ("ingredients", _ITEMS), ("instructions", _ITEMS), ("url", pa.string())])
_PARSE = pj.ParseOptions(explicit_schema=_FIELDS, unexpected_field_behavior="ignore")
_ID_RE = "^[A-Za-z0-9_-]{1,64}$"  # records._ID_RE, anchored


def _column(table: pa.Table, name: str) -> pa.Array:
    return table[name].combine_chunks()


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def _items(column: pa.Array, n: int) -> tuple[pa.Array, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A list-of-``{text}`` column: the cleaned, non-empty texts (large strings, record after record),
    texts per record, whether each record's list and items are all there and not all empty, and per
    cleaning step how many of each record's texts it changed."""
    ok = _mask(column.is_valid())
    flat = column.flatten()  # the items of the lists present
    parents = pc.list_parent_indices(column).to_numpy()
    text = pc.struct_field(flat, [0])
    present = _mask(text.is_valid())
    if not present.all():
        ok[parents[~present]] = False
    cleaned, changed = clean_texts(pc.fill_null(text, ""))
    keep = present & (pc.binary_length(cleaned).to_numpy() > 0)
    counts = np.bincount(parents[keep], minlength=n)
    per_record = {step: np.bincount(parents[flags], minlength=n) for step, flags in changed.items()}
    return cleaned.filter(pa.array(keep)).cast(pa.large_string()), counts, ok & (counts > 0), per_record


def validate_run_columnar(run: RawRun) -> tuple[pa.Table, list[tuple]] | None:
    """:func:`.records.validate_run` of ``run``'s records, read as columns; None when the run is
    for the element path (see the module doc)."""
    try:
        table = pj.read_json(io.BytesIO(run.lines), read_options=pj.ReadOptions(use_threads=False,
                             block_size=len(run.lines) + 1), parse_options=_PARSE)
    except (pa.ArrowException, ValueError):  # invalid UTF-8 surfaces as a UnicodeDecodeError
        return None
    n = len(run)
    if table.num_rows != n:
        return None
    ids, partition, url = _column(table, "id"), _column(table, "partition"), _column(table, "url")
    code = pc.fill_null(pc.index_in(partition, value_set=pa.array(PARTITIONS)), -1).to_numpy()
    ok = _mask(pc.fill_null(pc.match_substring_regex(ids, _ID_RE), False)) & (code >= 0)
    title_raw = _column(table, "title")
    title, title_changed = clean_texts(pc.fill_null(title_raw, ""))
    ok &= _mask(title_raw.is_valid()) & (pc.binary_length(title).to_numpy() > 0)
    changed = {step: flags.astype(np.int64) for step, flags in title_changed.items()}
    lists = []
    for name in ("ingredients", "instructions"):
        values, counts, items_ok, items_changed = _items(_column(table, name), n)
        ok &= items_ok
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        lists.append(pa.LargeListArray.from_arrays(pa.array(bounds), values))
        for step, counts in items_changed.items():
            changed[step] += counts
    columns = [ids, partition, title, *lists, url]
    fast = pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, RECIPES_SCHEMA)], schema=RECIPES_SCHEMA)
    offsets, codes = run.offsets.tolist(), code.tolist()
    if ok.all():  # as a rule: every record accepted, no copy
        events = list(zip(offsets, ids.to_pylist(), repeat(None), codes, repeat(None)))
    else:
        accepted = np.flatnonzero(ok)
        fast = fast.take(pa.array(accepted))
        events = [()] * n
        for i, rid in zip(accepted.tolist(), ids.take(pa.array(accepted)).to_pylist()):
            events[i] = (offsets[i], rid, None, codes[i], None)
    steps = [(step, counts) for step, counts in changed.items() if counts.any()]
    if steps:  # what cleaning changed, for the accepted records it changed
        touched = ok & np.logical_or.reduce([counts > 0 for _, counts in steps])
        for i in np.flatnonzero(touched).tolist():
            events[i] = events[i][:4] + ({step: int(counts[i]) for step, counts in steps if counts[i]},)
    slow_rows, slow_at = [], []
    for i in np.flatnonzero(~ok).tolist():
        try:
            record = run.element(i)
        except ValueError:  # for the standard library: the element path decides
            return None
        c = Counter()
        row, why, rid = validate_recipe(record, c)
        if row is None:
            events[i] = (offsets[i], rid, why, -1, None)
        else:
            slow_rows.append(row)
            slow_at.append(i)
            events[i] = (offsets[i], rid, None, PARTITIONS.index(row["partition"]), dict(c) or None)
    if not slow_rows:
        return fast, events
    both = pa.concat_tables([fast, pa.Table.from_pylist(slow_rows, schema=RECIPES_SCHEMA)])
    order = np.argsort(np.concatenate([accepted, np.asarray(slow_at, dtype=np.int64)]), kind="stable")
    return both.take(pa.array(order)), events
