"""The typed allocation grammar: every random tree is well typed, parses back, and runs on any input
without raising, giving either a valid allocation or a flagged-invalid uniform one."""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from deap import gp as dgp

import gp
import primitives
from primitives import Allocation, LayerAllocator, Scores, Spread, Temperature, Value

N_TREES = 10_000
N_LAYERS, PER_LAYER = 6, 64
TARGET = 0.7


@pytest.fixture(scope="module")
def pset():
    return primitives.build_pset()


# --- the nasty inputs -------------------------------------------------------------------------

def _normal(g):
    return torch.randn(N_LAYERS, PER_LAYER, generator=g).abs() * torch.linspace(0.5, 3.0, N_LAYERS)[:, None]


def _with(g, fill):
    s = _normal(g)
    fill(s)
    return s


INPUT_KINDS = {
    "normal": _normal,
    "zeros": lambda g: torch.zeros(N_LAYERS, PER_LAYER),
    "negative": lambda g: torch.randn(N_LAYERS, PER_LAYER, generator=g) - 1.0,
    "nan": lambda g: _with(g, lambda s: s.__setitem__((2, 5), float("nan"))),
    "huge_1e30": lambda g: _normal(g) * 1e30,
    "huge_1e38": lambda g: _with(g, lambda s: s.__setitem__((slice(None), slice(0, 4)), 1e38)),  # float32
    "huge_1e38_f64": lambda g: _normal(g).double() * 1e38,
    "tiny_1e-30": lambda g: _normal(g) * 1e-30,
    "constant_layer": lambda g: _with(g, lambda s: s[3].fill_(0.25)),
    "ragged": lambda g: [torch.rand(n, generator=g) * (i + 1) for i, n in enumerate((64, 16, 100, 1, 33, 7))],
}
ADVERSARIAL = {  # more inputs no tree may crash on (with INPUT_KINDS: the property test below)
    **INPUT_KINDS,
    "inf": lambda g: _with(g, lambda s: s.__setitem__((1, 3), float("inf"))),
    "minus_inf": lambda g: _with(g, lambda s: s.__setitem__((4, 0), float("-inf"))),
    "all_nan": lambda g: torch.full((N_LAYERS, PER_LAYER), float("nan")),
    "one_element_layers": lambda g: torch.rand(N_LAYERS, 1, generator=g),
    "all_constant": lambda g: torch.full((N_LAYERS, PER_LAYER), 3.0),
    "tiny_1e-300_f64": lambda g: _normal(g).double() * 1e-300,
    "negative_zero": lambda g: -torch.zeros(N_LAYERS, PER_LAYER),
    "mixed_sign_huge": lambda g: (torch.randn(N_LAYERS, PER_LAYER, generator=g) * 1e30),
}


def _weights(alloc: LayerAllocator) -> torch.Tensor:
    w = alloc.ctx.weights
    return w / w.sum()


def _check_result(result, alloc: LayerAllocator, where: str) -> None:
    s = result.sparsities
    assert isinstance(s, torch.Tensor) and s.shape == (alloc.n_layers,), where
    if result.valid:
        assert bool(torch.isfinite(s).all()), where
        assert float(s.min()) >= 0.0 and float(s.max()) <= 0.99, where
        assert abs(float((_weights(alloc) * s.double()).sum()) - TARGET) < 1e-6, where
    else:
        assert result.valid is False
        assert torch.equal(s, alloc.ctx.uniform), where


def _well_typed(tree: dgp.PrimitiveTree) -> bool:
    """Every primitive's argument types equal the return types of its children."""
    for i, node in enumerate(tree):
        if isinstance(node, dgp.Primitive):
            j = i + 1
            for arg_type in node.args:
                child = tree[j]
                if child.ret is not arg_type:
                    return False
                j = tree.searchSubtree(j).stop
    return True


def test_random_trees_typed_parse_and_never_raise(pset):
    random.seed(12345)
    g = torch.Generator().manual_seed(0)
    kinds = list(INPUT_KINDS)
    allocators = {k: LayerAllocator(INPUT_KINDS[k](g), target=TARGET, pset=pset) for k in kinds}
    counts = {k: Counter() for k in kinds}
    for i in range(N_TREES):
        nodes = gp.half_and_half(pset, 3, 6) if i % 2 else gp.generate(pset, 2, 5)
        tree = dgp.PrimitiveTree(nodes)
        text = str(tree)
        assert tree[0].ret is Allocation and tree[0].name in ("dsa", "rank", "softmax"), text
        assert _well_typed(tree), text
        assert str(primitives.parse_tree(text, pset)) == text
        kind = kinds[i % len(kinds)]
        alloc = allocators[kind]
        result = alloc(tree)  # must never raise
        _check_result(result, alloc, f"{kind}: {text}")
        counts[kind]["valid" if result.valid else "invalid"] += 1
    print()
    for kind in kinds:
        print(f"  {kind:15s} valid={counts[kind]['valid']:5d} invalid={counts[kind]['invalid']:5d}")
    normal = counts["normal"]
    assert normal["valid"] > 0.8 * (normal["valid"] + normal["invalid"])
    # benign but degenerate inputs still give mostly valid allocations
    for kind in ("zeros", "tiny_1e-30", "constant_layer", "ragged"):
        assert counts[kind]["valid"] > 0.5 * sum(counts[kind].values()), kind


