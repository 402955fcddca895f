"""Trees ↔ SymPy: the simplified formula of a tree computes what the tree computes (where the maths
is defined), simplifications happen, formulas print, and the parser rejects ill-formed text."""
from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
import sympy as sp
import torch
from deap import gp as dgp

import gp
import primitives
from primitives import FormulaError, LayerAllocator, parse_tree
from primitives.layerwise import map_layers
from primitives.symbolic import UnsupportedExpression

N_TREES = 300


@pytest.fixture(scope="module")
def pset():
    return primitives.build_pset()


def _unprotected(pset):
    """A copy of ``pset`` whose element-wise operators use plain maths (no clamping), like the SymPy side."""
    plain = {
        "log": torch.log, "abslog": lambda x: torch.log(x.abs()), "exp": torch.exp,
        "asin": torch.asin, "acos": torch.acos, "reciprocal": lambda x: 1.0 / x,
    }
    records = dict(pset.records)
    for name, fn in plain.items():
        if f"t_{name}" in records:
            records[f"t_{name}"] = dataclasses.replace(records[f"t_{name}"], torch=fn)
        if f"p_{name}" in records:
            records[f"p_{name}"] = dataclasses.replace(records[f"p_{name}"], torch=lambda s, fn=fn: map_layers(fn, s))
    records["div"] = dataclasses.replace(records["div"], torch=torch.div)
    copy = primitives.build_pset()
    copy.records = records
    return copy


def _as_vector(x, n):
    x = torch.as_tensor(x, dtype=torch.float64)
    return x.expand(n) if x.dim() == 0 else x


def test_simplified_formula_computes_what_the_tree_computes(pset):
    random.seed(2024)
    g = torch.Generator().manual_seed(0)
    scores = torch.exp(0.5 * torch.randn(5, 200, generator=g, dtype=torch.float64))  # log-normal, ≥ 0
    alloc = LayerAllocator(scores, target=0.7, weights=[3.0, 1.0, 2.0, 1.0, 5.0], pset=pset)
    plain = _unprotected(pset)
    n = alloc.n_layers
    counts = Counter()
    for _ in range(N_TREES):
        tree = dgp.PrimitiveTree(gp.half_and_half(pset, 3, 6))
        expr = primitives.simplify(primitives.to_sympy(tree, pset))
        # the post-process stays the root of the simplified form (it is an opaque function)
        assert expr.func.__name__ == tree[0].name, (str(tree), expr)
        # must not raise UnsupportedExpression, whatever simplify produced
        sym_importance = _as_vector(primitives.evaluate_sympy(expr.args[0], pset, alloc.inputs, alloc.ctx), n)
        sym_sparsities = primitives.evaluate_sympy(expr, pset, alloc.inputs, alloc.ctx)
        result = alloc(tree)
        if not result.valid:
            counts["invalid tree"] += 1
            continue
        if not bool(torch.isfinite(sym_importance).all()):
            counts["sympy not finite"] += 1
            continue
        reference = _as_vector(primitives.run(tree, plain, alloc.inputs, alloc.ctx, None, 1), n)
        if not torch.allclose(reference, result.importance, rtol=1e-9, atol=1e-12, equal_nan=False):
            counts["protection active"] += 1  # a protected operator clamped: the maths differ there
            continue
        imp = result.importance
        assert torch.allclose(sym_importance, imp, rtol=1e-6, atol=1e-9), (
            f"{tree}\n  simplified: {expr}\n  tree: {imp.tolist()}\n  sympy: {sym_importance.tolist()}")
        # The post-process min-max scales the importances: where the two evaluations differ by more
        # than 1e-7 of the importances' spread (e.g. importances equal up to rounding), it amplifies
        # rounding noise, and the allocations cannot be compared to 1e-6.
        if float((sym_importance - imp).abs().max()) > 1e-7 * float(imp.max() - imp.min()):
            counts["ill-conditioned"] += 1
            continue
        counts["compared"] += 1
        assert torch.allclose(sym_sparsities, result.sparsities, atol=1e-6, rtol=0), (
            f"{tree}\n  simplified: {expr}\n  tree: {result.sparsities.tolist()}\n  sympy: {sym_sparsities.tolist()}")
    print("\n ", dict(counts))
    assert counts["compared"] >= N_TREES // 2


