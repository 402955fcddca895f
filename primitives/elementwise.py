"""Element-wise operators shared by the pre-process (scores) and transform (per-layer values) stages.

Each entry pairs a numerically protected torch function with its SymPy form. Protection follows
GP practice: arguments are clamped into the operator's domain, so no input raises; values that
still overflow become ``inf``/``nan`` and the allocation is then flagged invalid.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import sympy as sp
import torch

EPS = 1e-12
EXP_MAX = 80.0


class Elementwise(NamedTuple):
    torch: Callable[[torch.Tensor], torch.Tensor]
    sympy: Callable[[sp.Expr], sp.Expr]
    doc: str


def _log(x):
    return torch.log(x.clamp_min(EPS))


def _abslog(x):
    return torch.log(x.abs().clamp_min(EPS))


def _exp(x):
    return torch.exp(x.clamp_max(EXP_MAX))


def _reciprocal(x):
    safe = torch.where(x.abs() < EPS, torch.full_like(x, EPS), x)
    return 1.0 / safe


ELEMENTWISE: dict[str, Elementwise] = {
    "abs": Elementwise(torch.abs, sp.Abs, "|x|"),
    "log": Elementwise(_log, sp.log, "log x (x clamped to ≥1e-12)"),
    "abslog": Elementwise(_abslog, lambda x: sp.log(sp.Abs(x)), "log |x| (|x| clamped to ≥1e-12)"),
    "sqrt": Elementwise(lambda x: torch.sqrt(x.abs()), lambda x: sp.sqrt(sp.Abs(x)), "√|x|"),
    "square": Elementwise(torch.square, lambda x: x**2, "x²"),
    "exp": Elementwise(_exp, sp.exp, "eˣ (x clamped to ≤80)"),
    "sigmoid": Elementwise(torch.sigmoid, lambda x: 1 / (1 + sp.exp(-x)), "1/(1+e⁻ˣ)"),
    "tanh": Elementwise(torch.tanh, sp.tanh, "tanh x"),
    "softplus": Elementwise(torch.nn.functional.softplus, lambda x: sp.log(1 + sp.exp(x)), "log(1+eˣ)"),
    "sin": Elementwise(torch.sin, sp.sin, "sin x"),
    "cos": Elementwise(torch.cos, sp.cos, "cos x"),
    "tan": Elementwise(torch.tan, sp.tan, "tan x"),
    "asin": Elementwise(lambda x: torch.asin(x.clamp(-1.0, 1.0)), sp.asin, "asin x (x clamped to [-1, 1])"),
    "acos": Elementwise(lambda x: torch.acos(x.clamp(-1.0, 1.0)), sp.acos, "acos x (x clamped to [-1, 1])"),
    "atan": Elementwise(torch.atan, sp.atan, "atan x"),
    "reciprocal": Elementwise(_reciprocal, lambda x: 1 / x, "1/x (|x| < 1e-12 → 1e12)"),
}


def protected_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b, with any b of magnitude below 1e-12 replaced by 1e-12."""
    return a * _reciprocal(b)
