"""`recipekit serve`: a small local web page over a run's search index (docs/web.md).

Standard library only (:mod:`http.server` handlers on a bounded worker pool, see
:class:`RecipeServer`; the handler and its endpoints live in :mod:`.server_handler`, the
limits, security headers, Host check and connection waiting room in :mod:`.server_limits`):
the page is one static HTML file with its script, style and icon (``search/static/``, no CDN:
it works offline), and JSON or image endpoints over one :class:`~recipekit.search.SearchEngine`:

* ``GET /`` - the page; ``GET /static/<file>`` - its script, style and icon (also ``/favicon.ico``);
* ``GET /api/classes`` - ``{"classes": [...], "partitions": [...], "recipes": N, "images": N, "run": ...}``;
* ``POST /api/image?k=10&partition=test`` - a photo (the raw body, or ``multipart/form-data``) -> recipes;
* ``GET /api/ingredients?q=tomato,basil&remove=garlic&exclude=onion&class=tomato+soup&partition=test&k=10``
  -> dish photos (``without=X``, the older parameter, is ``remove=X&exclude=X``);
* ``GET /api/recipe/<recipe id>`` - one recipe: title, raw ingredient lines, instructions, url, photo URLs;
* ``GET /api/photo/<recipe id>/<i>`` - photo ``i`` of a recipe (JPEG bytes from its shard).

Results are ``{"hits": [Hit.to_dict() + "photo": url or null], ...}``; every bad request gets
``{"error": "..."}`` with a 4xx status (413 for an upload over ``max_upload_bytes``, refused
from its Content-Length before the body is read) and the server goes on serving. Queries run
one at a time (a lock around the engine): the model and FAISS are not shared between threads,
while the page, its files and the photos are served concurrently.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import SearchError
from .server_handler import MAX_K, STATIC, Handler, RequestError  # noqa: F401 (re-exported)
from .server_limits import (  # noqa: F401 (re-exported)
    DEFAULT_BACKLOG, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_UPLOAD, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_THREADS, MAX_HEADER_BYTES, SECURITY_HEADERS, _allowed_hosts, _raw_answer, _Waiting, host_allowed,
)

__all__ = ["DEFAULT_MAX_UPLOAD", "RecipeServer", "host_allowed", "make_server", "open_engine", "serve"]


def open_engine(run: str | os.PathLike, data: str | os.PathLike | None = None, *, index: str | os.PathLike | None = None,
                device: Any = "cpu", max_image_bytes: int = DEFAULT_MAX_UPLOAD, build: bool = True,
                echo: Callable[[str], None] | None = None):
    """The :class:`SearchEngine` of ``run``. When the index folder (``index`` or ``RUN/index``)
    has no finished index and ``build`` is true, it is built first with
    :func:`~recipekit.search.build_index` on ``data`` (default: the run's prepared folder);
    with ``build=False`` a :class:`SearchError` says to run `recipekit index`. A ``data`` other
    than the one the index was built on is an error, as is an index of another checkpoint."""
    from .index import build_index, resolve_run
    from .query import SearchEngine

    _, default_index = resolve_run(run)
    index_dir = Path(index) if index is not None else default_index
    if not (index_dir / "meta.json").is_file():
        if not build:
            raise SearchError(f"{index_dir}: no index; build it with `recipekit index {run}`")
        if echo:
            echo(f"no index in {index_dir}: building it (once) with the model of {run} ...")
        build_index(run, data, index_dir, device=device, progress=echo is not None)
    engine = SearchEngine.open(run, index_dir, device=device, max_image_bytes=max_image_bytes)
    if data is not None and Path(data).resolve() != Path(engine.prepared).resolve():
        raise SearchError(f"index/data mismatch: {index_dir} was built on {engine.prepared}, not {data}; "
                          f"rebuild it with `recipekit index {run} {data}` or pass --index")
    return engine


class RecipeServer(socketserver.TCPServer):
    """The HTTP server holding the engine. ``url`` is where it listens; :meth:`start` serves
    from a daemon thread (tests), :meth:`stop` shuts it down.

    Built to hold under load and against slow or idle clients (docs/web.md): a listen backlog of
    ``backlog`` (1024) connections; a fixed pool of ``threads`` workers; a connection reaches a
    worker only once its request headers have fully arrived, and goes back to waiting (holding
    no worker) between keep-alive requests; a connection idle for ``idle_timeout`` seconds is
    closed, one whose request takes longer than ``request_timeout`` to arrive gets 408; past
    ``max_connections`` open connections a new one gets 503 at once. Every answer carries a
    Content-Security-Policy, X-Frame-Options and nosniff, and a request whose Host header is
    not this machine's (a DNS-rebinding page) is refused with 403 (see ``allowed_hosts``)."""

    allow_reuse_address = True
    request_queue_size = DEFAULT_BACKLOG

    def __init__(self, engine, address: tuple[str, int], *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
                 log: Callable[[str], None] | None = None, threads: int = DEFAULT_THREADS,
                 backlog: int = DEFAULT_BACKLOG, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 allowed_hosts: Iterable[str] = ()):
        if threads < 1 or backlog < 1 or max_connections < 1 or idle_timeout <= 0 or request_timeout <= 0:
            raise ValueError("threads, backlog, max_connections, idle_timeout and request_timeout must be positive")
        self.request_queue_size = int(backlog)
        super().__init__(address, Handler)
        self.engine, self.max_upload_bytes, self.log = engine, int(max_upload_bytes), log
        self.threads, self.idle_timeout, self.request_timeout = int(threads), float(idle_timeout), float(request_timeout)
        self.max_connections = int(max_connections)
        self.allowed_hosts = _allowed_hosts(self.server_address[0], allowed_hosts)
        self.lock = threading.Lock()  # one query at a time through the engine
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="recipekit-serve-worker")
        self._waiting = _Waiting(self)
        self._open = 0
        self._open_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    @property
    def open_connections(self) -> int:
        return self._open

    # -- connections -----------------------------------------------------------------------
    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if full:
            _raw_answer(request, 503, "too many connections: try again in a moment")
            super().shutdown_request(request)
            return
        self._waiting.add(request, client_address)

    def _close(self, sock) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        with self._open_lock:
            self._open -= 1

    def _serve_one(self, sock, client_address) -> None:
        """A worker: answer the one request whose headers have arrived, then hand the
        connection back to the waiting room (keep-alive) or close it."""
        keep = False
        try:
            sock.setblocking(True)
            sock.settimeout(self.request_timeout)
            handler = Handler(sock, client_address, self)
            keep = not handler.close_connection
        except Exception:  # a reset or timeout mid-answer: the connection is done
            keep = False
        if keep:
            self._waiting.add(sock, client_address)
        else:
            self._close(sock)

    # -- life ------------------------------------------------------------------------------
    def start(self) -> "RecipeServer":
        self._thread = threading.Thread(target=self.serve_forever, name="recipekit-serve", daemon=True)
        self._thread.start()
        return self

    def server_close(self) -> None:
        super().server_close()
        self._waiting.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def make_server(run: str | os.PathLike, data: str | os.PathLike | None = None, *, host: str = "127.0.0.1",
                port: int = 8000, index: str | os.PathLike | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
                device: Any = "cpu", build: bool = True, log: Callable[[str], None] | None = None,
                echo: Callable[[str], None] | None = None, allowed_hosts: Iterable[str] = (),
                **limits: Any) -> RecipeServer:
    """Open the engine (building a missing index, see :func:`open_engine`) and bind
    ``host:port`` (port 0: any free port); not serving yet: call ``serve_forever()`` or
    ``start()``. ``log``: where request lines go (None: nowhere). ``allowed_hosts``: host names
    besides localhost and IP addresses the page may be opened under. ``limits``: ``threads``,
    ``backlog``, ``idle_timeout``, ``request_timeout``, ``max_connections`` (:class:`RecipeServer`)."""
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be >= 1, not {max_upload_bytes}")
    engine = open_engine(run, data, index=index, device=device, max_image_bytes=max_upload_bytes, build=build, echo=echo)
    try:
        return RecipeServer(engine, (host, int(port)), max_upload_bytes=max_upload_bytes, log=log,
                            allowed_hosts=allowed_hosts, **limits)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(run: str | os.PathLike, data: str | os.PathLike | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          index: str | os.PathLike | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD, device: Any = "cpu",
          echo: Callable[[str], None] = print, allowed_hosts: Iterable[str] = (), **limits: Any) -> None:
    """Serve the page until Ctrl-C (see :func:`make_server`); request lines go to ``echo``."""
    server = make_server(run, data, host=host, port=port, index=index, max_upload_bytes=max_upload_bytes,
                         device=device, log=echo, echo=echo, allowed_hosts=allowed_hosts, **limits)
    engine = server.engine
    echo(f"recipekit serve: {len(engine):,} recipes, {engine.meta['counts']['images']:,} photos "
         f"(index {engine.index_dir}); open {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("stopped")
    finally:
        server.server_close()