def test_property_no_tree_raises_or_leaves_the_bounds_on_any_input(pset):
    """A few thousand seeded random trees, each on every adversarial score set: no exception; a valid
    allocation lies in [0, 0.99] with the exact weighted mean; an invalid one is the uniform vector."""
    random.seed(2024)
    g = torch.Generator().manual_seed(7)
    allocators = {k: LayerAllocator(make(g), target=TARGET, pset=pset) for k, make in ADVERSARIAL.items()}
    worst = 0.0
    for i in range(2_000):
        tree = dgp.PrimitiveTree(gp.half_and_half(pset, 2, 6))
        for kind, alloc in allocators.items():
            result = alloc(tree)  # must never raise
            _check_result(result, alloc, f"{kind}: {tree}")
            if result.valid:
                worst = max(worst, abs(float((_weights(alloc) * result.sparsities).sum()) - TARGET))
    assert worst < 1e-12


def test_all_nan_scores_are_flagged_invalid_not_raised(pset):
    alloc = LayerAllocator(torch.full((4, 8), float("nan")), target=0.5, pset=pset)
    result = alloc(primitives.parse_tree("dsa(r_mean(S), 0.1)", pset))
    assert result.valid is False and result.error
    assert torch.equal(result.sparsities, torch.full((4,), 0.5, dtype=torch.float64))


def test_allocator_rejects_tree_without_post_process(pset):
    alloc = LayerAllocator(torch.rand(3, 8), target=0.5, pset=pset)
    reduce_only = dgp.PrimitiveTree([pset.mapping["r_mean"], pset.mapping["S"]])
    with pytest.raises(ValueError):
        alloc(reduce_only)


# --- stages and records -----------------------------------------------------------------------

def test_stage_counts(pset):
    counts = primitives.stage_counts(pset)
    assert counts["pre"] >= 10
    assert counts["reduce"] >= 13
    assert counts["transform"] >= 14
    assert counts["post"] >= 3


def test_each_record_matches_its_deap_primitive(pset):
    records = primitives.primitives()
    assert len({r.name for r in records}) == len(records), "duplicate primitive names"
    assert set(pset.records) == {r.name for r in records}
    stage_types = {
        "pre": ((Scores,), Scores), "reduce": ((Scores,), Value), "transform": ((Value,), Value),
        "binary": ((Value, Value), Value),
    }
    for rec in records:
        assert callable(rec.torch) and callable(rec.sympy), rec.name
        prim = pset.mapping[rec.name]
        assert isinstance(prim, dgp.Primitive)
        assert tuple(prim.args) == rec.args and prim.ret is rec.ret, rec.name
        assert pset.records[rec.name] is rec
        if rec.stage in stage_types:
            assert (rec.args, rec.ret) == stage_types[rec.stage], rec.name
        else:
            assert rec.stage == "post" and rec.needs_context and rec.ret is Allocation
            assert rec.args[0] is Value and rec.args[1] in (Spread, Temperature)
    # every DEAP primitive of the set comes from exactly one record
    deap_names = [p.name for prims in pset.primitives.values() for p in prims]
    assert sorted(deap_names) == sorted(pset.records)


def test_every_record_runs_on_tensors_and_sympy(pset):
    import sympy as sp

    scores = torch.rand(3, 10) + 0.1
    value = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    x = sp.Symbol("x", real=True)
    ctx = primitives.AllocationContext(weights=torch.ones(3, dtype=torch.float64), target=0.5)
    for rec in pset.records.values():
        if rec.stage == "pre":
            out = rec.torch(scores)
            assert out.shape == scores.shape
        elif rec.stage == "reduce":
            out = rec.torch(scores)
            assert out.shape == (3,) and out.dtype == torch.float64
        elif rec.stage == "post":
            out = rec.torch(value, 0.1, ctx)
            assert out.shape == (3,)
        else:
            out = rec.torch(*([value] * rec.arity))
            assert out.shape == (3,)
        assert isinstance(rec.sympy(*([x] * rec.arity)), sp.Basic), rec.name


