"""recipekit.evaluation: the cross-modal retrieval protocol (medR, R@K over bags, both directions).

:func:`retrieval_metrics` scores one bag whose rows ``i`` match; :func:`evaluate_bags` runs the
standard protocol (10 bags of 1k, 5 of 10k) over a whole split. Works on numpy arrays or torch
tensors (on any device); torch is imported only when a tensor is given.
"""

from .metrics import DIRECTIONS, evaluate_bags, retrieval_metrics

__all__ = ["DIRECTIONS", "evaluate_bags", "retrieval_metrics"]
