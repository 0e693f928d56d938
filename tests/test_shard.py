"""Stage `shard`: round trips on demo and real corpora, bad photos, stock webdataset, kill and resume."""

import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from recipekit.pipeline.prepare import prepare
from recipekit.pipeline.quarantine import read_quarantine
from recipekit.pipeline.shard import ShardParams, cut_shards, shard, shard_order

TEXT_STAGES = ["parse", "ingredients", "classes"]


def _prepared(src: Path, out: Path, workers: int = 1) -> Path:
    prepare(src, out, stages=TEXT_STAGES, workers=workers, quiet=True)
    return out


@pytest.fixture(scope="module")
def demo_prepared(demo_corpus, tmp_path_factory):
    return _prepared(demo_corpus, tmp_path_factory.mktemp("demo-prepared") / "out")


def _copy(prepared: Path, dest: Path) -> Path:
    shutil.copytree(prepared, dest)
    return dest


def _read_tar(path: Path) -> list[tuple[str, list[tarfile.TarInfo], dict[str, bytes]]]:
    samples: dict[str, tuple[list, dict]] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            key, ext = info.name.split(".", 1)
            members, data = samples.setdefault(key, ([], {}))
            members.append(info)
            data[ext] = tar.extractfile(info).read()
    return [(k, m, d) for k, (m, d) in samples.items()]


def check_round_trip(out: Path, counts: dict, image_size: int = 256, max_images: int = 5) -> dict[str, dict]:
    """Every recipe with photos is a sample or quarantined as dropped; every image is in a sample,
    quarantined, or beyond max_images; every sample matches the Parquet inputs. Returns samples by id."""
    recipes = {r["id"]: r for r in pl.read_parquet(out / "recipes.parquet").to_dicts()}
    names = dict(pl.read_parquet(out / "ingredients.parquet").select("id", "ingredients").iter_rows())
    classes = dict(pl.read_parquet(out / "recipe_classes.parquet").select("id", "class_id").iter_rows())
    images = pl.read_parquet(out / "images.parquet").sort(["recipe_id", "position"])
    quarantine = read_quarantine(out).to_pylist()
    q_shard = {q["record_id"]: q for q in quarantine if q["stage"] == "shard"}
    index = json.loads((out / "shards" / "index.json").read_text())
    samples: dict[str, dict] = {}
    for partition, entry in index.items():
        sizes = json.loads((out / "shards" / partition / "sizes.json").read_text())
        assert list(sizes) == entry["shards"] and sum(sizes.values()) == entry["samples"]
        for i, name in enumerate(entry["shards"]):
            assert name == f"{partition}-{i:06d}.tar"
            got = _read_tar(out / "shards" / partition / name)
            assert len(got) == sizes[name]
            stats = json.loads((out / "shards" / partition / name.replace(".tar", "_stats.json")).read_text())
            tar_bytes = (out / "shards" / partition / name).stat().st_size
            assert stats["samples"] == sizes[name] and stats["bytes"] == tar_bytes
            for key, members, data in got:
                doc = json.loads(data["json"].decode("utf-8"))
                n = len(doc["images"])
                assert [m.name for m in members] == [f"{key}.json", f"{key}.cls"] + [f"{key}.{j}.jpg" for j in range(n)]
                assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
                           and m.mode == 0o644 for m in members)
                r = recipes[key]
                assert r["partition"] == partition and 1 <= n <= max_images and key not in samples
                assert doc == {"id": key, "title": r["title"], "ingredients": names[key] or [],
                               "ingredient_lines": r["ingredients"], "instructions": r["instructions"],
                               "class_id": classes[key], "images": doc["images"]}
                assert data["cls"] == str(classes[key]).encode()
                for j in range(n):
                    img = Image.open(io.BytesIO(data[f"{j}.jpg"]))
                    assert img.format == "JPEG" and img.mode == "RGB" and min(img.size) <= image_size
                samples[key] = doc
    in_shards = {iid for doc in samples.values() for iid in doc["images"]}
    unused = 0
    for rid, group in images.group_by("recipe_id", maintain_order=True):
        rid, ids = rid[0], group["image_id"].to_list()
        if rid in samples:
            assert samples[rid]["images"] == [i for i in ids if i in in_shards]  # position order
        else:
            assert q_shard[rid]["reason"] == f"recipe dropped: none of its {len(ids)} photos could be read"
        for iid in ids:
            assert (iid in in_shards) + (iid in q_shard) <= 1
            unused += iid not in in_shards and iid not in q_shard
    assert unused == counts["images_unused"]
    assert counts["images_in_shards"] == len(in_shards) and counts["samples"] == len(samples)
    assert counts["quarantined"] == len(q_shard)
    return samples


