"""`recipekit convert ht`: H-T's released checkpoints (ResNet-50, ViT-B/16) into recipekit's towers.

Each test builds a state dict with the reference's key names and shapes (small recipe widths,
the fixed backbone shapes), converts it, and checks the converted model against the reference
computation written out by hand from the same weights."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("safetensors")
F = torch.nn.functional

from recipekit.embedders import JointEmbedder, Vocabulary, load_embedder  # noqa: E402
from recipekit.embedders.convert_ht import (  # noqa: E402
    _check_fits,
    convert_ht,
    convert_ht_state_dict,
    read_ht_vocab,
)

WORDS = ["tomato", "sauce", "olive", "oil", "salt", "pepper", "chop", "the", "onion", "fry", "in", "2", "cups",
         "1", ".", ",", "and", "minutes", "bake", "cake", "stir", "well", "add", "a"]
TOKENS = ["<pad>", "<start>", "<end>", *WORDS, "<unk>"]
H, HEADS, LAYERS, FF, POS, OUT = 32, 2, 2, 48, 24, 20
COMPONENTS = ("title", "ingredients", "instructions")
LONG = "stir the tomato sauce and the onion in the olive oil , add salt and pepper , fry 2 minutes ."  # > 15 tokens
RECIPES = [
    {"title": "Tomato sauce", "ingredients": [{"text": "2 cups tomato"}, {"text": "1 onion"}, {"text": "salt"}],
     "instructions": [{"text": "chop the onion ."}, {"text": LONG}, {"text": "fry in oil , 12 minutes ."}]},
    {"title": "Cake", "ingredients": [{"text": "flour"}],  # flour: not in the vocabulary
     "instructions": [{"text": "bake the cake"}]},
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(g, *shape, scale=0.1):
    return torch.randn(*shape, generator=g) * scale


def _recipe_state(g) -> dict:
    """text_encoder / merger_recipe / projector_recipes keys of H-T's JointEmbedding."""
    sd = {"text_encoder.word_embedding.weight": _rand(g, len(TOKENS), H, scale=1.0)}
    for group, names in (("tfs", COMPONENTS), ("merger", COMPONENTS[1:])):
        for name in names:
            p = f"text_encoder.{group}.{name}."
            sd[p + "pos_encoder.weight"] = _rand(g, POS, H, scale=0.3)
            for i in range(LAYERS):
                q = f"{p}tf.layers.{i}."
                sd.update({q + "self_attn.in_proj_weight": _rand(g, 3 * H, H, scale=0.3),
                           q + "self_attn.in_proj_bias": _rand(g, 3 * H),
                           q + "self_attn.out_proj.weight": _rand(g, H, H, scale=0.3),
                           q + "self_attn.out_proj.bias": _rand(g, H),
                           q + "linear1.weight": _rand(g, FF, H, scale=0.3), q + "linear1.bias": _rand(g, FF),
                           q + "linear2.weight": _rand(g, H, FF, scale=0.3), q + "linear2.bias": _rand(g, H),
                           q + "norm1.weight": 1 + _rand(g, H), q + "norm1.bias": _rand(g, H),
                           q + "norm2.weight": 1 + _rand(g, H), q + "norm2.bias": _rand(g, H)})
    sd["merger_recipe.weight"] = _rand(g, OUT, 3 * H, scale=0.3)
    sd["merger_recipe.bias"] = _rand(g, OUT)
    for a in COMPONENTS:
        for b in COMPONENTS:
            if a != b:
                sd[f"projector_recipes.{a}.{b}.weight"] = _rand(g, H, H)
                sd[f"projector_recipes.{a}.{b}.bias"] = _rand(g, H)
    return sd


def _resnet_state(g) -> dict:
    body = torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-2])
    sd = {f"image_encoder.backbone.{k}": v.clone() for k, v in body.state_dict().items()}
    for k in sd:  # BatchNorm statistics that are not the defaults, so that they must be carried over
        if k.endswith("running_mean"):
            sd[k] = _rand(g, *sd[k].shape)
        elif k.endswith("running_var"):
            sd[k] = 1 + _rand(g, *sd[k].shape).abs()
    sd["image_encoder.fc.weight"] = _rand(g, OUT, 2048, scale=0.05)
    sd["image_encoder.fc.bias"] = _rand(g, OUT)
    return sd


