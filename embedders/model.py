"""The joint embedder: an image tower and a recipe tower into one L2-normalised space."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from recipekit.core.limits import TextLimits

from .generator import RecipeImageGenerator, to_tower_input
from .image import ImageTower, preprocess
from .matching import MatchingHead
from .registry import recipe_tower_spec
from .text import Vocabulary, collate_recipes, tokenise_recipe

__all__ = ["JointEmbedder", "EmbedderOutput", "load_embedder"]


@dataclass
class EmbedderOutput:
    """What :meth:`JointEmbedder.forward` returns; unset parts are None.

    ``image`` / ``recipe``: L2-normalised embeddings [B, D]; ``image_tokens`` [B, N, C]
    (backbone patches / grid cells); ``recipe_tokens`` [B, L, H] and ``recipe_mask`` [B, L]
    (True = real token; None for the ``je`` tower); ``components``: per-component recipe
    vectors before the joint projection ({"title", "ingredients", "instructions"} -> [B, H]).
    """

    image: torch.Tensor | None = None
    recipe: torch.Tensor | None = None
    image_tokens: torch.Tensor | None = None
    recipe_tokens: torch.Tensor | None = None
    recipe_mask: torch.Tensor | None = None
    components: dict[str, torch.Tensor] = field(default_factory=dict)


def _build_recipe_tower(cfg: dict, embed_dim: int, vocab, matrix):
    """The registered recipe tower ``cfg["tower"]``, given what its builder declares."""
    kw = {k: v for k, v in cfg.items() if k not in ("tower", "max_ingredients", "max_instructions", "max_tokens")}
    spec = recipe_tower_spec(cfg["tower"])
    return spec.build(kw, {"embed_dim": embed_dim, "vocab": vocab, "embedding_matrix": matrix})


class JointEmbedder(nn.Module):
    """Image tower + recipe tower (+ optional cross-modal matching head), built from a config
    (see :func:`recipekit.embedders.create_embedder`).

    ``vocab`` is a :class:`~recipekit.embedders.text.Vocabulary` (``je``/``ht`` towers; the
    ``minilm`` tower brings its own WordPiece one); ``embedding_matrix`` ([len(vocab), dim],
    e.g. from :func:`~recipekit.embedders.text.load_word2vec_matrix`) initialises the words.
    """

    def __init__(self, config: Mapping[str, Any], vocab: Vocabulary | None = None, embedding_matrix=None):
        super().__init__()
        self.config = copy.deepcopy(dict(config))
        dim = int(self.config["embed_dim"])
        rcfg = self.config["recipe"]
        own_vocabulary = recipe_tower_spec(rcfg["tower"]).vocabulary
        if own_vocabulary is not None:  # a tower with its own tokenizer (minilm: WordPiece)
            vocab = own_vocabulary()
        self.vocab = vocab
        self.image_tower = ImageTower(embed_dim=dim, **self.config["image"])
        self.recipe_tower = _build_recipe_tower(rcfg, dim, vocab, embedding_matrix)
        self.matching = None
        if self.config.get("matching"):
            if self.recipe_tower.token_dim is None:
                raise ValueError(f"the {rcfg['tower']!r} recipe tower has no tokens for a matching head")
            self.matching = MatchingHead(self.recipe_tower.token_dim, self.image_tower.feature_dim, **self.config["matching"])
        self.generator = None
        if self.config.get("generator") is not None:  # ACME / R2GAN / TNLBT: recipe embedding -> photo
            self.generator = RecipeImageGenerator(dim, **self.config["generator"])

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def image_preprocessing(self):
        """The image tower's :class:`~recipekit.embedders.image.ImagePreprocessing` (crop size,
        mean, std): what loaders, evaluation and search feed this model."""
        return self.image_tower.preprocessing

    @property
    def text_limits(self) -> TextLimits:
        """The :class:`~recipekit.core.TextLimits` this model tokenises recipes with (its recipe
        config's, else the defaults); iterates as (max_ingredients, max_instructions, max_tokens)."""
        return TextLimits.of(self.config["recipe"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- training-time API -------------------------------------------------------------
    def forward(self, images: torch.Tensor | None = None, recipes: Mapping[str, torch.Tensor] | None = None) -> EmbedderOutput:
        """Embed a batch of preprocessed images [B, 3, S, S] and/or a recipe batch
        (:func:`~recipekit.embedders.text.collate_recipes`)."""
        out = EmbedderOutput()
        if images is not None:
            out.image, out.image_tokens = self.image_tower(images)
        if recipes is not None:
            dev = self.device
            r = self.recipe_tower({k: v.to(dev) for k, v in recipes.items()})
            out.recipe, out.recipe_tokens, out.recipe_mask, out.components = r["emb"], r["tokens"], r["mask"], r["components"]
        return out

    def matching_loss(self, out: EmbedderOutput, negatives: str = "sample", generator=None) -> torch.Tensor:
        """T-Food's image-text matching loss on a forward output (needs a matching head)."""
        if self.matching is None:
            raise ValueError("this embedder has no matching head (config 'matching')")
        return self.matching.loss(out.image, out.recipe, out.image_tokens, out.recipe_tokens, out.recipe_mask, negatives, generator)

    def embed_generated(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image-tower embeddings of generated images (in [-1, 1], any size), with
        gradients reaching the images even when the backbone is frozen (translation consistency:
        the generator learns through the image tower)."""
        tower = self.image_tower
        x = to_tower_input(images, tower.image_size, tower.mean, tower.std)
        if tower.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        pooled, _ = tower.backbone(x)  # a frozen backbone has requires_grad off: only the input gets gradients
        return tower.head(pooled)

    @torch.no_grad()
    def generate_images(self, recipes: Sequence[Mapping[str, Any]], n: int = 1, seed: int = 0, device=None) -> torch.Tensor:
        """``n`` generated photos per layer1-style recipe dict: ``[len(recipes), n, 3, S, S]`` in
        [0, 1] (eval mode: the conditioning code is its mean, the noise is drawn from ``seed``)."""
        if self.generator is None:
            raise ValueError("this embedder has no generator (config 'generator')")
        if device is not None:
            self.to(device)
        was_training = self.training
        self.eval()
        try:
            emb = self.forward(recipes=self.collate(list(recipes))).recipe
            return self.generate_from_embeddings(emb, n=n, seed=seed)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate_from_embeddings(self, recipe_emb: torch.Tensor, n: int = 1, seed: int = 0) -> torch.Tensor:
        """``n`` photos per recipe embedding ``[B, D]`` (on the model's device): ``[B, n, 3, S, S]``
        in [0, 1], the noise drawn from ``seed``; the generator as it is (eval mode: the
        conditioning code is its mean)."""
        if self.generator is None:
            raise ValueError("this embedder has no generator (config 'generator')")
        emb = recipe_emb.float()
        g = torch.Generator(device=emb.device).manual_seed(int(seed))
        noise = torch.randn(n, emb.shape[0], self.generator.noise_dim, generator=g, device=emb.device)
        images = torch.stack([self.generator(emb, noise[k])[0] for k in range(n)], dim=1)
        return ((images.float() + 1) / 2).clamp(0, 1).cpu()

    def tokenise(self, recipe: Mapping[str, Any]) -> dict[str, Any]:
        """Token ids of one recipe dict with this embedder's vocabulary and limits."""
        return tokenise_recipe(recipe, self.vocab, *self.text_limits)

    def collate(self, recipes: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Recipe dicts -> a padded batch for :meth:`forward`."""
        return collate_recipes([self.tokenise(r) for r in recipes])

    # -- inference API -------------------------------------------------------------------
    def _image_tensor(self, items: Sequence[Any]) -> torch.Tensor:
        if isinstance(items, torch.Tensor):
            return items
        p = self.image_preprocessing
        parts = [it if isinstance(it, torch.Tensor) else preprocess(it, p.size, p.mean, p.std) for it in items]
        return torch.stack(parts)

    @torch.no_grad()
    def embed_images(self, images: Iterable[Any] | torch.Tensor, batch_size: int = 64, device=None) -> np.ndarray:
        """L2-normalised float32 embeddings [N, D] of images: paths, PIL images, or tensors
        already preprocessed (each [3, S, S], or one [N, 3, S, S] tensor)."""
        items = images if isinstance(images, torch.Tensor) else list(images)
        return self._embed(items, batch_size, device, lambda chunk, dev: self.image_tower(self._image_tensor(chunk).to(dev))[0])

    @torch.no_grad()
    def embed_recipes(self, recipes: Iterable[Mapping[str, Any]], batch_size: int = 64, device=None) -> np.ndarray:
        """L2-normalised float32 embeddings [N, D] of layer1.json-style recipe dicts."""
        items = list(recipes)
        return self._embed(items, batch_size, device, lambda chunk, dev: self.forward(recipes=self.collate(chunk)).recipe)

    def _embed(self, items, batch_size, device, fn) -> np.ndarray:
        if device is not None:
            self.to(device)
        dev = self.device
        was_training = self.training
        self.eval()
        try:
            chunks = [fn(items[i : i + batch_size], dev).float().cpu() for i in range(0, len(items), batch_size)]
        finally:
            self.train(was_training)
        if not chunks:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return torch.cat(chunks).numpy().astype(np.float32, copy=False)

    @torch.no_grad()
    def rerank(self, images, recipes: Sequence[Mapping[str, Any]], k: int = 10, image_to_recipe: bool = True):
        """Retrieve with the embeddings, then re-order each query's top ``k`` with the matching
        head. Returns (indices [Q, k], matching scores [Q, k]) as numpy arrays; queries are the
        images (``image_to_recipe``) or the recipes. Meant for evaluation-sized sets (1k/10k)."""
        if self.matching is None:
            raise ValueError("this embedder has no matching head (config 'matching')")
        self.eval()
        dev = self.device
        img_emb, img_tok = self.image_tower(self._image_tensor(images if isinstance(images, torch.Tensor) else list(images)).to(dev))
        rec = self.forward(recipes=self.collate(list(recipes)))
        if image_to_recipe:
            idx, sc = self.matching.rerank(img_emb @ rec.recipe.t(), img_tok, rec.recipe_tokens, rec.recipe_mask, k, True)
        else:
            idx, sc = self.matching.rerank(rec.recipe @ img_emb.t(), (rec.recipe_tokens, rec.recipe_mask), img_tok, None, k, False)
        return idx.cpu().numpy(), sc.cpu().numpy()

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Config, vocabulary and weights in one file (readable with ``weights_only=True``)."""
        words = self.vocab.words if isinstance(self.vocab, Vocabulary) else None
        torch.save({"format": "recipekit.embedder/1", "config": self.config, "vocab": words, "state_dict": self.state_dict()}, path)

    def save_pretrained(self, folder: str | Path) -> Path:
        """A model folder: ``model.safetensors`` + ``config.json`` (:mod:`recipekit.embedders.modelfile`)."""
        from .modelfile import save_model_folder

        return save_model_folder(self, folder)


def _first_sentence(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")[:200]


def load_weights_file(path: str | Path, map_location: Any = "cpu", *, what: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` whose every failure is one :class:`ValueError`
    line naming the file: missing, truncated (a run killed while copying it), not a torch file,
    or holding Python objects that could run code (refused, never executed)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        raise ValueError(f"{path}: unreadable {what} (not a torch weights file, or corrupt)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        if found:
            raise ValueError(f"{path}: not a plain-weights {what}: it holds Python objects ({found.group(1)}) that "
                             "could run code when loaded (refused)") from None
        raise ValueError(f"{path}: unreadable {what} (not a torch weights file, or corrupt)") from None
    except Exception as exc:  # RuntimeError (zip reader), EOFError, OSError ...
        first = _first_sentence(exc)
        raise ValueError(f"{path}: unreadable {what} (truncated or corrupt: {first})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not a recipekit {what} (a {type(blob).__name__}, not a dict)")
    return blob


def load_embedder(path: str | Path, map_location: Any = "cpu", *, channels_last: bool = True,
                  cache_dir: str | Path | None = None) -> JointEmbedder:
    """Rebuild a trained embedder named by ``path``: a model folder (``model.safetensors`` +
    ``config.json``, :meth:`JointEmbedder.save_pretrained`), a :meth:`JointEmbedder.save` ``.pt``
    file, a run folder of ``recipekit train`` (its ``model/``, else its ``best.pt``) or
    ``hf-hub:ORG/NAME[@REVISION]`` (Hugging Face Hub; ``cache_dir``: its cache, default the
    hub's own). See :mod:`recipekit.embedders.modelfile`. No backbone weights are downloaded:
    the saved state dict replaces whatever the config's ``weights`` named. ``channels_last``: a
    convolutional image backbone is put in the channels-last memory format (faster on CPUs and
    GPUs, same results up to rounding: :meth:`ImageTower.use_channels_last`)."""
    from .modelfile import read_model_folder, resolve_model

    path = resolve_model(path, cache_dir=cache_dir)
    if path.is_dir():
        blob = read_model_folder(path)
    else:
        blob = load_weights_file(path, map_location, what="embedder file")
        if blob.get("format") != "recipekit.embedder/1":
            raise ValueError(f"{path}: not a recipekit embedder file")
    config = copy.deepcopy(blob["config"])
    config["image"] = {**config["image"], "weights": None, "weights_path": None}
    vocab = Vocabulary(blob["vocab"]) if blob["vocab"] is not None else None
    # A tower built from a word2vec matrix has that matrix's width (and, for ``ht``, a projection
    # to ``hidden``), which the config does not record: rebuild with a placeholder of that shape.
    words = blob["state_dict"].get("recipe_tower.embedding.weight")
    matrix = np.zeros(tuple(words.shape), dtype=np.float32) if words is not None else None
    try:
        model = JointEmbedder(config, vocab=vocab, embedding_matrix=matrix)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = _first_sentence(exc)
        raise ValueError(f"{path}: a recipekit embedder file whose model cannot be rebuilt ({first})") from None
    model.config = copy.deepcopy(blob["config"])
    if isinstance(map_location, (str, torch.device)) and path.is_dir():  # safetensors are read on the CPU
        model.to(map_location)
    model.image_tower.use_channels_last(channels_last)
    return model