def test_demo_corpus_round_trips_and_is_deterministic(demo_corpus, demo_prepared, tmp_path, monkeypatch):
    import recipekit.pipeline.shard as shard_module

    a = shard(demo_corpus, _copy(demo_prepared, tmp_path / "a"), params=ShardParams(max_count=40), workers=1)
    b = shard(demo_corpus, _copy(demo_prepared, tmp_path / "b"), params=ShardParams(max_count=40), workers=2)
    # planned and read back 7 recipes at a time (runs of shards; a 40-sample shard alone): same bytes
    monkeypatch.setattr(shard_module, "PLAN_ROWS", 7)
    c = shard(demo_corpus, _copy(demo_prepared, tmp_path / "c"), params=ShardParams(max_count=40), workers=1)
    monkeypatch.undo()
    assert a.status == b.status == c.status == "ran" and a.counts["shards"] > 3 and c.counts == a.counts
    samples = check_round_trip(tmp_path / "a", a.counts)
    assert len(samples) == a.counts["recipes_with_photos"] and a.counts["quarantined"] == 0
    tars = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "shards").rglob("*.tar"))
    for rel in tars + [Path("shards/index.json"), Path("shards/train/sizes.json")]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "c" / rel).read_bytes(), rel
    again = shard(demo_corpus, tmp_path / "a", params=ShardParams(max_count=40))
    assert again.status == "skipped"


def test_stock_webdataset_reads_every_sample(demo_corpus, demo_prepared, tmp_path):
    wds = pytest.importorskip("webdataset")
    out = _copy(demo_prepared, tmp_path / "out")
    counts = shard(demo_corpus, out, params=ShardParams(max_count=50)).counts
    index = json.loads((out / "shards" / "index.json").read_text())
    urls = [str(out / "shards" / p / s) for p, e in index.items() for s in e["shards"]]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        doc, n = sample["json"], len(sample["json"]["images"])
        assert sample["__key__"] == doc["id"] and sample["cls"] == doc["class_id"]
        assert all(isinstance(sample[f"{j}.jpg"], Image.Image) for j in range(n)) and f"{n}.jpg" not in sample
        seen += 1
    assert seen == counts["samples"] > 0


@pytest.mark.parametrize("fixture", ["recipes_en", "recipes_zh"])
def test_real_corpora_round_trip(fixture, tmp_path, request):
    src = request.getfixturevalue(fixture)
    out = _prepared(src, tmp_path / "out")
    report = shard(src, out)
    counts = report.counts
    samples = check_round_trip(out, counts)
    assert counts["samples"] >= 100 and counts["recipes_dropped"] == 0
    assert counts["images_in_shards"] + counts["images_quarantined"] + counts["images_unused"] == \
        pl.read_parquet(out / "images.parquet").height
    assert len(samples) == counts["samples"]


# ---- a corpus of bad photos, made here -----------------------------------------------------------