def _vit_state(g) -> dict:
    """timm 0.3's vit_base_patch16_224 keys (as H-T's ViTBackbone holds it) + the fc to the joint space."""
    p, d = "image_encoder.backbone.", 768
    sd = {p + "cls_token": _rand(g, 1, 1, d, scale=0.02), p + "pos_embed": _rand(g, 1, 197, d, scale=0.02),
          p + "patch_embed.proj.weight": _rand(g, d, 3, 16, 16, scale=0.02), p + "patch_embed.proj.bias": _rand(g, d),
          p + "norm.weight": 1 + _rand(g, d), p + "norm.bias": _rand(g, d),
          p + "head.weight": _rand(g, 1000, d), p + "head.bias": _rand(g, 1000)}
    for i in range(12):
        b = f"{p}blocks.{i}."
        sd.update({b + "norm1.weight": 1 + _rand(g, d), b + "norm1.bias": _rand(g, d),
                   b + "attn.qkv.weight": _rand(g, 3 * d, d, scale=0.03), b + "attn.qkv.bias": _rand(g, 3 * d),
                   b + "attn.proj.weight": _rand(g, d, d, scale=0.03), b + "attn.proj.bias": _rand(g, d),
                   b + "norm2.weight": 1 + _rand(g, d), b + "norm2.bias": _rand(g, d),
                   b + "mlp.fc1.weight": _rand(g, 4 * d, d, scale=0.03), b + "mlp.fc1.bias": _rand(g, 4 * d),
                   b + "mlp.fc2.weight": _rand(g, d, 4 * d, scale=0.03), b + "mlp.fc2.bias": _rand(g, d)})
    sd["image_encoder.fc.weight"] = _rand(g, OUT, d, scale=0.05)
    sd["image_encoder.fc.bias"] = _rand(g, OUT)
    return sd


# -- the reference computation, by hand ------------------------------------------------------------
def _ref_ids(text: str) -> list[int]:
    """H-T's ids of a text: <start>, the words (<unk> if unknown), <end>, cut to 15."""
    index = {t: i for i, t in enumerate(TOKENS)}
    return ([1] + [index.get(w, index["<unk>"]) for w in text.lower().split()] + [2])[:15]


def _pad(seqs, n=None, length=None):
    n = n or len(seqs)
    length = length or max(len(s) for s in seqs)
    out = torch.zeros(n, length, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def _ref_layer(sd, p, h, ignore):
    """nn.TransformerEncoderLayer(d, heads) as H-T ran it: sequence first, post-norm, ReLU."""
    t, b, d = h.shape
    q, k, v = F.linear(h, sd[p + "self_attn.in_proj_weight"], sd[p + "self_attn.in_proj_bias"]).chunk(3, dim=-1)
    split = lambda x: x.reshape(t, b, HEADS, d // HEADS).permute(1, 2, 0, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // HEADS)
    scores = scores.masked_fill(ignore[:, None, None, :], float("-inf"))
    o = (scores.softmax(-1) @ split(v)).permute(2, 0, 1, 3).reshape(t, b, d)
    h = F.layer_norm(h + F.linear(o, sd[p + "self_attn.out_proj.weight"], sd[p + "self_attn.out_proj.bias"]), (d,),
                     sd[p + "norm1.weight"], sd[p + "norm1.bias"])
    ff = F.linear(F.relu(F.linear(h, sd[p + "linear1.weight"], sd[p + "linear1.bias"])), sd[p + "linear2.weight"],
                  sd[p + "linear2.bias"])
    return F.layer_norm(h + ff, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])


def _ref_encoder(sd, p, x, ignore):
    h = (x + sd[p + "pos_encoder.weight"][: x.shape[1]]).transpose(0, 1)
    for i in range(LAYERS):
        h = _ref_layer(sd, f"{p}tf.layers.{i}.", h, ignore)
    keep = (~ignore).float()
    return (h.transpose(0, 1) * (keep / (keep.sum(-1, keepdim=True) + 1e-12)).unsqueeze(-1)).sum(-2)


def _ref_recipes(sd, recipes):
    emb = sd["text_encoder.word_embedding.weight"]
    title = _pad([_ref_ids(r["title"]) for r in recipes])
    feats = [_ref_encoder(sd, "text_encoder.tfs.title.", emb[title], title == 0)]
    for name in COMPONENTS[1:]:
        nested = [[_ref_ids(x["text"]) for x in r[name]] for r in recipes]
        n, length = max(len(x) for x in nested), max(len(s) for x in nested for s in x)
        ids = torch.stack([_pad(x, n, length) for x in nested])  # [B, N, T]
        flat = ids.reshape(-1, length)
        ignore = flat == 0
        ignore[:, 0] = False
        sent = _ref_encoder(sd, f"text_encoder.tfs.{name}.", emb[flat], ignore).reshape(len(recipes), n, H)
        feats.append(_ref_encoder(sd, f"text_encoder.merger.{name}.", sent, ~((ids > 0).sum(-1) > 0)))
    return torch.tanh(F.linear(torch.cat(feats, 1), sd["merger_recipe.weight"], sd["merger_recipe.bias"]))


def _ref_resnet(sd, images):
    body = torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-2]).eval()
    p = "image_encoder.backbone."
    body.load_state_dict({k[len(p):]: v for k, v in sd.items() if k.startswith(p)})
    feats = body(images).flatten(2).mean(-1)
    return torch.tanh(F.linear(feats, sd["image_encoder.fc.weight"], sd["image_encoder.fc.bias"]))


