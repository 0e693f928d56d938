"""Convert the checkpoints released with H-T (Salvador et al., CVPR 2021;
github.com/amzn/image-to-recipe-transformers) into recipekit model folders.

The release has, per model, ``model-best.ckpt`` (a torch state dict of its ``JointEmbedding``) and
``args.pkl``; the vocabulary is ``data/vocab.pkl``. Pickles are never read here: give the
vocabulary as text, one token a line in id order (line ``k`` is the token with id ``k``:
``<pad>``, ``<start>``, ``<end>``, the words, ``<unk>``), and the backbone and attention heads
(``args.pkl``'s ``backbone`` and ``tf_n_heads``; the released models use 4) as arguments. The
state dict is read with ``torch.load(weights_only=True)``.

What maps where (everything else is an error, so a checkpoint of another shape is refused):

==================================================  ===============================================
H-T key                                             recipekit key
==================================================  ===============================================
``text_encoder.word_embedding.weight`` [V, H]       ``recipe_tower.embedding.weight`` (rows re-ordered
                                                    to recipekit ids: 0 pad, 1 ``<unk>``, words) and
                                                    ``recipe_tower.marker`` (``<start>``, ``<end>``)
``text_encoder.tfs.C.pos_encoder.weight``           ``recipe_tower.encoders.C.pos``
``text_encoder.tfs.C.tf.layers.I.*``                ``recipe_tower.encoders.C.encoder.layers.I.*``
``text_encoder.merger.C.pos_encoder.weight``        ``recipe_tower.mergers.C.pos``
``text_encoder.merger.C.tf.layers.I.*``             ``recipe_tower.mergers.C.encoder.layers.I.*``
``merger_recipe.*``                                 ``recipe_tower.head.fc.*``
``image_encoder.fc.*``                              ``image_tower.head.fc.*``
``image_encoder.backbone.N.*`` (ResNet-50)          ``image_tower.backbone.body.N.*``
``image_encoder.backbone.*`` (timm ViT-B/16)        ``image_tower.backbone.net.*`` (torchvision names:
                                                    ``blocks.I.attn.qkv`` -> ``encoder.layers.
                                                    encoder_layer_I.self_attention.in_proj_*``, ...)
``projector_recipes.*``                             dropped: the projections of H-T's self-supervised
                                                    recipe loss, used only in training
``image_encoder.backbone.head.*`` (ViT)             dropped: the ImageNet classifier, never used
==================================================  ===============================================

The converted recipe tower reads text as H-T does: each sentence wrapped in ``<start>`` /
``<end>`` and cut to 15 tokens (``markers`` 15, ``max_tokens`` 14), at most 20 ingredients and 20
instructions. Words come from recipekit's tokeniser, not NLTK's ``word_tokenize``: where the two
split a text differently the token falls back to ``<unk>`` (see docs/models.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["BACKBONES", "read_ht_vocab", "convert_ht_state_dict", "convert_ht"]

BACKBONES = {"resnet50": "resnet50", "vit": "vit_b_16"}
SPECIALS = ("<pad>", "<start>", "<end>")
UNK = "<unk>"
COMPONENTS = ("title", "ingredients", "instructions")
DROPPED = ("projector_recipes.", "image_encoder.backbone.head.")
MARKERS, MAX_TOKENS, MAX_SENTENCES = 15, 14, 20

_VIT_RULES = [  # timm ViT-B/16 (0.3) -> torchvision vit_b_16
    (r"cls_token", "class_token"),
    (r"pos_embed", "encoder.pos_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"conv_proj.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.encoder_layer_\1.ln_1.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.encoder_layer_\1.ln_2.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.encoder_layer_\1.self_attention.in_proj_\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.encoder_layer_\1.self_attention.out_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"encoder.layers.encoder_layer_\1.mlp.0.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"encoder.layers.encoder_layer_\1.mlp.3.\2"),
    (r"norm\.(weight|bias)", r"encoder.ln.\1"),
]
_RULES = [
    (r"text_encoder\.tfs\.(\w+)\.pos_encoder\.weight", r"recipe_tower.encoders.\1.pos"),
    (r"text_encoder\.tfs\.(\w+)\.tf\.layers\.(.+)", r"recipe_tower.encoders.\1.encoder.layers.\2"),
    (r"text_encoder\.merger\.(\w+)\.pos_encoder\.weight", r"recipe_tower.mergers.\1.pos"),
    (r"text_encoder\.merger\.(\w+)\.tf\.layers\.(.+)", r"recipe_tower.mergers.\1.encoder.layers.\2"),
    (r"merger_recipe\.(weight|bias)", r"recipe_tower.head.fc.\1"),
    (r"image_encoder\.fc\.(weight|bias)", r"image_tower.head.fc.\1"),
]


def read_ht_vocab(path: str | os.PathLike) -> list[str]:
    """H-T's vocabulary as text: one token a line, line ``k`` = id ``k``. Checked: starts with
    ``<pad>``, ``<start>``, ``<end>``, holds ``<unk>``, no token twice."""
    path = Path(path)
    if path.suffix == ".pkl":
        raise ValueError(f"{path}: a pickle (reading it could run code); write its tokens as text, one a line "
                         "in id order, and pass that file (docs/models.md shows how)")
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such vocabulary file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (give the vocabulary as text, one token a line)") from None
    tokens = [t.strip() for t in tokens]
    if tuple(tokens[:3]) != SPECIALS:
        raise ValueError(f"{path}: the first lines must be {', '.join(SPECIALS)} (H-T's ids 0, 1, 2), "
                         f"found {tokens[:3]}")
    if UNK not in tokens:
        raise ValueError(f"{path}: no {UNK} line")
    for i, t in enumerate(tokens):
        if not t or any(c.isspace() for c in t):
            raise ValueError(f"{path}: line {i + 1}: a token must be one non-blank word, found {t!r}")
    if len(set(tokens)) != len(tokens):
        dup = next(t for i, t in enumerate(tokens) if t in tokens[:i])
        raise ValueError(f"{path}: token {dup!r} appears twice")
    return tokens


def _layers(state: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if not found or found != set(range(len(found))):
        raise ValueError(f"no transformer layers {prefix}0.. in the checkpoint")
    return len(found)


def _shape(state: dict, key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"{where}: no {key} (not an H-T JointEmbedding state dict)")
    return tuple(state[key].shape)


def _config(state: dict, backbone: str, heads: int, where: str, source: str) -> dict[str, Any]:
    _, hidden = _shape(state, "text_encoder.word_embedding.weight", where)
    embed_dim, merged = _shape(state, "merger_recipe.weight", where)
    if merged != 3 * hidden:
        raise ValueError(f"{where}: merger_recipe.weight is {embed_dim}x{merged}, expected {embed_dim}x{3 * hidden}")
    if hidden % heads:
        raise ValueError(f"{where}: {heads} heads do not divide the recipe width {hidden} (--heads)")
    prefix = "text_encoder.tfs.title."
    max_len = _shape(state, prefix + "pos_encoder.weight", where)[0]
    ff_dim = _shape(state, prefix + "tf.layers.0.linear1.weight", where)[0]
    arch = BACKBONES[backbone]
    return {
        "name": "ht_resnet50" if backbone == "resnet50" else "ht_vit_b16",
        "description": f"H-T released model ({source}), converted",
        "source": "Salvador et al., CVPR 2021: github.com/amzn/image-to-recipe-transformers, released checkpoint "
                  f"{source}",
        "embed_dim": embed_dim,
        "image": {"backbone": arch, "image_size": 224, "weights": None, "weights_path": None, "tanh": True,
                  "freeze_backbone": False},
        "recipe": {"tower": "ht", "hidden": hidden, "heads": heads, "layers": _layers(state, prefix + "tf.layers."),
                   "ff_dim": ff_dim, "dropout": 0.1, "max_len": max_len, "tanh": True,
                   "markers": min(MARKERS, max_len), "max_ingredients": MAX_SENTENCES,
                   "max_instructions": MAX_SENTENCES, "max_tokens": MAX_TOKENS},
        "matching": None,
    }


def _rename(key: str, backbone: str) -> str | None:
    rules = list(_RULES)
    if backbone == "resnet50":
        rules.append((r"image_encoder\.backbone\.(\d+\..+)", r"image_tower.backbone.body.\1"))
    else:
        rules += [(r"image_encoder\.backbone\." + pat, "image_tower.backbone.net." + rep) for pat, rep in _VIT_RULES]
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_ht_state_dict(state: dict, tokens: list[str], backbone: str, *, heads: int = 4,
                          where: str = "checkpoint", source: str = "") -> tuple[dict, dict, list[str], list[str]]:
    """(recipekit state dict, embedder config, vocabulary words, dropped keys) of an H-T state dict.

    ``tokens``: :func:`read_ht_vocab`'s list; ``backbone``: ``resnet50`` or ``vit``."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown H-T backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    vit = "image_encoder.backbone.cls_token" in state
    if vit != (backbone == "vit"):
        raise ValueError(f"{where}: holds a {'ViT' if vit else 'ResNet'} image encoder, not {backbone} "
                         f"(--backbone {'vit' if vit else 'resnet50'})")
    config = _config(state, backbone, heads, where, source or where)
    words_in = state["text_encoder.word_embedding.weight"]
    if len(tokens) != words_in.shape[0]:
        raise ValueError(f"{where}: the word embedding has {words_in.shape[0]} rows, the vocabulary "
                         f"{len(tokens)} tokens (is it the vocabulary this model was trained with?)")
    ref_id = {t: i for i, t in enumerate(tokens)}
    words = [t for t in tokens[3:] if t != UNK]
    rows = [ref_id["<pad>"], ref_id[UNK]] + [ref_id[w] for w in words]  # recipekit ids: 0 pad, 1 unknown, k + 2
    out = {"recipe_tower.embedding.weight": words_in[rows].clone(),
           "recipe_tower.marker": words_in[[ref_id["<start>"], ref_id["<end>"]]].clone()}
    dropped, unknown = [], []
    for key, value in state.items():
        if key == "text_encoder.word_embedding.weight":
            continue
        if key.startswith(DROPPED):
            dropped.append(key)
            continue
        new = _rename(key, backbone)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"{where}: {len(unknown)} key(s) that are not part of H-T's JointEmbedding: "
                         f"{', '.join(unknown[:5])}")
    return out, config, words, dropped


