"""`recipekit serve`: a small local web page over a run's search index (docs/web.md).

Standard library only (:mod:`http.server` handlers on a bounded worker pool, see
:class:`RecipeServer`): the page is one static HTML
file with its script, style and icon (``search/static/``, no CDN: it works offline), and JSON
or image endpoints over one :class:`~recipekit.search.SearchEngine`:

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

import ipaddress
import json
import os
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .errors import SearchError

__all__ = ["DEFAULT_MAX_UPLOAD", "RecipeServer", "host_allowed", "make_server", "open_engine", "serve"]

DEFAULT_MAX_UPLOAD = 8 * 2**20  # bytes of one photo upload
DEFAULT_BACKLOG = 1024  # listen queue (Python's default of 5 overflows under a burst of clients)
DEFAULT_THREADS = 16  # workers answering requests (queries themselves run one at a time)
DEFAULT_IDLE_TIMEOUT = 15.0  # seconds a connection may wait without sending a request
DEFAULT_REQUEST_TIMEOUT = 30.0  # seconds a request (headers, then body) may take to arrive
DEFAULT_MAX_CONNECTIONS = 1000  # open connections at once; more get 503
MAX_HEADER_BYTES = 65536
# The page loads only its own script, style and photos; nothing may frame it.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
MAX_K = 50
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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


def _static(name: str) -> bytes:
    return resources.files("recipekit.search").joinpath("static", name).read_bytes()


def _int_param(params: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    raw = (params.get(name) or [""])[-1].strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(400, f"{name} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise RequestError(400, f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _terms(params: dict[str, list[str]], name: str) -> str:
    return ",".join(v for v in params.get(name, []) if v.strip())


def _photo_url(recipe_id: str, i: int) -> str:
    return f"/api/photo/{quote(recipe_id, safe='')}/{i}"


def _hits_json(hits) -> list[dict[str, Any]]:
    rows = []
    for hit in hits:
        row = hit.to_dict()
        i = hit.image_index if hit.image_index is not None else (0 if hit.image_paths else None)
        row["photo"] = _photo_url(hit.recipe_id, i) if i is not None else None
        rows.append(row)
    return rows


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The first file part (or the part named ``image``/``photo``) of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise RequestError(400, "malformed multipart/form-data upload (no boundary or no parts)")
    for part in message.iter_parts():
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") in ("image", "photo"):
            return part.get_payload(decode=True) or b""
    raise RequestError(400, "the multipart upload has no file part (send the photo as field 'image')")


class Handler(BaseHTTPRequestHandler):
    server: "RecipeServer"
    server_version = "recipekit-serve"
    protocol_version = "HTTP/1.1"
    rbufsize = 0  # no read-ahead: what follows this request stays in the socket for the next turn

    # -- plumbing --------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} - {format % args}")

    def _send(self, status: int, body: bytes, content_type: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def end_headers(self) -> None:  # every answer, the base class's own errors included
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def handle(self) -> None:
        """One request per turn: the server hands the connection back to its waiting room
        between keep-alive requests, so an idle connection holds no worker."""
        self.close_connection = True
        self.handle_one_request()

    def _body(self, length: int) -> bytes:
        """Exactly ``length`` bytes of the body, within the server's request timeout."""
        deadline = time.monotonic() + self.server.request_timeout
        chunks, got = [], 0
        while got < length:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestError(408, f"request timeout: the upload did not arrive in {self.server.request_timeout:g} s")
            self.connection.settimeout(left)
            try:
                chunk = self.rfile.read(min(length - got, 1 << 20))
            except TimeoutError:
                raise RequestError(408, "request timeout: the upload stalled") from None
            if not chunk:
                raise RequestError(400, f"the upload ended after {got:,} of {length:,} bytes")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _dispatch(self, routes: dict[str, Callable[[str, dict[str, list[str]]], None]]) -> None:
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        try:
            host = self.headers.get("Host")
            if not host_allowed(host, self.server.allowed_hosts):
                raise RequestError(403, f"host {host!r} is not served here (a guard against DNS rebinding): open "
                                        "the page by IP address or localhost, or start serve with --allowed-host NAME")
            for prefix, route in routes.items():
                if url.path == prefix or (prefix != "/" and prefix.endswith("/") and url.path.startswith(prefix)):
                    return route(url.path[len(prefix):], params)
            raise RequestError(404, f"no such page or endpoint: {url.path}")
        except RequestError as exc:
            self._error(exc.status, str(exc))
        except SearchError as exc:
            self._error(400, str(exc))
        except Exception as exc:  # a bug or a broken file: say so, keep serving
            self.log_error("error on %s: %r", self.path, exc)
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _error(self, status: int, message: str) -> None:
        if status == 413 or self.command == "POST":
            self.close_connection = True  # the body may be unread: do not reuse the connection
        self._json(status, {"error": message})

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch({"/": self._page, "/static/": self._static_file, "/api/classes": self._classes,
                        "/api/ingredients": self._ingredients, "/api/photo/": self._photo,
                        "/api/recipe/": self._recipe, "/favicon.ico": self._favicon})

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch({"/api/image": self._image})

    def _page(self, _rest: str, _params) -> None:
        self._send(200, _static("index.html"), STATIC["index.html"])

    def _favicon(self, _rest: str, _params) -> None:
        self._send(200, _static("favicon.svg"), STATIC["favicon.svg"], cache=True)

    def _static_file(self, name: str, _params) -> None:
        if name not in STATIC or name == "index.html":
            raise RequestError(404, f"no such file: /static/{name}")
        self._send(200, _static(name), STATIC[name], cache=True)

    def _classes(self, _rest: str, _params) -> None:
        engine = self.server.engine
        self._json(200, {"classes": engine.classes(), "partitions": engine.partitions(), "recipes": len(engine),
                         "images": int(engine.meta["counts"]["images"]), "run": str(engine.meta["checkpoint"]["path"]),
                         "max_upload_bytes": self.server.max_upload_bytes})

    def _ingredients(self, _rest: str, params) -> None:
        q = " ".join(params.get("q", [])).strip()
        if not q:
            raise RequestError(400, "empty query: type at least one ingredient (e.g. tomato, basil)")
        without, remove, exclude = _terms(params, "without"), _terms(params, "remove"), _terms(params, "exclude")
        class_name = (params.get("class") or [""])[-1].strip() or None
        partition = (params.get("partition") or [""])[-1].strip() or None
        k = _int_param(params, "k", 10, 1, MAX_K)
        target = (params.get("target") or ["images"])[-1]
        with self.server.lock:
            hits = self.server.engine.by_ingredients(q, without=without, remove=remove, exclude=exclude, k=k,
                                                     class_name=class_name, partition=partition, target=target)
        self._json(200, {"query": {"ingredients": q, "without": without, "remove": remove, "exclude": exclude,
                                   "class": class_name, "partition": partition or "all", "k": k},
                         "count": len(hits), "hits": _hits_json(hits)})

    def _recipe(self, rest: str, _params) -> None:
        if not rest or "/" in rest:
            raise RequestError(404, f"recipe URLs are /api/recipe/<recipe id>, not {self.path}")
        try:
            with self.server.lock:
                recipe = self.server.engine.recipe(unquote(rest))
        except SearchError as exc:
            raise RequestError(404, str(exc)) from None
        recipe["photos"] = [_photo_url(recipe["recipe_id"], i) for i in recipe["image_positions"]]
        self._json(200, recipe)

    def _photo(self, rest: str, _params) -> None:
        recipe_id, _, i = rest.rpartition("/")
        if not recipe_id or not i.isdigit():
            raise RequestError(404, f"photo URLs are /api/photo/<recipe id>/<i>, not {self.path}")
        try:
            data = self.server.engine.image_bytes(unquote(recipe_id), int(i))
        except SearchError as exc:
            raise RequestError(404, str(exc)) from None
        self._send(200, data, "image/jpeg", cache=True)

    def _image(self, _rest: str, params) -> None:
        limit = self.server.max_upload_bytes
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise RequestError(411, "send the photo with a Content-Length header")
        length = int(length)
        if length > limit:  # refused before a byte of the body is read
            raise RequestError(413, f"upload too large: {length:,} bytes > limit {limit:,} bytes")
        if length == 0:
            raise RequestError(400, "empty upload: choose a photo (JPEG, PNG or WebP)")
        k = _int_param(params, "k", 10, 1, MAX_K)
        partition = (params.get("partition") or [""])[-1].strip() or None
        exclude = _terms(params, "exclude")
        body = self._body(length)
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            body = _multipart_file(content_type, body)
            if not body:
                raise RequestError(400, "empty upload: choose a photo (JPEG, PNG or WebP)")
        with self.server.lock:
            hits = self.server.engine.by_image(body, k=k, exclude=exclude, partition=partition)
        self._json(200, {"query": {"bytes": len(body), "exclude": exclude, "partition": partition or "all", "k": k},
                         "count": len(hits), "hits": _hits_json(hits)})


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


