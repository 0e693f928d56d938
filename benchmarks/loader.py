"""Benchmark: the streaming loaders (recipekit.loaders) and the LMDB recipe store.

On a demo corpus with photos rendered at --image-size px (the "originals"; and, with --real,
a real Recipe1M-layout corpus) it runs `prepare` (... store, shard), then measures, --runs
times each, interleaved, in this one process tree (medians reported; see the section text in
docs/benchmarks.md): bare decode + transform of the shard JPEGs in as many processes as
workers (the per-core limit); `make_loader(train=True)` with its defaults and variants; a
baseline: a plain map-style Dataset that opens each original JPEG with PIL and applies
torchvision's RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize, in a
DataLoader with the same workers and batch size; random `RecipeStore[id]` reads.

    python benchmarks/loader.py --recipes 6000 --runs 3 --real ../shared/data/recipes-en --write
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine, replace_section, today

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["parse", "ingredients", "word2vec", "classes", "store", "shard"]
DECODERS = ("pil", "torchvision")
DEFAULT = "torchvision"  # the decoder of the store / collate variants (the faster one, measured here)


def prepare_corpus(src: Path, out: Path, *, recipes: int | None, image_size: int, workers: int, shard_size: int) -> dict:
    from recipekit.pipeline.prepare import PrepareConfig, prepare
    from recipekit.pipeline.shard import ShardParams
    from recipekit.pipeline.word2vec import Word2VecParams

    if recipes is not None and not (src / "layer1.json").exists():
        from recipekit.pipeline.demo import write_demo_corpus

        write_demo_corpus(src, recipes=recipes, seed=0, image_fraction=0.5, image_size=image_size, workers=workers)
    config = PrepareConfig(word2vec=Word2VecParams(vector_size=64, epochs=2, min_count=3),
                           shard=ShardParams(max_count=shard_size))
    reports = prepare(src, out, stages=STAGES, config=config, workers=workers, quiet=True)
    return {r.name: r for r in reports}


def shard_images(folder: Path) -> list[bytes]:
    """Photo 0 of every sample of the shards (JPEG bytes), read once into memory."""
    out = []
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            out += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".0.jpg")]
    return out


def _children_cpu() -> float:
    """CPU seconds (user + system) so far of this process's live child processes (/proc)."""
    me, total, tick = os.getpid(), 0.0, os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Clock:
    """Wall time, this process's CPU time and its live children's CPU time (DataLoader workers)."""

    def __enter__(self) -> Clock:
        self._w, self._c, self._k = time.perf_counter(), time.process_time(), _children_cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        self.children = _children_cpu() - self._k

    def result(self, n: int, workers: int) -> dict[str, float]:
        """images/s (wall) and CPU ms per image of the workers (of this process without workers)."""
        return {"rate": n / self.wall, "cpu_ms": (self.children if workers else self.cpu) / n * 1e3,
                "main_cpu_ms": self.cpu / n * 1e3}


def _timed_epoch(loader, workers: int, images) -> dict[str, float]:
    """Steady state: one untimed epoch (worker start-up, imports, page cache), then one timed."""
    for _ in loader:
        pass
    n = 0
    with Clock() as clock:
        for batch in loader:
            n += images(batch).shape[0]
    return clock.result(n, workers)