def _check_fits(model: torch.nn.Module, state: dict, where: str) -> None:
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    extra = sorted(set(state) - set(mine))
    if missing or extra:
        raise ValueError(f"{where}: does not fit recipekit's H-T towers: missing {missing[:5]}, left over {extra[:5]}")
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(mine[k].shape)}" for k in mine if state[k].shape != mine[k].shape]
    if bad:
        raise ValueError(f"{where}: shapes differ: {'; '.join(bad[:3])}")


def convert_ht(checkpoint: str | os.PathLike, vocab: str | os.PathLike, backbone: str, out: str | os.PathLike,
               *, heads: int = 4):
    """Convert H-T's ``model-best.ckpt`` into the model folder ``out`` (model.safetensors +
    config.json) that ``load_embedder`` / ``recipekit eval`` read. Returns the converted
    :class:`~recipekit.embedders.model.JointEmbedder`."""
    from .model import JointEmbedder, load_weights_file
    from .text import Vocabulary

    checkpoint = Path(checkpoint)
    tokens = read_ht_vocab(vocab)
    state = load_weights_file(checkpoint, what="H-T checkpoint")
    source = f"{checkpoint.parent.name}/{checkpoint.name}" if checkpoint.parent.name else checkpoint.name
    converted, config, words, _ = convert_ht_state_dict(state, tokens, backbone, heads=heads, where=str(checkpoint),
                                                        source=source)
    model = JointEmbedder(config, vocab=Vocabulary(words))
    _check_fits(model, converted, str(checkpoint))
    model.load_state_dict(converted)
    model.eval().save_pretrained(out)
    return model
