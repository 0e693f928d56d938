"""Benchmark: `recipekit serve` under 200 concurrent clients, slow and idle ones included.

The server runs in a process of its own on 127.0.0.1 (loopback only) over a small trained run:
``--run RUN --data PREPARED``, or, by default, the tiny ResNet-18 / H-T model of the test suite
trained for 2 epochs on the 600-recipe demo corpus (built once into ``bench-out/serve-load/``).
Each round, per server:

1. **burst**: ``--clients`` (200) threads start together; each sends ``--requests`` (3) requests,
   alternating photo uploads (``POST /api/image``, a JPEG of the corpus) and ingredient queries
   (``GET /api/ingredients``), one new connection per request (60 s client timeout). Failures
   (resets, refusals, timeouts, non-200 answers) and per-request latency are counted.
2. **idle + slow**: 300 connections that send nothing and 50 that send half a request stay open
   while 50 ordinary clients run the same mix; then they are closed.
3. **memory**: the server's resident memory before the round, after it, and after a second
   burst (flat: the second figure is the first).

Both servers are measured in the same run, round after round: ``recipekit`` (this package's
server) and ``baseline``, the same handlers on the standard library's ``ThreadingHTTPServer``
as `recipekit serve` used to run them (listen backlog 5, one thread per connection, no timeouts).
The machine is shared and loaded by other jobs: figures are medians over ``--rounds``.

    python benchmarks/serve_load.py --write             # 3 rounds: ~10 min on 2 cores
    python benchmarks/serve_load.py --rounds 1 --clients 50
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine, replace_section, today, tree_rss_bytes
from recipekit.core import Prepared, Run

ROOT = Path(__file__).resolve().parents[1]
CLIENT_TIMEOUT_S = 60.0

# The server process: prints "PORT <n>" once listening, serves until SIGTERM.
SERVER = r"""
import signal, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from recipekit.search import server as srv

kind, run, data = sys.argv[1:4]
engine = srv.open_engine(run, data, build=True)
if kind == "baseline":
    class OldHandler(srv.Handler):
        handle = BaseHTTPRequestHandler.handle   # keep-alive loop on the connection's own thread
        rbufsize = -1
    class OldServer(ThreadingHTTPServer):       # backlog 5, a thread per connection, no timeouts
        daemon_threads = True
        allow_reuse_address = True
    server = OldServer(("127.0.0.1", 0), OldHandler)
    server.engine, server.max_upload_bytes, server.log = engine, srv.DEFAULT_MAX_UPLOAD, None
    server.lock, server.allowed_hosts, server.request_timeout = threading.Lock(), frozenset({"*"}), 3600.0
else:
    server = srv.RecipeServer(engine, ("127.0.0.1", 0))
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
print("PORT", server.server_address[1], flush=True)
server.serve_forever()
"""


def tiny_run(out: Path) -> tuple[Path, Path]:
    """The test suite's tiny trained run on the demo corpus (built once into ``out``)."""
    run, prepared = out / "run", out / "prepared"
    if Run(run).best.is_file() and Prepared(prepared).manifest("shard").is_file():
        return run, prepared
    sys.path.insert(0, str(ROOT / "tests"))
    from stand_ins import tiny_run_config

    from recipekit.pipeline.demo import write_demo_corpus
    from recipekit.pipeline.prepare import PrepareConfig, prepare
    from recipekit.pipeline.shard import ShardParams
    from recipekit.pipeline.word2vec import Word2VecParams
    from recipekit.training import train

    write_demo_corpus(out / "src", recipes=600, seed=7, image_fraction=0.5, image_size=64, workers=1)
    config = PrepareConfig(word2vec=Word2VecParams(vector_size=16, epochs=1, min_count=2),
                           shard=ShardParams(image_size=64, max_count=64))
    prepare(out / "src", prepared, config=config, workers=1, quiet=True)
    if run.exists():
        import shutil

        shutil.rmtree(run)
    train(tiny_run_config(data={"prepared": str(prepared)}), run, device="cpu")
    return run, prepared


class Server:
    def __init__(self, kind: str, run: Path, data: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, kind, str(run), str(data)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}/"

    def rss_mb(self) -> float:
        return tree_rss_bytes(self.proc.pid) / 2**20

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _one(url: str, body: bytes | None) -> float | None:
    """Latency of one request in seconds; None when it failed."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "image/jpeg"} if body else {})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT_S) as r:
            r.read()
            ok = r.status == 200
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        ok = False
    return time.perf_counter() - t0 if ok else None


def burst(base: str, clients: int, requests: int, photo: bytes, query: str) -> dict:
    """``clients`` threads started together, ``requests`` mixed requests each."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        nonlocal failures
        start.wait()
        for j in range(requests):
            if (i + j) % 2:
                got = _one(base + "api/image?k=5", photo)
            else:
                got = _one(base + "api/ingredients?" + urllib.parse.urlencode({"q": query, "k": 5}), None)
            with lock:
                if got is None:
                    failures += 1
                else:
                    latencies.append(got)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT_S * requests + 60)
    wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {"requests": clients * requests, "failed": failures, "p50_s": pct(0.50), "p99_s": pct(0.99),
            "wall_s": wall}


