"""recipekit.losses against plain per-triplet Python loops (float64; values and gradients)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from recipekit.losses import DynamicMargin, create_loss, list_losses  # noqa: E402

TOL = {"rtol": 1e-5, "atol": 1e-8}
# classes: 0 = background; 1, 2, 3 have several members; 4 a single one
LABELS = [0, 1, 1, 2, 2, 2, 0, 3, 3, 4]


def _inputs(seed=0, n=len(LABELS), dim=6):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    return v, r, torch.tensor(LABELS[:n])


def _d(a, b):
    return 1 - torch.dot(a, b) / (a.norm() * b.norm())


def _hinge(x):
    return torch.clamp(x, min=0)


def _agg(costs, how):
    """costs: list (one per anchor) of lists of per-triplet costs."""
    flat = [c for row in costs for c in row]
    if how == "mean":
        return sum(flat) / len(flat) if flat else torch.zeros((), dtype=torch.float64)
    if how == "valid":
        active = [c for c in flat if c.item() > 0]
        return sum(active) / len(active) if active else torch.zeros((), dtype=torch.float64)
    rows = [max(row, key=lambda c: c.item()) for row in costs if row]
    return sum(rows) / len(rows)


def _instance_loop(v, r, m, how):
    n = len(v)
    i2r = [[_hinge(_d(v[i], r[i]) - _d(v[i], r[j]) + m) for j in range(n) if j != i] for i in range(n)]
    r2i = [[_hinge(_d(v[i], r[i]) - _d(v[j], r[i]) + m) for j in range(n) if j != i] for i in range(n)]
    return _agg(i2r, how), _agg(r2i, how)


def _semantic_loop(v, r, labels, m, how, positives="all", image_anchor=True):
    n, lab = len(v), labels.tolist()
    rows = []
    for a in range(n):
        if lab[a] == 0:
            continue
        pos = [p for p in range(n) if p != a and lab[p] == lab[a]]
        neg = [k for k in range(n) if lab[k] not in (0, lab[a])]
        if positives == "first":
            pos = pos[:1]
        if image_anchor:
            row = [_hinge(_d(v[a], r[p]) - _d(v[a], r[k]) + m) for p in pos for k in neg]
        else:
            row = [_hinge(_d(v[p], r[a]) - _d(v[k], r[a]) + m) for p in pos for k in neg]
        rows.append(row)
    return _agg(rows, how)


def _check(loss_value, ref_value, inputs):
    torch.testing.assert_close(loss_value, ref_value, **TOL)
    got = torch.autograd.grad(loss_value, inputs, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(ref_value, inputs, retain_graph=True, allow_unused=True)
    for g, w, x in zip(got, want, inputs):
        g = torch.zeros_like(x) if g is None else g
        w = torch.zeros_like(x) if w is None else w
        torch.testing.assert_close(g, w, **TOL)


def test_registry_lists_every_loss():
    assert list_losses() == sorted(
        ["pairwise", "pairwise++", "triplet", "adamine", "adamine_ins", "adamine_sem", "adamine_avg", "adamine_ins_cls",
         "infonce", "ht_recipe"]
    )
    for name in list_losses():  # adamine_ins_cls needs its class count (the trainer reads classes.json)
        assert create_loss(name, **({"num_classes": 3} if name == "adamine_ins_cls" else {})).__doc__.strip()
    with pytest.raises(ValueError, match="num_classes"):
        create_loss("adamine_ins_cls")
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("nope")


@pytest.mark.parametrize("how", ["mean", "valid", "hardest"])
@pytest.mark.parametrize("combine", ["mean", "sum"])
def test_triplet_matches_loop(how, combine):
    v, r, _ = _inputs(1)
    loss = create_loss("triplet", margin=0.3, aggregation=how, combine=combine)
    a, b = _instance_loop(v, r, 0.3, how)
    _check(loss(v, r), (a + b) / (2 if combine == "mean" else 1), (v, r))


def test_triplet_valid_is_mean_over_active_triplets():
    v, r, _ = _inputs(2)
    n = len(v)
    per_dir = []
    for i2r in (True, False):
        active = []
        for i in range(n):
            for j in range(n):
                if i != j:
                    neg = _d(v[i], r[j]) if i2r else _d(v[j], r[i])
                    c = (_d(v[i], r[i]) - neg + 0.3).item()
                    if c > 0:
                        active.append(c)
        assert 0 < len(active) < n * (n - 1)  # some triplets inactive: the test can tell
        per_dir.append(sum(active) / len(active))
    got = create_loss("triplet", aggregation="valid")(v, r).item()
    assert got == pytest.approx(sum(per_dir) / 2, rel=1e-9)
    assert got != pytest.approx(create_loss("triplet", aggregation="mean")(v, r).item(), rel=1e-3)


@pytest.mark.parametrize("how", ["valid", "mean"])
@pytest.mark.parametrize("lam", [0.1, 0.3])
def test_adamine_matches_loop(how, lam):
    v, r, labels = _inputs(3)
    loss = create_loss("adamine", margin=0.3, semantic_weight=lam, aggregation=how, deterministic=True)
    a, b = _instance_loop(v, r, 0.3, how)
    s1 = _semantic_loop(v, r, labels, 0.3, how, image_anchor=True)
    s2 = _semantic_loop(v, r, labels, 0.3, how, image_anchor=False)
    assert s1.item() > 0 and s2.item() > 0
    _check(loss(v, r, labels), (a + b + lam * (s1 + s2)) / 4, (v, r))


def test_adamine_ablations_match_loop():
    v, r, labels = _inputs(4)
    a, b = _instance_loop(v, r, 0.3, "valid")
    _check(create_loss("adamine_ins")(v, r, labels), (a + b) / 2, (v, r))
    s1 = _semantic_loop(v, r, labels, 0.3, "valid", image_anchor=True)
    s2 = _semantic_loop(v, r, labels, 0.3, "valid", image_anchor=False)
    _check(create_loss("adamine_sem", deterministic=True)(v, r, labels), 0.1 * (s1 + s2) / 2, (v, r))
    a, b = _instance_loop(v, r, 0.3, "mean")
    s1 = _semantic_loop(v, r, labels, 0.3, "mean", image_anchor=True)
    s2 = _semantic_loop(v, r, labels, 0.3, "mean", image_anchor=False)
    _check(create_loss("adamine_avg", deterministic=True)(v, r, labels), (a + b + 0.1 * (s1 + s2)) / 4, (v, r))


def test_adamine_first_positive_matches_loop():
    v, r, labels = _inputs(5)
    s1 = _semantic_loop(v, r, labels, 0.3, "valid", "first", image_anchor=True)
    s2 = _semantic_loop(v, r, labels, 0.3, "valid", "first", image_anchor=False)
    _check(create_loss("adamine_sem", positives="first")(v, r, labels), 0.1 * (s1 + s2) / 2, (v, r))


def test_adamine_random_positive_is_seeded():
    v, r, labels = _inputs(6)
    one = create_loss("adamine", seed=7)(v, r, labels)
    two = create_loss("adamine", seed=7)(v, r, labels)
    assert one.item() == two.item()
    values = {round(create_loss("adamine_sem", seed=s)(v, r, labels).item(), 12) for s in range(12)}
    assert len(values) > 1  # class 2 has three members: the draw matters
    # with exactly one positive per anchor the random draw has no choice: equals "all"
    pairs = torch.tensor([0, 1, 1, 2, 2, 0, 3, 3])
    v8, r8 = v[:8], r[:8]
    _check(create_loss("adamine", seed=1)(v8, r8, pairs), create_loss("adamine", deterministic=True)(v8, r8, pairs), (v, r))


def test_background_is_never_a_semantic_positive_or_negative():
    v, r, labels = _inputs(7)
    loss = create_loss("adamine_sem", deterministic=True)
    base = loss(v, r, labels)
    gv, gr = torch.autograd.grad(base, (v, r))
    bg = labels == 0
    assert gv[bg].abs().max() == 0 and gr[bg].abs().max() == 0
    assert gv[~bg].abs().max() > 0
    # background rows pulled right onto the anchors would be perfect positives: no change
    v2, r2 = v.detach().clone(), r.detach().clone()
    v2[bg], r2[bg] = r2[1], v2[1]
    assert loss(v2, r2, labels).item() == pytest.approx(base.item(), rel=1e-12)
    with pytest.raises(ValueError, match="labels"):
        loss(v, r)


def test_adamine_without_any_semantic_pair_is_instance_only():
    v, r, _ = _inputs(8)
    labels = torch.zeros(len(v), dtype=torch.long)  # all background
    a, b = _instance_loop(v, r, 0.3, "valid")
    _check(create_loss("adamine", deterministic=True)(v, r, labels), (a + b) / 4, (v, r))


def _pairwise_loop(v, r, partner, target, pos_m, neg_m):
    costs = []
    for i in range(len(v)):
        d = _d(v[i], r[partner[i]])
        costs.append(_hinge(d - pos_m) if target[i] > 0 else _hinge(neg_m - d))
    return sum(costs) / len(costs)


@pytest.mark.parametrize("name,pos_m,neg_m", [("pairwise", 0.0, 0.9), ("pairwise++", 0.3, 0.9)])
def test_pairwise_matches_loop(name, pos_m, neg_m):
    v, r, labels = _inputs(9)
    loss = create_loss(name, num_classes=5, embed_dim=v.shape[1], seed=3).double()
    partner, target = create_loss(name, seed=3).sample_pairs(len(v))
    assert (target < 0).any() and (target > 0).any()
    assert all(partner[i] != i for i in range(len(v)) if target[i] < 0)
    pair = _pairwise_loop(v, r, partner, target, pos_m, neg_m)
    w, b = loss.classifier.weight, loss.classifier.bias
    ce = []
    for x in (v, r):
        terms = [-torch.log_softmax(w @ x[i] + b, 0)[labels[i]] for i in range(len(x)) if labels[i] != 0]
        ce.append(sum(terms) / len(terms))
    _check(loss(v, r, labels), 0.98 * pair + 0.01 * (ce[0] + ce[1]), (v, r, w, b))


def test_pairwise_is_cosine_embedding_loss_with_margin_0_1():
    v, r, _ = _inputs(10)
    partner, target = create_loss("pairwise", seed=5).sample_pairs(len(v))
    ref = torch.nn.CosineEmbeddingLoss(margin=0.1)(v, r[partner], target.double())
    _check(create_loss("pairwise", seed=5)(v, r), ref, (v, r))
    _check(create_loss("pairwise", margin=0.2, seed=5)(v, r), torch.nn.CosineEmbeddingLoss(margin=0.2)(v, r[partner], target.double()), (v, r))


def test_pairwise_background_only_batch_has_no_classification_loss():
    v, r, _ = _inputs(11)
    labels = torch.zeros(len(v), dtype=torch.long)
    loss = create_loss("pairwise", num_classes=3, embed_dim=v.shape[1], seed=0).double()
    partner, target = create_loss("pairwise", seed=0).sample_pairs(len(v))
    _check(loss(v, r, labels), 0.98 * _pairwise_loop(v, r, partner, target, 0.0, 0.9), (v, r))


def test_infonce_matches_loop():
    v, r, _ = _inputs(12)
    loss = create_loss("infonce", temperature=0.1).double()
    s = loss.logit_scale.exp()
    n = len(v)
    cos = [[1 - _d(v[i], r[j]) for j in range(n)] for i in range(n)]
    li = sum(-torch.log(torch.exp(s * cos[i][i]) / sum(torch.exp(s * cos[i][j]) for j in range(n))) for i in range(n)) / n
    lr = sum(-torch.log(torch.exp(s * cos[i][i]) / sum(torch.exp(s * cos[j][i]) for j in range(n))) for i in range(n)) / n
    _check(loss(v, r), (li + lr) / 2, (v, r, loss.logit_scale))
    assert loss.logit_scale.item() == pytest.approx(math.log(10))
    frozen = create_loss("infonce", learnable=False)
    assert not list(frozen.parameters())


def test_ht_recipe_loss_matches_loop():
    g = torch.Generator().manual_seed(13)
    comps = {k: torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True) for k in ("title", "ingredients", "instructions")}
    loss = create_loss("ht_recipe", dim=4).double()
    terms = []
    for a in comps:
        for b in comps:
            if a != b:
                p = loss.projections[f"{b}_to_{a}"]
                x, y = _instance_loop(comps[a], p(comps[b]), 0.3, "mean")
                terms.append(x + y)
    _check(loss(comps), sum(terms) / 6, tuple(comps.values()))


def _orthogonal(n, dim):
    q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    return q[:n].clone()


def test_zero_when_every_margin_holds():
    # instance: matching pairs identical, everything else orthogonal (d = 1 >= margin)
    e = _orthogonal(8, 8)
    for name in ("triplet", "pairwise", "pairwise++", "adamine_ins"):
        for kw in ({}, {"aggregation": "hardest"}, {"aggregation": "valid"}) if name == "triplet" else ({},):
            assert create_loss(name, **kw)(e, e.clone(), torch.zeros(8, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-12)
    # semantic: same class at d = 0.35 (> instance margin 0.3), other classes orthogonal (d = 1)
    labels = torch.tensor([1, 1, 2, 2, 0, 3, 3])
    axes, c = _orthogonal(13, 13), math.sqrt(0.65)
    rows = [c * axes[lab] + math.sqrt(0.35) * axes[6 + i] if lab else axes[6 + i] for i, lab in enumerate(labels.tolist())]
    x = torch.stack(rows)
    d = 1 - x @ x.t()
    assert d[0, 1].item() == pytest.approx(0.35) and d[0, 2].item() == pytest.approx(1.0)
    for name in ("adamine", "adamine_avg", "adamine_sem"):
        assert create_loss(name, deterministic=True)(x, x.clone(), labels).item() == pytest.approx(0.0, abs=1e-12)
    # H-T recipe loss: identity projections, orthogonal recipes
    loss = create_loss("ht_recipe", dim=8).double()
    for p in loss.projections.values():
        torch.nn.init.eye_(p.weight), torch.nn.init.zeros_(p.bias)
    assert loss({"title": e, "ingredients": e, "instructions": e}).item() == pytest.approx(0.0, abs=1e-12)


def test_dynamic_margin_schedule_and_hook():
    sched = DynamicMargin(0.05, 0.005, 0.3)
    assert sched.at(0) == pytest.approx(0.05) and sched.at(10) == pytest.approx(0.1) and sched.at(200) == 0.3
    v, r, labels = _inputs(14)
    for name in ("triplet", "adamine"):
        loss = create_loss(name, margin=sched, deterministic=True) if name == "adamine" else create_loss(name, margin=sched)
        for epoch in (0, 7, 80):
            loss.set_epoch(epoch)
            assert loss.margin == pytest.approx(sched.at(epoch))
            fixed = create_loss(name, margin=sched.at(epoch), **({"deterministic": True} if name == "adamine" else {}))
            _check(loss(v, r, labels), fixed(v, r, labels), (v, r))
