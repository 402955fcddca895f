"""Reuse outside pruning: the primitive records and the GP engine on a small symbolic regression.

The snippet below is the README's example; the test runs exactly this text.

```python
import torch
import gp, primitives
from primitives import Value

pset = primitives.build_pset(("transform", "binary"), args=[("x", Value)], ret=Value)
X = torch.linspace(-3, 3, 64, dtype=torch.float64)
y = X**2 + torch.sin(X)

def decode(tree):
    # the tree's predictions on X; None (the worst fitness) where they are not finite
    yhat = torch.as_tensor(primitives.run(tree, pset, {"x": X}), dtype=torch.float64).expand_as(X)
    return yhat if bool(torch.isfinite(yhat).all()) else None

problem = gp.Problem(pset=pset, decode=decode, fitness=lambda yhat: float(((yhat - y) ** 2).mean()))
result = gp.Search(problem, gp.SearchConfig(population=60, generations=20, seed=0)).run()
print(f"MSE {result.hall_of_fame[0]['fitness']:.4f}  (var(y) = {float(y.var(unbiased=False)):.2f})")
print(primitives.Formula.of(result.best, pset).text)
```
"""
from __future__ import annotations

import math
import re

import pytest
import sympy as sp
import torch

import primitives

SNIPPET = re.search(r"```python\n(.*?)```", __doc__, re.S).group(1)


@pytest.fixture(scope="module")
def regression():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, also on a busy machine
    namespace: dict = {}
    try:
        exec(compile(SNIPPET, "README snippet", "exec"), namespace)
    finally:
        torch.set_num_threads(before)
    return namespace


def test_regression_beats_the_best_constant(regression, capsys):
    result, y = regression["result"], regression["y"]
    best_mse = result.hall_of_fame[0]["fitness"]
    constant_mse = float(y.var(unbiased=False))  # the best constant predictor is the mean
    print(f"\n  best MSE {best_mse:.4g}, best constant {constant_mse:.4g}")
    assert best_mse < 0.1 * constant_mse
    # the hall of fame is sorted and its fitness is the MSE of the tree's own predictions
    fits = [row["fitness"] for row in result.hall_of_fame]
    assert fits == sorted(fits)
    yhat = regression["decode"](result.best)
    assert float(((yhat - y) ** 2).mean()) == pytest.approx(best_mse, rel=1e-12)


def test_formula_is_readable_and_computes_the_prediction(regression):
    pset, result, X = regression["pset"], regression["result"], regression["X"]
    formula = primitives.Formula.of(result.best, pset)
    text = formula.text
    assert re.search(r"\bx\b", text)
    assert not re.search(r"\b(t_|ARG)\w*", text), text  # maths, not primitive names
    expr = sp.sympify(text, locals={"x": sp.Symbol("x")})
    assert {s.name for s in expr.free_symbols} == {"x"}
    # the (rounded) printed formula predicts what the tree predicts
    f = sp.lambdify(sp.Symbol("x"), expr, "math")
    predicted = torch.tensor([float(f(float(v))) for v in X], dtype=torch.float64)
    tree_pred = regression["decode"](result.best)
    assert torch.allclose(predicted, tree_pred, atol=0.05 * float(tree_pred.abs().max()) + 0.05)


def test_decode_rejects_non_finite_predictions(regression):
    pset, decode = regression["pset"], regression["decode"]
    overflow = primitives.parse_tree("t_square(t_square(t_square(t_square(t_exp(t_exp(t_exp(x)))))))", pset)
    assert decode(overflow) is None
    constant = primitives.parse_tree("add(1.5, 0.5)", pset)
    assert decode(constant).tolist() == [2.0] * 64
    assert math.isinf(regression["problem"].fitness(torch.full((64,), math.inf)))


def test_regression_pset_has_only_the_chosen_groups(regression):
    pset = regression["pset"]
    assert set(primitives.stage_counts(pset)) == {"transform", "binary"}
    assert pset.ret is primitives.Value and "x" in pset.mapping
    assert not {"S", "d"} & set(pset.mapping)
