"""Logs through `logging`, one --verbose/--quiet pair on every command, bars only on a terminal, and
the selected epoch marked on the training curves."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from recipekit.cli.main import main
from recipekit.cli.options import setup_logging
from recipekit.pipeline.progress import bar_disabled


@pytest.fixture(autouse=True)
def _restore_logger():
    logger = logging.getLogger("recipekit")
    level, handlers, propagate = logger.level, list(logger.handlers), logger.propagate
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers
    logger.propagate = propagate


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_verbose_and_quiet(name):
    options = {opt for p in main.commands[name].params for opt in p.opts}
    assert {"--verbose", "-v", "--quiet", "-q"} <= options


def test_levels_and_bars_follow_the_flags():
    logger = logging.getLogger("recipekit")
    setup_logging()
    assert logger.level == logging.INFO and bar_disabled() is None and bar_disabled(True) is True
    setup_logging(quiet=True)
    assert logger.level == logging.WARNING and bar_disabled() is True
    setup_logging(verbose=True)
    assert logger.level == logging.DEBUG and bar_disabled() is None
    assert sum(getattr(h, "_recipekit_cli", False) for h in logger.handlers) == 1  # set up once, not stacked
    logger.setLevel(logging.NOTSET)  # a library user who never set up logging still gets bars on a terminal
    assert bar_disabled() is None


def test_verbose_and_quiet_together_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(main, ["demo-data", str(tmp_path / "c"), "--recipes", "3", "-v", "-q"])
    assert res.exit_code == 2 and "--verbose and --quiet contradict each other" in res.output


def test_logs_go_to_stderr_the_result_to_stdout_and_quiet_silences_them(tmp_path):
    args = ["demo-data", str(tmp_path / "c"), "--recipes", "4", "--image-fraction", "0", "--workers", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["recipes"] == 4  # stdout is the result alone
    assert "demo-data: wrote" in res.stderr
    res = CliRunner().invoke(main, [args[0], str(tmp_path / "d"), *args[2:], "--quiet"])
    assert res.exit_code == 0 and res.stderr == "" and json.loads(res.stdout)["recipes"] == 4


def test_no_carriage_return_bar_updates_when_the_output_is_not_a_terminal(tmp_path):
    corpus = tmp_path / "c"
    assert CliRunner().invoke(main, ["demo-data", str(corpus), "--recipes", "30", "--image-fraction", "0",
                                     "--workers", "1", "-q"]).exit_code == 0
    res = CliRunner().invoke(main, ["prepare", str(corpus), str(tmp_path / "p"), "--stages", "parse,ingredients",
                                    "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output and "parse" in res.stdout


def test_curves_mark_the_selected_epoch():
    pytest.importorskip("matplotlib")
    from recipekit.training.logs import curves_figure, selected_epoch

    val = {d: {"medR": m, "R@1": 1.0} for d, m in (("image_to_recipe", 5.0), ("recipe_to_image", 6.0))}
    history = [{"epoch": e, "loss": 1.0 / e, "val": val, "best": e in (1, 3)} for e in range(1, 5)]
    assert selected_epoch(history) == 3 and selected_epoch([{"epoch": 1, "loss": 1.0}]) is None
    fig = curves_figure(history)
    for ax in fig.axes:
        marks = [ln for ln in ax.get_lines() if ln.get_label() == "selected: epoch 3 (best.pt)"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [3, 3]
