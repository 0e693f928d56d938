"""Helpers shared by the evaluation tests (imported as a module; not a pytest conftest):
one small prepared folder per test session, tiny saved embedders and fake run folders."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

_PREPARED: dict[str, Path] = {}


def prepared_folder(tmp_path_factory, recipes: int = 300) -> Path:
    """A `recipekit prepare` output of a demo corpus, every recipe with photos, several
    shards per split (``max_count=16``); built once per session (~3 s)."""
    key = f"demo-{recipes}"
    if key not in _PREPARED:
        from recipekit.pipeline.demo import write_demo_corpus
        from recipekit.pipeline.prepare import PrepareConfig, prepare
        from recipekit.pipeline.shard import ShardParams
        from recipekit.pipeline.word2vec import Word2VecParams

        root = tmp_path_factory.mktemp("eval-prepared")
        write_demo_corpus(root / "src", recipes=recipes, seed=11, image_fraction=1.0, image_size=64, workers=1)
        config = PrepareConfig(
            word2vec=Word2VecParams(vector_size=16, epochs=1, min_count=2),
            shard=ShardParams(image_size=64, max_count=16),
        )
        prepare(root / "src", root / "out", config=config, workers=1, quiet=True)
        _PREPARED[key] = root / "out"
    return _PREPARED[key]


def shard_samples(folder: Path) -> dict[str, dict]:
    """{recipe id: {"json": dict, "images": [member names]}} of every shard in ``folder``, in order."""
    out: dict[str, dict] = {}
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, _, ext = m.name.partition(".")
                entry = out.setdefault(key, {"json": None, "images": []})
                if ext == "json":
                    entry["json"] = json.loads(t.extractfile(m).read())
                elif ext.endswith("jpg"):
                    entry["images"].append(ext)
    return out


def tiny_model(prepared: Path, name: str = "ht_resnet18", **extra):
    """A tiny, download-free embedder with the prepared folder's vocabulary."""
    try:
        from conftest_torch import small_overrides
    except ImportError:  # pragma: no cover - run from the repo root
        from tests.conftest_torch import small_overrides
    import torch
    from recipekit.embedders import create_embedder
    from recipekit.pipeline.vocab import Vocabulary

    torch.manual_seed(0)
    vocab = Vocabulary.from_file(prepared / "word2vec" / "vocab.txt")
    return create_embedder(name, **small_overrides(name, vocab, **extra))


def fake_run(root: Path, prepared: Path, model, *, name: str = "ht_resnet18") -> Path:
    """A run folder as the trainer writes it: config.resolved.json + best.pt (+ best.json)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {"data": {"prepared": str(Path(prepared).resolve())}, "model": {"embedder": name}}
    (root / "config.resolved.json").write_text(json.dumps(config), encoding="utf-8")
    model.save(root / "best.pt")
    (root / "best.json").write_text(json.dumps({"epoch": 0, "metric": "val/medR", "value": 1.0}), encoding="utf-8")
    return root


def jpeg_bytes(colour=(200, 40, 40), size=(64, 64)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()
