"""Where every artefact lives: a prepared folder (:class:`Prepared`) and a run folder (:class:`Run`).

Each file name of docs/artefacts.md and docs/training.md is spelt here once; code elsewhere asks
``Prepared(out).store`` or ``Run(path).best`` instead of joining names itself.
:meth:`Run.resolve` is the one place that turns "a run folder or a checkpoint file" (what
``recipekit eval``, ``index``, ``search``, ``serve``, ``plot`` and ``generate`` accept) into
the embedder file, the run it belongs to and the prepared folder it was trained on. Torch-free;
the only file read here is a run's ``config.resolved.json`` (JSON).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Prepared", "Run", "RunTarget"]


class _Folder:
    """A folder named by its artefacts: a path that compares, hashes and ``os.fspath``-s as one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))


class Prepared(_Folder):
    """The folder ``recipekit prepare SRC OUT`` writes (docs/artefacts.md), by artefact."""

    STORE = "recipes.lmdb"
    SHARDS = "shards"
    MANIFESTS = "manifests"
    WORD2VEC = "word2vec"

    # -- stage outputs ----------------------------------------------------------------------
    @property
    def recipes(self) -> Path:
        return self.path / "recipes.parquet"

    @property
    def images(self) -> Path:
        return self.path / "images.parquet"

    @property
    def det_ingrs(self) -> Path:
        return self.path / "det_ingrs.parquet"

    @property
    def quarantine(self) -> Path:
        return self.path / "quarantine.parquet"

    @property
    def ingredients(self) -> Path:
        return self.path / "ingredients.parquet"

    @property
    def ingredient_vocab(self) -> Path:
        return self.path / "ingredient_vocab.parquet"

    @property
    def word2vec(self) -> Path:
        return self.path / self.WORD2VEC

    @property
    def vectors(self) -> Path:
        return self.word2vec / "vectors.npy"

    @property
    def vocab(self) -> Path:
        return self.word2vec / "vocab.txt"

    @property
    def legacy_vectors(self) -> Path:
        """``word2vec/word2vec.kv``, the gensim pickle of older versions (read only on request)."""
        return self.word2vec / "word2vec.kv"

    @property
    def classes(self) -> Path:
        return self.path / "classes.json"

    @property
    def recipe_classes(self) -> Path:
        return self.path / "recipe_classes.parquet"

    @property
    def store(self) -> Path:
        """The LMDB store of tokenised recipes (a folder holding ``data.mdb``)."""
        return self.path / self.STORE

    @property
    def has_store(self) -> bool:
        return (self.store / "data.mdb").is_file()

    @property
    def shards_root(self) -> Path:
        return self.path / self.SHARDS

    @property
    def shard_index(self) -> Path:
        return self.shards_root / "index.json"

    def shard_dir(self, split: str) -> Path:
        """``shards/{split}``, whether or not it exists."""
        return self.shards_root / split

    def shards(self, split: str) -> Path:
        """``shards/{split}``, checked to hold shards: a ``FileNotFoundError`` naming the folder
        (and the splits there) otherwise."""
        folder = self.shard_dir(split)
        if not folder.is_dir() or not any(folder.glob("*.tar")):
            have = sorted(p.name for p in self.shards_root.glob("*") if p.is_dir())
            hint = f" (splits there: {', '.join(have)})" if have else " (run `recipekit prepare` first)"
            raise FileNotFoundError(f"{folder}: no shards of split {split!r}{hint}")
        return folder

    def sizes(self, split: str) -> Path:
        """``shards/{split}/sizes.json``: samples per shard."""
        return self.shard_dir(split) / "sizes.json"

    @property
    def manifests(self) -> Path:
        return self.path / self.MANIFESTS

    def manifest(self, stage: str) -> Path:
        return self.manifests / f"{stage}.json"

    @classmethod
    def of_shards(cls, urls: Iterable[str | os.PathLike]) -> "Prepared | None":
        """The prepared folder whose ``shards/{split}`` holds every one of ``urls`` (local paths
        of one split folder), else None: shards copied elsewhere or read remotely carry no store."""
        folders = {Path(u).parent for u in urls}
        if len(folders) != 1:
            return None
        (folder,) = folders
        if folder.parent.name != cls.SHARDS:
            return None
        return cls(folder.parent.parent)


MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"


def is_model_folder(path: str | os.PathLike) -> bool:
    """A model folder: ``model.safetensors`` + ``config.json`` (``RUN/model``, an export, a hub snapshot)."""
    path = Path(path)
    return path.is_dir() and (path / MODEL_WEIGHTS).is_file() and (path / MODEL_CONFIG).is_file()


