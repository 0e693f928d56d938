"""Stream a top-level JSON array at the speed of orjson, in parallel, with the same results as
:func:`.jsonstream.iter_array`.

Two layers:

* **Splitting** (:class:`.jsonsplit.Scanner`, in the calling process): a vectorised scan of each
  chunk finds the commas between the array's elements; runs of whole elements (``batch_bytes``
  each) become tasks, as file offsets: the worker reads the bytes.
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

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .jsonsplit import DEEP, IS_WHITESPACE, WHITESPACE, Batch, Handover, Scanner
from .jsonstream import iter_array

try:  # the fast decoder is optional: the standard library is the fallback
    import orjson
except ImportError:  # pragma: no cover - exercised by monkeypatching `orjson = None`
    orjson = None

__all__ = ["RawRun", "count_elements", "cyclic_gc_paused", "fast_available", "iter_array_fast", "map_array"]

BATCH_BYTES = 4 << 20  # bytes of JSON per task: ~2,000 Recipe1M records
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def fast_available() -> bool:
    """Whether the orjson path is used (installed, and not switched off by ``RECIPEKIT_JSON=stdlib``)."""
    return orjson is not None and os.environ.get("RECIPEKIT_JSON", "").lower() != "stdlib"


def _columnar_wanted() -> bool:
    """Whether runs go to the caller's columnar reader (not with ``RECIPEKIT_JSON=stdlib`` or ``=orjson``,
    which keep every element on the element path)."""
    return fast_available() and os.environ.get("RECIPEKIT_JSON", "").lower() != "orjson"


def _has_long_digits(data: bytes) -> bool:
    """Whether ``data`` holds a run of 19 or more digits (a C-speed translate and substring search)."""
    return _LONG_DIGITS in data.translate(_DIGITS_TO_ZERO)


# The standard library refuses an integer of more digits than ``sys.get_int_max_str_digits()``
# (4300 by default, 640 at the least when set); Arrow's reader skips one in a field it ignores.
_HUGE_DIGITS = 641


def _has_huge_digits(data: bytes) -> bool:
    """Whether ``data`` holds a run of ``_HUGE_DIGITS`` digits or more. Such a run covers a multiple
    of ``_HUGE_DIGITS // 2``, so only the digits at those positions (one byte in 320) are followed
    out to the ends of their runs."""
    step = _HUGE_DIGITS // 2
    sample = np.frombuffer(data, dtype=np.uint8)[::step]
    for p in (np.flatnonzero((sample >= 0x30) & (sample <= 0x39)) * step).tolist():
        a = e = p
        while a > 0 and 0x30 <= data[a - 1] <= 0x39 and p - a < _HUGE_DIGITS:
            a -= 1
        while e < len(data) and 0x30 <= data[e] <= 0x39 and e - a < _HUGE_DIGITS:
            e += 1
        if e - a >= _HUGE_DIGITS:
            return True
    return False


def _decode(raw: bytes, check_digits: bool, check_depth: bool) -> Any:
    """orjson's value for one element's bytes, or raise ValueError when the standard library must decide."""
    if not raw or (check_digits and _has_long_digits(raw)):
        raise ValueError("for the standard library")
    if check_depth and len(raw) > DEEP and raw.count(b"[") + raw.count(b"{") > DEEP:
        raise ValueError("possibly deep: for the standard library")
    return orjson.loads(raw)


def _decode_batch(batch: Batch, start: int = 0) -> tuple[list[tuple[int, Any]], int | None]:
    """Elements ``start..`` of ``batch`` as ``(file offset, value)``, up to the first one orjson must not
    decode; returns them and that element's index (None: all decoded)."""
    data = batch.data
    check = _has_long_digits(data)
    out = []
    ranges = batch.ranges.tolist()
    for i in range(start, len(ranges)):
        a, b = ranges[i]
        seg = data[a:b]
        raw = seg.strip(WHITESPACE)
        offset = batch.base + a + (len(seg) - len(seg.lstrip(WHITESPACE)))
        try:
            out.append((offset, _decode(raw, check, batch.deep)))
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            return out, i
    return out, None


def _element_start(batch: Batch, i: int) -> int:
    a, b = batch.ranges[i].tolist()
    seg = batch.data[a:b]
    return batch.base + a + (len(seg) - len(seg.lstrip(WHITESPACE)))


def _next_start(path: Path, batch: Batch, i: int) -> int | None:
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
            rest = block.lstrip(WHITESPACE)
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
    makes the lines invalid JSON); :attr:`offsets`: each element's file offset. Only runs of objects
    that Arrow may read as the standard library would are offered (none nested :data:`DEEP` levels
    or more, none holding an integer the standard library may refuse for its digits).
    :meth:`element` decodes one element as the element path would (orjson, or ValueError).
    ``data`` holds the file's bytes from ``base``, element ``i`` at ``data[starts[i]:ends[i]]``
    (trailing whitespace included)."""

    lines: bytes
    base: int
    data: bytes
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def offsets(self) -> np.ndarray:
        return self.base + self.starts

    def element(self, i: int) -> Any:
        """orjson's value for element ``i``; raises ValueError where the standard library must decide."""
        return _decode(self.data[int(self.starts[i]) : int(self.ends[i])].rstrip(WHITESPACE), True, False)


def _raw_run(batch: Batch) -> RawRun | None:
    """``batch`` as a :class:`RawRun`, or None when it is not a run of objects for a columnar reader."""
    data, ranges = batch.data, batch.ranges
    if not len(ranges) or batch.deep or _has_huge_digits(data):
        return None
    b = np.frombuffer(data, dtype=np.uint8)
    starts, ends = ranges[:, 0].copy(), ranges[:, 1]
    for _ in range(64):  # skip the whitespace before each element (a newline or a space, as a rule)
        lead = (starts < ends) & IS_WHITESPACE[b[np.minimum(starts, len(b) - 1)]]
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
    return RawRun(bytes(lines), batch.base, data, starts, ends)


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block (restoring its state after).

    Decoded JSON is a tree: it holds no reference cycles for the collector to find, yet building
    millions of dicts and lists sets it off again and again, and each pass walks everything still
    alive. Paused, decoding a run of det_ingrs entries with orjson took half the CPU (2-core VM).
    Memory is freed as before (reference counting); only cycles made inside the block wait for
    the collector's next pass."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _run_batch(payload: tuple[Callable, Callable | None, Batch]) -> tuple[Any, int | None]:
    """Worker task: ``columnar(run)`` when it takes the batch, else decode what orjson may and apply
    ``fn``; returns ``(result, index to resume at)``."""
    fn, columnar, batch = payload
    with cyclic_gc_paused():
        if columnar is not None:
            run = _raw_run(batch)
            result = columnar(run) if run is not None else None
            if result is not None:
                return result, None
        elements, stop = _decode_batch(batch)
        return fn(elements), stop


def _batch_label(payload: tuple[Callable, Callable | None, Batch]) -> str:
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
    given to ``fn``. It must return what ``fn`` would. ``RECIPEKIT_JSON=orjson`` leaves it unused."""
    path = Path(path)
    if not _columnar_wanted():
        columnar = None
    if not fast_available():
        yield from _stdlib_runs(path, None, fn, stdlib_batch)
        return
    scanner = iter(Scanner(path, chunk_size, batch_bytes or BATCH_BYTES))
    pending: list[Batch] = []
    handover: list[Handover] = []

    def tasks() -> Iterator[tuple[Callable, Callable | None, Batch]]:
        for item in scanner:
            if isinstance(item, Handover):
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
