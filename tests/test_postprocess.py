"""Post-processes and the projection onto the target: whatever importances come in, the sparsities
are finite, within [lo, hi], and their parameter-weighted mean is the target."""
from __future__ import annotations

import math
import random

import pytest
import torch

import primitives
from primitives import AllocationContext, LayerAllocator, parse_tree, project_to_target
from primitives.postprocess import POSTPROCESS

POST = {rec.name: rec for rec in POSTPROCESS}
KINDS = ("normal", "wide", "constant", "nan", "+inf", "-inf", "huge", "all_huge", "tiny_gaps")
N_CASES = 900


def _importance(kind: str, n: int, rng: random.Random) -> torch.Tensor:
    v = torch.tensor([rng.gauss(0.0, 1.0) for _ in range(n)], dtype=torch.float64)
    if kind == "wide":
        v = v * 10 ** rng.uniform(-3, 6)
    elif kind == "constant":
        v = torch.full((n,), rng.uniform(-5, 5), dtype=torch.float64)
    elif kind in ("nan", "+inf", "-inf"):
        v[rng.randrange(n)] = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}[kind]
    elif kind == "huge":
        v[rng.randrange(n)] = rng.choice([1e300, -1e300])
    elif kind == "all_huge":
        v = v * 1e300
    elif kind == "tiny_gaps":
        v = 1.0 + v * 1e-13
    return v


def _case(rng: random.Random, custom_bounds: bool):
    n = rng.choice([1, 2, 3, 5, 12, 30])
    kind = rng.choice(KINDS)
    weights = torch.tensor([rng.uniform(0.1, 100.0) for _ in range(n)], dtype=torch.float64)
    target = rng.uniform(0.05, 0.95)
    lo, hi = 0.0, 0.99
    if custom_bounds:
        lo = rng.choice([0.0, target * rng.random()])
        hi = rng.choice([0.99, target + (0.99 - target) * rng.random()])
    return kind, _importance(kind, n, rng), weights, target, lo, hi


def _check(s: torch.Tensor, weights: torch.Tensor, target: float, lo: float, hi: float, where: str):
    assert s.shape == weights.shape, where
    assert bool(torch.isfinite(s).all()), where
    assert float(s.min()) >= lo and float(s.max()) <= hi, where
    mean = float((weights / weights.sum() * s).sum())
    assert abs(mean - target) < 1e-6, f"{where}: weighted mean {mean} ≠ target {target}"


@pytest.mark.parametrize("name", sorted(POST))
@pytest.mark.parametrize("custom_bounds", [False, True])
def test_post_process_meets_target_on_any_input(name, custom_bounds):
    rng = random.Random(f"{name}-{custom_bounds}")
    rec = POST[name]
    for i in range(N_CASES):
        kind, v, weights, target, lo, hi = _case(rng, custom_bounds)
        ctx = AllocationContext(weights=weights, target=target, lo=lo, hi=hi)
        if name == "softmax":
            param = rng.choice([rng.uniform(0.05, 5.0), 1e-6, 100.0, -1.0])
        else:
            param = rng.choice([rng.uniform(0.0, 1.0), 0.0, -0.3, 2.0])
        s = rec.torch(v, param, ctx)
        where = f"{name} case {i} ({kind}, n={len(v)}, param={param}, lo={lo:.3f}, hi={hi:.3f})"
        _check(s, weights, target, lo, hi, where)
        if kind in ("nan", "+inf", "-inf", "constant") or len(v) == 1:
            assert torch.allclose(s, torch.full_like(s, target), atol=1e-12, rtol=0), where


def test_project_to_target_meets_target_on_any_input():
    rng = random.Random(7)
    for i in range(3000):
        kind, raw, weights, target, lo, hi = _case(rng, custom_bounds=i % 2 == 1)
        s = project_to_target(raw, weights, target, lo, hi)
        where = f"case {i} ({kind}, n={len(raw)}, lo={lo:.3f}, hi={hi:.3f}, target={target:.3f})"
        _check(s, weights, target, lo, hi, where)
        if not bool(torch.isfinite(raw).all()):
            assert torch.equal(s, torch.full_like(s, target)), where
            continue
        # one shift for all layers: the order of raw is kept
        order = torch.argsort(raw, stable=True)
        assert bool((s[order][1:] >= s[order][:-1]).all()), where


def test_project_to_target_is_a_pure_shift_when_nothing_clips():
    raw = torch.tensor([0.1, 0.3, 0.2, 0.25], dtype=torch.float64)
    weights = torch.tensor([1.0, 3.0, 2.0, 4.0], dtype=torch.float64)
    s = project_to_target(raw, weights, 0.6)
    shift = s - raw
    assert torch.allclose(shift, shift[0].expand(4), atol=1e-14, rtol=0)
    assert float((weights * s).sum() / weights.sum()) == pytest.approx(0.6, abs=1e-15)


def test_project_to_target_clips_and_recentres():
    # one huge layer must sit at hi; the others share the rest of the budget
    raw = torch.tensor([1e300, 0.0, 0.1], dtype=torch.float64)
    s = project_to_target(raw, torch.ones(3, dtype=torch.float64), 0.5)
    assert float(s[0]) == 0.99
    assert float(s[2] - s[1]) == pytest.approx(0.1, abs=1e-12)
    assert float(s.mean()) == pytest.approx(0.5, abs=1e-12)
    # a heavy layer with a huge negative value is the only free one
    raw = torch.tensor([-1e300, 0.0, 0.0], dtype=torch.float64)
    s = project_to_target(raw, torch.tensor([100.0, 1.0, 1.0], dtype=torch.float64), 0.6)
    assert s[1:].tolist() == [0.99, 0.99]
    assert float((torch.tensor([100.0, 1.0, 1.0], dtype=torch.float64) * s).sum() / 102) == pytest.approx(0.6, abs=1e-12)