# --- reductions on a known tensor ---------------------------------------------------------------

def _reduce(pset, name, x):
    return float(pset.records[f"r_{name}"].torch(x)[0])


def test_reductions_known_values(pset):
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]], dtype=torch.float64)
    data = [1.0, 2.0, 3.0, 4.0, 100.0]
    mean = sum(data) / 5  # 22
    var = sum((v - mean) ** 2 for v in data) / 5
    expected = {
        "mean": mean, "var": var, "std": math.sqrt(var), "median": 3.0, "max": 100.0, "min": 1.0,
        "l1": 110.0, "l2": math.sqrt(sum(v * v for v in data)),
        "outlier": 0.0,  # 100 < 5 · 22
        "gmean": math.exp(sum(math.log(v) for v in data) / 5),
    }
    for name, value in expected.items():
        assert _reduce(pset, name, x) == pytest.approx(value, rel=1e-12), name


def test_outlier_fraction_and_entropy(pset):
    x = torch.ones(1, 20, dtype=torch.float64)
    x[0, :2] = 100.0  # mean = (200 + 18) / 20 = 10.9 → 100 > 54.5: 2 of 20 outliers
    assert _reduce(pset, "outlier", x) == pytest.approx(0.1)
    assert _reduce(pset, "outlier", torch.ones(1, 20)) == 0.0
    for n in (1, 7, 64):
        assert _reduce(pset, "entropy", torch.full((1, n), 3.0, dtype=torch.float64)) == pytest.approx(math.log(n), abs=1e-9)
    # a point mass has zero entropy
    point = torch.zeros(1, 10)
    point[0, 4] = 2.0
    assert _reduce(pset, "entropy", point) == pytest.approx(0.0, abs=1e-9)


def test_skew_and_kurtosis_known_values(pset):
    sym = torch.tensor([[-2.0, -1.0, 0.0, 1.0, 2.0]], dtype=torch.float64)
    assert _reduce(pset, "skew", sym) == pytest.approx(0.0, abs=1e-12)
    # two-point ±1: E[x⁴]/σ⁴ = 1
    assert _reduce(pset, "kurt", torch.tensor([[-1.0, 1.0, -1.0, 1.0]], dtype=torch.float64)) == pytest.approx(1.0)


def test_reductions_ragged_equal_stacked(pset):
    g = torch.Generator().manual_seed(1)
    rows = [torch.rand(16, generator=g) for _ in range(4)]
    stacked = torch.stack(rows)
    for name in ("mean", "var", "median", "l2", "entropy", "kurt", "outlier"):
        rec = pset.records[f"r_{name}"]
        assert torch.allclose(rec.torch(stacked), rec.torch(rows)), name


def test_reductions_are_cached_per_subtree(pset):
    alloc = LayerAllocator(torch.rand(4, 32), target=0.6, pset=pset)
    alloc(primitives.parse_tree("dsa(t_log(r_var(p_abs(S))), 0.1)", pset))
    assert "r_var(p_abs(S))" in alloc.cache
    alloc.cache["r_var(p_abs(S))"] = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    out = alloc(primitives.parse_tree("rank(r_var(p_abs(S)), 0.1)", pset))
    assert out.importance.tolist() == [1.0, 2.0, 3.0, 4.0]  # read from the cache, not recomputed


def test_protected_operators_never_raise_or_give_nan_on_finite_input(pset):
    x = torch.tensor([-1e30, -1.0, -1e-30, 0.0, 1e-30, 0.5, 1.0, 1e30], dtype=torch.float64)
    for name in ("t_log", "t_reciprocal", "t_sqrt", "t_asin", "t_acos", "t_exp", "t_atan", "t_sigmoid", "t_tanh"):
        out = pset.records[name].torch(x)
        assert not bool(torch.isnan(out).any()), name
    div = pset.records["div"].torch(torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert bool(torch.isfinite(div).all())


def test_build_pset_groups_and_errors():
    sub = primitives.build_pset(("transform", "binary"), args=[("x", Value)], ret=Value)
    assert set(primitives.stage_counts(sub)) == {"transform", "binary"}
    assert "x" in sub.mapping and "S" not in sub.mapping
    no_const = primitives.build_pset(("transform", "binary"), args=[("x", Value)], ret=Value, constants=False)
    assert not any(isinstance(t, dgp.MetaEphemeral) for t in no_const.terminals[Value])
    excl = primitives.build_pset(exclude=("t_tan",))
    assert "t_tan" not in excl.records
    with pytest.raises(ValueError):
        primitives.build_pset(("nonsense",))