def bare_rate(images: list[bytes], decoder: str, normalize: bool = True, batch_size: int = 64,
              fresh: bool = False) -> dict[str, float]:
    """Images/s of decode + train transform (+ normalise into a float batch, or a uint8 batch)
    on one core, with no loader around it: the per-core limit for these images, writing batch
    after batch into the same memory (``fresh``: into newly allocated memory each batch)."""
    import torch
    from recipekit.loaders.images import IMAGENET_MEAN, IMAGENET_STD, ImageDecoder

    torch.set_num_threads(1)
    dec, rng = ImageDecoder(decoder, train=True), random.Random(0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    inv = 1 / (torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255)
    for data in images[:16]:  # warm up (imports, first-call initialisation)
        dec(data, rng)
    dtype = torch.float32 if normalize else torch.uint8
    buffer = torch.empty(batch_size, 3, 224, 224, dtype=dtype)
    with Clock() as clock:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            out = torch.empty(len(chunk), 3, 224, 224, dtype=dtype) if fresh else buffer[: len(chunk)]
            for k, data in enumerate(chunk):
                out[k].copy_(dec(data, rng))
                if normalize:
                    out[k].sub_(mean).mul_(inv)
    return clock.result(len(images), 0)


def _bare_job(job) -> dict[str, float]:
    return bare_rate(*job)


def bare_rate_concurrent(images: list[bytes], decoder: str, processes: int, normalize: bool = True,
                         fresh: bool = False) -> dict[str, float]:
    """``bare_rate`` in ``processes`` processes at once (every worker's core busy, as when a
    loader runs that many workers): the median process's figures."""
    import multiprocessing as mp

    if processes <= 1:
        return bare_rate(images, decoder, normalize, fresh=fresh)
    with mp.get_context("fork").Pool(processes) as pool:
        results = pool.map(_bare_job, [(images, decoder, normalize, 64, fresh)] * processes)
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def loop_collate(recipes):
    """collate_recipes as it was before it scattered with numpy: one torch call per sentence
    (benchmark reference, to measure what the vectorised padding saves; same tensors)."""
    import torch
    from recipekit.embedders.text import collate_recipes

    def pad2(seqs):
        out = torch.zeros(len(seqs), max([len(s) for s in seqs] + [1]), dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        return out, torch.as_tensor([len(s) for s in seqs], dtype=torch.long)

    def pad3(nested):
        n, width = max([len(x) for x in nested] + [1]), max([len(s) for x in nested for s in x] + [1])
        ids, lens = torch.zeros(len(nested), n, width, dtype=torch.long), torch.zeros(len(nested), n, dtype=torch.long)
        for b, sents in enumerate(nested):
            for i, s in enumerate(sents):
                ids[b, i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
                lens[b, i] = len(s)
        return ids, lens, torch.as_tensor([len(x) for x in nested], dtype=torch.long)

    title, title_len = pad2([list(r["title"]) for r in recipes])
    ingredients, ingredients_len, n_ingredients = pad3([list(r["ingredients"]) for r in recipes])
    names, _ = pad2([list(r.get("ingredient_names") or []) for r in recipes])
    if names.shape[1] < ingredients.shape[1]:
        names = torch.nn.functional.pad(names, (0, ingredients.shape[1] - names.shape[1]))
    instructions, instructions_len, n_instructions = pad3([list(r["instructions"]) for r in recipes])
    out = {"title": title, "title_len": title_len, "ingredients": ingredients, "ingredients_len": ingredients_len,
           "ingredient_names": names, "n_ingredients": n_ingredients, "instructions": instructions,
           "instructions_len": instructions_len, "n_instructions": n_instructions}
    assert out.keys() == collate_recipes(recipes[:1]).keys()
    return out


def loader_rate(folder: Path, vocab, *, workers: int, batch_size: int, epoch: int, **options) -> dict[str, float]:
    from recipekit.loaders import LoaderSpec, make_loader

    spec = LoaderSpec(vocab=vocab, train=True, batch_size=batch_size, num_workers=workers, seed=epoch,
                      persistent_workers=workers > 0, **options)
    loader, _ = make_loader(folder, spec)
    return _timed_epoch(loader, workers, lambda batch: batch["images"])


class PlainDataset:
    """The baseline: one original JPEG per recipe, opened with PIL, torchvision transforms."""

    def __init__(self, groups: list[list[str]], seed: int, length: int):
        import torchvision.transforms as T

        self.groups, self.seed, self.length = groups, seed, length
        self.transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        from PIL import Image

        paths = self.groups[i % len(self.groups)]
        path = paths[random.Random(self.seed * 1_000_003 + i).randrange(len(paths))]
        return self.transform(Image.open(path).convert("RGB"))


def baseline_rate(groups: list[list[str]], *, workers: int, batch_size: int, epoch: int,
                  length: int) -> dict[str, float]:
    import torch

    loader = torch.utils.data.DataLoader(PlainDataset(groups, epoch, length), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    return _timed_epoch(loader, workers, lambda batch: batch)


def original_groups(src: Path, out: Path) -> list[list[str]]:
    import polars as pl

    images = pl.read_parquet(out / "images.parquet").filter((pl.col("partition") == "train") & pl.col("present"))
    grouped = images.sort("position").group_by("recipe_id", maintain_order=True).agg(pl.col("path"))
    return [[str(src / "images" / p) for p in paths] for paths in grouped.get_column("path").to_list()]


def store_rate(out: Path, reads: int = 50_000) -> float:
    from recipekit.pipeline.store import RecipeStore

    s = RecipeStore(out)
    ids = s.keys()
    order = [random.Random(1).choice(ids) for _ in range(reads)]
    t0 = time.perf_counter()
    for i in order:
        s[i]
    return reads / (time.perf_counter() - t0)


def per_recipe_costs(folder: Path, out: Path, vocab) -> dict[str, float]:
    """Milliseconds per recipe, one core: tokenise a sample's JSON, read it from the store, collate."""
    import json

    from recipekit.embedders.text import collate_recipes
    from recipekit.pipeline.store import RecipeStore
    from recipekit.pipeline.vocab import tokenise_sample

    jsons = []
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            jsons += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".json")]
    store = RecipeStore(out)
    res = {}
    t0 = time.perf_counter()
    tokens = [tokenise_sample(json.loads(j), vocab) for j in jsons]
    res["tokenise_json"] = (time.perf_counter() - t0) / len(jsons) * 1e3
    ids = [json.loads(j)["id"] for j in jsons]
    records = [store[i] for i in ids]  # warm: the timed pass reads from the page cache
    t0 = time.perf_counter()
    records = [store[i] for i in ids]
    res["store_read"] = (time.perf_counter() - t0) / len(ids) * 1e3
    assert all({k: r[k] for k in t} == t for r, t in zip(records, tokens))  # the store holds the same ids
    for name, fn in (("collate_recipes", collate_recipes), ("loop_collate", loop_collate)):
        t0 = time.perf_counter()
        batches = [fn(tokens[i : i + 64]) for i in range(0, len(tokens), 64)]
        res[name] = (time.perf_counter() - t0) / len(tokens) * 1e3
    import webdataset as wds
    from recipekit.loaders.tario import tar_samples

    urls = [{"url": str(p)} for p in sorted(folder.glob("*.tar"))]
    for name, stage in (("tar_recipekit", tar_samples()), ("tar_webdataset", wds.tarfile_to_samples())):
        t0 = time.perf_counter()
        count = sum(1 for _ in stage(iter([dict(u) for u in urls])))
        res[name] = (time.perf_counter() - t0) / count * 1e3
    ref = collate_recipes(tokens[:64])
    assert all(bool((batches[0][k] == v).all()) and batches[0][k].shape == v.shape for k, v in ref.items())
    return res


def measure(src: Path, out: Path, args, *, recipes: int | None, epoch_length: int | None) -> dict:
    from recipekit.pipeline.vocab import Vocabulary

    reports = prepare_corpus(src, out, recipes=recipes, image_size=args.image_size, workers=args.workers, shard_size=args.shard_size)
    vocab = Vocabulary.from_file(out / "word2vec" / "vocab.txt")
    folder = out / "shards" / "train"
    imgs, groups = shard_images(folder), original_groups(src, out)
    n = epoch_length or len(imgs)
    common = {"workers": args.workers, "batch_size": args.batch_size}
    many = imgs * -(-512 // len(imgs))  # at least 512 decodes per bare measurement
    w = args.workers
    load = lambda e, **o: loader_rate(folder, vocab, epoch=e, epoch_length=n, **common, **o)
    configs = {f"bare/{d}": (lambda e, d=d: bare_rate_concurrent(many, d, w)) for d in DECODERS}
    configs["bare/uint8"] = lambda e: bare_rate_concurrent(many, DEFAULT, w, normalize=False)
    configs["bare/fresh"] = lambda e: bare_rate_concurrent(many, DEFAULT, w, fresh=True)
    configs["baseline"] = lambda e: baseline_rate(groups, epoch=e, length=n, **common)
    for d in DECODERS:  # defaults: token ids from OUT/recipes.lmdb (store="auto"), collate_recipes, float images
        configs[f"loader/{d}"] = lambda e, d=d: load(e, decoder=d)
    configs["loader/json"] = lambda e: load(e, decoder=DEFAULT, store=None)
    configs["loader/loop"] = lambda e: load(e, decoder=DEFAULT, recipe_collate=loop_collate)
    configs["loader/uint8"] = lambda e: load(e, decoder=DEFAULT, normalize=False)
    configs["loader/fresh"] = lambda e: load(e, decoder=DEFAULT, recycle_buffers=False)
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    for run in range(args.runs):  # interleaved, so that load from elsewhere hits every configuration alike
        for name, fn in configs.items():
            runs[name].append(fn(run))
            m = runs[name][-1]
            print(f"run {run}: {name} {m['rate']:,.0f} images/s, {m['cpu_ms']:.3f} worker CPU ms/image", flush=True)
    rates = {k: {f: statistics.median(m[f] for m in v) for f in v[0]} for k, v in runs.items()}
    return {"samples": len(imgs), "epoch": n, "originals": sum(len(g) for g in groups), "reports": reports,
            "rates": rates, "runs": runs,
            "store_reads": statistics.median(store_rate(out) for _ in range(args.runs)),
            "costs": per_recipe_costs(folder, out, vocab)}


def report(name: str, res: dict, args) -> list[str]:
    w, r = max(1, args.workers), res["rates"]
    rows = [("baseline: PIL per file + torchvision transforms (images only)", "baseline", "pil", None),
            *(("`make_loader` defaults", f"loader/{d}", d, f"bare/{d}") for d in DECODERS),
            ("`store=None`: tokenise each sample's JSON", "loader/json", DEFAULT, f"bare/{DEFAULT}"),
            ("`recipe_collate=` per-sentence padding (collate_recipes before 2026-11-29)", "loader/loop", DEFAULT,
             f"bare/{DEFAULT}"),
            ("`recycle_buffers=False`: a new shared-memory segment per batch", "loader/fresh",
             DEFAULT, f"bare/{DEFAULT}"),
            ("`normalize=False`: uint8 images, normalised on the device", "loader/uint8", DEFAULT, "bare/uint8")]
    lines = [f"**{name}**: {res['samples']:,} train samples in the shards, epochs of {res['epoch']:,} samples (one "
             f"photo each); the baseline reads the {res['originals']:,} original photos of the same recipes, one "
             "per recipe, as many per epoch.", "",
             "| loader | decoder | images/s | per worker | vs baseline | worker CPU ms/image | vs bare, CPU | vs bare, wall |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    base = r["baseline"]["rate"]
    for what, key, dec, bare_key in rows:
        m = r[key]
        cells = ["", ""]
        if bare_key:
            bare = r[bare_key]
            cells = [f"{bare['cpu_ms'] / m['cpu_ms']:.0%}", f"{m['rate'] / w / bare['rate']:.0%}"]
        lines.append(f"| {what} | {dec} | {m['rate']:,.0f} | {m['rate'] / w:,.0f} | {m['rate'] / base:.1f}x "
                     f"| {m['cpu_ms']:.2f} | " + " | ".join(cells) + " |")
    for key, what, dec in [*((f"bare/{d}", "bare: decode + transform + normalise (float)", d) for d in DECODERS),
                           ("bare/uint8", "bare: decode + transform (uint8)", DEFAULT),
                           ("bare/fresh", "bare, float, into newly allocated memory each batch", DEFAULT)]:
        b = r[key]
        lines.append(f"| {what}, {w} process(es) at once | {dec} | {b['rate']:,.0f} per process | | | "
                     f"{b['cpu_ms']:.2f} | " + ("100% | 100% |" if key != "bare/fresh" else " |  |"))
    d = r[f"loader/{DEFAULT}"]
    x, cpu_ratio = d["rate"] / base, r[f"bare/{DEFAULT}"]["cpu_ms"] / d["cpu_ms"]
    best = max((f"loader/{DEFAULT}", "loader/uint8"), key=lambda k: r[k]["rate"])
    lines += ["", f"Targets, `make_loader` defaults ({DEFAULT}): >= 3x the baseline: {x:.1f}x "
              f"({'met' if x >= 3 else 'not met'}); a worker at >= 85% of the bare per-core rate: {cpu_ratio:.0%} by "
              f"CPU time ({'met' if cpu_ratio >= 0.85 else 'not met'}). Fastest variant measured: "
              f"{r[best]['rate'] / base:.1f}x the baseline.",
              f"Where a worker's CPU goes beyond the bare work (ms/image): "
              f"{d['cpu_ms'] - r[f'bare/{DEFAULT}']['cpu_ms']:.2f} in all (tar reading, store reads, the Python "
              "stages, shared memory and the hand-over to the main process). Recycled batch memory saves "
              f"{r['loader/fresh']['cpu_ms'] - d['cpu_ms']:.2f} against a new shared-memory segment per batch "
              f"(bare: newly allocated private memory costs {r['bare/fresh']['cpu_ms'] - r[f'bare/{DEFAULT}']['cpu_ms']:.2f}"
              "; the kernel zeroes and maps every page again, dearly on this VM); vectorised padding saved "
              f"{r['loader/loop']['cpu_ms'] - d['cpu_ms']:.2f} against the per-sentence one; uint8 rather than "
              f"float32 images save {d['cpu_ms'] - r['loader/uint8']['cpu_ms']:.2f} (bare: "
              f"{r[f'bare/{DEFAULT}']['cpu_ms'] - r['bare/uint8']['cpu_ms']:.2f}).",
              f"Decoder: {DEFAULT} is the default (`decoder=\"auto\"`) because it is the faster here, bare and in the "
              f"loader ({r[f'bare/{DEFAULT}']['rate']:,.0f} vs {r['bare/pil']['rate']:,.0f} images/s per process); "
              "Pillow with `draft` stays available as `decoder=\"pil\"` and is what `auto` uses when torchvision's "
              "image ops are missing (torchvision 0.29 deprecates them in favour of TorchCodec)."]
    c = res["costs"]
    st = res["reports"].get("store")
    lines += [f"Per sample, one core: tar members to a sample {c['tar_recipekit']:.3f} ms (webdataset's "
              f"`tarfile_to_samples`: {c['tar_webdataset']:.3f} ms); tokenise the JSON {c['tokenise_json']:.3f} ms, read it from the store "
              f"{c['store_read']:.3f} ms; `collate_recipes` {c['collate_recipes']:.3f} ms (per-sentence padding: "
              f"{c['loop_collate']:.3f} ms, same tensors). Store: {res['store_reads']:,.0f} random "
              "`RecipeStore[id]` reads/s (LMDB get + decode, one process)"
              + (f"; built in {st.wall_s:.1f} s for {st.counts['recipes']:,} recipes, "
                 f"{st.counts['file_bytes'] / st.counts['recipes']:.0f} bytes per recipe on disk." if st else ".")]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", type=int, default=6000)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--real-epoch-length", type=int, default=2048,
                    help="samples per measured epoch on --real (the demo epoch is one pass over its shards)")
    ap.add_argument("--shard-size", type=int, default=250, help="samples per shard (prepare's shard stage)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "loader")
    ap.add_argument("--real", type=Path, default=None, help="also measure a real Recipe1M-layout corpus (SRC)")
    ap.add_argument("--write", action="store_true", help="write the results to docs/benchmarks.md")
    args = ap.parse_args()
    runs = [("demo", args.work / f"demo-{args.recipes}-{args.image_size}", None)]
    if args.real is not None:
        runs.append((f"real ({args.real.name})", args.real, args.work / f"real-{args.real.name}"))
    body = [f"Machine: {machine()}. Date: {today()}.", f"Command: `python {' '.join(['benchmarks/loader.py', *sys.argv[1:]])}`",
            "", f"Train loaders, {args.workers} worker(s), batches of {args.batch_size}, 224 px crops, float32 "
            f"normalised images; medians of {args.runs} interleaved runs of every configuration. images/s = images "
            "delivered as training batches to the main process per second of wall time, in steady state (persistent "
            "workers; the second epoch is timed, so worker start-up and first-use imports are left out, for the "
            "baseline too); per worker = images/s / workers. Worker CPU ms/image = CPU time of the worker processes "
            "(user + system, from /proc) per image. 'vs bare' compares a worker with the per-core limit, "
            "'bare': a process that decodes the same shard JPEGs from memory, crops, flips and normalises them into "
            "a batch (`ImageDecoder`, no loader; batch after batch into the same memory, so no allocation is "
            "counted), run in as many processes at once as the loader has workers (both "
            "cores busy, as under the loader). The CPU column divides bare CPU "
            "ms/image by the worker's (insensitive to other load on the machine), the wall column divides per-worker "
            "images/s by bare images/s per process.", ""]
    for name, where, real_out in runs:
        if real_out is not None:
            res = measure(where, real_out, args, recipes=None, epoch_length=args.real_epoch_length)
        else:
            res = measure(where / "src", where / "out", args, recipes=args.recipes, epoch_length=None)
        text = report(name, res, args)
        print("\n".join(text), flush=True)
        body += text + [""]
    if args.write:
        replace_section(ROOT / "docs" / "benchmarks.md", "loader", "\n".join(body),
                        "Streaming loaders and recipe store (benchmarks/loader.py)")


if __name__ == "__main__":
    main()