def _ref_vit(sd, images):
    p, d = "image_encoder.backbone.", 768
    x = F.conv2d(images, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(len(images), -1, -1), x], 1) + sd[p + "pos_embed"]
    b, n, _ = x.shape
    for i in range(12):
        q = f"{p}blocks.{i}."
        y = F.layer_norm(x, (d,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[q + "attn.qkv.weight"], sd[q + "attn.qkv.bias"]).reshape(b, n, 3, 12, 64)
        qq, kk, vv = qkv.permute(2, 0, 3, 1, 4)
        att = ((qq @ kk.transpose(-2, -1)) * 64 ** -0.5).softmax(-1)
        y = (att @ vv).transpose(1, 2).reshape(b, n, d)
        x = x + F.linear(y, sd[q + "attn.proj.weight"], sd[q + "attn.proj.bias"])
        y = F.layer_norm(x, (d,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[q + "mlp.fc1.weight"], sd[q + "mlp.fc1.bias"])), sd[q + "mlp.fc2.weight"],
                     sd[q + "mlp.fc2.bias"])
        x = x + y
    x = F.layer_norm(x, (d,), sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6)[:, 0]
    return torch.tanh(F.linear(x, sd["image_encoder.fc.weight"], sd["image_encoder.fc.bias"]))


def _converted(sd, backbone):
    state, config, words, dropped = convert_ht_state_dict(sd, TOKENS, backbone, heads=HEADS)
    model = JointEmbedder(config, vocab=Vocabulary(words))
    _check_fits(model, state, "test")  # every key mapped, none left over, shapes right
    model.load_state_dict(state)
    return model.eval(), config, words, dropped


# -- tests -----------------------------------------------------------------------------------------------
def test_resnet50_checkpoint_converts_to_the_reference_embeddings():
    with torch.no_grad():
        sd = {**_recipe_state(_gen(0)), **_resnet_state(_gen(1))}
        model, config, words, dropped = _converted(sd, "resnet50")
        assert words == WORDS and sorted(dropped) == sorted(k for k in sd if k.startswith("projector_recipes."))
        assert config["embed_dim"] == OUT and config["image"]["backbone"] == "resnet50"
        assert {k: config["recipe"][k] for k in ("hidden", "heads", "layers", "ff_dim", "max_len", "markers",
                                                   "max_tokens")} == {"hidden": H, "heads": HEADS, "layers": LAYERS,
                                                                      "ff_dim": FF, "max_len": POS, "markers": 15,
                                                                      "max_tokens": 14}
        # the word rows: recipekit id 0 pad, 1 <unk>, k + 2 the k-th word; the markers are <start>, <end>
        emb = sd["text_encoder.word_embedding.weight"]
        mine = model.recipe_tower.embedding.weight
        assert torch.equal(mine[1], emb[TOKENS.index("<unk>")]) and torch.equal(mine[2:], emb[3:-1])
        assert torch.equal(model.recipe_tower.marker, emb[1:3])
        got = torch.from_numpy(model.embed_recipes(RECIPES))
        torch.testing.assert_close(got, F.normalize(_ref_recipes(sd, RECIPES)), rtol=1e-4, atol=1e-5)
        images = torch.randn(2, 3, 64, 64, generator=_gen(2))
        torch.testing.assert_close(model.image_tower(images)[0], F.normalize(_ref_resnet(sd, images)),
                                   rtol=1e-4, atol=1e-5)


