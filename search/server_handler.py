"""The HTTP side of `recipekit serve`: :class:`Handler` (one request per turn, routing, the
security headers on every answer, the Host check) and its JSON, page and photo endpoints
over the server's :class:`~recipekit.search.SearchEngine`, with the helpers that parse query
parameters and uploads (:class:`RequestError` is a bad request's status and message).
"""

from __future__ import annotations

import json
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .errors import SearchError
from .server_limits import SECURITY_HEADERS, host_allowed

if TYPE_CHECKING:
    from .server import RecipeServer

__all__ = ["MAX_K", "STATIC", "Handler", "RequestError"]

MAX_K = 50
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
                        "/api/ingredients": self._ingredients, "/api/generated": self._generated,
                        "/api/photo/": self._photo,
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
                         "generator": engine.has_generator,
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

    def _generated(self, _rest: str, params) -> None:
        """The photo a [gan] run's generator makes from an ingredient query's embedding (PNG)."""
        q = " ".join(params.get("q", [])).strip()
        if not q:
            raise RequestError(400, "empty query: type at least one ingredient (e.g. tomato, basil)")
        if not self.server.engine.has_generator:
            raise RequestError(404, "this model has no generator: only [gan] runs (ACME, R2GAN, TNLBT) make photos")
        class_name = (params.get("class") or [""])[-1].strip() or None
        seed = _int_param(params, "seed", 0, 0, 2**31 - 1)
        with self.server.lock:
            png = self.server.engine.generated_photo(q, without=_terms(params, "without"),
                                                     remove=_terms(params, "remove"), class_name=class_name,
                                                     seed=seed)
        self._send(200, png, "image/png", cache=True)

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