@pytest.mark.parametrize("name", ["dsa", "rank"])
def test_more_important_layers_are_never_sparser(name):
    rng = random.Random(3)
    rec = POST[name]
    for i in range(500):
        n = rng.choice([2, 3, 6, 20])
        v = torch.tensor([rng.uniform(-10, 10) for _ in range(n)], dtype=torch.float64)
        weights = torch.tensor([rng.uniform(1, 50) for _ in range(n)], dtype=torch.float64)
        lam = rng.uniform(0.01, 0.5)
        ctx = AllocationContext(weights=weights, target=rng.uniform(0.05, 0.95))
        s = rec.torch(v, lam, ctx)
        for a in range(n):
            for b in range(n):
                if v[a] > v[b]:
                    assert float(s[a]) <= float(s[b]) + 1e-12, f"{name} case {i}"
                    # strictly lower where neither layer sits at a bound
                    free = all(ctx.lo < float(s[k]) < ctx.hi for k in (a, b))
                    if free and float(v[a] - v[b]) > 1e-6:
                        assert float(s[a]) < float(s[b]), f"{name} case {i}"


def test_softmax_orders_by_importance_with_equal_weights():
    rng = random.Random(4)
    for _ in range(200):
        n = rng.choice([2, 5, 12])
        v = torch.tensor([rng.uniform(0, 3) for _ in range(n)], dtype=torch.float64)
        ctx = AllocationContext(weights=torch.full((n,), 7.0, dtype=torch.float64), target=rng.uniform(0.3, 0.9))
        s = POST["softmax"].torch(v, rng.uniform(0.2, 3.0), ctx)
        order = torch.argsort(v)
        assert bool((s[order][1:] <= s[order][:-1] + 1e-12).all())


def test_rank_ignores_outlier_magnitude():
    ctx = AllocationContext(weights=torch.ones(4, dtype=torch.float64), target=0.5)
    a = POST["rank"].torch(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), 0.2, ctx)
    b = POST["rank"].torch(torch.tensor([1.0, 2.0, 3.0, 1e12], dtype=torch.float64), 0.2, ctx)
    assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(a, torch.tensor([0.7, 0.7 - 0.4 / 3, 0.3 + 0.4 / 3, 0.3], dtype=torch.float64), atol=1e-12)


def test_constant_importance_gives_uniform_target():
    weights = torch.tensor([5.0, 1.0, 30.0], dtype=torch.float64)
    ctx = AllocationContext(weights=weights, target=0.42, lo=0.1, hi=0.9)
    for name, rec in POST.items():
        for value in (0.0, -3.0, 1e200):
            s = rec.torch(torch.full((3,), value, dtype=torch.float64), 0.2 if name != "softmax" else 1.0, ctx)
            assert torch.allclose(s, torch.full((3,), 0.42, dtype=torch.float64), atol=1e-12), (name, value)
        # a 0-d importance (a constant tree) is broadcast to every layer
        s = rec.torch(torch.tensor(2.5, dtype=torch.float64), 0.2, ctx)
        assert torch.allclose(s, torch.full((3,), 0.42, dtype=torch.float64), atol=1e-12)


def test_context_rejects_impossible_targets():
    w = torch.ones(2, dtype=torch.float64)
    for lo, target, hi in [(0.0, 1.2, 0.99), (0.5, 0.4, 0.9), (0.0, 0.5, 1.0), (-0.1, 0.5, 0.9)]:
        with pytest.raises(ValueError):
            AllocationContext(weights=w, target=target, lo=lo, hi=hi)


def test_dsa_paper_formula():
    """DSA's discovered allocation: dsa(asin(atan(var(log|S|)))), λ = 0.07."""
    pset = primitives.build_pset()
    tree = parse_tree("dsa(t_asin(t_atan(r_var(p_abslog(S)))), 0.07)", pset)
    g = torch.Generator().manual_seed(0)
    scores = [torch.randn(256, generator=g).abs() ** (1.0 + 0.3 * l) for l in range(8)]
    alloc = LayerAllocator(scores, target=0.7, weights=[1.0, 2.0, 1.0, 3.0, 1.0, 2.0, 1.0, 1.0], pset=pset)
    result = alloc(tree)
    assert result.valid
    s, imp = result.sparsities, result.importance
    w = alloc.ctx.weights / alloc.ctx.weights.sum()
    assert float((w * s).sum()) == pytest.approx(0.7, abs=1e-9)
    # the paper's mapping: min-max normalise, invert, scale to target ± λ ...
    unit = (imp - imp.min()) / (imp.max() - imp.min())
    paper = 0.7 + 0.07 * (1 - 2 * unit)
    assert float(paper.min()) >= 0.7 - 0.07 - 1e-12 and float(paper.max()) <= 0.7 + 0.07 + 1e-12
    # ... then one shift (at most λ) so that the weighted mean is the target; nothing clips here
    shift = s - paper
    assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-12, rtol=0)
    assert abs(float(shift[0])) <= 0.07 + 1e-12
    assert float(s.max() - s.min()) == pytest.approx(0.14, abs=1e-12)
    assert bool((s >= 0.7 - 0.14 - 1e-12).all() and (s <= 0.7 + 0.14 + 1e-12).all())
    # the highest-variance (most important) layer is the least sparse
    assert int(torch.argmin(s)) == int(torch.argmax(imp))
