"""Stream a top-level JSON array at the speed of orjson, in parallel, with the same results as
:func:`.jsonstream.iter_array`.

Two layers:

* **Splitting** (:class:`_Scanner`, in the calling process). The file is read in chunks and each
  chunk scanned with numpy: the quotes that are not escaped, the brackets outside strings and the
  nesting depth, then the commas in the stretches at depth 0 or 1, give the commas between the
  array's elements. That is a few vectorised passes over the bytes (~0.5 s of CPU per 100 MB),
  not a Python loop. Runs of whole elements (``batch_bytes`` each) become tasks, as file offsets:
  the worker reads the bytes.
* **Decoding** (:func:`_run_batch`, in a worker of the stage's executor, or here). A columnar
  reader, when the caller gives one, is offered the run's bytes first (:class:`RawRun`; the parse
  stage's is :func:`.columnar.validate_run_columnar`). Otherwise each element's bytes go to
  ``orjson.loads`` and the caller's function turns the batch into its result (the parse stage:
  validated rows as an Arrow table), so the workers return compact results rather than Python
  objects.

The output is what the standard library path gives, element for element, offset for offset,
error for error. Every element range must decode as one complete JSON value, the bytes between
ranges are whitespace and one comma, and the array's own brackets are checked, so a file the
fast path accepts is one ``iter_array`` reads the same way. Whatever orjson rejects or could
decode differently goes to the standard library, element by element, through
``iter_array(start=...)``:

* syntax errors, and invalid UTF-8 (the standard library then raises its
  :class:`~.jsonstream.JSONStreamError` with the exact byte offset);
* what the standard library accepts and orjson does not: ``NaN``/``Infinity``, lone surrogate
  escapes (``"\\ud800"``), numbers beyond a double;
* any element with more than 500 brackets (the standard library raises ``RecursionError`` near
  1,000 levels of nesting, orjson only beyond 1024: a deeply nested record must meet the same fate);
* any element holding a run of 19 or more digits (orjson would turn an integer beyond 64 bits
  into a float; the standard library keeps the int, or raises beyond 4300 digits).

After such an element the standard library also reads the next element's offset; if that does
not agree with the split (a syntax error can fool the split), the rest of the file is read by
the standard library alone. Whatever the standard library raises for an element (a
``JSONStreamError``, a ``RecursionError``, a ``ValueError``) is raised here at the same point
of the sequence.

orjson rather than msgspec: both are maintained C/Rust decoders with wheels for every platform;
on Recipe1M records orjson decoded faster here (about 6-9 us a recipe against msgspec's 11-15
and the standard library's 13-17, 2-core VM), and its one silent difference (integers beyond
64 bits as floats) is caught by the digit-run check. Without orjson installed (or with
``RECIPEKIT_JSON=stdlib``) everything runs through :func:`.jsonstream.iter_array`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .jsonstream import iter_array

try:  # the fast decoder is optional: the standard library is the fallback
    import orjson
except ImportError:  # pragma: no cover - exercised by monkeypatching `orjson = None`
    orjson = None

__all__ = ["RawRun", "columnar_wanted", "count_elements", "fast_available", "iter_array_fast", "map_array"]

BATCH_BYTES = 4 << 20  # bytes of JSON per task: ~2,000 Recipe1M records
_WS = b" \t\n\r"
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
# The standard library's nesting limit is Python's recursion limit less the stack in use (~990
# levels), orjson's 1024: an element with more brackets than this may be nested deeper than
# the standard library allows, so it decides.
_DEEP = 500
_QUOTE, _BACKSLASH = 0x22, 0x5C
_SHORT = 16  # stretches at depth 0 or 1 up to this long are looked at byte by byte, vectorised
_STEPS = np.arange(_SHORT, dtype=np.int64)
_IS_WS = np.zeros(256, dtype=bool)
_IS_WS[list(_WS)] = True


def fast_available() -> bool:
    """Whether the orjson path is used (installed, and not switched off by ``RECIPEKIT_JSON=stdlib``)."""
    return orjson is not None and os.environ.get("RECIPEKIT_JSON", "").lower() != "stdlib"


def columnar_wanted() -> bool:
    """Whether callers offer runs to a columnar reader (not with ``RECIPEKIT_JSON=stdlib`` or ``=orjson``,
    which keep every element on the element path)."""
    return fast_available() and os.environ.get("RECIPEKIT_JSON", "").lower() != "orjson"


@dataclass
class _Batch:
    """Whole elements: the file's bytes from ``base`` to ``after``; ``ranges`` the (start, end) of each
    element in them between its separators (whitespace included); ``after`` the file offset of the
    separator after the last element. The bytes are read from ``path`` (absolute) where they are
    used: in a worker, so they never travel through the pool's pipes (with Ray, the file must be at
    the same path on every node, as SRC already must)."""

    path: str
    base: int
    ranges: np.ndarray
    after: int
    deep: bool = True  # whether an element may be nested _DEEP levels or more
    handed_before: bool = True  # whether batches before this one were handed out
    _data: bytes | None = field(default=None, repr=False)

    @property
    def data(self) -> bytes:
        if self._data is None:
            with open(self.path, "rb") as fh:
                fh.seek(self.base)
                self._data = fh.read(self.after - self.base)
        return self._data

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}

    @classmethod
    def cut(cls, path: str, seps: list[int], j: int, open_at: int, close_at: int | None) -> _Batch:
        """The elements between separators ``seps[0]`` and ``seps[j]`` (file offsets; the array's
        '[' is at ``open_at``, its ']' at ``close_at`` once seen)."""
        first, last = seps[0], seps[j]
        edges = np.asarray(seps[: j + 1], dtype=np.int64)
        ranges = np.stack([edges[:-1] + 1, edges[1:]], axis=1) - first
        opening = first == open_at
        if j == 1 and opening and last == close_at and _only_whitespace(path, first + 1, last):
            ranges = ranges[:0]  # `[ ]`: an empty array
        return cls(path, first, ranges, last, handed_before=not opening)


def _only_whitespace(path: str, start: int, end: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(start)
        while start < end:
            block = fh.read(min(end - start, 1 << 16))
            if not block or block.strip(_WS):
                return not block
            start += len(block)
    return True


@dataclass
class _Handover:
    """Read from ``start`` (None: the whole file) with the standard library."""

    start: int | None


class _Scanner:
    """Chunked, vectorised split of a JSON array into element ranges (see the module doc)."""

    def __init__(self, path: Path, chunk_size: int, batch_bytes: int):
        self.path, self.chunk_size, self.batch_bytes = path, chunk_size, batch_bytes

    def __iter__(self) -> Iterator[_Batch | _Handover]:
        in_str, depth, trailing_bs = False, 0, 0
        opened = closed = False
        seps: list[int] = []  # file offsets of the separators of elements not yet batched ('[', ',', ']')
        open_at, close_at = -1, None  # file offsets of the array's '[' and ']'
        held: _Batch | None = None  # the last batch, held back until the end of the file is checked
        deep: list[tuple[int, int]] = []  # byte ranges of the chunks nested _DEEP levels or more
        with open(self.path, "rb") as fh:
            offset = 0
            while True:
                chunk = fh.read(self.chunk_size)
                if not chunk:
                    break
                base = offset
                offset += len(chunk)
                if base == 0 and chunk.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                    chunk, base = chunk[3:], 3
                b = np.frombuffer(chunk, dtype=np.uint8)
                if closed:  # only whitespace may follow the array
                    if not _IS_WS[b].all():
                        yield _Handover(self._restart(held, seps, self.path))
                        return
                    continue
                quotes = _real_quotes(chunk, b, trailing_bs)
                rstripped = len(chunk.rstrip(b"\\"))
                trailing_bs = len(chunk) - rstripped + (trailing_bs if rstripped == 0 else 0)
                pos, kinds, before, depth_after = _structure(b, quotes, in_str, depth)
                if len(quotes) % 2:
                    in_str = not in_str
                if depth_after[1] >= _DEEP:
                    deep.append((base, offset))
                depth = depth_after[0]
                top = (before == 0) | ((before == 1) & (kinds != 1))  # the array's brackets and commas
                for p, k, d in zip(pos[top].tolist(), kinds[top].tolist(), before[top].tolist()):
                    ch = chunk[p]
                    if d == 0 and not opened and ch == 0x5B:  # '['
                        if not _IS_WS[b[:p]].all():  # earlier chunks were whitespace (checked below)
                            yield _Handover(None)
                            return
                        opened, open_at = True, base + p
                        seps.append(base + p)
                    elif d == 1 and k == 2:
                        seps.append(base + p)
                    elif d == 1 and ch == 0x5D:  # ']'
                        closed, close_at = True, base + p
                        seps.append(base + p)
                        if not _IS_WS[b[p + 1 :]].all():
                            yield _Handover(self._restart(held, seps, self.path))
                            return
                        break
                    else:
                        yield _Handover(self._restart(held, seps, self.path) if opened else None)
                        return
                if not opened:
                    if not _IS_WS[b].all():
                        yield _Handover(None)
                        return
                    continue
                while len(seps) >= 2 and (closed or seps[-1] - seps[0] >= self.batch_bytes):
                    j = int(np.searchsorted(seps, seps[0] + self.batch_bytes))
                    j = max(1, min(j, len(seps) - 1))
                    batch = _Batch.cut(os.path.abspath(self.path), seps, j, open_at, close_at)
                    batch.deep = any(a < batch.after and batch.base < b for a, b in deep)
                    del seps[:j]
                    if held is not None:
                        yield held
                    held = batch
        if not closed:
            yield _Handover(self._restart(held, seps, self.path) if opened else None)
            return
        if held is not None:
            yield held

    @staticmethod
    def _restart(held: _Batch | None, seps: list[int], path: Path) -> int | None:
        """Where the standard library takes over: the first element not handed out yet (None: the
        whole file, when nothing has been handed out)."""
        if held is not None:
            return held.base + int(held.ranges[0, 0]) if len(held.ranges) and held.handed_before else None
        with open(path, "rb") as fh:
            fh.seek(seps[0])
            return None if fh.read(1) == b"[" else seps[0] + 1


def _structure(b: np.ndarray, quotes: np.ndarray, in_str: bool, depth: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """The structural characters of a chunk outside strings that can be the array's own (its brackets
    and commas): positions, kinds (1 opens, -1 closes, 2 comma) and the depth before each, for those
    where that depth is 0 or 1. Also the depth after the chunk and the greatest depth in it.

    Brackets and quotes are few next to the bytes; commas are many (recipe text is full of them) but
    only those outside every record matter, so only the stretches between brackets at depth 0 or 1 are
    searched for them."""
    low = b | 0x20  # '[' -> '{', ']' -> '}'
    br = np.flatnonzero((low == 0x7B) | (low == 0x7D))
    br = br[(np.searchsorted(quotes, br) + int(in_str)) % 2 == 0]
    delta = np.where((b[br] | 0x20) == 0x7B, 1, -1).astype(np.int64)
    after = depth + np.cumsum(delta)
    before = after - delta
    # The stretches between brackets at depth 0 or 1 (between records, as a rule a comma and a space)
    # are the only places such a comma can be: look at their bytes alone.
    starts = np.concatenate([[0], br + 1])
    ends = np.concatenate([br, [len(b)]])
    depths = np.concatenate([[depth], after])
    shallow = (depths <= 1) & (ends > starts)
    starts, ends, depths = starts[shallow], ends[shallow], depths[shallow]
    short = ends - starts <= _SHORT
    at = starts[short, None] + _STEPS
    inside = at < ends[short, None]
    hit = inside & (b[np.minimum(at, len(b) - 1)] == 0x2C)
    commas = [at[hit]]
    comma_depth = [np.broadcast_to(depths[short, None], at.shape)[hit]]
    for a, e, d in zip(starts[~short].tolist(), ends[~short].tolist(), depths[~short].tolist()):
        found = np.flatnonzero(b[a:e] == 0x2C) + a
        commas.append(found)
        comma_depth.append(np.full(len(found), d, dtype=np.int64))
    commas, comma_depth = np.concatenate(commas), np.concatenate(comma_depth)
    order = np.argsort(commas, kind="stable")
    commas, comma_depth = commas[order], comma_depth[order]
    outside = (np.searchsorted(quotes, commas) + int(in_str)) % 2 == 0
    commas, comma_depth = commas[outside], comma_depth[outside]
    greatest = max(int(after.max()) if len(br) else depth, depth)
    last = int(after[-1]) if len(br) else depth
    top = before <= 1  # the brackets deeper down are never the array's own
    br, delta, before = br[top], delta[top], before[top]
    pos = np.concatenate([br, commas])
    order = np.argsort(pos, kind="stable")
    kinds = np.concatenate([delta, np.full(len(commas), 2, dtype=np.int64)])[order]
    befores = np.concatenate([before, comma_depth])[order]
    return pos[order], kinds, befores, (last, greatest)


def _real_quotes(chunk: bytes, b: np.ndarray, trailing_bs: int) -> np.ndarray:
    """Positions of the quotes in ``chunk`` not escaped by an odd run of backslashes (the run may
    continue ``trailing_bs`` backslashes at the end of the previous chunk)."""
    quotes = np.flatnonzero(b == _QUOTE)
    if not len(quotes):
        return quotes
    prev = quotes - 1
    cand = quotes[(prev >= 0) & (b[np.maximum(prev, 0)] == _BACKSLASH)].tolist()
    if quotes[0] == 0 and trailing_bs % 2 == 1:
        cand.insert(0, 0)
    if not cand:
        return quotes
    escaped = []
    for q in cand:
        j = q - 1
        while j >= 0 and chunk[j] == _BACKSLASH:
            j -= 1
        if (q - 1 - j + (trailing_bs if j < 0 else 0)) % 2 == 1:
            escaped.append(q)
    if not escaped:
        return quotes
    keep = np.ones(len(quotes), dtype=bool)
    keep[np.searchsorted(quotes, escaped)] = False
    return quotes[keep]


def _has_long_digits(data: bytes) -> bool:
    """Whether ``data`` holds a run of 19 or more digits (a C-speed translate and substring search)."""
    return _LONG_DIGITS in data.translate(_DIGITS_TO_ZERO)


def _decode(raw: bytes, check_digits: bool, check_depth: bool) -> Any:
    """orjson's value for one element's bytes, or raise ValueError when the standard library must decide."""
    if not raw or (check_digits and _has_long_digits(raw)):
        raise ValueError("for the standard library")
    if check_depth and len(raw) > _DEEP and raw.count(b"[") + raw.count(b"{") > _DEEP:
        raise ValueError("possibly deep: for the standard library")
    return orjson.loads(raw)


def _decode_batch(batch: _Batch, start: int = 0) -> tuple[list[tuple[int, Any]], int | None]:
    """Elements ``start..`` of ``batch`` as ``(file offset, value)``, up to the first one orjson must not
    decode; returns them and that element's index (None: all decoded)."""
    data = batch.data
    check = _has_long_digits(data)
    out = []
    ranges = batch.ranges.tolist()
    for i in range(start, len(ranges)):
        a, b = ranges[i]
        seg = data[a:b]
        raw = seg.strip(_WS)
        offset = batch.base + a + (len(seg) - len(seg.lstrip(_WS)))
        try:
            out.append((offset, _decode(raw, check, batch.deep)))
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            return out, i
    return out, None


