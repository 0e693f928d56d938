"""Every registered embedder: shapes, finiteness, gradients, freezing, save/load, inference API."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

try:
    from conftest_torch import RECIPES, WORDS, skip_unless_installed, small_overrides
except ImportError:  # tests/ imported as a package
    from tests.conftest_torch import RECIPES, WORDS, skip_unless_installed, small_overrides

from recipekit.embedders import (  # noqa: E402
    Vocabulary,
    create_embedder,
    get_config,
    list_embedders,
    load_embedder,
)

VOCAB = Vocabulary(WORDS)
_CACHE: dict[str, object] = {}


def _model(name: str):
    """One small model per registered embedder, backbone frozen (built once per session)."""
    if name not in _CACHE:
        skip_unless_installed(get_config(name))
        torch.manual_seed(0)
        _CACHE[name] = create_embedder(name, **small_overrides(name, VOCAB, image={"freeze_backbone": True}))
    return _CACHE[name]


def _images(n=3, size=64):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_registry_ships_json_configs():
    files = sorted(p.name for p in resources.files("recipekit.embedders").joinpath("configs").iterdir() if p.name.endswith(".json"))
    assert [f"{n}.json" for n in list_embedders()] == files
    assert {"je_resnet50", "ht_resnet50", "ht_resnet18", "ht_vit_b16", "tfood_vit_b16"} <= set(list_embedders())
    for name in list_embedders():
        cfg = get_config(name)
        assert cfg["name"] == name and cfg["description"] and cfg["source"] and cfg["embed_dim"] > 0
        assert set(cfg) == {"name", "description", "source", "embed_dim", "image", "recipe", "matching"}
        json.dumps(cfg)


def test_registry_rejects_bad_names_and_options():
    with pytest.raises(ValueError, match="unknown embedder"):
        create_embedder("nope")
    with pytest.raises(ValueError, match="unknown embedder option"):
        create_embedder("ht_resnet18", vocab=VOCAB, colour="red")
    with pytest.raises(ValueError, match="ambiguous"):
        create_embedder("ht_resnet18", vocab=VOCAB, tanh=False)
    with pytest.raises(ValueError, match="unknown recipe option"):
        create_embedder("ht_resnet18", vocab=VOCAB, recipe={"word_dim": 3})
    with pytest.raises(ValueError, match="vocabulary"):
        create_embedder("ht_resnet18", weights=None)


@pytest.mark.parametrize("name", list_embedders())
def test_forward_shapes_and_finite(name):
    model = _model(name).train()
    batch = model.collate(RECIPES)
    out = model(_images(len(RECIPES)), batch)
    b, d = len(RECIPES), model.embed_dim
    assert out.image.shape == (b, d) and out.recipe.shape == (b, d)
    for t in (out.image, out.recipe, out.image_tokens):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(out.image.norm(dim=1), torch.ones(b))
    torch.testing.assert_close(out.recipe.norm(dim=1), torch.ones(b))
    assert out.image_tokens.shape[0] == b and out.image_tokens.shape[2] == model.image_tower.feature_dim
    if out.recipe_tokens is not None:
        assert out.recipe_tokens.shape[:2] == out.recipe_mask.shape and torch.isfinite(out.recipe_tokens).all()
        assert not out.recipe_mask[2].any()  # the empty recipe has no real token
    assert set(out.components) <= {"title", "ingredients", "instructions"} and out.components


@pytest.mark.parametrize("name", list_embedders())
def test_gradients_reach_trainable_not_frozen(name):
    model = _model(name).train()
    model.zero_grad(set_to_none=True)
    out = model(_images(len(RECIPES)), model.collate(RECIPES))
    loss = (out.image @ out.recipe.t()).diag().sum() + sum(c.square().mean() for c in out.components.values())
    if model.matching is not None:
        loss = loss + model.matching_loss(out, negatives="hardest")
    loss.backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("image_tower.backbone.") for n in frozen)
    assert all(n.startswith(("image_tower.backbone.", "recipe_tower.sentence_encoder.")) for n in frozen)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for n, p in trainable if n.endswith("head.fc.weight"))
    assert not model.image_tower.backbone.training  # frozen backbone stays in eval mode


@pytest.mark.parametrize("name", list_embedders())
def test_save_load_round_trip(name, tmp_path):
    model = _model(name).eval()
    path = tmp_path / f"{name}.pt"
    model.save(path)
    again = load_embedder(path)
    assert again.config == model.config
    batch = model.collate(RECIPES)
    with torch.no_grad():
        a, b = model(_images(2), batch), again.eval()(_images(2), batch)
    torch.testing.assert_close(a.image, b.image)
    torch.testing.assert_close(a.recipe, b.recipe)
    assert set(model.state_dict()) == set(again.state_dict())


def test_unfrozen_backbone_gets_gradients_and_bn_updates():
    torch.manual_seed(0)
    model = create_embedder("ht_resnet18", **small_overrides("ht_resnet18", VOCAB)).train()
    bn = model.image_tower.backbone.body[1]
    before = bn.running_mean.clone()
    out = model(_images(4))
    out.image.sum().backward()
    assert all(p.grad is not None for p in model.image_tower.backbone.parameters())
    assert not torch.equal(before, bn.running_mean)


def test_embed_images_and_recipes(tmp_path):
    from PIL import Image

    model = _model("ht_resnet18").train()
    rng = np.random.default_rng(0)
    pil = [Image.fromarray(rng.integers(0, 255, (80 + 10 * i, 70, 3), dtype=np.uint8)) for i in range(3)]
    pil[1].save(tmp_path / "a.jpg")
    paths_and_pil = [pil[0], tmp_path / "a.jpg", str(tmp_path / "a.jpg")]
    emb = model.embed_images(paths_and_pil, batch_size=2)
    assert emb.dtype == np.float32 and emb.shape == (3, model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb[1], emb[2], rtol=1e-5, atol=1e-6)  # str and Path agree
    x = _images(5)
    np.testing.assert_allclose(model.embed_images(x, batch_size=2), model.embed_images(list(x), batch_size=4), atol=1e-5)
    rec = model.embed_recipes(RECIPES, batch_size=2)
    assert rec.dtype == np.float32 and rec.shape == (len(RECIPES), model.embed_dim)
    np.testing.assert_allclose(rec, model.embed_recipes(RECIPES, batch_size=8), atol=1e-5)
    assert model.embed_recipes([]).shape == (0, model.embed_dim)
    assert model.training  # the train/eval mode is restored after embedding


def test_tfood_matching_loss_and_rerank():
    model = _model("tfood_vit_b16").eval()
    out = model(_images(3), model.collate(RECIPES))
    gen = torch.Generator().manual_seed(0)
    loss = model.matching_loss(out, negatives="sample", generator=gen)
    assert loss.ndim == 0 and torch.isfinite(loss)
    idx, scores = model.rerank(_images(3), RECIPES, k=2)
    assert idx.shape == (3, 2) and scores.shape == (3, 2)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    idx, scores = model.rerank(_images(3), RECIPES, k=5, image_to_recipe=False)
    assert idx.shape == (3, 3)
    with pytest.raises(ValueError, match="matching head"):
        _model("ht_resnet18").matching_loss(out)


def test_channels_last_gives_the_same_embeddings_and_skips_vit(tmp_path):
    from recipekit.embedders import load_embedder
    from recipekit.embedders.image import ImageTower

    torch.manual_seed(0)
    tower = ImageTower("resnet18", embed_dim=8, image_size=64, weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = tower(x)[0]
        assert tower.use_channels_last() is True
        conv = tower.backbone.net.conv1.weight if hasattr(tower.backbone, "net") else next(
            p for p in tower.backbone.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(tower(x)[0], before, atol=1e-5)
        assert tower.use_channels_last(False) is False and conv.is_contiguous()
    vit = ImageTower("vit_b_16", embed_dim=8, image_size=32, weights=None)
    assert vit.use_channels_last() is False and vit.channels_last is False