def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _as(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _bad_photos() -> dict[str, list[bytes | None]]:
    """Recipe id -> its photos' file contents (None: no file)."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    good = _jpeg(photo)
    upright = Image.new("RGB", (400, 300), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 400, 150))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "truncated": [good[: len(good) // 2]],
        "pngalpha": [_as(photo.convert("RGBA"), "PNG")],
        "webp": [_as(photo, "WEBP")],
        "cmyk": [_jpeg(photo.convert("CMYK"))],
        "grey": [_jpeg(photo.convert("L"))],
        "sixteen": [_as(Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257), "PNG")],
        "palette": [_as(photo.convert("P"), "PNG")],
        "exif": [_jpeg(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())],
        "bomb": [_as(Image.new("L", (1200, 1000)), "PNG")],
        "missing": [None],
        "text": [b"<html><body>404 Not Found</body></html>"],
        "mixed": [None, good[:300], good],
        "many": [good] * 7,
    }


def _bad_corpus(root: Path) -> Path:
    layer1, layer2 = [], []
    for i, (rid, photos) in enumerate(_bad_photos().items()):
        layer1.append({"id": rid, "title": f"Dish {rid}", "ingredients": [{"text": "1 cup flour"}],
                       "instructions": [{"text": "Bake it."}], "partition": "train", "url": None})
        ids = []
        for k, data in enumerate(photos):
            iid = f"{i:04x}{k:02x}beef.jpg"
            ids.append({"id": iid, "url": None})
            if data is not None:
                path = root / "images" / "train" / iid[0] / iid[1] / iid[2] / iid[3] / iid
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        layer2.append({"id": rid, "images": ids})
    (root / "layer1.json").write_text(json.dumps(layer1))
    (root / "layer2.json").write_text(json.dumps(layer2))
    return root


def test_bad_photos_are_converted_or_quarantined(tmp_path):
    src = _bad_corpus(tmp_path / "src")
    out = _prepared(src, tmp_path / "out")
    counts = shard(src, out, params=ShardParams(image_size=128, pixel_limit=1_000_000)).counts
    samples = check_round_trip(out, counts, image_size=128)
    q = {r["record_id"]: r for r in read_quarantine(out).to_pylist() if r["stage"] == "shard"}
    rows = pl.read_parquet(out / "images.parquet").sort("position").select("image_id", "recipe_id").rows()
    reasons = {rid: q[iid]["reason"] for iid, rid in rows if iid in q}
    mixed_ids = [iid for iid, rid in rows if rid == "mixed"]
    assert reasons["truncated"].startswith("truncated or corrupt JPEG: ")
    assert reasons["bomb"] == "decompression bomb: 1200000 pixels > limit 1000000"
    assert reasons["missing"] == "missing file"
    assert reasons["text"].startswith("not an image")
    assert {q[r]["reason"] for r in ("truncated", "bomb", "missing", "text")} == {
        "recipe dropped: none of its 1 photos could be read"}
    assert [q[iid]["reason"].split(":")[0] for iid in mixed_ids[:2]] == ["missing file", "truncated or corrupt JPEG"]
    assert q[mixed_ids[0]]["source"] == f"train/0/0/0/b/{mixed_ids[0]}"
    assert samples["mixed"]["images"] == mixed_ids[2:]
    assert len(samples["many"]["images"]) == 5 and counts["images_unused"] == 2
    assert counts["recipes_dropped"] == 4 and counts["images_quarantined"] == 6
    assert sorted(samples) == sorted(["pngalpha", "webp", "cmyk", "grey", "sixteen", "palette", "exif", "mixed",
                                      "many"])
    expected = {"converted_png": 3, "converted_webp": 1, "converted_cmyk": 1, "converted_greyscale": 2,
                "converted_palette": 1, "converted_alpha": 1, "converted_16bit": 1, "converted_exif_rotation": 1}
    assert {k: v for k, v in counts.items() if k.startswith("converted_")} == expected
    with tarfile.open(next((out / "shards" / "train").glob("*.tar"))) as tar:
        upright = Image.open(tar.extractfile("exif.0.jpg"))
        assert upright.size == (171, 128)
        top, bottom = upright.getpixel((85, 10)), upright.getpixel((85, 118))
        assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


# ---- kill and resume ------------------------------------------------------------------------------

def test_killed_run_resumes_to_the_same_bytes(demo_corpus, demo_prepared, tmp_path):
    clean = _copy(demo_prepared, tmp_path / "clean")
    expected = shard(demo_corpus, clean, params=ShardParams(max_count=4), workers=2).counts
    out = _copy(demo_prepared, tmp_path / "out")
    cmd = [sys.executable, "-m", "recipekit.cli.main", "prepare", str(demo_corpus), str(out), "--quiet",
           "--stages", "shard", "--workers", "1", "--shard-max-count", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("shards/*/*_stats.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifests" / "shard.json").exists(), "the run finished before the kill landed"
    finished = len(list(out.glob("shards/*/*_stats.json")))
    assert 1 <= finished < expected["shards"]
    resumed = shard(demo_corpus, out, params=ShardParams(max_count=4)).counts
    assert resumed["shards_reused"] >= finished and resumed["shards_reused"] < resumed["shards"]
    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in (root / "shards").rglob("*")
                      if not p.name.endswith("_stats.json"))

    names = listing(clean)
    assert names == listing(out)
    for rel in names:
        if (clean / rel).is_file():
            assert (clean / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    # Other parameters: a new plan, and the shards of the old one are gone.
    fewer = shard(demo_corpus, out, params=ShardParams(max_count=1000)).counts
    assert fewer["shards"] == 3 and fewer["shards_reused"] == 0
    assert sorted(p.name for p in (out / "shards" / "train").iterdir()) == [
        "sizes.json", "train-000000.tar", "train-000000_stats.json"]


def test_read_back_names_the_recipes_it_cannot_find(demo_prepared):
    from recipekit.pipeline.shardplan import shard_rows

    with pytest.raises(ValueError, match=r"1 planned recipe\(s\) with photos not found .* 'no-such-id'"):
        list(shard_rows(demo_prepared, [("train", "train-000000", ["no-such-id"])], rows=10))


def test_plan_helpers():
    assert cut_shards([10] * 7, 3, 10**9) == [(0, 3), (3, 6), (6, 7)]
    assert cut_shards([10, 10, 50, 10], 100, 25) == [(0, 2), (2, 3), (3, 4)]
    assert cut_shards([], 3, 10) == []
    ids = [f"r{i}" for i in range(50)]
    order = shard_order(ids, 0)
    assert sorted(order) == list(range(50)) and order != list(range(50)) and order != shard_order(ids, 1)
    # The order of a recipe relative to another does not depend on the rest of the corpus.
    sub = shard_order(ids[:10], 0)
    assert [ids[i] for i in order if i < 10] == [ids[i] for i in sub]
    with pytest.raises(ValueError, match="quality"):
        ShardParams(quality=0)


def test_symlinks_that_leave_the_corpus_are_refused_unless_allowed(tmp_path):
    """A photo reached through a link out of SRC/images (the file's own link, or a folder's on
    the way) is quarantined; a link inside the corpus is followed; --shard-allow-external-links
    reads them all."""
    photo = _jpeg(Image.new("RGB", (64, 48), (200, 30, 30)))
    secret = tmp_path / "elsewhere"
    (secret / "d").mkdir(parents=True)
    (secret / "x.jpg").write_bytes(photo)
    (secret / "d" / "0020beef.jpg").write_bytes(photo)
    layer1, layer2 = [], []
    for i, rid in enumerate(["inside", "filelink", "dirlink"]):
        layer1.append({"id": rid, "title": f"Dish {rid}", "ingredients": [{"text": "1 cup flour"}],
                       "instructions": [{"text": "Bake it."}], "partition": "train", "url": None})
        layer2.append({"id": rid, "images": [{"id": f"00{i}0beef.jpg", "url": None}]})
    src = tmp_path / "src"
    (src / "images" / "train" / "0" / "0").mkdir(parents=True)
    (src / "layer1.json").write_text(json.dumps(layer1))
    (src / "layer2.json").write_text(json.dumps(layer2))
    base = src / "images" / "train" / "0" / "0"
    (base / "real.jpg").write_bytes(photo)
    (base / "0" / "0").mkdir(parents=True)
    (base / "0" / "0" / "0000beef.jpg").symlink_to(base / "real.jpg")  # stays inside: fine
    (base / "1" / "0").mkdir(parents=True)
    (base / "1" / "0" / "0010beef.jpg").symlink_to(secret / "x.jpg")  # the file's own link leaves
    (base / "2").mkdir()
    (base / "2" / "0").symlink_to(secret / "d", target_is_directory=True)  # a folder's link leaves
    out = _prepared(src, tmp_path / "out")
    counts = shard(src, out).counts
    q = {r["record_id"]: r["reason"] for r in read_quarantine(out).to_pylist() if r["stage"] == "shard"}
    assert counts["samples"] == 1 and counts["images_quarantined"] == 2
    for iid in ("0010beef.jpg", "0020beef.jpg"):
        assert q[iid].startswith("symlink leaves the corpus (to ") and str(secret) in q[iid], q
    allowed = shard(src, out, params=ShardParams(allow_external_links=True)).counts
    assert allowed["samples"] == 3 and allowed["images_quarantined"] == 0


@pytest.mark.parametrize("rows, max_open", [(7, 256), (7, 2), (10_000, 256)])
def test_bucketed_read_back_equals_whole_table_joins(demo_prepared, monkeypatch, rows, max_open):
    """One streaming bucketing pass gives each shard the rows the whole-table joins give it."""
    import polars as pl

    from recipekit.pipeline import shardplan
    from recipekit.pipeline.shard import ShardParams

    monkeypatch.setattr(shardplan, "MAX_OPEN_BUCKETS", max_open)
    flat = shardplan.plan_shards(demo_prepared, ShardParams(max_count=5), ["train", "val", "test"]).flat()
    assert len(flat) > 6
    whole = {t: shardplan._scan(demo_prepared, t) for t in shardplan._SOURCES}
    got = list(shardplan.shard_rows(demo_prepared, flat, rows=rows))
    assert [i for i, _ in got] == list(range(len(flat)))
    for i, samples in got:
        want = shardplan._read_rows(whole, pl.DataFrame({"id": flat[i][2]}, schema={"id": pl.Utf8})).to_dicts()
        assert samples == want and [s["id"] for s in samples] == flat[i][2]
    assert not [p for p in demo_prepared.iterdir() if "shard-buckets" in p.name]  # the buckets are gone
