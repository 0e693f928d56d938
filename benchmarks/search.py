"""Benchmark: query latency of the search index, exact (FAISS IndexFlatIP) against approximate.

For N indexed unit vectors of dimension D (default 50,000 and 1,000,000 x 1024: the joint space
of the je/ht configs) and two kinds of data:

* ``uniform``: random unit vectors, the worst case for any approximate index (every point is
  nearly as far from a query as its true neighbours);
* ``lowrank``: unit vectors near a 32-dimensional subspace (``normalise(z @ W + 0.3 * noise)``,
  z ~ N(0, I_32), W a random 32 x D map): trained embeddings have a low intrinsic dimension, so
  their neighbours are well defined and an approximate index finds most of them;
* ``clustered`` (``--kinds``): unit vectors around ``N / 1000`` random centres (noise of the
  centre's norm), the easy case: every IVF setting finds the exact top 10 (measured at 50k and 1M in an earlier run of this script).

Per (N, kind): the exact index (what ``build_index`` writes below its threshold) and the
approximate one, an inverted file (``IndexIVFFlat``, inner product, ``nlist = round(sqrt(N))``
cells, k-means trained on ``min(N, 64 * nlist)`` vectors) searched with several ``nprobe``;
and, at the small size only, an HNSW graph (``IndexHNSWFlat``, M=32, efConstruction 40,
efSearch 64). Reported: build time (wall and process CPU seconds), index memory, single-query
latency p50/p99 and the querying thread's CPU time over --queries queries (one query per
``search`` call, k=10, one FAISS thread; builds use all cores), recall@10 of each approximate index against the exact top 10 of the same queries.

    python benchmarks/search.py --write                 # 50k and 1M: 874 s on 2 cores; at 1M the data and
                                                        # one index are two 3.9 GB copies in memory
    python benchmarks/search.py --sizes 20000 --queries 50
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine, replace_section, today

ROOT = Path(__file__).resolve().parents[1]
NPROBES = (8, 16, 32, 64, 128)
LATENCY_TARGET_MS = 20.0
BUILD_THREADS = len(os.sched_getaffinity(0))  # the exact index is used while its median query stays under this


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


LATENT, LOWRANK_NOISE = 32, 0.3


def _block(kind: str, rows: int, dim: int, model, rng) -> np.ndarray:
    block = rng.standard_normal((rows, dim), dtype=np.float32)
    if kind == "clustered":
        block /= np.sqrt(dim)
        block += model[rng.integers(0, len(model), rows)]
    elif kind == "lowrank":
        block *= LOWRANK_NOISE
        block += rng.standard_normal((rows, LATENT), dtype=np.float32) @ model
    return unit_rows(block)


def make_data(n: int, dim: int, kind: str, rng: np.random.Generator, chunk: int = 100_000):
    """``n`` unit vectors of ``kind`` and the model they were drawn from (to draw queries)."""
    if kind == "clustered":
        model = unit_rows(rng.standard_normal((max(1, n // 1000), dim), dtype=np.float32))
    elif kind == "lowrank":
        model = rng.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(LATENT)
    else:
        model = None
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        out[start : start + rows] = _block(kind, rows, dim, model, rng)
    return out, model


def queries_for(kind: str, model, q: int, dim: int, rng) -> np.ndarray:
    return _block(kind, q, dim, model, rng)


def latencies(index, queries: np.ndarray, k: int = 10) -> tuple[list[float], list[float], np.ndarray]:
    """Wall and CPU milliseconds of each single-query search (one thread), and the ids found."""
    wall, cpu, ids = [], [], []
    index.search(queries[:1], k)  # warm-up
    for row in queries:
        c0, t0 = time.thread_time(), time.perf_counter()
        _, found = index.search(row[None, :], k)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
        ids.append(found[0])
    return wall, cpu, np.stack(ids)


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench(n: int, dim: int, kind: str, n_queries: int, hnsw: bool, seed: int) -> list[dict]:
    import faiss

    rng = np.random.default_rng(seed)
    data, centres = make_data(n, dim, kind, rng)
    queries = queries_for(kind, centres, n_queries, dim, rng)
    rows = []
    flat, wall, cpu = timed(lambda: _flat(faiss, data))
    faiss.omp_set_num_threads(1)
    lat, qcpu, truth = latencies(flat, queries)
    rows.append(dict(n=n, kind=kind, index="exact IndexFlatIP", build_s=wall, build_cpu_s=cpu,
                     mem_mb=data.nbytes / 2**20, p50=pct(lat, 50), p99=pct(lat, 99), cpu50=pct(qcpu, 50), recall=1.0))
    del flat
    gc.collect()
    nlist = max(1, int(round(np.sqrt(n))))
    faiss.omp_set_num_threads(BUILD_THREADS)
    ivf, wall, cpu = timed(lambda: _ivf(faiss, data, nlist, rng))
    faiss.omp_set_num_threads(1)
    for nprobe in NPROBES:
        ivf.nprobe = nprobe
        lat, qcpu, found = latencies(ivf, queries)
        rows.append(dict(n=n, kind=kind, index=f"IVF{nlist},Flat nprobe={nprobe}", build_s=wall, build_cpu_s=cpu,
                         mem_mb=data.nbytes / 2**20 + n * 8 / 2**20, p50=pct(lat, 50), p99=pct(lat, 99), cpu50=pct(qcpu, 50),
                         recall=recall(found, truth)))
    del ivf
    gc.collect()
    if hnsw:
        faiss.omp_set_num_threads(BUILD_THREADS)
        graph, wall, cpu = timed(lambda: _hnsw(faiss, data))
        faiss.omp_set_num_threads(1)
        lat, qcpu, found = latencies(graph, queries)
        rows.append(dict(n=n, kind=kind, index="HNSW32,Flat efSearch=64", build_s=wall, build_cpu_s=cpu,
                         mem_mb=data.nbytes / 2**20 + n * 32 * 2 * 4 / 2**20, p50=pct(lat, 50), p99=pct(lat, 99), cpu50=pct(qcpu, 50),
                         recall=recall(found, truth)))
    return rows


def _flat(faiss, data):
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    return index


def _ivf(faiss, data, nlist, rng):
    index = faiss.index_factory(data.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    sample = data[np.sort(rng.choice(len(data), min(len(data), 64 * nlist), replace=False))]
    index.train(sample)
    index.add(data)
    return index


def _hnsw(faiss, data):
    index = faiss.IndexHNSWFlat(data.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(data)
    index.hnsw.efSearch = 64
    return index


def threshold(rows: list[dict]) -> int:
    """Largest N (rounded down to 10k) whose exact median latency stays under the target, from a
    straight line through the measured (N, p50) points of the exact index."""
    pts = sorted({(r["n"], r["cpu50"]) for r in rows if r["index"].startswith("exact") and r["kind"] == "uniform"})
    if len(pts) < 2:
        return 0
    (n0, t0), (n1, t1) = pts[0], pts[-1]
    slope = (t1 - t0) / (n1 - n0)
    n = n0 + (LATENCY_TARGET_MS - t0) / slope if slope > 0 else n1
    return int(max(10_000, n // 10_000 * 10_000))


def render(rows: list[dict], args, total_s: float) -> str:
    import faiss

    lines = [
        f"Measured {today()} on {machine()}; faiss-cpu {faiss.__version__}; indexes built with {BUILD_THREADS} "
        "OpenMP threads, queries run on one thread (one request, one core: two threads were twice as slow on "
        "these shared cores). Other processes shared the cores, so wall latencies are upper bounds; the CPU "
        "milliseconds of the querying thread are the steadier figure.",
        f"Command: `python benchmarks/search.py --sizes {','.join(map(str, args.sizes))} --dim {args.dim} "
        f"--queries {args.queries} --kinds {args.kinds} --write` ({total_s:.0f} s in all).",
        "",
        f"Each query is one `search` call for the top 10 of one {args.dim}-d vector (the je/ht joint space); "
        f"p50/p99 over {args.queries} queries (with this few queries p99 is close to the slowest one). Recall@10 is "
        "the share of the exact top 10 that the approximate index returns for the same queries. `uniform`: random "
        "unit vectors (the worst case for an approximate index: no structure, every point almost as far as the "
        "true neighbours); `lowrank`: unit vectors near a 32-dimensional subspace plus noise (trained embeddings "
        "have a low intrinsic dimension); `clustered`: around N/1000 centres (the easy case). Memory: the vectors the index holds (+ ids / graph links). Build: wall "
        "seconds (process CPU seconds). Speed-up: exact CPU ms / this index's CPU ms, same N and data.",
        "",
        "| N | data | index | build s (CPU s) | memory MB | p50 ms | p99 ms | CPU ms p50 | recall@10 | speed-up (CPU) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        exact = next(x for x in rows if x["n"] == r["n"] and x["kind"] == r["kind"] and x["index"].startswith("exact"))
        lines.append(f"| {r['n']:,} | {r['kind']} | {r['index']} | {r['build_s']:.1f} ({r['build_cpu_s']:.1f}) | "
                     f"{r['mem_mb']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu50']:.2f} | {r['recall']:.3f} | "
                     f"{exact['cpu50'] / r['cpu50']:.1f}x |")
    thr = threshold(rows)
    lines += [
        "",
        f"**Threshold.** A straight line through the exact index's median CPU time per query (uniform data) crosses "
        f"{LATENCY_TARGET_MS:.0f} ms at about {thr:,} vectors: `build_index` keeps the exact index up to "
        f"`approximate_above` = {thr:,} vectors of a kind (recipes or images) and builds the IVF index above it.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[50_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--kinds", default="uniform,lowrank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = []
    for i, n in enumerate(args.sizes):
        for kind in args.kinds.split(","):
            rows += bench(n, args.dim, kind, args.queries, hnsw=(i == 0), seed=args.seed)
            print(*(f"{r['n']} {r['kind']} {r['index']}: build {r['build_s']:.1f}s p50 {r['p50']:.2f} "
                    f"p99 {r['p99']:.2f} recall {r['recall']:.3f}" for r in rows[-7:]), sep="\n", flush=True)
    body = render(rows, args, time.perf_counter() - t0)
    print(body)
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "search", body, "Search index: exact against approximate (benchmarks/search.py)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