def test_evaluate_sympy_gives_nan_for_non_real_constants(pset):
    inputs = {"S": torch.ones(2, 3, dtype=torch.float64), "d": torch.tensor([0.0, 1.0], dtype=torch.float64)}
    for text in ("t_acos(t_exp(0.34))", "t_reciprocal(0.0)", "t_log(-0.5)"):
        tree = parse_tree(f"dsa({text}, 0.1)", pset)
        expr = primitives.simplify(primitives.to_sympy(tree, pset))
        value = primitives.evaluate_sympy(expr.args[0], pset, inputs)
        assert not bool(torch.isfinite(torch.as_tensor(value)).all()), (text, expr)
    # real constants evaluate to their value
    value = primitives.evaluate_sympy(sp.exp(2) + sp.pi, pset, inputs)
    assert float(value) == pytest.approx(7.38905609893065 + 3.141592653589793)


def test_evaluate_sympy_rejects_unknown_functions(pset):
    with pytest.raises(UnsupportedExpression):
        primitives.evaluate_sympy(sp.Function("mystery")(pset.symbols["S"]), pset, {"S": torch.ones(2, 2)})


# --- specific simplifications --------------------------------------------------------------------

def _importance_expr(text, pset):
    return primitives.to_sympy(parse_tree(f"dsa({text}, 0.1)", pset), pset, start=1)


def test_log_exp_of_a_reduction_cancels(pset):
    S = pset.symbols["S"]
    var = sp.Function("var")
    assert primitives.simplify(_importance_expr("t_log(t_exp(r_var(S)))", pset)).func.__name__ == "var"
    assert sp.srepr(_importance_expr("t_log(t_exp(r_var(S)))", pset)) == sp.srepr(_importance_expr("r_var(S)", pset))
    assert str(_importance_expr("t_log(t_exp(r_var(S)))", pset)) == str(var(S))


def test_abs_of_abs_collapses(pset):
    twice = _importance_expr("r_mean(p_abs(p_abs(p_zscore(S))))", pset)
    once = _importance_expr("r_mean(p_abs(p_zscore(S)))", pset)
    assert twice == once
    assert str(twice) == "mean(Abs(zscore(S)))"
    # scores are non-negative: |S| is S
    assert str(_importance_expr("r_mean(p_abs(S))", pset)) == "mean(S)"


def test_log_of_sqrt_shows_half_log(pset):
    S = pset.symbols["S"]
    expr = primitives.simplify(_importance_expr("r_mean(p_log(p_sqrt(S)))", pset))
    assert expr.args[0] == sp.log(S) / 2
    assert "log(S)/2" in primitives.Formula(expr).text


def test_formula_notations(pset):
    tree = parse_tree("dsa(t_asin(t_atan(r_var(p_abslog(S)))), 0.07)", pset)
    f = primitives.Formula.of(tree, pset)
    for text in (f.text, f.latex, f.pretty):
        assert isinstance(text, str) and text.strip()
    assert "var" in f.text and "0.07" in f.text and "asin" in f.text
    assert "\\operatorname{asin}" in f.latex or "\\sin^{-1}" in f.latex or "asin" in f.latex


# --- the parser ------------------------------------------------------------------------------------

def test_parse_round_trip_and_constants(pset):
    text = "softmax(add(t_log(r_mean(p_zscore(S))), mul(d, -1.25)), 0.8)"
    tree = parse_tree(text, pset)
    assert str(tree) == text
    assert parse_tree("  dsa( r_var( S ) ,0.1 )", pset).__str__() == "dsa(r_var(S), 0.1)"


@pytest.mark.parametrize("text, message", [
    ("dsa(r_foo(S), 0.1)", "unknown name"),                  # unknown primitive
    ("dsa(r_var(X), 0.1)", "unknown name"),                  # unknown terminal
    ("r_var(S)", "Value"),                                   # root must be a post-process
    ("dsa(p_abs(S), 0.1)", "Scores"),                        # a score map where a value is expected
    ("dsa(r_var(d), 0.1)", "Value"),                         # d is a value, not scores
    ("dsa(r_var(S), r_var(S))", "Spread"),                   # the spread must be a number
    ("dsa(r_var(0.5), 0.1)", "number"),                      # a number cannot stand for the scores
    ("dsa(r_var(S))", "missing"),                            # missing argument
    ("dsa(add(r_var(S)), 0.1)", "missing"),
    ("dsa(r_var(S), 0.1, 0.2)", "unexpected"),               # extra argument
    ("dsa(r_var(S), 0.1) r_mean(S)", "unexpected"),
    ("", "empty"),
])
def test_parse_errors(pset, text, message):
    with pytest.raises(FormulaError, match=message):
        parse_tree(text, pset)
    assert issubclass(FormulaError, ValueError)
