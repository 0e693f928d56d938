"""Shards anywhere: local paths, ``file://``, ``pipe:COMMAND`` and every URL fsspec can read.

The loaders read a shard as one sequential stream (:func:`open_shard`), so a shard can live
on a web server (``https://host/shards/train/train-{000000..000031}.tar``), in a bucket
(``s3://bucket/shards/...``, with ``pip install s3fs``; ``gs://`` with gcsfs) or come out
of a command (``pipe:curl -s -f https://...``, ``pipe:aws s3 cp s3://... -``). Local
paths and ``file://`` are opened directly; ``pipe:`` goes through webdataset's ``gopen``;
everything else through ``fsspec.open`` (HTTP(S) as a streaming download: no range requests).

Sample counts (the fixed epoch length and the split over ranks need them) come from the
``sizes.json`` beside the shards, fetched the same way (:func:`read_json`); ``pipe:`` shards
have none. A split folder is a location holding ``sizes.json`` and the tars it names:
``PREPARED/shards/{split}`` or a copy of it anywhere (:func:`split_shards`).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

__all__ = ["is_remote", "join_url", "local_path", "names_shards", "open_shard", "read_json", "split_shards"]

_STREAMING = ("http", "https")  # fsspec file systems opened as a plain download (block_size=0)
_CHUNK = 1 << 20  # bytes per read of a remote or piped shard


def local_path(url: str | os.PathLike) -> str | None:
    """The local path of a plain path or a ``file://`` URL; None for anything else."""
    url = os.fspath(url)
    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    if url.startswith("pipe:") or "://" in url:
        return None
    return url


def is_remote(url: str | os.PathLike) -> bool:
    """Whether ``url`` is read through ``pipe:`` or fsspec (not a local path or ``file://``)."""
    return local_path(url) is None


def join_url(base: str, name: str) -> str:
    """``base/name`` for a URL or a local path (no ``os.path`` on URLs: ``//`` must stay)."""
    return base.rstrip("/") + "/" + name


def names_shards(location: str) -> bool:
    """Whether ``location`` names shards itself (a ``.tar``, a brace pattern, a ``pipe:``)
    rather than a folder that holds them."""
    return location.startswith("pipe:") or "{" in location or location.rstrip("/").endswith(".tar")


def _fsspec_open(url: str, what: str):
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - a train extra dependency
        raise ImportError(f"{url}: reading {what} from a URL needs fsspec (pip install 'recipekit[train]')") from exc
    scheme = urlparse(url).scheme
    kwargs = {"block_size": 0} if scheme in _STREAMING else {}
    try:
        return fsspec.open(url, "rb", **kwargs).open()
    except ImportError as exc:  # fsspec names the package of the scheme (s3fs, gcsfs, aiohttp...)
        raise ImportError(f"{url}: the {scheme}:// file system needs a package: {exc}") from exc
    except FileNotFoundError as exc:
        cause = exc.__cause__  # fsspec's HTTP file system reports a refused connection as not found too
        if isinstance(cause, (OSError, TimeoutError)) and not isinstance(cause, FileNotFoundError):
            raise ConnectionError(f"{url}: cannot open {what}: {type(cause).__name__}: {cause}") from exc
        raise FileNotFoundError(f"{url}: not found ({what})") from exc
    except Exception as exc:  # unreachable host, refused connection, HTTP 403/500, bad credentials
        raise OSError(f"{url}: cannot open {what}: {type(exc).__name__}: {exc}") from exc


class _Raw(io.RawIOBase):
    """A raw stream over an fsspec file or a ``pipe:`` whose errors name the URL (a dropped
    connection, a command's error status). :func:`open_shard` buffers it: an HTTP body hands
    out what has arrived, and each read of fsspec's HTTP file is a round trip to its event-loop
    thread, so the tar parser's small reads are served from 1 MiB chunks instead
    (benchmarks/remote_shards.py)."""

    def __init__(self, stream: Any, url: str):
        super().__init__()
        self.stream, self.url = stream, url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.stream.read(len(buffer))
        except Exception as exc:
            raise OSError(f"{self.url}: reading the shard failed: {type(exc).__name__}: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.stream.close()
        except Exception as exc:  # a pipe: command that exited with an error status
            raise OSError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        finally:
            super().close()


def open_shard(url: str | os.PathLike) -> BinaryIO:
    """A binary stream of one shard (errors name the URL)."""
    url = os.fspath(url)
    path = local_path(url)
    if path is not None:
        return open(path, "rb", buffering=1 << 20)
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        return io.BufferedReader(_Raw(gopen(url, "rb"), url), buffer_size=_CHUNK)
    return io.BufferedReader(_Raw(_fsspec_open(url, "shard"), url), buffer_size=_CHUNK)


def read_json(url: str, *, missing_ok: bool = True) -> Any:
    """The JSON document at a path or URL; None when it does not exist and ``missing_ok``."""
    path = local_path(url)
    try:
        if path is not None:
            with open(path, "rb") as f:
                data = f.read()
        else:
            with _fsspec_open(url, "JSON") as f:
                data = f.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{url}: not valid JSON ({exc})") from exc


def split_shards(location: str | os.PathLike, split: str) -> str:
    """The shards of ``split`` under ``location``: ``location`` itself when it names shards
    (:func:`names_shards`), else the split folder ``location/{split}`` (a copy of
    ``PREPARED/shards``), or ``location`` when it is that split folder already (it holds a
    ``sizes.json`` and ``location/{split}`` does not). Errors name what was looked for."""
    location = os.fspath(location)
    if names_shards(location):
        return location
    base = location.rstrip("/") or location
    folder = join_url(base, split)
    path = local_path(folder)
    if path is not None:
        if os.path.isdir(path):
            return folder
        if os.path.isfile(os.path.join(local_path(base), "sizes.json")):
            return base
        raise FileNotFoundError(f"{folder}: no shards of split {split!r} (expected a folder holding sizes.json "
                                "and the tars: a copy of PREPARED/shards)")
    if read_json(join_url(folder, "sizes.json")) is not None:
        return folder
    if read_json(join_url(base, "sizes.json")) is not None:
        return base
    raise FileNotFoundError(f"{join_url(folder, 'sizes.json')}: not found; shards at a URL need the sizes.json "
                            f"of their split folder (upload PREPARED/shards/{split} whole), or give a brace pattern "
                            f"of the tars")