class _Waiting:
    """Connections with no complete request yet, watched by one thread with a selector: a
    connection goes to a worker when its request headers are all there (peeked, not read),
    is closed when idle too long, and gets 408 when its request trickles in too slowly."""

    RECHECK_S = 0.05  # a connection with part of its headers is looked at again this much later

    def __init__(self, server: RecipeServer):
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.incoming: deque = deque()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="recipekit-serve-waiting", daemon=True)
        self.thread.start()

    def add(self, sock, address) -> None:
        self.incoming.append((sock, address))
        try:
            self.wake_w.send(b"\0")
        except OSError:
            pass

    def stop(self) -> None:
        self.stopped = True
        try:
            self.wake_w.send(b"\0")
        except OSError:
            pass
        self.thread.join(timeout=5)

    def _run(self) -> None:
        server = self.server
        # sock -> [address, idle since, first byte of a partial request (or None), recheck at (or None)]
        state: dict = {}
        try:
            while not self.stopped:
                now = time.monotonic()
                while self.incoming:
                    sock, address = self.incoming.popleft()
                    sock.setblocking(False)
                    state[sock] = [address, now, None, None]
                    self.selector.register(sock, selectors.EVENT_READ, None)
                for key, _ in self.selector.select(timeout=self.RECHECK_S):
                    sock = key.fileobj
                    if sock is self.wake_r:
                        try:
                            while self.wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    entry = state[sock]
                    try:
                        head = sock.recv(MAX_HEADER_BYTES, socket.MSG_PEEK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        head = b""
                    self.selector.unregister(sock)
                    if not head:  # the client closed it
                        del state[sock]
                        server._close(sock)
                    elif b"\r\n\r\n" in head or b"\n\n" in head or len(head) >= MAX_HEADER_BYTES:
                        del state[sock]
                        try:
                            server.pool.submit(server._serve_one, sock, entry[0])
                        except RuntimeError:  # shutting down
                            server._close(sock)
                    else:  # part of a request: look again a little later, not in a busy loop
                        entry[2] = entry[2] or time.monotonic()
                        entry[3] = time.monotonic() + self.RECHECK_S
                now = time.monotonic()
                for sock, entry in list(state.items()):
                    address, since, first, recheck = entry
                    if first is not None and now - first > server.request_timeout:
                        self._drop(sock, state, 408, "request timeout: the request did not arrive in "
                                                     f"{server.request_timeout:g} s")
                    elif first is None and now - since > server.idle_timeout:
                        self._drop(sock, state)
                    elif recheck is not None and now >= recheck:
                        entry[3] = None
                        self.selector.register(sock, selectors.EVENT_READ, None)
        finally:
            for sock in list(state):
                self._drop(sock, state)
            self.selector.close()
            self.wake_r.close()
            self.wake_w.close()

    def _drop(self, sock, state: dict, status: int | None = None, message: str = "") -> None:
        entry = state.pop(sock)
        if entry[3] is None:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        if status is not None:
            _raw_answer(sock, status, message)
        self.server._close(sock)


def _raw_answer(sock, status: int, message: str) -> None:
    """A whole JSON error answer written straight to a socket (no worker involved), then close."""
    body = json.dumps({"error": message}).encode("utf-8")
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n" + "".join(f"{k}: {v}\r\n" for k, v in SECURITY_HEADERS)
            + "\r\n").encode("latin-1")
    try:
        sock.setblocking(True)
        sock.settimeout(1.0)
        sock.sendall(head + body)
    except OSError:
        pass


def _allowed_hosts(bound: str, extra: Iterable[str]) -> frozenset[str]:
    names = {"localhost", "localhost.localdomain", *(h.strip().lower().rstrip(".") for h in extra if h.strip())}
    if bound and bound not in ("0.0.0.0", "::"):
        names.add(bound.lower())
    return frozenset(names)


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header names this server: an IP address (a DNS-rebinding page
    reaches the server under a host *name* of the attacker's), ``localhost``, the bound name
    or one of ``allowed`` (``*`` allows any)."""
    if "*" in allowed:
        return True
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in allowed


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
