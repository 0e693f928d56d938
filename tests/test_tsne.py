"""`recipekit plot RUN --tsne`: the pair selection by class, the PNG of a trained demo run (library
and CLI), and the clear error when fewer than two classes have pairs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from recipekit.search.tsne import plot_tsne, select_pairs, tsne_points  # noqa: E402

NAMES = {0: "background", 1: "soup", 2: "cake", 3: "pie", 4: "rice"}


def test_select_pairs_keeps_the_largest_classes_without_background_and_caps_each():
    ids = [f"r{i}" for i in range(20)]
    # 6 soup, 5 cake, 4 pie, 1 rice, 4 background (and one id without a label: background too)
    cls = [1] * 6 + [2] * 5 + [3] * 4 + [4] + [0] * 3
    labels = dict(zip(ids, cls))
    sel = select_pairs(ids, labels, NAMES, classes=3, per_class=5, seed=1)
    assert sel.names == ["soup", "cake", "pie"] and sel.counts == [6, 5, 4]
    assert np.bincount(sel.labels).tolist() == [5, 5, 4]  # soup capped at 5
    assert all(labels[ids[r]] == [1, 2, 3][j] for r, j in zip(sel.rows, sel.labels))
    assert select_pairs(ids, labels, NAMES, classes=3, per_class=5, seed=1).rows.tolist() == sel.rows.tolist()


def test_select_pairs_needs_two_classes():
    ids = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"only 1 class\(es\).*soup \(2\).*at least 2"):
        select_pairs(ids, {"a": 1, "b": 1, "c": 0}, NAMES, where="shards/test")
    with pytest.raises(ValueError, match=r"only 0 class\(es\).*none"):
        select_pairs(ids, {}, NAMES)


def test_tsne_points_puts_separated_groups_apart():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:2] * 10
    img = np.concatenate([c + rng.normal(size=(10, 8)) * 0.1 for c in centres])
    rec = img + rng.normal(size=img.shape) * 0.05
    img_xy, rec_xy = tsne_points(img, rec, seed=0)
    assert img_xy.shape == rec_xy.shape == (20, 2)
    both = np.concatenate([img_xy, rec_xy])
    group = np.tile(np.repeat([0, 1], 10), 2)
    within = max(np.ptp(both[group == g], axis=0).max() for g in (0, 1))
    between = np.linalg.norm(both[group == 0].mean(0) - both[group == 1].mean(0))
    assert between > within  # t-SNE kept the two clusters apart


def _assert_real_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 400
        pixels = np.asarray(im.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20 and pixels.std() > 10  # markers of several colours, lines, text


@pytest.mark.slow
def test_plot_tsne_of_a_trained_run(trained_demo_run, prepared_demo, tmp_path):
    out = plot_tsne(trained_demo_run, prepared_demo, tmp_path / "tsne.png", split="train", classes=4, per_class=20,
                    device="cpu")
    assert out == tmp_path / "tsne.png" and not list(tmp_path.glob("*.tmp-*"))
    _assert_real_png(out)


@pytest.mark.slow
def test_cli_plot_tsne_default_path_and_errors(trained_demo_run, prepared_demo, tmp_path):
    from recipekit.cli.main import main

    runner = CliRunner()
    res = runner.invoke(main, ["plot", str(trained_demo_run), str(prepared_demo), "--tsne", "--split", "val",
                               "--per-class", "10", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (trained_demo_run / "eval" / "val" / "tsne.png").is_file() and "tsne.png" in res.output
    _assert_real_png(trained_demo_run / "eval" / "val" / "tsne.png")
    res = runner.invoke(main, ["plot", str(trained_demo_run), str(prepared_demo)])
    assert res.exit_code == 2 and "--tsne" in res.output
    res = runner.invoke(main, ["plot", str(trained_demo_run), str(prepared_demo), "--tsne", "--split", "nope"])
    assert res.exit_code == 1 and "no shards of split 'nope'" in res.output

    # A prepared folder whose classes leave one class with pairs: a clear error, no PNG.
    data = tmp_path / "one-class"
    shutil.copytree(prepared_demo, data, ignore=shutil.ignore_patterns("recipes.lmdb"))
    import polars as pl

    table = pl.read_parquet(data / "recipe_classes.parquet")
    keep = table.filter(pl.col("class_id") > 0).get_column("class_id")[0]
    table.with_columns(pl.when(pl.col("class_id") == keep).then(keep).otherwise(0).alias("class_id")).write_parquet(
        data / "recipe_classes.parquet")
    with pytest.raises(ValueError, match=r"only 1 class\(es\) other than background have pairs"):
        plot_tsne(trained_demo_run, data, tmp_path / "none.png", device="cpu", split="train")
    assert not (tmp_path / "none.png").exists()
    res = runner.invoke(main, ["plot", str(trained_demo_run), str(tmp_path / "missing"), "--tsne"])
    assert res.exit_code == 1 and "missing" in res.output
