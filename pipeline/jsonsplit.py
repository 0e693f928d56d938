"""The split of a top-level JSON array into runs of whole elements: a chunked, vectorised scan in the
calling process that finds the commas between the array's elements without decoding anything.

Each chunk is scanned with numpy: the quotes that are not escaped, the brackets outside strings and
the nesting depth, then the commas in the stretches at depth 0 or 1 (recipe text is full of commas,
but only those outside every record matter). That is a few vectorised passes over the bytes (~0.5 s
of CPU per 100 MB), not a Python loop. Runs of whole elements (``batch_bytes`` each) come out as
:class:`Batch` es of file offsets, read where they are decoded (:mod:`.jsonfast`); what the scan
cannot vouch for (a syntax error that could fool it, bytes around the array) comes out as a
:class:`Handover` to the standard library from a file offset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DEEP", "IS_WHITESPACE", "WHITESPACE", "Batch", "Handover", "Scanner"]

WHITESPACE = b" \t\n\r"
# The standard library's nesting limit is Python's recursion limit less the stack in use (~990
# levels), orjson's 1024: an element with more brackets than this may be nested deeper than
# the standard library allows, so it decides.
DEEP = 500
_QUOTE, _BACKSLASH = 0x22, 0x5C
_SHORT = 16  # stretches at depth 0 or 1 up to this long are looked at byte by byte, vectorised
_STEPS = np.arange(_SHORT, dtype=np.int64)
IS_WHITESPACE = np.zeros(256, dtype=bool)
IS_WHITESPACE[list(WHITESPACE)] = True


@dataclass
class Batch:
    """Whole elements: the file's bytes from ``base`` to ``after``; ``ranges`` the (start, end) of each
    element in them between its separators (whitespace included); ``after`` the file offset of the
    separator after the last element. The bytes are read from ``path`` (absolute) where they are
    used: in a worker, so they never travel through the pool's pipes (with Ray, the file must be at
    the same path on every node, as SRC already must)."""

    path: str
    base: int
    ranges: np.ndarray
    after: int
    deep: bool = True  # whether an element may be nested DEEP levels or more
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
    def cut(cls, path: str, seps: list[int], j: int, open_at: int, close_at: int | None) -> Batch:
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
            if not block or block.strip(WHITESPACE):
                return not block
            start += len(block)
    return True


@dataclass
class Handover:
    """Read from ``start`` (None: the whole file) with the standard library."""

    start: int | None


class Scanner:
    """Chunked, vectorised split of a JSON array into element ranges (see the module doc)."""

    def __init__(self, path: Path, chunk_size: int, batch_bytes: int):
        self.path, self.chunk_size, self.batch_bytes = path, chunk_size, batch_bytes

    def __iter__(self) -> Iterator[Batch | Handover]:
        in_str, depth, trailing_bs = False, 0, 0
        seps: list[int] = []  # file offsets of the separators of elements not yet batched ('[', ',', ']')
        open_at: int | None = None  # file offsets of the array's '[' and ']', once seen
        close_at: int | None = None
        held: Batch | None = None  # the last batch, held back until the end of the file is checked
        deep: list[tuple[int, int]] = []  # byte ranges of the chunks nested DEEP levels or more
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
                if close_at is not None:  # only whitespace may follow the array
                    if not IS_WHITESPACE[b].all():
                        yield Handover(self._restart(held, seps, open_at))
                        return
                    continue
                quotes = _real_quotes(chunk, b, trailing_bs)
                rstripped = len(chunk.rstrip(b"\\"))
                trailing_bs = len(chunk) - rstripped + (trailing_bs if rstripped == 0 else 0)
                pos, kinds, before, depth, greatest = _structure(b, quotes, in_str, depth)
                if len(quotes) % 2:
                    in_str = not in_str
                if greatest >= DEEP:
                    deep.append((base, offset))
                top = (before == 0) | ((before == 1) & (kinds != 1))  # the array's brackets and commas
                for p, k, d in zip(pos[top].tolist(), kinds[top].tolist(), before[top].tolist()):
                    ch = chunk[p]
                    if d == 0 and open_at is None and ch == 0x5B:  # '['
                        if not IS_WHITESPACE[b[:p]].all():  # earlier chunks were whitespace (checked below)
                            yield Handover(None)
                            return
                        open_at = base + p
                        seps.append(base + p)
                    elif d == 1 and k == 2:
                        seps.append(base + p)
                    elif d == 1 and ch == 0x5D:  # ']'
                        close_at = base + p
                        seps.append(base + p)
                        if not IS_WHITESPACE[b[p + 1 :]].all():
                            yield Handover(self._restart(held, seps, open_at))
                            return
                        break
                    else:
                        yield Handover(self._restart(held, seps, open_at) if open_at is not None else None)
                        return
                if open_at is None:
                    if not IS_WHITESPACE[b].all():
                        yield Handover(None)
                        return
                    continue
                while len(seps) >= 2 and (close_at is not None or seps[-1] - seps[0] >= self.batch_bytes):
                    j = int(np.searchsorted(seps, seps[0] + self.batch_bytes))
                    j = max(1, min(j, len(seps) - 1))
                    batch = Batch.cut(os.path.abspath(self.path), seps, j, open_at, close_at)
                    batch.deep = any(a < batch.after and batch.base < b for a, b in deep)
                    del seps[:j]
                    if held is not None:
                        yield held
                    held = batch
        if close_at is None:
            yield Handover(self._restart(held, seps, open_at) if open_at is not None else None)
            return
        if held is not None:
            yield held

    @staticmethod
    def _restart(held: Batch | None, seps: list[int], open_at: int) -> int | None:
        """Where the standard library takes over: the first element not handed out yet (None: the
        whole file, when nothing has been handed out)."""
        if held is not None:
            return held.base + int(held.ranges[0, 0]) if len(held.ranges) and held.handed_before else None
        return None if seps[0] == open_at else seps[0] + 1


def _structure(b: np.ndarray, quotes: np.ndarray, in_str: bool, depth: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
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
    return pos[order], kinds, befores, last, greatest


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
