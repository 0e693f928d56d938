"""Rendering for benchmarks/scale.py: the cost-curve table, exponents, per-core rates, the log-log
plot and the rates fragment, all from the figures in docs/img/scale.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["parse", "ingredients", "word2vec", "classes", "store", "shard"]
# (name, recipes, photos) of the corpora users ask about: Recipe1M and Recipe1M+.
TARGETS = [("Recipe1M (1M recipes, 800k photos)", 1_000_000, 800_000),
           ("Recipe1M+ (1M recipes, 13M photos)", 1_000_000, 13_000_000)]


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def _marginal(row: dict, start: dict | None, stage: str) -> float | None:
    """Units per CPU second beyond the start-up run (units per second per core)."""
    m = row["stages"].get(stage)
    s = start["stages"].get(stage) if start else None
    if not m or not s or m["units"] <= s["units"] or m["cpu_s"] <= s["cpu_s"]:
        return None
    return (m["units"] - s["units"]) / (m["cpu_s"] - s["cpu_s"])


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def curves(data: dict) -> tuple[list[dict], dict | None]:
    runs = sorted(data["runs"].values(), key=lambda r: r["recipes"])
    start = data["runs"].get(str(data.get("startup_size")))
    return [r for r in runs if r is not start], start


def render_table(data: dict) -> str:
    rows, start = curves(data)
    lines = [
        "| stage | recipes | units | wall s | CPU s | CPU s per 1k units | peak RSS MB | CPU exponent | RSS exponent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        have = [r for r in rows if stage in r["stages"]]
        prev = None
        for r in have:
            m = r["stages"][stage]
            e_cpu = e_rss = None
            if prev is not None:
                p = prev["stages"][stage]
                e_cpu = _slope([p["units"], m["units"]], [p["cpu_s"], m["cpu_s"]])
                e_rss = _slope([p["units"], m["units"]], [p["peak_rss_mb"], m["peak_rss_mb"]])
            unit = "images" if stage == "shard" else "recipes"
            lines.append(f"| {stage} | {r['recipes']:,} | {m['units']:,} {unit} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
                         f"{1000 * m['cpu_s'] / max(1, m['units']):.2f} | {m['peak_rss_mb']:.0f} | "
                         f"{_fmt(e_cpu)} | {_fmt(e_rss)} |")
            prev = r
    return "\n".join(lines)


def render_rates(data: dict) -> list[tuple[str, float | None, float | None, float, float]]:
    """Per stage: (stage, marginal units/s per core, start-up CPU s, CPU exponent, peak RSS at the largest size)."""
    rows, start = curves(data)
    out = []
    for stage in STAGES:
        have = [r for r in rows if stage in r["stages"]]
        if not have:
            continue
        big = have[-1]
        base = start["stages"][stage]["cpu_s"] if start and stage in start["stages"] else None
        fit = _slope([r["stages"][stage]["units"] for r in have], [r["stages"][stage]["cpu_s"] for r in have])
        out.append((stage, _marginal(big, start, stage), base, fit, big["stages"][stage]["peak_rss_mb"]))
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, _ = curves(data)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = dict(zip(STAGES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for stage in STAGES:
        have = [r for r in rows if stage in r["stages"]]
        if not have:
            continue
        xs = [r["stages"][stage]["units"] for r in have]
        c = colours[stage]
        ax1.plot(xs, [r["stages"][stage]["cpu_s"] for r in have], "o-", color=c,
                 label=stage + (" (images)" if stage == "shard" else ""))
        ax2.plot(xs, [r["stages"][stage]["peak_rss_mb"] for r in have], "o-", color=c, label=stage)
        for label, runs in data.get("baselines", {}).items():  # the baseline's stages, dotted
            old = [runs[k]["stages"][stage] for k in sorted(runs, key=int) if stage in runs[k]["stages"]]
            if old:
                ax2.plot([m["units"] for m in old], [m["peak_rss_mb"] for m in old], "x:", color=c,
                         label=f"{stage} ({label})")
    xs = [r["recipes"] for r in rows]
    if xs:
        lo, hi = min(xs), max(xs)
        ax1.plot([lo, hi], [lo / 1000, hi / 1000], "k--", lw=0.8, label="linear (1 ms/unit)")
    for ax, ylabel, title in ((ax1, "CPU seconds (user + system, process tree)", "cost"),
                              (ax2, "peak RSS of the process tree, MB", "memory")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("corpus size (recipes; images for shard)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"prepare stages: {title} vs corpus size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if ax is ax2 else 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


MEMORY = """What a stage keeps in memory, whatever the corpus size (one chunk is 50,000 recipes, `tablestream.CHUNK_ROWS`;
`parse` writes row groups of 20,000; `store` encodes 5,000 recipes a task and commits 20,000 a transaction):