@dataclass(frozen=True)
class RunTarget:
    """What :meth:`Run.resolve` found: the embedder file, the run it belongs to (None for a lone
    file), and the folder its outputs go beside (the run folder, or the file's folder)."""

    checkpoint: Path
    run: "Run | None"
    home: Path
    is_run_folder: bool

    def eval_dir(self, split: str) -> Path:
        """Default output folder of an evaluation: ``RUN/eval/{split}``, or
        ``FOLDER/eval/{file stem}/{split}`` for a checkpoint file."""
        if self.is_run_folder:
            return Run(self.home).eval_dir(split)
        return self.home / "eval" / self.checkpoint.stem / split

    @property
    def index_dir(self) -> Path:
        """Default index folder: ``RUN/index``, or ``index`` beside a checkpoint file."""
        return self.home / Run.INDEX

    def run_config(self) -> dict[str, Any] | None:
        """The run's ``config.resolved.json`` (None when there is no run or no such file); a
        ``ValueError`` naming the file when it is not a JSON object."""
        if self.run is None or not self.run.resolved_config.is_file():
            return None
        path = self.run.resolved_config
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the run's resolved config ({exc})") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return config

    def prepared(self, data: str | os.PathLike | None = None,
                 config: dict[str, Any] | None = None) -> Path:
        """The prepared folder to read: ``data`` when given, else ``data.prepared`` of the run's
        config (``config``, or read with :meth:`run_config`); checked to exist. Errors name the
        missing file or folder and say to give ``--data``."""
        if data is None:
            config = config if config is not None else self.run_config()
            if config is None:
                if self.is_run_folder:
                    raise FileNotFoundError(f"{self.run.resolved_config}: missing; give the prepared folder with --data")
                what = "a model folder" if self.checkpoint.is_dir() else "a checkpoint file"
                raise ValueError(f"{self.checkpoint}: {what} needs --data PREPARED "
                                 f"(no {Run.RESOLVED_CONFIG} in it, beside it or one folder up)")
            section = config.get("data")
            prepared = section.get("prepared") if isinstance(section, dict) else None
            if not prepared:
                raise ValueError(f"{self.run.resolved_config}: no data.prepared (give the prepared folder with --data)")
            data = prepared
        folder = Path(data)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the prepared folder does not exist")
        return folder


class Run(_Folder):
    """The folder ``recipekit train`` writes (docs/training.md), by artefact."""

    BEST = "best.pt"
    CHECKPOINTS = "checkpoints"
    LAST = "last.pt"
    CONFIG = "config.toml"
    RESOLVED_CONFIG = "config.resolved.json"
    INDEX = "index"
    EVAL = "eval"
    MODEL = "model"

    @property
    def best(self) -> Path:
        """The best model on validation (an embedder file)."""
        return self.path / self.BEST

    @property
    def model(self) -> Path:
        """The best model as a model folder (``model.safetensors`` + ``config.json``)."""
        return self.path / self.MODEL

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last(self) -> Path:
        """The resumable state written every epoch."""
        return self.checkpoints / self.LAST

    @property
    def config(self) -> Path:
        """The training config as given (a copy of the TOML file)."""
        return self.path / self.CONFIG

    @property
    def resolved_config(self) -> Path:
        """Every setting of the run after defaults and overrides (JSON)."""
        return self.path / self.RESOLVED_CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def best_json(self) -> Path:
        return self.path / "best.json"

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def features(self) -> Path:
        """The cached backbone features (``train.cache_features``)."""
        return self.path / "features"

    @property
    def index(self) -> Path:
        return self.path / self.INDEX

    def eval_dir(self, split: str) -> Path:
        return self.path / self.EVAL / split

    @classmethod
    def resolve(cls, target: str | os.PathLike) -> RunTarget:
        """A run folder (its ``best.pt``), a model folder (``model.safetensors`` + ``config.json``)
        or an embedder file; the run of a file or model folder is the folder beside it or one up
        that holds ``config.resolved.json``. ``FileNotFoundError`` naming the path when there is
        no such folder or file, or the folder has no ``best.pt``."""
        target = Path(target)
        if is_model_folder(target):  # outputs go beside it, as for a file: FOLDER/eval/model/SPLIT
            owner = next((cls(folder) for folder in (target, target.parent)
                          if cls(folder).resolved_config.is_file()), None)
            return RunTarget(target, owner, target.parent, False)
        if target.is_dir():
            run = cls(target)
            if not run.best.is_file():
                raise FileNotFoundError(f"{run.best}: missing (is {target} a run folder of `recipekit train`?)")
            return RunTarget(run.best, run, target, True)
        if target.is_file():
            owner = next((cls(folder) for folder in (target.parent, target.parent.parent)
                          if cls(folder).resolved_config.is_file()), None)
            return RunTarget(target, owner, target.parent, False)
        raise FileNotFoundError(f"{target}: no such run folder, model folder or checkpoint file")
