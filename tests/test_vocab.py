"""recipekit.pipeline.vocab: the torch-free vocabulary and tokenisers shared by store, loaders and towers."""

from __future__ import annotations

import subprocess
import sys

from recipekit.pipeline import vocab as pv
from recipekit.pipeline.vocab import (
    Vocabulary,
    match_names,
    tokenise_recipe,
    tokenise_sample,
)

WORDS = ["tomato", "olive_oil", "oil", "olive", "egg", "eggs", "chop", "the", "in", "fry", ".", "2", "cups", "salt"]


def test_embedders_reexport_the_same_objects():
    from recipekit import embedders
    from recipekit.embedders import text

    assert text.Vocabulary is pv.Vocabulary is embedders.Vocabulary
    assert text.tokenise_recipe is pv.tokenise_recipe is embedders.tokenise_recipe
    assert (text.PAD_ID, text.UNK_ID) == (pv.PAD_ID, pv.UNK_ID) == (0, 1)


def test_pipeline_vocab_does_not_import_torch():
    code = "import sys, recipekit.pipeline.vocab; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_match_names_folds_plurals_and_prefers_longest():
    lines = ["2 cups olive oil", "3 large Eggs", "2 tomatoes, diced", "1 pinch of saffron", "2 berries"]
    names = ["egg", "oil", "olive oil", "tomato", "berry"]
    assert match_names(lines, names) == ["olive oil", "egg", "tomato", None, "berry"]
    assert match_names(["salt"], []) == [None]


def test_tokenise_sample_matches_tokenise_recipe_of_the_equivalent_dict():
    vocab = Vocabulary(WORDS)
    sample = {
        "title": "Fried tomato",
        "ingredient_lines": ["2 cups olive oil", "3 eggs", "salt to taste", "1 banana"],
        "ingredients": ["olive oil", "egg", "tomato"],
        "instructions": ["Chop the tomato.", "Fry in the olive oil."],
    }
    got = tokenise_sample(sample, vocab)
    assert got["ingredient_names"] == [vocab.id("olive_oil"), vocab.id("egg"), vocab.id("salt"), 1]
    assert vocab.id("olive_oil") in got["instructions"][1]  # joined with _ as in the word2vec corpus
    layer1 = {
        "title": "Fried tomato",
        "ingredients": [{"text": "2 cups olive oil", "name": "olive oil"}, {"text": "3 eggs", "name": "egg"},
                        {"text": "salt to taste"}, {"text": "1 banana"}],
        "instructions": [{"text": "Chop the tomato."}, {"text": "Fry in the olive_oil."}],
    }
    assert got == tokenise_recipe(layer1, vocab)
    short = tokenise_sample(sample, vocab, max_ingredients=2, max_instructions=1, max_tokens=2)
    assert len(short["ingredients"]) == len(short["ingredient_names"]) == 2
    assert len(short["instructions"]) == 1 and all(len(t) <= 2 for t in short["ingredients"] + [short["title"]])


def test_tokenise_sample_with_an_encode_only_vocabulary():
    class Chars:
        def encode(self, text, max_tokens=None):
            return [ord(c) for c in text][:max_tokens]

    out = tokenise_sample({"title": "ab", "ingredient_lines": ["x"], "instructions": ["yz"]}, Chars())
    assert out == {"title": [97, 98], "ingredients": [[120]], "instructions": [[121, 122]], "ingredient_names": [1]}


def test_vocabulary_digest_identifies_the_word_list():
    assert Vocabulary(["a", "b"]).digest() == Vocabulary(["a", "b"]).digest() != Vocabulary(["b", "a"]).digest()
