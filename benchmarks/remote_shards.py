"""Benchmark: reading shards from a URL or a command instead of the local folder (recipekit.loaders.remote).

On a prepared corpus (default: the demo corpus of benchmarks/loader.py, prepared there when
missing) it serves ``PREPARED/shards`` with ``python -m http.server`` on 127.0.0.1 (a separate
process) and measures, --runs times each, interleaved, medians: (1) the shard stream alone
(``tar_samples`` over every train shard in this process, no decoding): CPU ms per sample of the
reader and of the server; (2) the training loader (``make_loader(train=True)``, --workers
workers, the same store): images/s and worker CPU ms per image. Sources: the local folder,
``http://127.0.0.1:PORT/train`` (fsspec, aiohttp) and ``pipe:cat PATH`` per shard.

    python benchmarks/remote_shards.py --runs 3 --write
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine, replace_section, today
from loader import Clock, prepare_corpus

ROOT = Path(__file__).resolve().parents[1]


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of one process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def sources(prepared: Path, base: str) -> dict[str, object]:
    from recipekit.loaders import resolve_shards

    local = resolve_shards(prepared / "shards" / "train")
    return {"local folder": prepared / "shards" / "train", "https:// (fsspec, 127.0.0.1)": f"{base}/train",
            "pipe:cat": [f"pipe:cat {u}" for u in local.urls]}


def stream_rate(source, server_pid: int) -> dict[str, float]:
    from recipekit.loaders import resolve_shards
    from recipekit.loaders.tario import tar_samples

    spec = resolve_shards(source)
    n, size = 0, 0
    s0 = _cpu_of(server_pid)
    with Clock() as clock:
        for sample in tar_samples()({"url": u} for u in spec.urls):
            n += 1
            size += sum(len(v) for k, v in sample.items() if not k.startswith("__"))
    server = _cpu_of(server_pid) - s0  # the server is a child of this process too: not the reader's
    # a pipe's cat processes have exited when the clock stops: their CPU is not counted
    return {"samples": n, "mb": size / 2**20, "wall": clock.wall,
            "cpu_ms": (clock.cpu + clock.children - server) / n * 1e3,
            "server_ms": server / n * 1e3, "mb_s": size / 2**20 / clock.wall}


def loader_rate(source, prepared: Path, vocab, workers: int, batch_size: int, seed: int,
                server_pid: int) -> dict[str, float]:
    from recipekit.core import Prepared
    from recipekit.loaders import LoaderSpec, make_loader

    spec = LoaderSpec(vocab=vocab, train=True, batch_size=batch_size, num_workers=workers, seed=seed,
                      persistent_workers=workers > 0, store=Prepared(prepared).store)
    loader, _ = make_loader(source, spec)
    for _ in loader:  # warm-up epoch: worker start-up, imports
        pass
    n = 0
    s0 = _cpu_of(server_pid)
    with Clock() as clock:
        for batch in loader:
            n += batch["images"].shape[0]
    server = _cpu_of(server_pid) - s0
    return {"rate": n / clock.wall, "cpu_ms": (clock.children - server) / n * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prepared", type=Path, default=None, help="a prepared folder (default: the loader benchmark's)")
    ap.add_argument("--recipes", type=int, default=6000)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2, help="loader workers (> 0: their CPU is what is measured)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = ap.parse_args()
    prepared = args.prepared
    if prepared is None:
        work = ROOT / "bench-out" / "loader" / f"demo-{args.recipes}-{args.image_size}"
        prepared = work / "out"
        if not (prepared / "shards" / "index.json").exists():
            prepare_corpus(work / "src", prepared, recipes=args.recipes, image_size=args.image_size, workers=2,
                           shard_size=250)
    from recipekit.pipeline.vocab import Vocabulary

    vocab = Vocabulary.from_file(prepared / "word2vec" / "vocab.txt")
    server, base = serve(prepared / "shards")
    try:
        srcs = sources(prepared, base)
        streams: dict[str, list] = {k: [] for k in srcs}
        loads: dict[str, list] = {k: [] for k in srcs}
        for run in range(args.runs):
            for name, src in srcs.items():
                streams[name].append(stream_rate(src, server.pid))
                loads[name].append(loader_rate(src, prepared, vocab, args.workers, args.batch_size, seed=run,
                                               server_pid=server.pid))
                print(name, streams[name][-1], loads[name][-1], flush=True)
    finally:
        server.terminate()
        server.wait()

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    first = next(iter(srcs))
    n, mb = streams[first][0]["samples"], streams[first][0]["mb"]
    lines = [
        f"Machine: {machine()}. Date: {today()}.",
        f"Command: `python benchmarks/remote_shards.py --runs {args.runs}"
        + (f" --prepared {args.prepared}" if args.prepared else "") + " --write`",
        "",
        f"The train shards of `{prepared.relative_to(ROOT) if prepared.is_relative_to(ROOT) else prepared}` "
        f"({n:,} samples, {mb:,.0f} MiB of members), read from the local folder, from "
        "`python -m http.server` on 127.0.0.1 (another process; fsspec's HTTP file system streams each "
        "tar), and through `pipe:cat` per shard. Medians of "
        f"{args.runs} interleaved runs. Other processes shared the 2 cores while this ran, so wall "
        "rates are noisy: read the CPU columns (CPU time from /proc, insensitive to that load) first. "
        "127.0.0.1 has no network latency or bandwidth limit: this is the CPU cost of the transport, "
        "not a remote storage's speed.",
        "",
        "**Shard stream** (`tar_samples` over every shard in one process, no decoding):",
        "",
        "| source | reader CPU ms/sample | vs local | server CPU ms/sample | MiB/s (wall) |",
        "|---|---:|---:|---:|---:|",
    ]
    base_cpu = med(streams[first], "cpu_ms")
    for name in srcs:
        cpu = med(streams[name], "cpu_ms")
        server_ms = med(streams[name], "server_ms")
        lines.append(f"| {name} | {cpu:.3f} | {cpu / base_cpu:.1f}x | {server_ms:.3f} | {med(streams[name], 'mb_s'):,.0f} |")
    lines += [
        "",
        f"**Training loader** (`make_loader(train=True)`, {args.workers} workers, batches of {args.batch_size}, "
        "224 px crops, float32, tokens from the local `recipes.lmdb`; the second epoch timed):",
        "",
        "| source | images/s | vs local | worker CPU ms/image | vs local |",
        "|---|---:|---:|---:|---:|",
    ]
    base_rate, base_w = med(loads[first], "rate"), med(loads[first], "cpu_ms")
    for name in srcs:
        rate, w = med(loads[name], "rate"), med(loads[name], "cpu_ms")
        lines.append(f"| {name} | {rate:,.0f} | {rate / base_rate:.2f}x | {w:.2f} | {w / base_w:.2f}x |")
    body = "\n".join(lines) + "\n"
    print(body)
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "remote_shards", body,
                        "Shards over HTTP and pipe: (benchmarks/remote_shards.py)")


if __name__ == "__main__":
    main()
