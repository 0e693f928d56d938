"""embed_split: one forward per batch of a prepared split, rows aligned with the shards' ids."""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("webdataset")
pytest.importorskip("torchvision")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

try:
    from evalkit import prepared_folder, shard_samples, tiny_model
except ImportError:  # pragma: no cover
    from tests.evalkit import prepared_folder, shard_samples, tiny_model

from recipekit.embedders.text import collate_recipes
from recipekit.evaluation import SplitEmbeddings, embed_split
from recipekit.pipeline.vocab import tokenise_sample


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def model(prepared):
    return tiny_model(prepared)


@pytest.fixture(scope="module")
def val(prepared, model):
    return embed_split(model, prepared, "val", batch_size=16)


def test_rows_are_aligned_with_the_shards(prepared, model):
    folder = prepared / "shards" / "test"
    samples = shard_samples(folder)
    emb = embed_split(model, prepared, "test", batch_size=16)
    assert isinstance(emb, SplitEmbeddings)
    assert emb.ids == list(samples)  # every pair once, in shard order
    assert emb.image.shape == emb.recipe.shape == (len(samples), model.embed_dim)
    assert emb.image.dtype == emb.recipe.dtype == np.float32
    assert emb.image_index.tolist() == [0] * len(samples)  # the first photo of each recipe
    assert np.allclose(np.linalg.norm(emb.image, axis=1), 1.0, atol=1e-4)
    # Recipe row i is recipe ids[i]: re-embed a few of them one by one from their shard JSON.
    limits = tuple(model.config["recipe"].get(k, d) for k, d in
                   (("max_ingredients", 20), ("max_instructions", 20), ("max_tokens", 15)))
    picked = [0, 5, len(emb.ids) - 1]
    batch = collate_recipes([tokenise_sample(samples[emb.ids[i]]["json"], model.vocab, *limits) for i in picked])
    with torch.no_grad():
        model.eval()
        alone = model(recipes=batch).recipe.numpy()
    assert np.allclose(alone, emb.recipe[picked], atol=1e-5)
    # ... and image row i is the photo of recipe ids[i]: its nearest image row.
    sims = emb.image[picked] @ emb.image.T
    assert sims.argmax(1).tolist() == picked or np.allclose(sims[np.arange(3), picked], sims.max(1))


def test_same_embeddings_whatever_the_workers(prepared, model, val):
    a = val
    b = embed_split(model, prepared, "val", batch_size=16, num_workers=2)
    order = [b.ids.index(i) for i in a.ids]
    assert sorted(a.ids) == sorted(b.ids)
    assert np.allclose(a.image, b.image[order], atol=1e-5) and np.allclose(a.recipe, b.recipe[order], atol=1e-5)


def test_limit_and_random_image_pick(prepared, model, val):
    first = val
    few = embed_split(model, prepared, "val", batch_size=8, limit=11)
    assert few.ids == first.ids[:11] and np.allclose(few.recipe, first.recipe[:11], atol=1e-6)
    assert len(embed_split(model, prepared, "val", limit=0)) == 0
    rand = embed_split(model, prepared, "val", batch_size=16, image_pick="random", seed=3)
    again = embed_split(model, prepared, "val", batch_size=16, image_pick="random", seed=3, num_workers=2)
    assert rand.image_index.tolist() == [again.image_index[again.ids.index(i)] for i in rand.ids]  # fixed per recipe
    samples = shard_samples(prepared / "shards" / "val")
    n_photos = [len(samples[i]["images"]) for i in rand.ids]
    assert all(0 <= k < n for k, n in zip(rand.image_index, n_photos))
    if max(n_photos) > 1:
        assert rand.image_index.max() > 0
    assert np.allclose(rand.recipe, first.recipe, atol=1e-6)  # only the photo changes


def test_model_mode_is_restored(prepared, model):
    model.train()
    embed_split(model, prepared, "test", limit=4)
    assert model.training
    model.eval()


def test_minilm_tokenises_with_its_own_vocabulary(prepared):
    from conftest_torch import skip_unless_installed
    from recipekit.embedders import get_config
    from recipekit.loaders import make_loader

    skip_unless_installed(get_config("minilm_efficientnet_lite0"))
    model = tiny_model(prepared, "minilm_efficientnet_lite0")
    # The store holds word2vec ids: a WordPiece vocabulary must never read it.
    _, info = make_loader(prepared / "shards" / "test", vocab=model.vocab, train=False, batch_size=4, image_size=64)
    assert info.tokens == "json"
    emb = embed_split(model, prepared, "test", limit=6)
    assert emb.recipe.shape == (6, model.embed_dim) and np.isfinite(emb.recipe).all()


def test_bad_inputs_name_the_path(prepared, model, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"shards/nosuch"):
        embed_split(model, prepared, "nosuch")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        embed_split(model, tmp_path, "test")
    with pytest.raises(ValueError, match="image_pick"):
        embed_split(model, prepared, "test", image_pick="best")


def test_pick_image_modes():
    from recipekit.loaders import pick_image
    from recipekit.loaders.batching import keyed_index
    from recipekit.loaders.shards import SharedEpoch

    samples = [{"__key__": f"r{i}", "json": b'{"class_id": 0}', **{f"{k}.jpg": b"x" for k in range(4)}} for i in range(40)]
    common = {"seed": 7, "epoch": SharedEpoch(), "rank": 0}
    first = [s["image_index"] for s in pick_image(train=False, **common)(iter(samples))]
    assert first == [0] * 40
    rand = [s["image_index"] for s in pick_image(train=False, mode="random", **common)(iter(samples))]
    assert rand == [keyed_index(7, f"r{i}", 4) for i in range(40)] and len(set(rand)) > 1
    backwards = [s["image_index"] for s in pick_image(train=False, mode="random", **common)(iter(samples[::-1]))]
    assert backwards == rand[::-1]  # fixed per recipe, not per position in the stream
    assert [s["image_index"] for s in pick_image(train=True, mode="first", **common)(iter(samples))] == [0] * 40
    with pytest.raises(ValueError, match="image pick"):
        pick_image(train=False, mode="best", **common)
