"""Small stand-ins shared by tests (imported by test modules and tests/conftest.py, not collected)."""

import copy

import torch

# The smallest run that trains end to end on CPU: ResNet-18 on 64 px photos, a one-layer H-T tower.
_TINY_RUN = {
    "data": {"batch_size": 16, "num_workers": 0},
    "model": {"embedder": "ht_resnet18",
              "overrides": {"embed_dim": 16, "image": {"image_size": 64, "weights": None},
                            "recipe": {"hidden": 16, "heads": 2, "layers": 1, "ff_dim": 32}}},
    "loss": {"name": "triplet"},
    "optim": {"lr": 1e-3},
    "train": {"epochs": 2, "seed": 0},
    "log": {"progress": False, "tensorboard": False, "curves": False},
}


def state_differences(a, b, where=""):
    """Every tensor of two nested checkpoints is torch.equal; returns the paths that differ."""
    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [where]
    if isinstance(a, dict):
        assert set(a) == set(b), where
        return [p for k in a for p in state_differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in state_differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def local_init_method() -> str:
    """``tcp://127.0.0.1:PORT`` on a free port, for process groups of spawned test processes.
    Not ``file://``: with torch 2.14.1 a gloo process that used a FileStore aborted at exit
    ("terminate called without an active exception", SIGABRT) in about 1 run of 15 here,
    after its work was done; 60 runs over TCP did not."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def tiny_run_config(**sections) -> dict:
    """A fresh copy of the tiny run config; ``sections`` update its sections key by key
    (``data={"prepared": ...}``)."""
    cfg = copy.deepcopy(_TINY_RUN)
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


class LinearEmbedder(torch.nn.Module):
    """A stand-in embedder: two linear towers (4-d "images", 5-d "recipes" -> 3-d unit vectors),
    enough to carry gradients through any loss."""

    def __init__(self):
        super().__init__()
        self.img, self.rec = torch.nn.Linear(4, 3), torch.nn.Linear(5, 3)

    def forward(self, images=None, recipes=None):
        from recipekit.embedders.model import EmbedderOutput

        nf = torch.nn.functional.normalize
        return EmbedderOutput(image=nf(self.img(images), dim=-1), recipe=nf(self.rec(recipes["x"]), dim=-1))
