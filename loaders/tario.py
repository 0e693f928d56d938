"""Tar shards to samples, without ``tarfile``: the loaders' ``tar_samples`` stage.

The stage does what ``webdataset.tarfile_to_samples`` does (members grouped into samples by
key: ``{key}.{ext}`` -> ``sample[ext]``, plus ``__key__`` and ``__url__``) with a header
parser of its own: Python's ``tarfile`` builds a ``TarInfo`` per member in pure Python,
which cost about a third of a millisecond per sample (three to six members) in our profile,
a quarter of a worker's time (docs/benchmarks.md). Here a member costs one ``read`` of its
512-byte header, a checksum and two slices.

It reads POSIX ustar members, GNU long names (``L``) and pax ``path``/``size`` records
(``x``; global ``g`` headers are ignored); directories, links and other special members
are skipped. A bad checksum or a truncated member raises ``ValueError`` naming the shard and
byte offset. Local paths are opened directly; ``pipe:`` commands and URLs as
:func:`recipekit.loaders.remote.open_shard` says (webdataset's ``gopen``, fsspec).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from .remote import open_shard

__all__ = ["iter_members", "photo_key", "split_key", "tar_samples"]

_BLOCK = 512
_KEY_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # key up to the first dot of the file name


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    field = field.split(b"\0", 1)[0].strip()
    return int(field, 8) if field else 0


def _pax(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8")] = value.decode("utf-8")
        pos += length
    return out


def iter_members(stream: BinaryIO, url: str = "") -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file of a tar stream, in order."""
    read = stream.read
    offset = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = read(_BLOCK)
        if not header:
            return
        if len(header) < _BLOCK:
            raise ValueError(f"{url}: truncated tar header at byte {offset}")
        if header.count(0) == _BLOCK:  # end-of-archive block
            return
        stored, unsigned = _number(header[148:156]), sum(header) - sum(header[148:156]) + 8 * 32
        if stored != unsigned and stored != unsigned - 256 * sum(b > 127 for b in header[:148] + header[156:]):
            raise ValueError(f"{url}: bad tar header checksum at byte {offset} (not a tar, or corrupt)")
        size = int(pax["size"]) if "size" in pax else _number(header[124:136])
        kind = header[156:157]
        data = read(size)
        if len(data) < size:
            raise ValueError(f"{url}: truncated tar member at byte {offset}")
        pad = -size % _BLOCK
        if pad:
            read(pad)
        offset += _BLOCK + size + pad
        if kind in (b"0", b"\0", b"7"):
            if "path" in pax:
                name = pax["path"]
            elif long_name is not None:
                name = long_name
            else:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8")
                if header[257:262] == b"ustar":
                    prefix = header[345:500].split(b"\0", 1)[0]
                    if prefix:
                        name = prefix.decode("utf-8") + "/" + name
            yield name, data
        elif kind == b"L":
            long_name = data.split(b"\0", 1)[0].decode("utf-8")
            continue
        elif kind == b"x":
            pax = _pax(data)
            continue
        long_name, pax = None, {}


def split_key(name: str) -> tuple[str, str] | tuple[None, None]:
    """``dir/abc.0.jpg`` -> (``dir/abc``, ``0.jpg``), as webdataset splits names."""
    m = _KEY_RE.match(name)
    return (m.group(1), m.group(2)) if m else (None, None)


def photo_key(sample: dict[str, Any]) -> tuple[str, int]:
    """(recipe key, photo index) of a per-image sample keyed ``{recipe}_{k}``."""
    key = sample["__key__"]
    recipe, sep, k = key.rpartition("_")
    if not sep or not recipe or not k.isdigit():
        raise ValueError(f"{sample.get('__url__')}: per-image sample {key!r} is not keyed "
                         "{recipe id}_{photo index} (see the shard layouts in docs/artefacts.md)")
    return recipe, int(k)


class tar_samples:
    """Stage: ``{"url"}`` items -> samples ``{"__key__", "__url__", ext: bytes, ...}``.
    ``handler(exc)`` decides on a shard that fails: True skips the rest of it, False (or
    raising) stops; the default re-raises."""

    def __init__(self, handler: Callable[[Exception], bool] | None = None):
        self.handler = handler

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in src:
            url = os.fspath(item["url"])
            try:
                with open_shard(url) as stream:
                    sample: dict[str, Any] | None = None
                    for name, data in iter_members(stream, url):
                        key, ext = split_key(name)
                        if key is None:
                            continue
                        if sample is None or sample["__key__"] != key:
                            if sample is not None:
                                yield sample
                            sample = {"__key__": key, "__url__": url}
                        sample[ext.lower()] = data
                    if sample is not None:
                        yield sample
            except Exception as exc:
                if self.handler is None or not self.handler(exc):
                    raise
