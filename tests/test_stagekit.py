import json
import os
import sys
from pathlib import Path

import pytest

from recipekit.pipeline.backends import PoolExecutor, TaskError
from recipekit.pipeline.parse import parse
from recipekit.pipeline.stagekit import atomic_dir, atomic_path, read_manifest


def _corpus(root, titles=("Tomato Soup",)):
    root.mkdir(parents=True, exist_ok=True)
    layer1 = [
        {"id": f"r{i}", "title": t, "ingredients": [{"text": "salt"}], "instructions": [{"text": "Cook."}],
         "partition": "train", "url": None}
        for i, t in enumerate(titles)
    ]
    (root / "layer1.json").write_text(json.dumps(layer1))
    (root / "layer2.json").write_text("[]")
    return root


def test_manifest_records_params_inputs_outputs_counts(tmp_path):
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    report = parse(src, out)
    m = read_manifest(out, "parse")
    assert report.status == "ran" and m == report.manifest
    assert m["counts"]["recipes"] == 1
    assert m["inputs"]["SRC/layer1.json"]["bytes"] == (src / "layer1.json").stat().st_size
    assert m["inputs"]["SRC/det_ingrs.json"] == {"missing": True}
    assert set(m["outputs"]) == {"recipes.parquet", "images.parquet", "det_ingrs.parquet"}
    assert m["timings"]["wall_s"] >= 0 and m["versions"]["pyarrow"]


def test_skip_when_unchanged_rerun_when_input_or_output_changes(tmp_path):
    src, out = _corpus(tmp_path / "src"), tmp_path / "out"
    assert parse(src, out).status == "ran"
    assert parse(src, out).status == "skipped"
    assert parse(src, out, force=True).status == "ran"
    os.utime(src / "layer1.json")  # touching alone changes nothing: inputs are content-addressed
    assert parse(src, out).status == "skipped"
    _corpus(src, titles=("Tomato Soup", "Pea Soup"))
    report = parse(src, out)
    assert report.status == "ran" and report.counts["recipes"] == 2
    (out / "recipes.parquet").write_bytes(b"damaged")
    assert parse(src, out).status == "ran"  # a tampered output is rebuilt
    (src / "images" / "train").mkdir(parents=True)
    (src / "images" / "train" / "x.jpg").write_bytes(b"")
    assert parse(src, out).status == "ran"  # the image tree is an input too


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead child nobody has reaped yet still answers kill(pid, 0))."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_pool_workers_exit_when_the_main_process_is_killed(tmp_path):
    """kill -9 of the process running a pool (as of `prepare --workers 2`): its workers and the
    resource tracker notice and exit instead of living on as orphans."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from backend_tasks import report_and_wait\n"
        "from recipekit.pipeline.backends import PoolExecutor\n"
        "list(PoolExecutor(2).imap(report_and_wait, [sys.argv[1]] * 4))\n"
    )
    tests_dir = str(Path(__file__).parent)
    main = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tests_dir])
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert time.monotonic() < deadline and main.poll() is None, "the pool workers did not start"
            time.sleep(0.1)
        workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main.pid)], capture_output=True, text=True)
        family = {int(x) for x in children.stdout.split()} | set(workers)  # workers + resource tracker
        assert set(workers) <= family and len(family) >= 2
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in family if _running(pid)], "orphaned pool processes outlived their parent"
    finally:
        if main.poll() is None:
            main.kill()
        for p in tmp_path.glob("*.pid"):  # never leave a sleeper behind, whatever happened
            try:
                os.kill(int(p.stem), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_pool_is_kept_between_calls_and_shut_down_on_close():
    sys.path.insert(0, str(Path(__file__).parent))
    from backend_tasks import pid, root

    ex = PoolExecutor(2)
    ran = set(ex.imap(pid, range(8)))
    pool, first = ex._pool, set(ex._pool._processes)  # the worker processes' pids
    assert ran <= first and os.getpid() not in first
    assert set(ex.imap(pid, range(8))) <= first and ex._pool is pool  # the next call runs in the same workers
    with pytest.raises(TaskError):
        list(ex.imap(root, [4.0, -1.0]))  # a failed call shuts the pool down ...
    assert ex._pool is None
    fresh = set(ex.imap(pid, range(8)))
    assert not fresh & first  # ... and the next call starts new workers
    processes = list(ex._pool._processes.values())
    ex.close()
    assert ex._pool is None and all(not p.is_alive() for p in processes)
    with PoolExecutor(2) as ex:  # dropping it (or leaving the block) shuts the pool down too
        list(ex.imap(pid, range(4)))
        processes = list(ex._pool._processes.values())
    assert all(not p.is_alive() for p in processes)


def test_a_stage_lets_the_idle_workers_of_a_shared_pool_go(tmp_path, monkeypatch):
    from recipekit.pipeline import jsonfast
    from recipekit.pipeline.parse import STAGE, ParseParams
    from recipekit.pipeline.stagekit import run_stage

    monkeypatch.setattr(jsonfast, "BATCH_BYTES", 200)  # several runs: the workers are used
    src = _corpus(tmp_path / "src", titles=[f"Soup {i}" for i in range(12)])
    with PoolExecutor(2) as ex:
        started = []
        real = ex._pool_for
        monkeypatch.setattr(ex, "_pool_for", lambda *a: started.append(real(*a)) or started[-1])
        report = run_stage(STAGE, src=src, out=tmp_path / "out", params=ParseParams().manifest(), executor=ex)
        assert report.status == "ran" and started  # the stage ran in the pool ...
        assert ex._pool is None  # ... and its idle workers went with the stage
        for pool in started:
            with pytest.raises(RuntimeError, match="shutdown"):
                pool.submit(os.getpid)
