"""Stream the elements of a top-level JSON array, each with its byte offset.

Recipe1M's ``layer1.json`` is a single ~1.5 GB array; loading it whole costs
several GB of Python objects. :func:`iter_array` reads it in fixed-size chunks
and decodes one element at a time with the standard library's C scanner
(``json.JSONDecoder.raw_decode``), so memory is bounded by the chunk size plus
the largest single element, and every element, and every syntax error, comes
with its exact byte offset in the file.

Well-formed JSON that Python cannot turn into objects (a value nested deeper than the
recursion limit, an integer of more than ``sys.get_int_max_str_digits()`` digits) is one bad
element, not a broken file: it is yielded as an :class:`InvalidElement` naming the reason and,
when its text holds one, the record's ``"id"``, and the stream goes on after it.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["InvalidElement", "JSONStreamError", "iter_array"]

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"
# An error this close to the end of the buffer may just be a chunk boundary.
_TAIL = 32


class JSONStreamError(ValueError):
    """Malformed JSON; ``offset`` is the byte offset of the problem in ``path``."""

    def __init__(self, path: str | os.PathLike, offset: int, message: str):
        self.path = str(path)
        self.offset = offset
        self.reason = message
        super().__init__(f"{self.path}: malformed JSON at byte offset {offset}: {message}")

    def __reduce__(self):  # picklable across worker processes, with all three fields
        return (type(self), (self.path, self.offset, self.reason))


class InvalidElement:
    """An array element that is valid JSON but cannot be decoded: ``reason`` says why,
    ``record_id`` is its ``"id"`` string when one was found in its text (else None)."""

    __slots__ = ("reason", "record_id")

    def __init__(self, reason: str, record_id: str | None = None):
        self.reason, self.record_id = reason, record_id

    def __repr__(self) -> str:
        return f"InvalidElement({self.reason!r}, {self.record_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InvalidElement):
            return NotImplemented
        return (self.reason, self.record_id) == (other.reason, other.record_id)

    def __hash__(self) -> int:
        return hash((self.reason, self.record_id))


_ID_RE = re.compile(r'"id"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')
_STRUCTURE_RE = re.compile(r'["\[\]{}]')
_STRING_TAIL_RE = re.compile(r'(?:[^"\\]|\\.)*"', re.S)
_SCALAR_RE = re.compile(r'-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null')


def _element_end(buf: str, start: int) -> int | None:
    """End of the (syntactically valid) JSON value at ``buf[start]`` found without decoding it,
    or None when the buffer ends first. Used only for elements the decoder could not build."""
    if buf[start] not in "[{":
        if buf[start] == '"':
            m = _STRING_TAIL_RE.match(buf, start + 1)
            return m.end() if m else None
        m = _SCALAR_RE.match(buf, start)
        return m.end() if m and m.end() < len(buf) else None
    depth, pos = 0, start
    while True:
        m = _STRUCTURE_RE.search(buf, pos)
        if m is None:
            return None
        ch, pos = m.group(), m.end()
        if ch == '"':
            tail = _STRING_TAIL_RE.match(buf, pos)
            if tail is None:
                return None
            pos = tail.end()
        elif ch in "[{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return pos


def _why_undecodable(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return f"value nested too deeply to decode (more than ~{sys.getrecursionlimit()} levels)"
    return f"number too long to decode ({str(exc).split(':')[0]})"


class _Reader:
    """A growing text buffer over a binary file that maps positions to byte offsets."""

    def __init__(self, fh, path, chunk_size: int):
        self.fh = fh
        self.path = path
        self.chunk_size = chunk_size
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.eof = False
        self.bytes_read = 0
        # buf[0] sits at byte buf_byte0; `mark` is a position whose byte offset is known.
        self.buf_byte0 = 0
        self.mark_pos = 0
        self.mark_byte = 0
        self.first = True

    def more(self) -> bool:
        """Append one chunk to the buffer; False at end of file."""
        if self.eof:
            return False
        raw = self.fh.read(self.chunk_size)
        final = not raw
        try:
            text = self.decoder.decode(raw, final=final)
        except UnicodeDecodeError as exc:
            raise JSONStreamError(self.path, self.bytes_read + exc.start, "invalid UTF-8") from None
        if self.first:
            self.first = False
            if text.startswith("\ufeff"):  # a UTF-8 byte-order mark
                text = text[1:]
                self.buf_byte0 = self.mark_byte = 3
        self.bytes_read += len(raw)
        self.buf += text
        if final:
            self.eof = True
        return True

    def byte_offset(self, pos: int) -> int:
        if pos < self.mark_pos:  # never happens in forward scanning; kept correct anyway
            self.mark_pos, self.mark_byte = 0, self.buf_byte0
        seg = self.buf[self.mark_pos : pos]
        self.mark_byte += len(seg) if seg.isascii() else len(seg.encode("utf-8"))
        self.mark_pos = pos
        return self.mark_byte

    def compact(self, pos: int) -> int:
        """Drop buf[:pos]; returns the new position (0)."""
        self.buf_byte0 = self.byte_offset(pos)
        self.buf = self.buf[pos:]
        self.mark_pos, self.mark_byte = 0, self.buf_byte0
        return 0

    def skip_ws(self, pos: int) -> int:
        while True:
            n = len(self.buf)
            while pos < n and self.buf[pos] in _WHITESPACE:
                pos += 1
            if pos < n or not self.more():
                return pos

    def error(self, pos: int, message: str) -> JSONStreamError:
        return JSONStreamError(self.path, self.byte_offset(pos), message)


def iter_array(
    path: str | os.PathLike, *, chunk_size: int = 8 << 20, max_element: int = 256 << 20, start: int | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(byte_offset, element)`` for each element of the JSON array in ``path``.

    Raises :class:`JSONStreamError` naming the byte offset when the file is not a
    well-formed JSON array, or when one element is larger than ``max_element`` bytes. An
    element Python cannot decode (see the module notes) comes as an :class:`InvalidElement`.
    With ``start``, scanning begins at that byte offset as if an element were expected
    there (the first element, or one after a ``,``): :mod:`.jsonfast` hands the standard
    library an element it will not decode itself, or the rest of a file it cannot split.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        r = _Reader(fh, path, chunk_size)
        if start is None:
            pos = r.skip_ws(0)
            if pos >= len(r.buf):
                raise r.error(pos, "empty file; expected a JSON array")
            if r.buf[pos] != "[":
                raise r.error(pos, "expected '[' at the start of a JSON array")
            pos = r.skip_ws(pos + 1)
            empty = pos < len(r.buf) and r.buf[pos] == "]"
        else:
            fh.seek(start)
            r.first, r.bytes_read, r.buf_byte0, r.mark_byte = False, start, start, start
            pos, empty = r.skip_ws(0), False
        if empty:
            pos += 1
        else:
            while True:
                if pos > (1 << 20) and pos > len(r.buf) // 2:
                    pos = r.compact(pos)
                if pos >= len(r.buf):
                    raise r.error(pos, "unexpected end of file inside the array")
                start = pos
                while True:
                    try:
                        element, end = _DECODER.raw_decode(r.buf, start)
                        # A number or literal at the very end of the buffer may continue.
                        if end >= len(r.buf) and not r.eof and not isinstance(element, (dict, list, str)):
                            raise json.JSONDecodeError("truncated", r.buf, end)
                        break
                    except json.JSONDecodeError as exc:
                        truncated = exc.pos >= len(r.buf) - _TAIL or exc.msg.startswith("Unterminated string")
                        if truncated and not r.eof:
                            if len(r.buf) - start > max_element:
                                raise r.error(start, f"element larger than {max_element} bytes") from None
                            r.more()
                            continue
                        raise r.error(exc.pos, exc.msg) from None
                    except (RecursionError, ValueError) as exc:  # valid JSON Python cannot build
                        why = _why_undecodable(exc)
                        while (end := _element_end(r.buf, start)) is None and not r.eof:
                            if len(r.buf) - start > max_element:
                                raise r.error(start, f"element larger than {max_element} bytes") from None
                            grown = 2 * len(r.buf)  # doubling: each rescan costs no more than the reads
                            while len(r.buf) < grown and r.more():
                                pass
                        if end is None:
                            raise r.error(len(r.buf), "unexpected end of file inside an element") from None
                        found = _ID_RE.search(r.buf, start, end)
                        element = InvalidElement(why, found.group(1) if found else None)
                        break
                yield r.byte_offset(start), element
                pos = r.skip_ws(end)
                if pos >= len(r.buf):
                    raise r.error(pos, "unexpected end of file; expected ',' or ']'")
                ch = r.buf[pos]
                if ch == "]":
                    pos += 1
                    break
                if ch != ",":
                    raise r.error(pos, f"expected ',' or ']' after an array element, found {ch!r}")
                pos = r.skip_ws(pos + 1)
        pos = r.skip_ws(pos)
        if pos < len(r.buf):
            raise r.error(pos, "extra data after the end of the array")
