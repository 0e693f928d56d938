"""recipekit.evaluation: the cross-modal retrieval protocol (medR, R@K over bags, both directions).

:func:`retrieval_metrics` scores one bag whose rows ``i`` match; :func:`evaluate_bags` runs the
standard protocol (10 bags of 1k, 5 of 10k) over a whole split. Works on numpy arrays or torch
tensors (on any device); torch is imported only when a tensor is given. What a bag's ranks
give is a list of metric functions: :func:`register_metric` adds one, a protocol's ``metrics`` names them.

:func:`embed_split` embeds one split of a prepared folder with a JointEmbedder (needs torch);
:func:`evaluate` is ``recipekit eval``: embed a split once, score the protocol, write
eval.json / eval.md (docs/evaluation.md); :func:`render_table` renders an eval.json's table.
"""

from .embed import SplitEmbeddings, embed_split
from .metrics import (DEFAULT_METRICS, DIRECTIONS, evaluate_bags, list_metrics, paired_ranks, register_metric,
                      retrieval_metrics)
from .protocol import EvalProtocol, EvalResult, evaluate, resolve_target, score_protocol
from .report import render_markdown, render_table

__all__ = [
    "DEFAULT_METRICS",
    "DIRECTIONS",
    "EvalProtocol",
    "EvalResult",
    "SplitEmbeddings",
    "embed_split",
    "evaluate",
    "evaluate_bags",
    "list_metrics",
    "paired_ranks",
    "register_metric",
    "render_markdown",
    "render_table",
    "resolve_target",
    "retrieval_metrics",
    "score_protocol",
]
