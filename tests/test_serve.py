"""`recipekit serve`: the HTTP endpoints and their errors (the server keeps serving after each),
a model/index mismatch, the CLI, and the server's defences under load. The page itself, in headless
Chromium, is tested in tests/test_serve_page.py."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

from PIL import Image  # noqa: E402

from recipekit.search import SearchError  # noqa: E402
from recipekit.search.server import make_server, open_engine  # noqa: E402

MAX_UPLOAD = 256 * 1024


@pytest.fixture(scope="module")
def server(trained_demo_run, prepared_demo, tmp_path_factory):
    """The server on 127.0.0.1:0 in a thread; its index folder is empty at first, so it is built
    (``build_index``) the way `recipekit serve` builds a missing one."""
    said: list[str] = []
    srv = make_server(trained_demo_run, prepared_demo, port=0, index=tmp_path_factory.mktemp("serve") / "index",
                      max_upload_bytes=MAX_UPLOAD, echo=said.append).start()
    srv.said = said
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def index_dir(server) -> Path:
    return server.engine.index_dir


def test_a_missing_index_is_built_once_and_said(server, trained_demo_run, prepared_demo, index_dir, tmp_path):
    assert len(server.said) == 1 and "no index in" in server.said[0] and "building it" in server.said[0]
    assert (index_dir / "meta.json").is_file() and len(server.engine) > 0
    said: list[str] = []
    again = open_engine(trained_demo_run, prepared_demo, index=index_dir, echo=said.append)
    assert said == [] and len(again) == len(server.engine)  # reused, not rebuilt
    with pytest.raises(SearchError, match=r"no index; build it with `recipekit index"):
        open_engine(trained_demo_run, prepared_demo, index=tmp_path / "empty", build=False)


def _request(url, data=None, headers=None, method=None):
    """(status, content type, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _get_json(url, **kw):
    status, ctype, body = _request(url, **kw)
    assert ctype.startswith("application/json"), (status, ctype, body[:200])
    return status, json.loads(body)


def _photo(server) -> bytes:
    images = server.engine.images
    return server.engine.image_bytes(images["recipe_id"][0], images["position"][0])


def _ingredient_query(engine) -> tuple[str, str]:
    """A frequent ingredient and another frequent one to leave out."""
    names = engine.ingredients.names
    return names[0], names[1]


def test_page_classes_and_a_photo_query(server):
    status, ctype, body = _request(server.url)
    assert status == 200 and ctype.startswith("text/html") and b'id="photo-form"' in body and b"/static/app.js" in body
    for name in ("app.js", "app.css"):
        status, _, body = _request(server.url + "static/" + name)
        assert status == 200 and len(body) > 200
    status, info = _get_json(server.url + "api/classes")
    assert status == 200 and info["classes"] == server.engine.classes() and info["recipes"] == len(server.engine)
    assert info["generator"] is False  # an H-T run: the page shows no generated photo
    jpeg = _photo(server)
    status, out = _get_json(server.url + "api/image?k=5", data=jpeg, headers={"Content-Type": "image/jpeg"})
    assert status == 200 and len(out["hits"]) == 5 and [h["rank"] for h in out["hits"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in out["hits"]]
    assert scores == sorted(scores, reverse=True) and all(h["kind"] == "recipe" for h in out["hits"])
    with_photo = [h for h in out["hits"] if h["photo"]]
    assert with_photo, out["hits"]
    status, ctype, body = _request(server.url + with_photo[0]["photo"].lstrip("/"))
    assert status == 200 and ctype == "image/jpeg" and Image.open(io.BytesIO(body)).size[0] > 0


def test_multipart_upload_matches_the_raw_body(server):
    jpeg = _photo(server)
    boundary = "xyzBOUNDARY"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()
    status, multi = _get_json(server.url + "api/image?k=3", data=body,
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    status_raw, raw = _get_json(server.url + "api/image?k=3", data=jpeg, headers={"Content-Type": "image/jpeg"})
    assert status == status_raw == 200
    assert [h["recipe_id"] for h in multi["hits"]] == [h["recipe_id"] for h in raw["hits"]]


def test_ingredient_query_with_without_and_class(server):
    engine = server.engine
    want, drop = _ingredient_query(engine)
    status, out = _get_json(server.url + f"api/ingredients?q={want}&without={drop}&k=8")
    assert status == 200 and 0 < len(out["hits"]) <= 8 and out["query"]["without"] == drop
    rows = {rid: i for i, rid in enumerate(engine.recipes["recipe_id"])}
    for hit in out["hits"]:
        assert hit["kind"] == "image" and hit["photo"] == f"/api/photo/{hit['recipe_id']}/{hit['image_index']}"
        assert drop not in engine.recipes["ingredients"][rows[hit["recipe_id"]]]
    cls = engine.classes()[0]
    status, out = _get_json(server.url + "api/ingredients?" + urllib.parse.urlencode({"q": want, "class": cls}))
    assert status == 200 and all(h["class_name"] == cls for h in out["hits"])


BAD_REQUESTS = [
    # (what, request kwargs, status, words the message must hold)
    ("empty query", {"path": "api/ingredients?q=%20"}, 400, "empty query"),
    ("unknown ingredient", {"path": "api/ingredients?q=unobtainium"}, 400, "unobtainium"),
    ("unknown class", {"path": "api/ingredients?q={want}&class=moon+cheese"}, 400, "unknown class 'moon cheese'"),
    ("k out of range", {"path": "api/ingredients?q={want}&k=0"}, 400, "k must be between"),
    ("not an image", {"path": "api/image", "data": b"just some text\n"}, 400, "not a usable image"),
    ("empty upload", {"path": "api/image", "data": b""}, 400, "empty upload"),
    ("unknown photo", {"path": "api/photo/no-such-recipe/0"}, 404, "no-such-recipe"),
    ("unknown recipe", {"path": "api/recipe/no-such-recipe"}, 404, "no recipe 'no-such-recipe'"),
    ("unknown partition", {"path": "api/ingredients?q={want}&partition=dev"}, 400, "unknown partition 'dev'"),
    ("unknown page", {"path": "nope"}, 404, "/nope"),
    ("no generator", {"path": "api/generated?q={want}"}, 404, "this model has no generator"),
    ("empty generated query", {"path": "api/generated?q="}, 400, "empty query"),
]


@pytest.mark.parametrize("what, req, status, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_json_error_and_the_server_keeps_serving(server, what, req, status, words):
    want, _ = _ingredient_query(server.engine)
    path = req["path"].format(want=urllib.parse.quote(want))
    got, out = _get_json(server.url + path, data=req.get("data"), method="POST" if "data" in req else None)
    assert got == status and words in out["error"], out
    got, out = _get_json(server.url + "api/ingredients?q=" + urllib.parse.quote(want) + "&k=2")
    assert got == 200 and len(out["hits"]) == 2  # still serving


def test_oversized_upload_is_refused_from_its_content_length(server):
    import http.client

    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", "/api/image")
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Content-Length", str(MAX_UPLOAD + 1))
    conn.endheaders()  # not one byte of the body is sent: the answer comes anyway
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    assert resp.status == 413 and "upload too large" in out["error"] and f"{MAX_UPLOAD:,}" in out["error"]
    status, out = _get_json(server.url + "api/image?k=1", data=_photo(server), headers={"Content-Type": "image/jpeg"})
    assert status == 200 and len(out["hits"]) == 1


def test_model_index_and_data_mismatches_are_clear(trained_demo_run, prepared_demo, index_dir, tmp_path):
    from recipekit.embedders import load_embedder

    other = tmp_path / "other-run"
    other.mkdir()
    shutil.copy(trained_demo_run / "config.resolved.json", other)
    model = load_embedder(trained_demo_run / "best.pt")
    with __import__("torch").no_grad():
        next(model.parameters()).add_(1.0)
    model.save(other / "best.pt")
    with pytest.raises(SearchError, match="index/model mismatch"):
        make_server(other, port=0, index=index_dir)
    with pytest.raises(SearchError, match=r"index/data mismatch: .* not .*elsewhere"):
        open_engine(trained_demo_run, tmp_path / "elsewhere", index=index_dir)


@pytest.mark.slow
def test_cli_serve_answers_on_the_port_it_prints(trained_demo_run, prepared_demo, index_dir):
    exe = [sys.executable, "-m", "recipekit.cli.main", "serve", str(trained_demo_run), str(prepared_demo),
           "--port", "0", "--index", str(index_dir)]
    proc = subprocess.Popen(exe, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, line = time.monotonic() + 90, ""
        while "open http" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "open http://127.0.0.1:" in line, line
        url = line.split("open ", 1)[1].split()[0]
        status, info = _get_json(url + "api/classes")
        assert status == 200 and info["recipes"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    res = subprocess.run([sys.executable, "-m", "recipekit.cli.main", "serve", str(prepared_demo / "no-run")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "no-run: no such run folder" in res.stderr


# -- under load: the mechanisms (the figures are in docs/benchmarks.md: benchmarks/serve_load.py) --

def test_listen_backlog_and_security_headers(server):
    import socket as socket_mod

    assert server.request_queue_size == 1024
    port = server.server_address[1]
    ss = shutil.which("ss")
    if ss:  # the kernel's own view of the listen queue: Send-Q of a listening socket is its backlog
        cap = int(Path("/proc/sys/net/core/somaxconn").read_text())  # the kernel's ceiling on any backlog
        listing = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
        assert listing and int(listing[2]) == min(1024, cap), listing
    for path, status in (("", 200), ("api/classes", 200), ("nope", 404)):
        req = urllib.request.Request(server.url + path)
        try:
            resp = urllib.request.urlopen(req, timeout=30)
        except urllib.error.HTTPError as exc:
            resp = exc
        assert resp.status == status
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["X-Content-Type-Options"] == "nosniff"
    # a request http.server refuses itself (an unknown method): the headers are there too
    with socket_mod.create_connection(server.server_address[:2], timeout=30) as s:
        s.sendall(b"BREW / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = _closed_by_server(s)
    assert answer.startswith(b"HTTP/1.1 501") and b"X-Frame-Options: DENY" in answer, answer[:300]


def test_a_foreign_host_header_is_refused(server):
    port = server.server_address[1]
    for host in ("evil.example", f"evil.example:{port}", "rebind.attacker.test"):
        status, out = _get_json(server.url + "api/classes", headers={"Host": host})
        assert status == 403 and "DNS rebinding" in out["error"] and host in out["error"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "10.1.2.3"):
        status, _ = _get_json(server.url + "api/classes", headers={"Host": host})
        assert status == 200, host
    from recipekit.search.server import host_allowed

    assert host_allowed("food.lan:8000", frozenset({"food.lan"})) and not host_allowed(None, frozenset())
    assert host_allowed("anything", frozenset({"*"}))


def _closed_by_server(sock, deadline_s: float = 30.0) -> bytes:
    """What the server sent before closing ``sock`` (b"" for a silent close); fails after a bounded wait."""
    sock.settimeout(deadline_s)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_idle_and_slow_clients_hold_no_worker_and_are_dropped(server):
    """Two worker threads; many idle connections and many that send half a request: a real
    request is still answered at once, the idle ones are closed after idle_timeout, the slow
    ones get 408 after request_timeout, and the open-connection count falls back."""
    import socket as socket_mod

    from recipekit.search.server import RecipeServer

    small = RecipeServer(server.engine, ("127.0.0.1", 0), threads=2, idle_timeout=1.0, request_timeout=2.0,
                         max_connections=40).start()
    try:
        addr = small.server_address[:2]
        idle = [socket_mod.create_connection(addr, timeout=30) for _ in range(12)]
        slow = [socket_mod.create_connection(addr, timeout=30) for _ in range(12)]
        for s in slow:
            s.sendall(b"GET /api/classes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        # 24 connections, 2 workers: an ordinary request goes through (no worker is held)
        status, info = _get_json(small.url + "api/classes")
        assert status == 200 and info["recipes"] > 0
        # keep-alive: the same connection serves two requests and then waits holding no worker
        import http.client

        conn = http.client.HTTPConnection(*addr, timeout=30)
        for _ in range(2):
            conn.request("GET", "/api/classes")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["recipes"] > 0
        assert all(_closed_by_server(s) == b"" for s in idle)
        answers = [_closed_by_server(s) for s in slow]
        assert all(a.startswith(b"HTTP/1.1 408") and b"request timeout" in a for a in answers), answers[0]
        assert conn.sock is None or _closed_by_server(conn.sock) == b""  # the kept-alive one, once idle
        for s in idle + slow:
            s.close()
        deadline = time.monotonic() + 30
        while small.open_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert small.open_connections == 0
        # over max_connections: 503 at once, not a hang
        small.idle_timeout = 120.0  # the 40 must stay open while the 41st arrives
        many = [socket_mod.create_connection(addr, timeout=30) for _ in range(40)]
        extra = socket_mod.create_connection(addr, timeout=30)
        assert _closed_by_server(extra).startswith(b"HTTP/1.1 503")
        for s in many + [extra]:
            s.close()
    finally:
        small.stop()