def idle_and_slow(base: str, photo: bytes, query: str, idle: int = 300, slow: int = 50, clients: int = 50) -> dict:
    port = int(base.rstrip("/").rsplit(":", 1)[1])
    held = []
    for i in range(idle + slow):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i >= idle:
                s.sendall(b"GET /api/classes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            held.append(s)
        except OSError:
            pass
    try:
        out = burst(base, clients, 2, photo, query)
    finally:
        for s in held:
            s.close()
    out["held_connections"] = len(held)
    return out


def measure(kind: str, run: Path, data: Path, args, photo: bytes, query: str) -> dict:
    server = Server(kind, run, data)
    try:
        _one(server.url + "api/classes", None)  # warm up the engine
        rss0 = server.rss_mb()
        first = burst(server.url, args.clients, args.requests, photo, query)
        rss1 = server.rss_mb()
        mixed = idle_and_slow(server.url, photo, query)
        second = burst(server.url, args.clients, args.requests, photo, query)
        time.sleep(2)
        rss2 = server.rss_mb()
    finally:
        server.close()
    return {"kind": kind, "burst": first, "idle": mixed, "second": second, "rss_mb": [rss0, rss1, rss2]}


def render(rows: list[dict], args, total_s: float) -> str:
    def med(kind: str, get) -> float:
        return statistics.median(get(r) for r in rows if r["kind"] == kind)

    lines = [
        f"Machine: 2-core VM, no GPU ({machine()}); load average (1 min) at the end {os.getloadavg()[0]:.1f} "
        f"(above about 2, other jobs shared the cores: read the ratios). Date: {today()}. Command: `python benchmarks/serve_load.py --write --rounds {args.rounds} "
        f"--clients {args.clients} --requests {args.requests}` ({total_s / 60:.0f} min). Loopback (127.0.0.1), "
        "the tiny test model on the 600-recipe demo corpus; queries run one at a time through the engine, so "
        "latency is mostly queueing. Medians over the rounds.",
        "",
        "| server | burst: failed / requests | burst p50 | burst p99 | with 300 idle + 50 slow connections: "
        "failed / requests | p99 | second burst: failed | RSS before / after / after 2nd burst |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("baseline", "recipekit"):
        if not any(r["kind"] == kind for r in rows):
            continue
        lines.append(
            f"| {kind} | {med(kind, lambda r: r['burst']['failed']):.0f} / {rows[0]['burst']['requests']} "
            f"| {med(kind, lambda r: r['burst']['p50_s']):.2f} s | {med(kind, lambda r: r['burst']['p99_s']):.2f} s "
            f"| {med(kind, lambda r: r['idle']['failed']):.0f} / {rows[0]['idle']['requests']} "
            f"| {med(kind, lambda r: r['idle']['p99_s']):.2f} s | {med(kind, lambda r: r['second']['failed']):.0f} "
            f"| {med(kind, lambda r: r['rss_mb'][0]):.0f} / {med(kind, lambda r: r['rss_mb'][1]):.0f} / "
            f"{med(kind, lambda r: r['rss_mb'][2]):.0f} MB |")
    if {r["kind"] for r in rows} == {"baseline", "recipekit"}:
        ratio = med("baseline", lambda r: r["burst"]["p99_s"]) / med("recipekit", lambda r: r["burst"]["p99_s"])
        lines += ["", f"Burst p99, baseline / recipekit: {ratio:.1f}x. Per round: " + "; ".join(
            f"{r['kind']} {r['burst']['failed']} failed, p99 {r['burst']['p99_s']:.2f} s" for r in rows) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained run (default: the tiny test model)")
    parser.add_argument("--data", type=Path, default=None, help="its prepared folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=3, help="requests per client in a burst")
    parser.add_argument("--servers", default="baseline,recipekit")
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.run is None:
        args.run, args.data = tiny_run(ROOT / "bench-out" / "serve-load")
    from recipekit.search.server import open_engine

    engine = open_engine(args.run, args.data, build=True)
    images = engine.images
    photo = engine.image_bytes(images["recipe_id"][0], images["position"][0])
    query = engine.ingredients.names[0]
    del engine
    rows = []
    for i in range(args.rounds):
        for kind in args.servers.split(","):
            row = measure(kind, args.run, args.data, args, photo, query)
            rows.append(row)
            print(json.dumps({"round": i, **row}), flush=True)
    body = render(rows, args, time.perf_counter() - t0)
    print(body)
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "serve-load", body,
                        "`recipekit serve` under load (benchmarks/serve_load.py)")


if __name__ == "__main__":
    main()
