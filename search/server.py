"""`recipekit serve`: a small local web page over a run's search index (docs/web.md).

Standard library only (:class:`http.server.ThreadingHTTPServer`): the page is one static HTML
file with its script and style (``search/static/``, no CDN: it works offline), and five JSON
or image endpoints over one :class:`~recipekit.search.SearchEngine`:

* ``GET /`` - the page; ``GET /static/<file>`` - its script and style;
* ``GET /api/classes`` - ``{"classes": [...], "recipes": N, "images": N, "run": ...}``;
* ``POST /api/image?k=10`` - a photo (the raw body, or ``multipart/form-data``) -> recipes;
* ``GET /api/ingredients?q=tomato,basil&without=garlic&class=tomato+soup&k=10`` -> dish photos;
* ``GET /api/photo/<recipe id>/<i>`` - photo ``i`` of a recipe (JPEG bytes from its shard).

Results are ``{"hits": [Hit.to_dict() + "photo": url or null], ...}``; every bad request gets
``{"error": "..."}`` with a 4xx status (413 for an upload over ``max_upload_bytes``, refused
from its Content-Length before the body is read) and the server goes on serving. Queries run
one at a time (a lock around the engine): the model and FAISS are not shared between threads,
while the page, its files and the photos are served concurrently.
"""

from __future__ import annotations

import json
import os
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .errors import SearchError

__all__ = ["DEFAULT_MAX_UPLOAD", "RecipeServer", "make_server", "open_engine", "serve"]

DEFAULT_MAX_UPLOAD = 8 * 2**20  # bytes of one photo upload
MAX_K = 50
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}


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


def _hits_json(hits) -> list[dict[str, Any]]:
    rows = []
    for hit in hits:
        row = hit.to_dict()
        i = hit.image_index if hit.image_index is not None else (0 if hit.image_paths else None)
        row["photo"] = f"/api/photo/{quote(hit.recipe_id, safe='')}/{i}" if i is not None else None
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

    # -- plumbing --------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} - {format % args}")

    def _send(self, status: int, body: bytes, content_type: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _dispatch(self, routes: dict[str, Callable[[str, dict[str, list[str]]], None]]) -> None:
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        try:
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
                        "/api/ingredients": self._ingredients, "/api/photo/": self._photo})

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch({"/api/image": self._image})

    def _page(self, _rest: str, _params) -> None:
        self._send(200, _static("index.html"), STATIC["index.html"])

    def _static_file(self, name: str, _params) -> None:
        if name not in STATIC or name == "index.html":
            raise RequestError(404, f"no such file: /static/{name}")
        self._send(200, _static(name), STATIC[name], cache=True)

    def _classes(self, _rest: str, _params) -> None:
        engine = self.server.engine
        self._json(200, {"classes": engine.classes(), "recipes": len(engine),
                         "images": int(engine.meta["counts"]["images"]), "run": str(engine.meta["checkpoint"]["path"]),
                         "max_upload_bytes": self.server.max_upload_bytes})

    def _ingredients(self, _rest: str, params) -> None:
        q = " ".join(params.get("q", [])).strip()
        if not q:
            raise RequestError(400, "empty query: type at least one ingredient (e.g. tomato, basil)")
        without = ",".join(params.get("without", []))
        class_name = (params.get("class") or [""])[-1].strip() or None
        k = _int_param(params, "k", 10, 1, MAX_K)
        target = (params.get("target") or ["images"])[-1]
        with self.server.lock:
            hits = self.server.engine.by_ingredients(q, without=without, class_name=class_name, k=k, target=target)
        self._json(200, {"query": {"ingredients": q, "without": without, "class": class_name, "k": k},
                         "hits": _hits_json(hits)})

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
        body = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            body = _multipart_file(content_type, body)
            if not body:
                raise RequestError(400, "empty upload: choose a photo (JPEG, PNG or WebP)")
        with self.server.lock:
            hits = self.server.engine.by_image(body, k=k)
        self._json(200, {"query": {"bytes": len(body), "k": k}, "hits": _hits_json(hits)})


class RecipeServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` holding the engine. ``url`` is where it listens;
    :meth:`start` serves from a daemon thread (tests), :meth:`stop` shuts it down."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, engine, address: tuple[str, int], *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
                 log: Callable[[str], None] | None = None):
        super().__init__(address, Handler)
        self.engine, self.max_upload_bytes, self.log = engine, int(max_upload_bytes), log
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def start(self) -> "RecipeServer":
        self._thread = threading.Thread(target=self.serve_forever, name="recipekit-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def make_server(run: str | os.PathLike, data: str | os.PathLike | None = None, *, host: str = "127.0.0.1",
                port: int = 8000, index: str | os.PathLike | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
                device: Any = "cpu", build: bool = True, log: Callable[[str], None] | None = None,
                echo: Callable[[str], None] | None = None) -> RecipeServer:
    """Open the engine (building a missing index, see :func:`open_engine`) and bind
    ``host:port`` (port 0: any free port); not serving yet: call ``serve_forever()`` or
    ``start()``. ``log``: where request lines go (None: nowhere)."""
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be >= 1, not {max_upload_bytes}")
    engine = open_engine(run, data, index=index, device=device, max_image_bytes=max_upload_bytes, build=build, echo=echo)
    try:
        return RecipeServer(engine, (host, int(port)), max_upload_bytes=max_upload_bytes, log=log)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(run: str | os.PathLike, data: str | os.PathLike | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          index: str | os.PathLike | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD, device: Any = "cpu",
          echo: Callable[[str], None] = print) -> None:
    """Serve the page until Ctrl-C (see :func:`make_server`); request lines go to ``echo``."""
    server = make_server(run, data, host=host, port=port, index=index, max_upload_bytes=max_upload_bytes,
                         device=device, log=echo, echo=echo)
    engine = server.engine
    echo(f"recipekit serve: {len(engine):,} recipes, {engine.meta['counts']['images']:,} photos "
         f"(index {engine.index_dir}); open {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("stopped")
    finally:
        server.server_close()
