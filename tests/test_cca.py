"""The CCA baseline finds a shared linear signal and ranks true pairs first."""

from __future__ import annotations

import numpy as np
import pytest
from recipekit.evaluation import retrieval_metrics
from recipekit.training.cca import CCA


MIX = np.random.default_rng(0)
AX, AY = MIX.normal(size=(8, 40)), MIX.normal(size=(8, 30))  # one pair of views for train and test


def _paired(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))  # the shared latent
    return z @ AX + 0.3 * rng.normal(size=(n, 40)), np.tanh(z @ AY) + 0.3 * rng.normal(size=(n, 30))


def test_cca_recovers_the_shared_space():
    rng_train, rng_test = _paired(600, 1), _paired(300, 2)
    model = CCA(dim=8, reg=0.05).fit(*rng_train)
    assert model.correlations_[0] > 0.9 and model.correlations_[-1] < model.correlations_[0]
    x, y = rng_test
    m = retrieval_metrics(model.transform_x(x), model.transform_y(y))
    assert m["image_to_recipe"]["medR"] <= 3 and m["recipe_to_image"]["R@10"] > 80
    # unrelated pairs stay at chance
    shuffled = model.transform_y(y[np.random.default_rng(1).permutation(len(y))])
    assert retrieval_metrics(model.transform_x(x), shuffled)["image_to_recipe"]["medR"] > 50


def test_cca_rejects_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        CCA().fit(np.zeros((5, 3)), np.zeros((4, 3)))
