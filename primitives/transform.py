"""Transform primitives: per-layer value → per-layer value (unary), and binary combinations so that
two reductions can be combined (e.g. ``std / mean``)."""
from __future__ import annotations

import operator

import torch

from .elementwise import ELEMENTWISE, protected_div
from .record import Prim
from .types import Value

UNARY = ("log", "exp", "sin", "cos", "tan", "asin", "acos", "atan", "sigmoid", "tanh", "softplus",
         "square", "sqrt", "reciprocal")

TRANSFORM: tuple[Prim, ...] = tuple(
    Prim(name=f"t_{name}", stage="transform", args=(Value,), ret=Value,
         torch=ELEMENTWISE[name].torch, sympy=ELEMENTWISE[name].sympy, doc=ELEMENTWISE[name].doc)
    for name in UNARY
)

BINARY: tuple[Prim, ...] = (
    Prim("add", "binary", (Value, Value), Value, torch.add, operator.add, "a + b"),
    Prim("sub", "binary", (Value, Value), Value, torch.sub, operator.sub, "a − b"),
    Prim("mul", "binary", (Value, Value), Value, torch.mul, operator.mul, "a · b"),
    Prim("div", "binary", (Value, Value), Value, protected_div, operator.truediv, "a / b (protected)"),
)