- `parse` streams the JSON files; it keeps one entry per accepted recipe id (a dict of id -> partition and
  byte offset, about 120 bytes per recipe measured on 1M ids: for layer2, det_ingrs and the duplicate check)
  and the ids of the det_ingrs entries. For layer2 a first pass keeps 8 bytes (a hash) per recipe and photo id,
  so that the second pass tracks only the ids that occur more than once (a set of every photo id, as before,
  costs 97 bytes per id measured on 1M ids: 1.3 GB for 13M photos); photos are checked on disk with one
  `lstat` each instead of listing the image tree into memory.
- `ingredients` reads recipes.parquet twice in chunks: first the distinct ingredient lines (each is extracted
  once: the lines and their names are the stage's state, they grow with the number of *distinct* lines), then
  each chunk's lists, written as they come; it also holds the det_ingrs entries (a compact Arrow column) and the
  recipe ids (to place them). Its two extractor processes account for most of its peak.
- `word2vec` writes the train sentences chunk by chunk to a scratch file that gensim streams; what remains is
  the model: the vocabulary and two float32 matrices of vocabulary x 300 (inherent; the vocabulary grows
  sub-linearly with the corpus).
- `classes` tokenises titles chunk by chunk into compact arrays: the distinct title bigrams (counted, as the rule
  needs) and 4 bytes per (recipe, bigram) and per (recipe, Food-101 name) pair, plus a byte (partition) and a
  label (int32) per recipe; labels are written chunk by chunk.
- `store` sorts only the recipe ids (LMDB is written in key order); values are encoded chunk by chunk to a scratch
  file and read back in key order: a few tens of bytes per recipe (id, order, offset, the `/keys` lists). It
  encodes in worker processes (more than one task), two tasks in flight per worker (rows out, encoded values back):
  that, not the corpus, is most of its peak (hence its step from the one-process baseline at 10,000 recipes).
- `shard` plans from (id, partition, estimated bytes) per recipe with photos, computed with polars' streaming
  engine (a few dozen bytes a recipe), and reads the samples' text and photo paths back for runs of consecutive
  shards of 10,000 recipes (`shard.PLAN_ROWS`; pipeline/shardplan.py), instead of joining every recipe's text
  and photo paths into one frame first (the *shard-before* baseline: its growth from 10k to 100k is twice as
  large). Most of its peak is its worker processes."""


def render_baselines(data: dict) -> list[str]:
    lines = []
    for label, runs in data.get("baselines", {}).items():
        some = next(iter(runs.values()))
        lines += [
            "",
            f"Against a baseline measured in the same session on the same corpora (*{label}*: the stages of "
            + (some.get("source") or f"the code on PYTHONPATH={some['pythonpath']}")
            + (f"; its `word2vec` ran {some['w2v_epochs']} epoch(s), so only its memory compares" if some.get("w2v_epochs")
               else "") + "):",
            "",
            f"| stage | recipes | {label}: CPU s | now: CPU s | {label}: peak RSS MB | now: peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for stage in STAGES:
            for size in sorted(runs, key=int):
                b = runs[size]["stages"].get(stage)
                a = data["runs"].get(size, {}).get("stages", {}).get(stage)
                if b and a:
                    cpu_b = "—" if stage == "word2vec" and some.get("w2v_epochs") else f"{b['cpu_s']:.1f}"
                    lines.append(f"| {stage} | {int(size):,} | {cpu_b} | {a['cpu_s']:.1f} | {b['peak_rss_mb']:.0f} | "
                                 f"{a['peak_rss_mb']:.0f} |")
    return lines


def _photos(row: dict) -> int:
    return row["stages"].get("parse", {}).get("counts", {}).get("images_present", 0)


def render_doc(data: dict, json_path: str = "docs/img/scale.json", png_path: str = "docs/img/scale.png",
               memory: bool = True) -> str:
    rows, start = curves(data)
    cmd = data.get("command", "")
    sizes = ", ".join(f"{r['recipes']:,}" + (f" ({_photos(r):,} photos)" if r["photos"] else " (text only)")
                      for r in rows)
    lines = [
        f"Machine: {data['machine']}. Dates: {', '.join(sorted({r['date'] for r in data['runs'].values()}))}.",
        f"Command: `{cmd}`. Raw figures: `{json_path}`; plot: `{png_path}`.",
        "",
        f"Corpora: demo corpora of {sizes} recipes (`recipekit demo-data`, photos {data['image_size']} px, "
        "1-3 per recipe with photos); the largest photo corpus is the "
        f"{max([_photos(r) for r in rows if r['photos']] or [0]):,}-image sharding run. "
        f"Every stage runs alone as `recipekit prepare SRC OUT --stages S --force --quiet --workers "
        f"{data['workers']}`. *CPU s* is user + system time of the whole process tree (workers included); "
        "*peak RSS* the largest summed RSS of the tree, sampled every 0.1 s. Other jobs shared the 2 cores "
        "during these runs (the JSON has the load average of each), which inflates wall times but not CPU "
        "times: linearity is judged on CPU seconds. *units* are recipes, or photos written for `shard`. "
        "The exponents are the slopes of log CPU s (log peak RSS) against log units between a size and the "
        "previous one: 1 is linear cost, 0 is flat memory. Each stage also pays a fixed start-up "
        "(imports, spaCy, gensim, worker processes), which pulls the small-size exponents below 1; and the "
        "text-only corpora have no photos, so their `parse` has no layer2 entries or photo checks to do.",
        "",
        render_table(data),
        "",
        "Marginal rates (units per CPU second, i.e. per core, beyond the start-up measured on a "
        f"{data.get('startup_size') or 0:,}-recipe corpus), CPU exponent fitted over all sizes:",
        "",
        "| stage | units/s per core | start-up CPU s | CPU exponent (fit) | peak RSS MB at the largest size |",
        "|---|---:|---:|---:|---:|",
    ]
    for stage, rate, base, fit, rss in render_rates(data):
        lines.append(f"| {stage} | {_fmt(rate, ',.0f')} | {_fmt(base, '.1f')} | {_fmt(fit)} | {rss:.0f} |")
    lines += render_baselines(data)
    lines += ["", f"![cost and memory of the prepare stages vs corpus size]({png_path.removeprefix('docs/')})"]
    if memory:
        lines += ["", MEMORY]
    notes = data.get("notes")
    if notes:
        lines += ["", notes]
    return "\n".join(lines)


def _real_bytes_per_recipe() -> str:
    """layer1.json bytes per recipe of the real English sample beside the project, if present."""
    path = ROOT.parent / "shared" / "data" / "recipes-en" / "layer1.json"
    if not path.exists():
        return "no real sample to compare with"
    n = len(json.loads(path.read_text(encoding="utf-8")))
    return f"the real English sample ../shared/data/recipes-en: {path.stat().st_size / n:,.0f} bytes per recipe over {n:,}"


def render_fragment(data: dict) -> str:
    rows, start = curves(data)
    big = {s: max((r for r in rows if s in r["stages"]), key=lambda r: r["recipes"]) for s in STAGES
           if any(s in r["stages"] for r in rows)}
    bpr = {r["recipes"]: r["layer1_mb"] * 1e6 / r["recipes"] for r in rows}
    lines = [
        "<!-- Generated by benchmarks/scale.py from docs/img/scale.json; do not edit by hand. -->",
        f"Per-stage rates of `recipekit prepare`, measured by `{data.get('command', '')}` on "
        f"{data['machine']} ({', '.join(sorted({r['date'] for r in data['runs'].values()}))}), "
        f"`--workers {data['workers']}`, demo corpora (photos {data['image_size']} px). "
        "Rate = marginal units per CPU second (= per core), beyond each stage's fixed start-up CPU "
        f"(measured on {data.get('startup_size') or 0:,} recipes); hours on C cores ~ units / (rate x C) / 3600 "
        "+ start-up (assuming the stage keeps C cores busy).",
        "",
        "| stage | unit | rate, units/s per core | start-up CPU s | measured at | CPU s there | peak RSS MB there |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for stage, rate, base, _fit, rss in render_rates(data):
        r = big[stage]
        m = r["stages"][stage]
        unit = "photo" if stage == "shard" else "recipe"
        lines.append(f"| {stage} | {unit} | {_fmt(rate, ',.0f')} | {_fmt(base, '.1f')} | {m['units']:,} {unit}s | "
                     f"{m['cpu_s']:.1f} | {rss:.0f} |")
    lines += [
        "",
        "Demo recipes are shorter than real ones: layer1.json bytes per recipe here "
        + ", ".join(f"{b:,.0f} at {n:,}" for n, b in sorted(bpr.items()))
        + f" ({_real_bytes_per_recipe()}), and they draw ingredient lines from a fixed "
        "pool (few distinct lines; see the prepare_text section of docs/benchmarks.md for the cost of distinct "
        "lines). Demo photos are synthetic 512 px JPEGs; real photos differ in size and `shard` decodes large JPEGs "
        "at reduced scale: the sharding section of docs/benchmarks.md has per-core rates on real photos.",
        "",
        "Applied to the target corpora (arithmetic on the rates above, not a measurement; text stages per "
        "recipe, `shard` per photo; CPU minutes = (units / rate + start-up) / 60, divide by the cores; the "
        "bytes-per-recipe ratio "
        "above suggests scaling the text stages up accordingly):",
        "",
        "| stage | " + " | ".join(f"{name}: CPU min" for name, _, _ in TARGETS) + " |",
        "|---|" + "---:|" * len(TARGETS),
    ]
    per_photo = _parse_per_photo_s(data)
    for stage, rate, base, _fit, _rss in render_rates(data):
        cells = []
        for _name, recipes, photos in TARGETS:
            units = photos if stage == "shard" else recipes
            extra = photos * per_photo if stage == "parse" and per_photo else 0.0
            cells.append("—" if not rate else f"{(units / rate + extra + (base or 0)) / 60:,.1f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    if per_photo:
        lines += ["", f"`parse`'s rate above is per recipe on a text-only corpus; the photos (layer2 entries, one "
                  f"`lstat` each) add {per_photo * 1e6:.0f} CPU microseconds per photo, derived from the largest "
                  "corpus with photos (its parse CPU less its recipes at the text-only rate, over its photos) and "
                  "included in the `parse` row of this table."]
    return "\n".join(lines)


def _parse_per_photo_s(data: dict) -> float | None:
    """CPU seconds per photo that `parse` spends beyond its per-recipe cost (from the largest photo run)."""
    rows, start = curves(data)
    text = [r for r in rows if not r["photos"] and "parse" in r["stages"]]
    photo = [r for r in rows if r["photos"] and "parse" in r["stages"] and _photos(r)]
    if not text or not photo or not start or "parse" not in start["stages"]:
        return None
    rate = _marginal(max(text, key=lambda r: r["recipes"]), start, "parse")
    big = max(photo, key=lambda r: r["recipes"])
    base = start["stages"]["parse"]
    if not rate:
        return None
    return max(0.0, big["stages"]["parse"]["cpu_s"] - base["cpu_s"] - (big["recipes"] - base["units"]) / rate) / _photos(big)
