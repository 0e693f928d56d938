"""Multi-node launch as docs/training.md gives it: two ``torchrun`` launchers, one per "node"
(both on 127.0.0.1, c10d rendezvous, gloo on CPU), running ``recipekit train`` for one epoch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("webdataset")

CONFIG = """
[data]
prepared = "{prepared}"
batch_size = 8
num_workers = 0
epoch_length = 64          # 4 micro-batches of 8 per rank: the launch is the point

[model]
embedder = "ht_resnet18"
[model.overrides]
embed_dim = 16
image = {{ image_size = 64, weights = "" }}
recipe = {{ hidden = 16, heads = 2, layers = 1, ff_dim = 32 }}

[loss]
name = "triplet"

[train]
epochs = 1
accumulate = 2

[ddp]
backend = "gloo"

[log]
progress = false
tensorboard = false
curves = false
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_nodes_with_torchrun_train_one_run(prepared_demo, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG.format(prepared=prepared_demo), encoding="utf-8")
    run = tmp_path / "run"
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "--rdzv_id", "recipekit-test", "--rdzv_conf", f"is_host={int(node == 0)}", "--max_restarts", "0",
               "-m", "recipekit.cli.main", "train", "--config", str(config), "--out", str(run), "--device", "cpu"]
        procs.append(subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for node, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {node}:\n{out[-4000:]}"
    summary = json.loads(outputs[0][outputs[0].index("{"):outputs[0].rindex("}") + 1])  # rank 0 prints it
    assert summary["epochs"] == 1 and Path(summary["best"]) == run / "best.pt" and (run / "best.pt").is_file()
    assert '"run_dir"' not in outputs[1]  # rank 1 trains, writes nothing, prints no summary
    env_json = json.loads((run / "environment.json").read_text())
    assert env_json["world_size"] == 2 and env_json["backend"] == "gloo"
    assert env_json["batch"] == {"batch_size_per_rank": 8, "world_size": 2, "accumulate": 2, "effective_batch": 32,
                                 "loss_batch": 16, "recipe_only_ratio": 0.0, "paired_per_step": 32.0}
    assert env_json["steps_per_epoch"] == 2  # 64 samples / (2 ranks x 8) = 4 micro-batches = 2 steps
    blob = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert blob["epoch"] == 1 and blob["world_size"] == 2 and len(blob["rng"]) == 2  # both ranks' states
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["step"] == 2 and lines[0]["val"]["pairs"] > 0
