"""Tokeniser, vocabulary, word2vec matrix and recipe batches of recipekit.embedders.text."""

from __future__ import annotations

import numpy as np
import pytest
from recipekit.embedders.text import (
    PAD_ID,
    UNK_ID,
    Vocabulary,
    embedding_matrix_from_keyedvectors,
    load_word2vec_matrix,
    tokenise_recipe,
    tokenize,
)

try:
    from conftest_torch import RECIPES, WORDS
except ImportError:  # tests/ imported as a package
    from tests.conftest_torch import RECIPES, WORDS


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Fry the Onions, 2 minutes!") == ["fry", "the", "onions", ",", "2", "minutes", "!"]
    assert tokenize("all-purpose flour; olive_oil") == ["all-purpose", "flour", ";", "olive_oil"]
    try:
        from recipekit.pipeline.tokenize import tokenize as pipeline_tokenize
    except ImportError:
        return
    text = "Mix 1/2 cup all-purpose flour (sifted) with the baker's sugar."
    assert tokenize(text) == pipeline_tokenize(text)  # the vocabulary was built with it


def test_vocabulary_ids_follow_vocab_txt(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("salt\nolive_oil\n\npepper\n", encoding="utf-8")
    vocab = Vocabulary.from_file(path)
    assert vocab.words == ["salt", "olive_oil", "pepper"]
    assert [vocab.id(w) for w in ("salt", "olive_oil", "pepper")] == [2, 3, 4]
    assert vocab.id("caviar") == UNK_ID == 1 and PAD_ID == 0 and len(vocab) == 5
    assert vocab.encode("Salt, pepper") == [2, 1, 4]
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["a", "a"])


def test_ingredient_name_ids():
    vocab = Vocabulary(WORDS)
    assert vocab.ingredient_id("2 cups olive oil") == vocab.id("olive_oil")
    assert vocab.ingredient_id("1 onion, chopped") == vocab.id("onion")
    assert vocab.ingredient_id("some caviar") == UNK_ID
    assert vocab.ingredient_id("whatever text", name="Olive Oil") == vocab.id("olive_oil")


def test_tokenise_recipe_limits_and_names():
    vocab = Vocabulary(WORDS)
    recipe = {
        "title": "Tomato sauce with olive oil and garlic and salt",
        "ingredients": [{"text": f"{i} cups olive oil"} for i in range(30)],
        "instructions": [{"text": "fry the garlic in olive oil"}] * 25,
    }
    t = tokenise_recipe(recipe, vocab, max_ingredients=4, max_instructions=3, max_tokens=5)
    assert len(t["title"]) == 5 and len(t["ingredients"]) == 4 and len(t["instructions"]) == 3
    assert all(len(x) <= 5 for x in t["ingredients"] + t["instructions"])
    assert t["ingredient_names"] == [vocab.id("olive_oil")] * 4
    assert vocab.id("olive_oil") not in t["instructions"][0]
    named = {**recipe, "ingredients": [{"text": "2 cups of it", "name": "olive oil"}]}
    t = tokenise_recipe(named, vocab, max_tokens=10)
    assert t["ingredient_names"] == [vocab.id("olive_oil")]
    assert vocab.id("olive_oil") in t["instructions"][0]  # names joined with _ as in word2vec
    empty = tokenise_recipe({"title": "", "ingredients": [], "instructions": []}, vocab)
    assert empty == {"title": [], "ingredients": [], "instructions": [], "ingredient_names": []}


def test_collate_recipes_pads_and_counts():
    torch = pytest.importorskip("torch")
    from recipekit.embedders import collate_recipes

    vocab = Vocabulary(WORDS)
    toks = [tokenise_recipe(r, vocab) for r in RECIPES]
    b = collate_recipes(toks)
    assert all(v.dtype == torch.long for v in b.values())
    assert b["title"].shape == (3, 2) and b["title_len"].tolist() == [2, 1, 0]
    assert b["ingredients"].shape[:2] == (3, 3) and b["n_ingredients"].tolist() == [3, 1, 0]
    assert b["ingredient_names"].shape == (3, 3) and b["ingredient_names"][0, 0] == vocab.id("olive_oil")
    assert b["instructions"].shape[:2] == (3, 3) and b["n_instructions"].tolist() == [3, 1, 0]
    assert b["instructions_len"][0].tolist() == [len(x) for x in toks[0]["instructions"]]
    assert (b["instructions"][2] == 0).all() and b["instructions"].shape[2] == max(len(x) for x in toks[0]["instructions"])
    only_empty = collate_recipes([toks[2]])
    assert only_empty["title"].shape == (1, 1) and only_empty["instructions"].shape == (1, 1, 1)
    with pytest.raises(ValueError):
        collate_recipes([])


