import numpy as np
import pytest

from recipekit.evaluation import evaluate_bags, retrieval_metrics
from recipekit.evaluation.metrics import ranks


def _brute_force(img, rec):
    """Per query, sort every candidate by cosine similarity: rank = 1 + strictly better ones."""
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    rec = rec / np.linalg.norm(rec, axis=1, keepdims=True)
    out = {}
    for name, q, c in (("image_to_recipe", img, rec), ("recipe_to_image", rec, img)):
        r = []
        for i in range(len(q)):
            sims = [float(q[i] @ c[j]) for j in range(len(c))]
            r.append(1 + sum(s > sims[i] for s in sims))
        r = np.array(r)
        out[name] = {"medR": float(np.median(r)), **{f"R@{k}": 100.0 * float(np.mean(r <= k)) for k in (1, 5, 10)}}
    return out


@pytest.mark.parametrize("n, d, noise, chunk", [(50, 8, 1.0, 7), (200, 16, 0.5, 2048), (101, 4, 3.0, 1)])
def test_matches_brute_force_on_random_embeddings(n, d, noise, chunk):
    rng = np.random.default_rng(n)
    img = rng.normal(size=(n, d))
    rec = img + noise * rng.normal(size=(n, d))
    got = retrieval_metrics(img, rec, chunk=chunk)
    want = _brute_force(img, rec)
    for direction in want:
        for metric in want[direction]:
            assert got[direction][metric] == pytest.approx(want[direction][metric], abs=1e-9), (direction, metric)


def test_perfect_and_reversed_cases():
    eye = np.eye(20)
    perfect = retrieval_metrics(eye, eye)
    for direction in perfect.values():
        assert direction == {"medR": 1.0, "R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
    # Each recipe is the exact opposite of its image and close to every other one: rank N.
    n = 10
    img = np.eye(n)
    rec = np.ones((n, n)) - 2 * np.eye(n)
    worst = retrieval_metrics(img, rec)
    assert worst["image_to_recipe"] == {"medR": float(n), "R@1": 0.0, "R@5": 0.0, "R@10": 100.0}


def test_directions_are_not_swapped():
    # Image 0 is closer to recipe 1 than to recipe 0, but recipe 0 still finds image 0 first.
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    rec = np.array([[0.8, -0.6], [0.9, 0.44]])
    r = retrieval_metrics(img, rec)
    assert r["image_to_recipe"]["R@1"] == 50.0
    assert ranks(rec, img).tolist() == [1, 2]


def test_torch_tensors_give_the_same_result():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    img, rec = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    assert retrieval_metrics(torch.tensor(img), torch.tensor(rec), chunk=64) == retrieval_metrics(img, rec)


def test_bags_protocol_and_small_split_note():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(2500, 16))
    rec = img + rng.normal(size=img.shape)
    a = evaluate_bags(img, rec, bag_size=1000, n_bags=4, seed=3)
    assert a == evaluate_bags(img, rec, bag_size=1000, n_bags=4, seed=3)
    assert a["n_bags"] == 4 and a["bag_size"] == 1000 and "note" not in a
    assert a["image_to_recipe"]["medR"]["std"] >= 0
    chunks = evaluate_bags(img, rec, bag_size=1000, n_bags=5, sampling="chunks", seed=3)
    assert chunks["n_bags"] == 2 and "only 2 disjoint chunks" in chunks["note"]
    small = evaluate_bags(img[:300], rec[:300], bag_size=1000)
    assert small["n_bags"] == 1 and small["bag_size"] == 300 and "one bag of all 300" in small["note"]
    one = retrieval_metrics(img[:300], rec[:300])
    assert small["recipe_to_image"]["R@5"]["mean"] == one["recipe_to_image"]["R@5"]
    # Chance level: a 1k bag of unrelated embeddings has medR near 500.
    noise = evaluate_bags(rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16)), bag_size=1000, n_bags=1)
    assert 400 < noise["image_to_recipe"]["medR"]["mean"] < 600


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        retrieval_metrics(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="bag sampling"):
        evaluate_bags(np.ones((5, 2)), np.ones((5, 2)), bag_size=2, sampling="bogus")