def _element_start(batch: _Batch, i: int) -> int:
    a, b = batch.ranges[i].tolist()
    seg = batch.data[a:b]
    return batch.base + a + (len(seg) - len(seg.lstrip(_WS)))


def _next_start(path: Path, batch: _Batch, i: int) -> int | None:
    """Where the element after element ``i`` of ``batch`` starts per the split (None: ``i`` is the last)."""
    if i + 1 < len(batch.ranges):
        return _element_start(batch, i + 1)
    with open(path, "rb") as fh:
        fh.seek(batch.after)
        if fh.read(1) != b",":
            return None
        pos = batch.after + 1
        while True:
            block = fh.read(1 << 16)
            rest = block.lstrip(_WS)
            pos += len(block) - len(rest)
            if rest or not block:
                return pos


def _stdlib_element(path: Path, start: int, expected_next: int | None) -> tuple[tuple[int, Any], bool]:
    """The standard library's element at ``start`` (its exceptions propagate), and whether its next
    element's offset (or the end of the array) agrees with the split."""
    it = iter_array(path, start=start, chunk_size=1 << 16)
    try:
        element = next(it)
        try:
            following = next(it)[0]
        except StopIteration:
            following = None
        except Exception:
            return element, False
        return element, following == expected_next
    finally:
        it.close()


