"""Each prepare stage's Params dataclass, PrepareConfig as a mapping of them, and `prepare --set`."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from recipekit.cli.main import main as cli
from recipekit.core.overrides import ConfigError
from recipekit.pipeline.parse import ParseParams
from recipekit.pipeline.prepare import STAGES, PrepareConfig, prepare, setting_keys
from recipekit.pipeline.shard import ShardParams
from recipekit.pipeline.stageparams import StageParams
from recipekit.pipeline.word2vec import Word2VecParams

# What each stage's manifest records with the default settings: the digests of folders prepared
# before the Params dataclasses existed depend on these dicts, so they must not change.
DEFAULT_MANIFEST_PARAMS = {
    "parse": {},
    "ingredients": {"extractor": "rules"},
    "word2vec": {"vector_size": 300, "window": 10, "min_count": 10, "epochs": 10, "sg": 1, "hs": 1, "negative": 0,
                 "seed": 1234},
    "classes": {"top_bigrams": 2000, "max_classes": 1000, "min_train": None, "food101": True},
    "store": {"max_ingredients": 20, "max_instructions": 20, "max_tokens": 15},
    "shard": {"image_size": 256, "quality": 90, "max_images": 5, "max_count": 1000, "max_bytes": 1_000_000_000,
              "seed": 0, "pixel_limit": 89_478_485, "allow_external_links": False},
}


def test_every_stage_owns_a_frozen_params_dataclass_and_the_config_maps_stage_to_it():
    config = PrepareConfig()
    assert list(config) == list(STAGES) == [f.name for f in dataclasses.fields(PrepareConfig)]
    for name, stage in STAGES.items():
        cls = stage.params
        assert dataclasses.is_dataclass(cls) and issubclass(cls, StageParams), name
        assert cls.__dataclass_params__.frozen, name
        assert cls.__module__ == stage.run.__module__, f"{name}: Params must live beside the stage's code"
        assert type(config[name]) is cls and config[name] is getattr(config, name)
        assert cls.from_manifest(config[name].manifest()) == config[name]
    assert {name: config.params(name) for name in config} == DEFAULT_MANIFEST_PARAMS
    random = ParseParams(split="random", split_seed=3, split_ratios=(0.5, 0.25, 0.25))
    assert random.manifest() == {"split": "random", "split_seed": 3, "split_ratios": [0.5, 0.25, 0.25]}
    assert ParseParams.from_manifest(random.manifest()) == random
    with pytest.raises(TypeError, match="PrepareConfig.shard must be a ShardParams"):
        PrepareConfig(shard=Word2VecParams())


def test_overrides_reach_the_typed_params_with_toml_values():
    config = PrepareConfig().with_overrides(["shard.max_images=64", "parse.split=random",
                                             "parse.split_ratios=[0.5, 0.25, 0.25]", "classes.food101=false",
                                             ("word2vec.epochs", 3)])
    assert config.shard == ShardParams(max_images=64)
    assert config.parse == ParseParams(split="random", split_ratios=(0.5, 0.25, 0.25))
    assert config.classes.food101 is False and config.word2vec.epochs == 3
    assert config.params("shard")["max_images"] == 64
    assert PrepareConfig().with_overrides({"store.max_tokens": 3}).store.max_tokens == 3
    assert PrepareConfig().with_overrides(["shard.seed=1", "shard.seed=2"]).shard.seed == 2  # the last one wins
    assert len(setting_keys()) == sum(len(dataclasses.fields(s.params)) for s in STAGES.values())


@pytest.mark.parametrize("override, message", [
    ("shard.max_image=3", r"'shard.max_image': unknown key \(did you mean 'shard.max_images'\?\)"),
    ("shrd.max_images=3", r"'shrd.max_images': unknown key \(did you mean 'shard.max_images'\?\)"),
    ("nothing.like.it=1", r"'nothing.like.it': unknown key \(stages: parse, ingredients"),
    ("shard=3", r"'shard': expected STAGE.KEY \(keys: shard.image_size"),
    ("shard.max_images=many", r"'shard.max_images': expected an integer, got 'many'"),
    ("parse.split_ratios=[0.5, 0.5]", r"'parse.split_ratios': expected an array of 3 values"),
    ("shard.max_images", "expected KEY=VALUE"),
])
def test_a_bad_override_is_a_one_line_error_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        PrepareConfig().with_overrides([override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override, message", [
    ("shard.max_images=0", "shard parameter max_images must be a positive integer, got 0"),
    ("store.max_tokens=0", "store parameter max_tokens must be a positive integer, got 0"),
    ("parse.split=halves", "parse parameter split must be 'recipe1m' or 'random', got 'halves'"),
    ("ingredients.extractor=magic", "ingredients parameter extractor must be one of rules"),
    ("word2vec.sg=2", "word2vec parameter sg must be 0 or 1, got 2"),
])
def test_an_out_of_range_value_names_the_stage_and_key(override, message):
    with pytest.raises(ValueError, match=message):
        PrepareConfig().with_overrides([override])


def _manifest(out, stage):
    return json.loads((out / "manifests" / f"{stage}.json").read_text())


def test_prepare_overrides_reach_the_manifest(demo_corpus, tmp_path):
    out = tmp_path / "out"
    reports = prepare(demo_corpus, out, stages=["parse"], overrides=["parse.split=random", "parse.split_seed=4"],
                      workers=1, quiet=True)
    assert [r.status for r in reports] == ["ran"]
    assert _manifest(out, "parse")["params"] == {"split": "random", "split_seed": 4, "split_ratios": [0.6, 0.2, 0.2]}
    again = prepare(demo_corpus, out, stages=["parse"], config=PrepareConfig(parse=ParseParams("random", 4)),
                    workers=1, quiet=True)
    assert [r.status for r in again] == ["skipped"]  # the same settings, however they were given


def test_cli_set_reaches_the_manifest_and_a_typo_is_one_line(demo_corpus, tmp_path):
    out = tmp_path / "out"
    args = ["prepare", str(demo_corpus), str(out), "--stages", "parse", "--workers", "1", "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--set", "parse.split=random", "--set", "parse.split_seed=5"])
    assert result.exit_code == 0, result.output
    assert _manifest(out, "parse")["params"]["split_seed"] == 5
    bad = CliRunner().invoke(cli, [*args, "--set", "parse.split_sed=5"])
    assert bad.exit_code != 0
    assert bad.output.strip().splitlines() == [
        "Error: prepare override 'parse.split_sed': unknown key (did you mean 'parse.split_seed'?)"]


# Each short option of `prepare` and the --set that does the same.
SHORT_FORMS = [
    (["--ingredient-extractor", "spacy-sm"], ["ingredients.extractor=spacy-sm"]),
    (["--w2v-dim", "16", "--w2v-window", "3", "--w2v-min-count", "2", "--w2v-epochs", "1", "--w2v-seed", "9"],
     ["word2vec.vector_size=16", "word2vec.window=3", "word2vec.min_count=2", "word2vec.epochs=1", "word2vec.seed=9"]),
    (["--class-top-bigrams", "50", "--class-max", "7", "--class-min-train", "0", "--no-food101"],
     ["classes.top_bigrams=50", "classes.max_classes=7", "classes.min_train=0", "classes.food101=false"]),
    (["--store-max-ingredients", "4", "--store-max-instructions", "5", "--store-max-tokens", "6"],
     ["store.max_ingredients=4", "store.max_instructions=5", "store.max_tokens=6"]),
    (["--shard-image-size", "64", "--shard-quality", "80", "--shard-max-images", "2", "--shard-max-count", "9",
      "--shard-max-bytes", "12345", "--shard-seed", "3", "--shard-pixel-limit", "1000",
      "--shard-allow-external-links"],
     ["shard.image_size=64", "shard.quality=80", "shard.max_images=2", "shard.max_count=9", "shard.max_bytes=12345",
      "shard.seed=3", "shard.pixel_limit=1000", "shard.allow_external_links=true"]),
    (["--split", "random", "--split-seed", "2", "--split-ratios", "0.5", "0.3", "0.2"],
     ["parse.split=random", "parse.split_seed=2", "parse.split_ratios=[0.5, 0.3, 0.2]"]),
    ([], []),
]


def _cli_config(monkeypatch, tmp_path, args):
    """The settings `recipekit prepare ... ARGS` would run with (the stages themselves do not run)."""
    import recipekit.cli.main as cli_main

    seen = []

    def fake_prepare(src, out, *, config, overrides, **kwargs):
        seen.append(config.with_overrides(overrides))
        return []

    monkeypatch.setattr(cli_main, "prepare", fake_prepare)
    result = CliRunner().invoke(cli, ["prepare", str(tmp_path), str(tmp_path / "out"), *args])
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize("short, sets", SHORT_FORMS)
def test_the_short_options_are_the_same_as_set(monkeypatch, tmp_path, short, sets):
    via_short = _cli_config(monkeypatch, tmp_path, short)
    via_set = _cli_config(monkeypatch, tmp_path, [arg for s in sets for arg in ("--set", s)])
    assert via_short == via_set == PrepareConfig().with_overrides(sets)
    if sets:
        assert via_short != PrepareConfig()


def test_set_comes_after_the_short_options_and_the_preset_is_the_base(monkeypatch, tmp_path):
    config = _cli_config(monkeypatch, tmp_path, ["--shard-max-images", "2", "--set", "shard.max_images=3",
                                                 "--w2v-preset", "fast", "--set", "word2vec.epochs=2"])
    assert config.shard.max_images == 3
    assert config.word2vec == Word2VecParams.preset("fast", epochs=2)
