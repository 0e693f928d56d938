"""Streaming loaders over WebDataset shards: splitting, epochs, image picking, transforms,
batches (plain and class-aware), determinism; and the real `shard` stage when present."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
# torchvision 0.29 deprecates its image decoders (one warning per call); the loader still uses them
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
pytest.importorskip("webdataset")
pytest.importorskip("torchvision")

from PIL import Image
from recipekit.embedders.text import collate_recipes
from recipekit.core import Prepared
from recipekit.loaders import (
    LoaderSpec,
    class_aware_batches,
    make_loader,
    normalisation_for,
    resolve_shards,
)
from recipekit.loaders.shards import SharedEpoch
from recipekit.pipeline.vocab import Vocabulary, tokenise_sample

WORDS = ["tomato", "sauce", "olive_oil", "oil", "salt", "egg", "onion", "bake", "the", "cake", "chop", ".", "2", "cups"]
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200)]  # photo k has colour k


def _jpeg(colour, size=(80, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_recipe(i: int, class_id: int = 0, n_images: int = 2) -> dict:
    return {
        "id": f"r{i:05d}",
        "title": f"Tomato cake {i}",
        "ingredients": ["olive oil", "egg", "tomato"],
        "ingredient_lines": ["2 cups olive oil", "2 eggs", "1 tomato, chopped"],
        "instructions": ["Chop the tomato.", "Bake the cake in olive oil."],
        "class_id": class_id,
        "images": [f"img{i}_{k}" for k in range(n_images)],
    }


def write_shards(folder: Path, partition: str, recipes: list[dict], per_shard: int) -> Path:
    """Shards following the FORMAT CONTRACT of the `shard` stage (docs/artefacts.md)."""
    out = folder / "shards" / partition
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for s, start in enumerate(range(0, len(recipes), per_shard)):
        name = f"{partition}-{s:06d}.tar"
        chunk = recipes[start : start + per_shard]
        with tarfile.open(out / name, "w") as tar:
            for r in chunk:
                members = {f"{r['id']}.json": json.dumps(r).encode(), f"{r['id']}.cls": str(r["class_id"]).encode()}
                for k in range(len(r["images"])):
                    members[f"{r['id']}.{k}.jpg"] = _jpeg(COLOURS[k])
                for member, data in members.items():
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        sizes[name] = len(chunk)
        (out / f"{partition}-{s:06d}_stats.json").write_text(json.dumps({"samples": len(chunk)}))
    (out / "sizes.json").write_text(json.dumps(sizes))
    return out


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary(WORDS)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """48 recipes in 8 shards of 6; recipe i has 1 + i % 3 photos and class i % 4."""
    recipes = [make_recipe(i, class_id=i % 4, n_images=1 + i % 3) for i in range(48)]
    return write_shards(tmp_path_factory.mktemp("wds"), "train", recipes, per_shard=6), recipes


def _ids(loader, epochs=1):
    out = []
    for _ in range(epochs):
        out.append([i for batch in loader for i in batch["ids"]])
    return out


def test_resolve_shards_folder_pattern_and_sizes(shards):
    folder, _ = shards
    spec = resolve_shards(folder)
    assert len(spec.urls) == 8 and spec.total == 48
    pattern = resolve_shards(str(folder / "train-{000000..000003}.tar"))
    assert [Path(u).name for u in pattern.urls] == [f"train-{i:06d}.tar" for i in range(4)] and pattern.total == 24


def test_prepared_and_split_or_shards_with_a_spec_or_keywords(shards, vocab):
    folder, _ = shards
    spec = LoaderSpec(vocab=vocab, train=True, batch_size=4, image_size=16, seed=5)
    by_spec, info = make_loader(Prepared(folder.parent.parent), spec, split="train")
    by_path, _ = make_loader(folder.parent.parent, spec, split="train")  # the prepared folder's path
    by_keywords, old_info = make_loader(folder, vocab=vocab, train=True, batch_size=4, image_size=16, seed=5)
    assert dataclasses.replace(info, epoch=old_info.epoch) == old_info  # each loader has its own epoch counter
    assert info.tokens == "json"  # no recipes.lmdb in this prepared folder
    runs = [[(b["ids"], b["recipes"]["title"]) for b in loader] for loader in (by_spec, by_path, by_keywords)]
    assert runs[0] and all(len(ids) == 4 for ids, _ in runs[0])
    for other in runs[1:]:
        assert [ids for ids, _ in other] == [ids for ids, _ in runs[0]]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(other, runs[0]))
    _, info = make_loader(folder, spec, batch_size=6)  # keywords change the spec given
    assert info.batch_size == 6 and spec.batch_size == 4
    with pytest.raises(TypeError, match="unknown loader setting.*batchsize"):
        make_loader(folder, spec, batchsize=6)
    with pytest.raises(ValueError, match="needs a split"):
        make_loader(Prepared(folder.parent.parent), spec)
    with pytest.raises(FileNotFoundError, match=r"shards/val: no shards of split 'val' \(splits there: train\)"):
        make_loader(Prepared(folder.parent.parent), spec, split="val")


def test_eval_takes_first_image_and_gives_padded_batches(shards, vocab):
    folder, recipes = shards
    loader, info = make_loader(folder, vocab=vocab, train=False, batch_size=10, num_workers=0)
    assert info.decoder in ("pil", "torchvision") and info.batches_per_epoch is None
    by_id = {r["id"]: r for r in recipes}
    seen = []
    for batch in loader:
        b = len(batch["ids"])
        assert batch["images"].shape == (b, 3, 224, 224) and batch["images"].dtype == torch.float32
        assert batch["image_index"].tolist() == [0] * b
        # photo 0 is red: after ImageNet normalisation the red channel is far above the others
        assert (batch["images"][:, 0].mean((1, 2)) > batch["images"][:, 1].mean((1, 2)) + 1).all()
        expected = collate_recipes([tokenise_sample(by_id[i], vocab) for i in batch["ids"]])
        assert expected.keys() == batch["recipes"].keys()
        for key, value in expected.items():
            assert torch.equal(batch["recipes"][key], value), key
        assert batch["class_ids"].tolist() == [by_id[i]["class_id"] for i in batch["ids"]]
        seen += batch["ids"]
    assert seen == [r["id"] for r in recipes]  # eval: shard order, nothing shuffled, last short batch kept


def test_train_picks_random_images_with_augmentation(shards, vocab):
    folder, recipes = shards
    loader, info = make_loader(folder, vocab=vocab, train=True, batch_size=8, image_size=32, seed=1)
    assert info.num_samples == 48 and len(loader) == 6
    picked = Counter()
    n_images = {r["id"]: len(r["images"]) for r in recipes}
    for _ in range(3):
        for batch in loader:
            assert batch["images"].shape == (8, 3, 32, 32)
            for rid, k in zip(batch["ids"], batch["image_index"].tolist()):
                assert 0 <= k < n_images[rid]
                picked[k] += 1
    assert picked[1] > 0 and picked[2] > 0  # not always the first photo


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_and_workers_see_disjoint_samples_covering_the_epoch(shards, vocab, workers):
    folder, recipes = shards
    per_rank = []
    for rank in range(2):
        loader, info = make_loader(folder, vocab=vocab, train=True, batch_size=4, num_workers=workers, rank=rank,
                                   world_size=2, image_size=16, epoch_length=48, seed=3)
        readers = 2 * max(1, workers)
        assert info.samples_per_worker == 48 // readers and len(loader) == max(1, workers) * (48 // readers // 4)
        first = next(iter(loader))  # worker batches arrive as tensors, like in-process ones
        assert all(isinstance(v, torch.Tensor) for v in [first["images"], first["class_ids"], *first["recipes"].values()])
        loader.set_epoch(0)
        epochs = _ids(loader, epochs=2)
        assert all(len(e) == len(loader) * 4 for e in epochs)
        per_rank.append(epochs)
    everything = sorted(r["id"] for r in recipes)
    for epoch in range(2):
        a, b = per_rank[0][epoch], per_rank[1][epoch]
        assert not set(a) & set(b)
        assert sorted(a + b) == everything  # each sample exactly once per epoch
    assert per_rank[0][0] != per_rank[0][1]  # reshuffled each epoch


def test_uneven_counts_keep_the_epoch_length(shards, vocab):
    folder, _ = shards
    # 3 workers over 8 shards (3, 3, 2 shards): each reader still yields 40 // 3 = 13 samples.
    loader, info = make_loader(folder, vocab=vocab, train=True, batch_size=4, num_workers=0, world_size=3, rank=2,
                               epoch_length=40, image_size=16)
    assert info.samples_per_worker == 13 and len(loader) == 3
    ids = _ids(loader)[0]
    assert len(ids) == 12


def test_fewer_shards_than_readers_split_samples(shards, vocab):
    folder, _ = shards
    seen = []
    for rank in range(12):  # 12 readers, 8 shards: each reader keeps every 12th sample of the stream
        loader, info = make_loader(folder, vocab=vocab, train=True, batch_size=2, world_size=12, rank=rank,
                                   image_size=16, seed=4)
        assert info.split == "samples" and info.samples_per_worker == 4
        seen += _ids(loader)[0]
    assert len(seen) == len(set(seen)) == 48


def test_same_seed_same_batches(shards, vocab):
    folder, _ = shards

    def run(seed):
        loader, _ = make_loader(folder, vocab=vocab, train=True, batch_size=6, image_size=24, seed=seed)
        batches = list(loader)
        return [b["ids"] for b in batches], torch.cat([b["images"] for b in batches])

    (ids1, im1), (ids2, im2), (ids3, _) = run(5), run(5), run(6)
    assert ids1 == ids2 and torch.equal(im1, im2)
    assert ids1 != ids3


def test_set_epoch_replays_an_epoch(shards, vocab):
    folder, _ = shards
    loader, _ = make_loader(folder, vocab=vocab, train=True, batch_size=6, image_size=16, seed=2)
    first, second = _ids(loader, epochs=2)
    loader.set_epoch(1)
    assert _ids(loader)[0] == second and first != second


def test_decoders_agree(shards, vocab):
    folder, _ = shards
    out = {}
    for decoder in ("pil", "torchvision"):
        loader, info = make_loader(folder, vocab=vocab, train=False, batch_size=48, decoder=decoder, normalize=False)
        assert info.decoder == decoder
        (batch,) = list(loader)
        assert batch["images"].dtype == torch.uint8
        out[decoder] = batch["images"].float()
        (ref,) = list(make_loader(folder, vocab=vocab, train=False, batch_size=48, decoder=decoder)[0])
        assert torch.allclose(info.normalise(batch["images"]), ref["images"], atol=1e-5)
    assert (out["pil"] - out["torchvision"]).abs().mean() < 3


def test_class_aware_batches_meet_their_composition(tmp_path, vocab):
    # 60 % background; six labelled classes
    recipes = [make_recipe(i, class_id=0 if i % 5 < 3 else 1 + i % 6, n_images=1) for i in range(160)]
    folder = write_shards(tmp_path, "train", recipes, per_shard=20)
    loader, _ = make_loader(folder, vocab=vocab, train=True, batch_size=8, class_aware=True, image_size=16, seed=0)
    batches = list(loader)
    balanced = [b for b in batches if b["balanced"]]
    assert len(batches) == 20 and len(balanced) >= 15
    for b in balanced:
        counts = Counter(b["class_ids"].tolist())
        assert counts.pop(0) == 4 and all(n >= 2 for n in counts.values())
    ids = [i for b in batches for i in b["ids"]]
    assert len(ids) == len(set(ids)) == 160


def test_class_aware_stage_on_a_stream():
    stage = class_aware_batches(10, seed=0, epoch=SharedEpoch(), rank=0, buffer_size=40, partial=True)
    stream = [{"id": str(i), "class_id": 0 if i % 2 else 1 + (i // 2) % 7} for i in range(203)]
    out = list(stage(iter(stream)))
    assert sorted(int(it["id"]) for b in out for it in b) == list(range(203))  # each sample once
    for b in out[:-2]:
        counts = Counter(it["class_id"] for it in b)
        assert b[0]["_balanced"] and counts.pop(0) == 5 and all(n >= 2 for n in counts.values()), counts
    assert len(out[-1]) == 3  # the flushed remainder


def test_tar_reader_matches_webdataset(shards):
    import webdataset as wds
    from recipekit.loaders.tario import tar_samples

    folder, _ = shards
    urls = [{"url": str(p)} for p in sorted(folder.glob("*.tar"))]
    ours = list(tar_samples()(iter(urls)))
    theirs = list(wds.tarfile_to_samples()(iter([dict(u) for u in urls])))
    assert len(ours) == 48 and [{k: v for k, v in t.items() if k != "__local_path__"} for t in theirs] == ours


def test_tar_reader_pax_gnu_and_corruption(tmp_path):
    from recipekit.loaders.tario import iter_members

    long = "d/" + "x" * 120 + ".json"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        path = tmp_path / f"f{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            names = ["a.json", "a.0.jpg", long if fmt != tarfile.USTAR_FORMAT else "b.json"]
            for i, name in enumerate(names):
                info = tarfile.TarInfo(name)
                info.size = 700 * i
                tar.addfile(info, io.BytesIO(bytes([i]) * info.size))
            folder = tarfile.TarInfo("adir")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)  # not a file: skipped
        with open(path, "rb") as fh:
            got = list(iter_members(fh, str(path)))
        assert [n for n, _ in got] == names
        assert [len(d) for _, d in got] == [0, 700, 1400]
    data = (tmp_path / f"f{tarfile.USTAR_FORMAT}.tar").read_bytes()
    with pytest.raises(ValueError, match="checksum"):
        list(iter_members(io.BytesIO(data[:100] + b"Z" + data[101:]), "x.tar"))
    with pytest.raises(ValueError, match="truncated"):
        list(iter_members(io.BytesIO(data[:1000]), "x.tar"))


def test_normalisation_from_embedder_config():
    from recipekit.embedders.image import LITE_MEAN

    assert normalisation_for(None)[0] == (0.485, 0.456, 0.406)
    assert normalisation_for("ht_efficientnet_lite0")[0] == LITE_MEAN
    assert normalisation_for({"image": {"backbone": "resnet50"}})[0] == (0.485, 0.456, 0.406)


def test_real_shard_stage_when_present(demo_corpus, tmp_path):
    shard_mod = pytest.importorskip("recipekit.pipeline.shard")
    if not hasattr(shard_mod, "shard"):
        pytest.skip("recipekit.pipeline.shard.shard not there yet")
    from recipekit.pipeline.prepare import PrepareConfig, prepare
    from recipekit.pipeline.word2vec import Word2VecParams

    out = tmp_path / "out"
    config = PrepareConfig(word2vec=Word2VecParams(vector_size=16, epochs=1, min_count=2))
    prepare(demo_corpus, out, stages=["parse", "ingredients", "word2vec", "classes", "store"], config=config,
            workers=1, quiet=True)
    shard_mod.shard(demo_corpus, out, params=shard_mod.ShardParams(max_count=40), quiet=True)
    vocab = Vocabulary.from_file(out / "word2vec" / "vocab.txt")
    folder = out / "shards" / "train"
    loader, info = make_loader(folder, vocab=vocab, train=False, batch_size=16, image_size=64)
    batches = list(loader)
    ids = [i for b in batches for i in b["ids"]]
    assert len(ids) == len(set(ids)) == info.num_samples > 0 and len(info.shards) >= 2
    assert all(b["images"].shape[1:] == (3, 64, 64) for b in batches)
    assert info.tokens.startswith("store")  # OUT/recipes.lmdb beside the shards, same vocabulary
    _, by_split = make_loader(Prepared(out), LoaderSpec(vocab=vocab, train=False, batch_size=16), split="train")
    assert by_split.tokens == f"store {Prepared(out).store}" and by_split.shards == info.shards
    json_loader, json_info = make_loader(folder, vocab=vocab, train=False, batch_size=16, image_size=64, store=None)
    assert json_info.tokens == "json"
    for a, b in zip(batches, json_loader):
        assert a["ids"] == b["ids"] and all(torch.equal(a["recipes"][k], v) for k, v in b["recipes"].items())
    train, _ = make_loader(folder, vocab=vocab, train=True, batch_size=8, image_size=32, num_workers=2, seed=1)
    assert sum(len(b["ids"]) for b in train) == len(train) * 8 > 0