@dataclass
class RawRun:
    """A run of whole elements, undecoded, for a columnar reader (``map_array(columnar=...)``).

    ``lines``: the elements, one per line (newline-delimited JSON: each element's bytes as in the
    file, the commas between them turned into newlines, so an element spread over several lines
    makes the lines invalid JSON); ``offsets``: each element's file offset. Only runs of objects
    that orjson may decode whole are offered (no element with 500 brackets or a 19-digit run).
    :meth:`element` decodes one element as the element path would."""

    lines: bytes
    offsets: np.ndarray
    data: bytes
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def element(self, i: int) -> Any:
        """orjson's value for element ``i``; raises ValueError where the standard library must decide."""
        return _decode(self.data[int(self.starts[i]) : int(self.ends[i])].rstrip(_WS), False, False)


def _raw_run(batch: _Batch) -> RawRun | None:
    """``batch`` as a :class:`RawRun`, or None when it is not a run of objects orjson may decode whole."""
    data, ranges = batch.data, batch.ranges
    if not len(ranges) or batch.deep or _has_long_digits(data):
        return None
    b = np.frombuffer(data, dtype=np.uint8)
    starts, ends = ranges[:, 0].copy(), ranges[:, 1]
    for _ in range(64):  # skip the whitespace before each element (a newline or a space, as a rule)
        lead = (starts < ends) & _IS_WS[b[np.minimum(starts, len(b) - 1)]]
        if not lead.any():
            break
        starts[lead] += 1
    else:
        return None
    if (starts >= ends).any() or (b[starts] != 0x7B).any():  # an empty element, or one not an object
        return None
    first = int(ranges[0, 0])
    lines = bytearray(data[first : int(ranges[-1, 1])])
    np.frombuffer(lines, dtype=np.uint8)[ranges[:-1, 1] - first] = 0x0A  # the commas between elements
    return RawRun(bytes(lines), batch.base + starts, data, starts, ends)