def test_vit_checkpoint_converts_to_the_reference_embeddings():
    with torch.no_grad():
        sd = {**_recipe_state(_gen(0)), **_vit_state(_gen(3))}
        model, config, _, dropped = _converted(sd, "vit")
        assert config["image"]["backbone"] == "vit_b_16" and config["name"] == "ht_vit_b16"
        assert {"image_encoder.backbone.head.weight", "image_encoder.backbone.head.bias"} <= set(dropped)
        images = torch.randn(1, 3, 224, 224, generator=_gen(4))
        torch.testing.assert_close(model.image_tower(images)[0], F.normalize(_ref_vit(sd, images)),
                                   rtol=1e-4, atol=1e-5)
        # one layer by hand, on the converted module itself: timm's qkv is torchvision's in_proj
        layer = model.image_tower.backbone.net.encoder.layers.encoder_layer_0
        x = torch.randn(1, 197, 768, generator=_gen(5))
        q = "image_encoder.backbone.blocks.0."
        y = F.layer_norm(x, (768,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[q + "attn.qkv.weight"], sd[q + "attn.qkv.bias"]).reshape(1, 197, 3, 12, 64)
        qq, kk, vv = qkv.permute(2, 0, 3, 1, 4)
        y = ((qq @ kk.transpose(-2, -1)) * 0.125).softmax(-1) @ vv
        x1 = x + F.linear(y.transpose(1, 2).reshape(1, 197, 768), sd[q + "attn.proj.weight"], sd[q + "attn.proj.bias"])
        y = F.layer_norm(x1, (768,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], eps=1e-6)
        x2 = x1 + F.linear(F.gelu(F.linear(y, sd[q + "mlp.fc1.weight"], sd[q + "mlp.fc1.bias"])),
                           sd[q + "mlp.fc2.weight"], sd[q + "mlp.fc2.bias"])
        torch.testing.assert_close(layer(x), x2, rtol=1e-4, atol=1e-5)


def test_convert_refuses_what_does_not_fit(tmp_path):
    sd = {**_recipe_state(_gen(0)), **_resnet_state(_gen(1))}
    with pytest.raises(ValueError, match=r"holds a ResNet image encoder, not vit \(--backbone resnet50\)"):
        convert_ht_state_dict(sd, TOKENS, "vit")
    with pytest.raises(ValueError, match="the word embedding has 28 rows, the vocabulary 27 tokens"):
        convert_ht_state_dict(sd, TOKENS[:-2] + ["<unk>"], "resnet50")
    with pytest.raises(ValueError, match=r"1 key\(s\) that are not part of H-T's JointEmbedding: extra.weight"):
        convert_ht_state_dict({**sd, "extra.weight": torch.zeros(1)}, TOKENS, "resnet50")
    partial = dict(sd)
    del partial["text_encoder.merger.instructions.tf.layers.1.linear2.bias"]
    state, config, words, _ = convert_ht_state_dict(partial, TOKENS, "resnet50", heads=HEADS)
    with pytest.raises(ValueError, match=r"missing \['recipe_tower.mergers.instructions.encoder.layers.1.linear2"):
        _check_fits(JointEmbedder(config, vocab=Vocabulary(words)), state, "ckpt")
    with pytest.raises(ValueError, match="5 heads do not divide the recipe width 32"):
        convert_ht_state_dict(sd, TOKENS, "resnet50", heads=5)


def test_vocab_must_be_text_in_id_order(tmp_path):
    good = tmp_path / "vocab.txt"
    good.write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    assert read_ht_vocab(good) == TOKENS
    pkl = tmp_path / "vocab.pkl"
    pkl.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="a pickle"):
        read_ht_vocab(pkl)
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(WORDS + ["<unk>"]), encoding="utf-8")
    with pytest.raises(ValueError, match="the first lines must be <pad>, <start>, <end>"):
        read_ht_vocab(bad)
    bad.write_text("\n".join(TOKENS[:-1]), encoding="utf-8")
    with pytest.raises(ValueError, match="no <unk> line"):
        read_ht_vocab(bad)
    bad.write_text("\n".join(TOKENS + ["salt"]), encoding="utf-8")
    with pytest.raises(ValueError, match="token 'salt' appears twice"):
        read_ht_vocab(bad)


