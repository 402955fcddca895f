"""Pre-process primitives: element-wise (or per-layer normalising) maps of a layer's scores.

"none" in the paper's list is the score terminal ``S`` fed straight into a reduction.
"""
from __future__ import annotations

import torch

from .elementwise import ELEMENTWISE, EPS
from .layerwise import map_layers
from .record import Prim
from .symbols import real_function
from .types import Scores


def _zscore(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / (std + EPS)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    return (x - lo) / (hi - lo + EPS)


def _pre(name: str, fn, sym, doc: str) -> Prim:
    return Prim(
        name=f"p_{name}", stage="pre", args=(Scores,), ret=Scores,
        torch=lambda s, fn=fn: map_layers(fn, s), sympy=sym, doc=doc,
    )


ELEMENTWISE_PRE = ("abs", "log", "abslog", "square", "sqrt", "exp", "sigmoid", "tanh")

PREPROCESS: tuple[Prim, ...] = tuple(
    _pre(name, ELEMENTWISE[name].torch, ELEMENTWISE[name].sympy, ELEMENTWISE[name].doc) for name in ELEMENTWISE_PRE
) + (
    _pre("zscore", _zscore, real_function("zscore"), "(x − mean) / std within the layer"),
    _pre("minmax", _minmax, real_function("minmax", nonnegative=True), "(x − min) / (max − min) within the layer"),
)
