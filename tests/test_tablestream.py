"""Chunked, row-aligned Parquet reading (pipeline/tablestream.py) and the stages built on it."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recipekit.pipeline.tablestream import iter_aligned, iter_chunks
from recipekit.pipeline.word2vec import write_corpus, write_corpus_files


def _write(path, n, row_group, ids=None):
    ids = ids or [f"r{i:04d}" for i in range(n)]
    table = pa.table({"id": ids, "x": list(range(n)), "tags": [[f"t{i}"] * (i % 3) for i in range(n)]})
    pq.write_table(table, path, row_group_size=row_group)
    return table


@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_chunks_have_exactly_rows_rows_across_row_groups(tmp_path, rows):
    table = _write(tmp_path / "a.parquet", 250, row_group=33)
    chunks = list(iter_chunks(tmp_path / "a.parquet", ["id", "tags"], rows))
    assert all(c.height == rows for c in chunks[:-1]) and 0 < chunks[-1].height <= rows
    whole = pl.concat(chunks)
    assert whole.columns == ["id", "tags"]
    assert whole.equals(pl.from_arrow(table.select(["id", "tags"])))


def test_aligned_files_in_step_and_misalignment_named(tmp_path):
    _write(tmp_path / "a.parquet", 120, row_group=50)
    _write(tmp_path / "b.parquet", 120, row_group=17)
    pairs = list(iter_aligned([(tmp_path / "a.parquet", ["id", "x"]), (tmp_path / "b.parquet", ["tags"])], rows=40))
    assert len(pairs) == 3 and [b.columns for _, b in pairs] == [["tags"]] * 3
    assert pl.concat([a for a, _ in pairs]).get_column("x").to_list() == list(range(120))
    swapped = [f"r{i:04d}" for i in range(120)]
    swapped[93], swapped[94] = swapped[94], swapped[93]
    _write(tmp_path / "c.parquet", 120, row_group=50, ids=swapped)
    with pytest.raises(ValueError, match=r"c\.parquet: row 93 has id 'r0094'"):
        list(iter_aligned([(tmp_path / "a.parquet", ["id"]), (tmp_path / "c.parquet", ["x"])], rows=40))
    _write(tmp_path / "d.parquet", 119, row_group=50)
    with pytest.raises(ValueError, match="row counts differ"):
        list(iter_aligned([(tmp_path / "a.parquet", ["id"]), (tmp_path / "d.parquet", ["x"])]))


def test_streamed_word2vec_corpus_is_the_whole_frame_corpus(prepared_demo, tmp_path):
    recipes = pl.read_parquet(prepared_demo / "recipes.parquet")
    names = pl.read_parquet(prepared_demo / "ingredients.parquet")
    whole = write_corpus(recipes, names, tmp_path / "whole.txt")
    streamed = write_corpus_files(prepared_demo, tmp_path / "streamed.txt", rows=37)
    assert streamed == whole and whole["train_recipes"] > 300
    assert (tmp_path / "streamed.txt").read_bytes() == (tmp_path / "whole.txt").read_bytes()


def test_streamed_ingredients_stage_matches_whole_frame_lists(prepared_demo, tmp_path, monkeypatch):
    import shutil

    from recipekit.pipeline import ingredients as ingr

    out = tmp_path / "out"
    shutil.copytree(prepared_demo, out)
    recipes = pl.read_parquet(out / "recipes.parquet", columns=["id", "partition", "ingredients"])
    whole = ingr.canonical_lists(recipes, pl.read_parquet(out / "det_ingrs.parquet"), "rules", 1)
    monkeypatch.setattr("recipekit.pipeline.tablestream.CHUNK_ROWS", 53)  # 12 chunks, det rows split across them
    report = ingr.ingredients(out, workers=1, force=True)
    assert pl.read_parquet(out / "ingredients.parquet").equals(whole)
    assert pl.read_parquet(out / "ingredient_vocab.parquet").equals(ingr.vocabulary(whole))
    assert report.counts["recipes"] == recipes.height == 600 and report.counts["from_det_ingrs"] > 0
    assert report.counts["distinct_lines"] == recipes.get_column("ingredients").explode().n_unique()
    assert report.counts["mean_per_recipe"] == round(float(whole.get_column("ingredients").list.len().mean()), 2)


def test_streamed_classes_stage_matches_whole_title_rule(prepared_demo, tmp_path, monkeypatch):
    import shutil

    import numpy as np
    from spacy.lang.en.stop_words import STOP_WORDS

    from recipekit.pipeline.classes import assign_classes, auto_min_train, classes, food101_names, title_keys

    out = tmp_path / "out"
    shutil.copytree(prepared_demo, out)
    recipes = pl.read_parquet(out / "recipes.parquet", columns=["id", "partition", "title"])
    parts = recipes.get_column("partition").replace_strict({"train": 0, "val": 1, "test": 2}).to_numpy()
    stop = frozenset(STOP_WORDS)
    labels, names = assign_classes([title_keys(t, stop) for t in recipes.get_column("title")], parts, stop_words=stop,
                                   min_train=auto_min_train(int((parts == 0).sum())), extra_names=food101_names())
    monkeypatch.setattr("recipekit.pipeline.tablestream.CHUNK_ROWS", 41)
    report = classes(out, force=True)
    table = pl.read_parquet(out / "recipe_classes.parquet")
    assert table.get_column("id").equals(recipes.get_column("id"))
    assert np.array_equal(table.get_column("class_id").to_numpy(), labels) and report.counts["classes"] == len(names) - 1
    assert table.get_column("class_name").to_list() == [names[i] for i in labels] and (labels > 0).any()


def test_parse_checks_each_photo_on_disk_as_a_listing_would(tmp_path):
    """`parse` no longer lists the image tree into memory: one lstat per photo, same answers."""
    import json

    from recipekit.pipeline.parse import image_relpath, parse

    src = tmp_path / "src"
    kinds = ["file", "link", "dangling", "folder", "missing", "link_to_folder"]
    layer1 = [{"id": f"r{i}", "title": "Soup", "partition": "train", "url": None,
               "ingredients": [{"text": "1 cup water"}], "instructions": [{"text": "Boil."}]} for i in range(len(kinds))]
    layer2 = [{"id": f"r{i}", "images": [{"id": f"abcd{i:06d}.jpg"}]} for i in range(len(kinds))]
    src.mkdir()
    (src / "layer1.json").write_text(json.dumps(layer1))
    (src / "layer2.json").write_text(json.dumps(layer2))
    real = tmp_path / "real.jpg"
    real.write_bytes(b"jpeg")
    for i, kind in enumerate(kinds):
        p = src / "images" / image_relpath("train", f"abcd{i:06d}.jpg")
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            p.write_bytes(b"jpeg")
        elif kind == "link":
            p.symlink_to(real)
        elif kind == "dangling":
            p.symlink_to(tmp_path / "gone.jpg")
        elif kind == "folder":
            p.mkdir()
        elif kind == "link_to_folder":
            p.symlink_to(tmp_path)
    report = parse(src, tmp_path / "out")
    present = pl.read_parquet(tmp_path / "out" / "images.parquet").sort("recipe_id").get_column("present").to_list()
    # What os.walk lists as files: files, symlinks to files and dangling symlinks.
    assert present == [True, True, True, False, False, False]
    assert report.counts["images_present"] == 3 and report.counts["images_missing"] == 3