def test_cli_converts_a_checkpoint_file_that_eval_then_scores(tmp_path, tmp_path_factory):
    pytest.importorskip("webdataset")
    from click.testing import CliRunner

    from recipekit.cli.main import main

    try:
        from evalkit import prepared_folder
    except ImportError:  # pragma: no cover
        from tests.evalkit import prepared_folder

    sd = {**_recipe_state(_gen(0)), **_resnet_state(_gen(1))}
    ckpt = tmp_path / "r50_ssl" / "model-best.ckpt"
    ckpt.parent.mkdir()
    torch.save(sd, ckpt)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    out = tmp_path / "ht-r50"
    res = CliRunner().invoke(main, ["convert", "ht", str(ckpt), "--backbone", "resnet50", "--vocab", str(vocab),
                                    "--heads", str(HEADS), "--out", str(out)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg["vocab"] == WORDS and "r50_ssl/model-best.ckpt" in cfg["embedder"]["source"]
    model = load_embedder(out)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(model.embed_recipes(RECIPES)),
                                   F.normalize(_ref_recipes(sd, RECIPES)), rtol=1e-4, atol=1e-5)
    wrong = CliRunner().invoke(main, ["convert", "ht", str(ckpt), "--backbone", "vit", "--vocab", str(vocab),
                                      "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 1 and "--backbone resnet50" in wrong.output and not (tmp_path / "x").exists()
    prepared = prepared_folder(tmp_path_factory)
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(prepared), "--limit", "8", "--bag-size", "4",
                                    "--bags", "2", "--bags-large", "0", "--device", "cpu", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval" / "ht-r50" / "test" / "eval.json").read_text(encoding="utf-8"))
    assert report["checkpoint"]["embedder"] == "ht_resnet50" and report["data"]["pairs"] == 8



def test_markers_wrap_and_cut_each_sentence():
    from recipekit.embedders import create_embedder

    torch.manual_seed(0)
    model = create_embedder("ht_resnet18", vocab=Vocabulary(WORDS), embed_dim=8, image={"weights": None},
                            recipe={"hidden": 16, "heads": 2, "layers": 1, "ff_dim": 16, "max_len": 12, "markers": 6})
    tower = model.recipe_tower
    recipes = [{"title": "chop the onion and the tomato", "ingredients": [{"text": "salt"}], "instructions": []},
               {"title": "", "ingredients": [{"text": "2 cups oil"}], "instructions": [{"text": "fry"}]}]
    with torch.no_grad():
        out = tower(model.collate(recipes))
        # title: 6 words -> <start> + 5 words (cut to 6, no <end>); the empty title -> <start>, <end>
        assert out["mask"][:, :6].tolist() == [[True] * 6, [True, True, False, False, False, False]]
        ids = torch.tensor([[WORDS.index("salt") + 2, 0, 0]])
        x, mask = tower._wrap(tower.embedding(ids), ids != 0)
        assert mask.tolist() == [[True, True, True, False, False]]
        assert torch.equal(x[0, 0], tower.marker[0]) and torch.equal(x[0, 2], tower.marker[1])
        assert torch.equal(x[0, 1], tower.embedding.weight[WORDS.index("salt") + 2])
    with pytest.raises(ValueError, match="markers must be 0 or between 2 and max_len"):
        create_embedder("ht_resnet18", vocab=Vocabulary(WORDS), image={"weights": None}, recipe={"max_len": 12,
                                                                                                "markers": 13})
