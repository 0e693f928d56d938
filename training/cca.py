"""Canonical correlation analysis: the linear baseline of the Recipe1M tables (im2recipe's "CCA").

Fit on paired, frozen features of the train split (image backbone features, averaged word2vec
vectors of the recipe text), then project both modalities of another split into the shared
``dim``-dimensional space, where retrieval uses the cosine as for every other method.

Regularised CCA in closed form: whiten each side with ``(C + reg * mean(diag C) * I)^(-1/2)``, take
the SVD of the whitened cross-covariance, keep the top ``dim`` directions and weight them by their
canonical correlations (the usual choice for retrieval in a CCA space). Written with numpy rather than
taken from scikit-learn: ``sklearn.cross_decomposition.CCA`` fits by NIPALS iterations, one
component at a time, which is slow for 1,000+ dimensional features and offers no ridge term, which a
split of a few hundred pairs needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CCA"]


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    return (vecs / np.sqrt(np.maximum(vals, 1e-12))) @ vecs.T


@dataclass
class CCA:
    """``CCA(dim, reg).fit(x, y)``, then ``transform_x(x)`` / ``transform_y(y)``."""

    dim: int = 256
    reg: float = 0.1

    def fit(self, x: np.ndarray, y: np.ndarray) -> "CCA":
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(f"CCA needs paired [N, Dx] and [N, Dy] arrays, got {x.shape} and {y.shape}")
        if len(x) < 2:
            raise ValueError("CCA needs at least two pairs")
        self.mean_x_, self.mean_y_ = x.mean(0), y.mean(0)
        x, y = x - self.mean_x_, y - self.mean_y_
        n = len(x)
        cxx, cyy, cxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
        cxx += self.reg * max(np.trace(cxx) / len(cxx), 1e-12) * np.eye(len(cxx))
        cyy += self.reg * max(np.trace(cyy) / len(cyy), 1e-12) * np.eye(len(cyy))
        wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
        u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
        k = min(self.dim, len(s))
        self.correlations_ = s[:k]
        self.x_weights_ = wx @ u[:, :k] * s[:k]
        self.y_weights_ = wy @ vt[:k].T * s[:k]
        return self

    def transform_x(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean_x_) @ self.x_weights_).astype(np.float32)

    def transform_y(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float64) - self.mean_y_) @ self.y_weights_).astype(np.float32)
