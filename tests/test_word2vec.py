import json
import os

import polars as pl
import pytest

from recipekit.pipeline.parse import parse
from recipekit.pipeline.tokenize import tokenize, underscore_ingredients
from recipekit.pipeline.word2vec import Word2VecParams, load_vectors, load_vocab, word2vec, write_corpus


def test_tokenize():
    assert tokenize("Heat 2 Tbsp. olive_oil; add ½? No: 1/2 cup all-purpose flour!") == [
        "heat", "2", "tbsp", ".", "olive_oil", ";", "add", "½", "?", "no", ":", "1/2", "cup", "all-purpose", "flour", "!",
    ]
    assert tokenize("咖喱炒蟹 with rice") == ["咖", "喱", "炒", "蟹", "with", "rice"]


def test_underscore_ingredients_longest_first_whole_words():
    text = underscore_ingredients("Add Extra Virgin Olive Oil, then olive oil; not olive oils.",
                                  ["olive oil", "extra virgin olive oil", "salt"])
    assert text == "add extra_virgin_olive_oil, then olive_oil; not olive oils."


def _prepared(tmp_path):
    layer1 = []
    for i in range(60):
        part = "train" if i < 50 else "val"
        layer1.append({
            "id": f"r{i:03d}", "title": "Tomato Soup" if i % 2 else "Garlic Bread", "partition": part, "url": None,
            "ingredients": [{"text": "2 tbsp olive oil"}, {"text": "3 tomatoes"}],
            "instructions": [{"text": "Heat the olive oil."}, {"text": f"Add the tomatoes {'val-only-word' if part == 'val' else ''}."}],
        })
    src = tmp_path / "src"
    src.mkdir()
    (src / "layer1.json").write_text(json.dumps(layer1))
    (src / "layer2.json").write_text("[]")
    out = tmp_path / "out"
    parse(src, out)
    recipes = pl.read_parquet(out / "recipes.parquet")
    recipes.select("id", "partition", pl.lit(["olive oil", "tomato"]).alias("ingredients")).write_parquet(
        out / "ingredients.parquet")
    return out


def test_corpus_is_train_only_with_underscored_ingredients(tmp_path):
    out = _prepared(tmp_path)
    recipes = pl.read_parquet(out / "recipes.parquet")
    stats = write_corpus(recipes, pl.read_parquet(out / "ingredients.parquet"), tmp_path / "c.txt")
    lines = (tmp_path / "c.txt").read_text().splitlines()
    assert stats["train_recipes"] == 50 and stats["sentences"] == len(lines) == 50 * 4
    assert "olive_oil tomato" in lines and "heat the olive_oil ." in lines
    assert not any("val-only-word" in line for line in lines)


def test_stage_writes_vectors_and_vocab(tmp_path):
    out = _prepared(tmp_path)
    report = word2vec(out, params=Word2VecParams(vector_size=16, min_count=5, epochs=2), workers=1)
    kv = load_vectors(out)
    vocab = load_vocab(out)
    assert vocab == list(kv.index_to_key) and report.counts["vocabulary"] == len(vocab)
    assert kv.vector_size == 16 and "olive_oil" in vocab and "val-only-word" not in vocab
    assert sorted(p.name for p in (out / "word2vec").iterdir()) == ["vectors.npy", "vocab.txt"]
    assert not list(out.glob("*.tmp-*"))
    # Same parameters, same inputs: skipped; other parameters: retrained.
    assert word2vec(out, params=Word2VecParams(vector_size=16, min_count=5, epochs=2)).status == "skipped"
    assert word2vec(out, params=Word2VecParams(vector_size=8, min_count=5, epochs=2)).status == "ran"
    assert load_vectors(out).vector_size == 8


class _Boom:
    """Unpickling this runs code: what a hostile word2vec.kv could hold."""

    def __reduce__(self):
        return (os.mkdir, (str(_Boom.target),))


def test_vectors_load_without_pickle_and_an_old_kv_pickle_only_when_allowed(tmp_path):
    import pickle

    import numpy as np

    from recipekit.pipeline.word2vec import UnsafeArtefactError, save_vectors

    folder = tmp_path / "prep" / "word2vec"
    folder.mkdir(parents=True)
    save_vectors(folder, ["salt", "olive_oil"], np.arange(6, dtype=np.float32).reshape(2, 3))
    kv = load_vectors(tmp_path / "prep")
    assert kv.index_to_key == ["salt", "olive_oil"] and kv["olive_oil"].tolist() == [3.0, 4.0, 5.0]
    # a hostile folder: an object array in vectors.npy is refused, nothing runs
    _Boom.target = tmp_path / "ran"
    bad = tmp_path / "bad" / "word2vec"
    bad.mkdir(parents=True)
    np.save(bad / "vectors.npy", np.array([_Boom()], dtype=object), allow_pickle=True)
    (bad / "vocab.txt").write_text("x\n")
    with pytest.raises(ValueError, match="vectors.npy: not a plain array"):
        load_vectors(bad)
    # an older folder's pickle: refused with what to do, read only when allowed
    old = tmp_path / "old" / "word2vec"
    old.mkdir(parents=True)
    (old / "word2vec.kv").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(UnsafeArtefactError, match="word2vec.kv: a gensim pickle, which can run code"):
        load_vectors(tmp_path / "old")
    assert not _Boom.target.exists()
    with pytest.raises(Exception):
        load_vectors(tmp_path / "old", allow_pickle=True)  # the opt-in runs it (then gensim chokes)
    assert _Boom.target.exists()


def test_corpus_tokenised_by_workers_is_the_same_file(tmp_path, monkeypatch):
    """Runs of recipes tokenised in worker processes, written in order: the bytes of one process."""
    from recipekit.pipeline import word2vec as w2v
    from recipekit.pipeline.backends import PoolExecutor

    out = _prepared(tmp_path)
    one = w2v.write_corpus_files(out, tmp_path / "one.txt")
    monkeypatch.setattr(w2v, "TOKENISE_ROWS", 7)  # many runs, the last one short
    with PoolExecutor(2) as executor:
        two = w2v.write_corpus_files(out, tmp_path / "two.txt", rows=11, executor=executor)
    assert one == two and one["sentences"] > 100
    assert (tmp_path / "one.txt").read_bytes() == (tmp_path / "two.txt").read_bytes()


def test_presets():
    import pytest

    assert Word2VecParams.preset("im2recipe") == Word2VecParams()
    fast = Word2VecParams.preset("fast", epochs=None, window=5)
    assert (fast.sg, fast.hs, fast.negative, fast.epochs, fast.window) == (0, 0, 5, 5, 5)
    with pytest.raises(ValueError, match="unknown word2vec preset 'slow'"):
        Word2VecParams.preset("slow")