def _run_batch(payload: tuple[Callable, Callable | None, _Batch]) -> tuple[Any, int | None]:
    """Worker task: ``columnar(run)`` when it takes the batch, else decode what orjson may and apply
    ``fn``; returns ``(result, index to resume at)``."""
    fn, columnar, batch = payload
    if columnar is not None:
        run = _raw_run(batch)
        result = columnar(run) if run is not None else None
        if result is not None:
            return result, None
    elements, stop = _decode_batch(batch)
    return fn(elements), stop


def _batch_label(payload: tuple[Callable, Callable | None, _Batch]) -> str:
    batch = payload[2]
    return f"JSON bytes {batch.base}-{batch.after}"


def map_array(
    path: str | os.PathLike,
    fn: Callable[[list[tuple[int, Any]]], Any],
    *,
    executor: Any = None,
    columnar: Callable[[RawRun], Any] | None = None,
    batch_bytes: int | None = None,
    chunk_size: int = 16 << 20,
    stdlib_batch: int = 2000,
) -> Iterator[Any]:
    """``fn(elements)`` for consecutive runs of the array's ``(byte_offset, element)`` pairs, in file order.

    ``fn`` must be picklable (a module-level function, or a ``functools.partial`` of one) when an
    ``executor`` (:mod:`.backends`) runs the batches in its workers. The concatenation of the runs is
    exactly :func:`.jsonstream.iter_array`'s sequence, and an error is raised after the results
    of every element before it, as there.

    ``columnar`` (optional, picklable too) is offered each run of objects first as a :class:`RawRun`
    of undecoded bytes; what it returns stands for ``fn(elements)`` of that run, and when it returns
    None (it cannot read the run, or the run holds what only ``fn`` decides) the run is decoded and
    given to ``fn``. It must return what ``fn`` would."""
    path = Path(path)
    if not fast_available():
        yield from _stdlib_runs(path, None, fn, stdlib_batch)
        return
    scanner = iter(_Scanner(path, chunk_size, batch_bytes or BATCH_BYTES))
    pending: list[_Batch] = []
    handover: list[_Handover] = []

    def tasks() -> Iterator[tuple[Callable, Callable | None, _Batch]]:
        for item in scanner:
            if isinstance(item, _Handover):
                handover.append(item)
                return
            pending.append(item)
            yield fn, columnar, item

    if executor is not None:  # no more workers than runs: a small file is read here, with no process started
        runs = -(-os.path.getsize(path) // (batch_bytes or BATCH_BYTES))
        results = executor.imap(_run_batch, tasks(), limit=max(1, runs), describe=_batch_label)
    else:
        results = map(_run_batch, tasks())
    for result, stop in results:
        batch = pending.pop(0)
        yield result
        while stop is not None:  # the standard library decides element `stop`
            start = _element_start(batch, stop)
            element, agrees = _stdlib_element(path, start, _next_start(path, batch, stop))
            if not agrees:  # the split went wrong: the standard library reads the rest
                if executor is not None:
                    results.close()  # stops the workers; what they return is not used
                yield from _stdlib_runs(path, start, fn, stdlib_batch)
                return
            elements, stop = _decode_batch(batch, stop + 1)
            yield fn([element, *elements])
    if handover:
        yield from _stdlib_runs(path, handover[0].start, fn, stdlib_batch)


def _stdlib_runs(path: Path, start: int | None, fn: Callable, size: int) -> Iterator[Any]:
    run: list[tuple[int, Any]] = []
    try:
        for element in iter_array(path, start=start):
            run.append(element)
            if len(run) >= size:
                yield fn(run)
                run = []
    except Exception:
        if run:
            yield fn(run)
        raise
    if run:
        yield fn(run)


def count_elements(elements: list[tuple[int, Any]]) -> int:
    """How many elements a run holds (``map_array(path, count_elements)``: the decoder alone)."""
    return len(elements)


def _identity(elements: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return elements


def iter_array_fast(path: str | os.PathLike, **kw: Any) -> Iterator[tuple[int, Any]]:
    """:func:`.jsonstream.iter_array`'s ``(byte_offset, element)`` sequence, decoded by orjson in this process."""
    for run in map_array(path, _identity, **kw):
        yield from run