def test_word2vec_matrix_from_gensim(tmp_path):
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(vector_size=4)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    kv.add_vectors(["salt", "olive_oil", "unused"], vectors)
    vocab = Vocabulary(["olive_oil", "salt", "rare"])
    m = embedding_matrix_from_keyedvectors(kv, vocab)
    assert m.shape == (5, 4) and m.dtype == np.float32
    assert (m[PAD_ID] == 0).all()
    np.testing.assert_array_equal(m[vocab.id("salt")], vectors[0])
    np.testing.assert_array_equal(m[vocab.id("olive_oil")], vectors[1])
    assert np.abs(m[vocab.id("rare")]).max() < 2  # small random init
    from recipekit.pipeline.word2vec import UnsafeArtefactError, save_vectors

    save_vectors(tmp_path / "word2vec", kv.index_to_key, kv.vectors)
    np.testing.assert_array_equal(load_word2vec_matrix(tmp_path, vocab), m)
    np.testing.assert_array_equal(load_word2vec_matrix(tmp_path / "word2vec" / "vectors.npy", vocab), m)
    old = tmp_path / "old" / "word2vec"
    old.mkdir(parents=True)
    kv.save(str(old / "word2vec.kv"))  # an older prepared folder: a gensim pickle
    with pytest.raises(UnsafeArtefactError, match="can run code"):
        load_word2vec_matrix(old / "word2vec.kv", vocab)
    np.testing.assert_array_equal(load_word2vec_matrix(old / "word2vec.kv", vocab, allow_pickle=True), m)


@pytest.mark.parametrize("tower", ["je", "ht"])
def test_towers_start_from_the_word2vec_matrix(tower):
    torch = pytest.importorskip("torch")
    from recipekit.embedders import create_embedder

    vocab = Vocabulary(WORDS)
    matrix = np.random.default_rng(0).normal(size=(len(vocab), 6)).astype(np.float32)
    matrix[0] = 0
    name = "je_resnet50" if tower == "je" else "ht_resnet18"
    recipe = {"ingredient_hidden": 4, "sentence_dim": 4, "instruction_hidden": 4} if tower == "je" else {"hidden": 8, "heads": 2, "layers": 1, "ff_dim": 16}
    model = create_embedder(
        name, vocab=vocab, embedding_matrix=matrix, embed_dim=8, image={"backbone": "resnet18", "weights": None}, recipe=recipe
    )
    torch.testing.assert_close(model.recipe_tower.embedding.weight.detach(), torch.from_numpy(matrix))
    with pytest.raises(ValueError, match="rows"):
        create_embedder(name, vocab=Vocabulary(WORDS[:3]), embedding_matrix=matrix, image={"backbone": "resnet18", "weights": None})


def test_collate_recipes_matches_a_per_sentence_reference():
    """The vectorised padding equals the obvious loop, on ragged, empty and numpy inputs."""
    import numpy as np
    import torch
    from recipekit.embedders import collate_recipes

    rng = np.random.default_rng(3)

    def sent():
        return list(rng.integers(2, 500, size=int(rng.integers(0, 9))))

    recipes = [
        {
            "title": sent(),
            "ingredients": [sent() for _ in range(int(rng.integers(0, 6)))],
            "ingredient_names": list(rng.integers(2, 500, size=int(rng.integers(0, 4)))),
            "instructions": [np.asarray(sent(), dtype=np.uint16) for _ in range(int(rng.integers(0, 5)))],
        }
        for _ in range(40)
    ]
    batch = collate_recipes(recipes)
    for key, n_key, len_key in (("ingredients", "n_ingredients", "ingredients_len"),
                                ("instructions", "n_instructions", "instructions_len")):
        ids = batch[key]
        for b, r in enumerate(recipes):
            assert int(batch[n_key][b]) == len(r[key])
            for i in range(ids.shape[1]):
                s = [int(t) for t in r[key][i]] if i < len(r[key]) else []
                assert int(batch[len_key][b, i]) == len(s)
                assert ids[b, i, : len(s)].tolist() == s and not ids[b, i, len(s):].any()
    for b, r in enumerate(recipes):
        t = [int(x) for x in r["title"]]
        assert batch["title"][b, : len(t)].tolist() == t and not batch["title"][b, len(t):].any()
        assert int(batch["title_len"][b]) == len(t)
        names = [int(x) for x in r["ingredient_names"]]
        assert batch["ingredient_names"][b, : len(names)].tolist() == names
        assert batch["ingredient_names"].shape[1] >= batch["ingredients"].shape[1]
    assert all(v.dtype == torch.long for v in batch.values())
