"""Reduction primitives: all scores of one layer → one number per layer.

Every function reduces over ``dim=-1``, so it works on a ``[L, N]`` tensor and on each 1-D layer.
Reductions are the expensive step (a pass over every score); they are memoised per subtree.
"""
from __future__ import annotations

import torch

from .elementwise import EPS
from .layerwise import reduce_layers
from .record import Prim
from .symbols import real_function
from .types import Scores, Value

OWL_M = 5.0  # OWL's outlier threshold: a score is an outlier when it exceeds M × the layer mean


def _central(x: torch.Tensor):
    mean = x.mean(dim=-1, keepdim=True)
    dev = x - mean
    var = dev.square().mean(dim=-1)
    return dev, var


def _skew(x):
    dev, var = _central(x)
    return dev.pow(3).mean(dim=-1) / (var.pow(1.5) + EPS)


def _kurt(x):
    dev, var = _central(x)
    return dev.pow(4).mean(dim=-1) / (var.square() + EPS)


def _entropy(x):
    a = x.abs()
    p = a / (a.sum(dim=-1, keepdim=True) + EPS)
    return -(p * torch.log(p.clamp_min(EPS))).sum(dim=-1)


def _gmean(x):
    return torch.exp(torch.log(x.abs().clamp_min(EPS)).mean(dim=-1))


def _outlier(x):
    return (x > OWL_M * x.mean(dim=-1, keepdim=True)).to(x.dtype).mean(dim=-1)


_REDUCTIONS = {
    # name: (torch fn over dim=-1, SymPy assumptions, doc)
    "mean": (lambda x: x.mean(dim=-1), {}, "mean"),
    "var": (lambda x: x.var(dim=-1, unbiased=False), {"nonnegative": True}, "variance"),
    "std": (lambda x: x.std(dim=-1, unbiased=False), {"nonnegative": True}, "standard deviation"),
    "median": (lambda x: x.median(dim=-1).values, {}, "median"),
    "max": (lambda x: x.amax(dim=-1), {}, "maximum"),
    "min": (lambda x: x.amin(dim=-1), {}, "minimum"),
    "l1": (lambda x: x.abs().sum(dim=-1), {"nonnegative": True}, "L1 norm Σ|x|"),
    "l2": (lambda x: x.square().sum(dim=-1).sqrt(), {"nonnegative": True}, "L2 / Frobenius norm"),
    "gmean": (_gmean, {"positive": True}, "geometric mean of |x|"),
    "entropy": (_entropy, {"nonnegative": True}, "entropy of |x| / Σ|x|"),
    "skew": (_skew, {}, "skewness E[(x−μ)³]/σ³"),
    "kurt": (_kurt, {"nonnegative": True}, "kurtosis E[(x−μ)⁴]/σ⁴ (not excess)"),
    "outlier": (_outlier, {"nonnegative": True}, f"OWL outlier fraction: share of x > {OWL_M:g}·mean"),
}

REDUCTION: tuple[Prim, ...] = tuple(
    Prim(
        name=f"r_{name}", stage="reduce", args=(Scores,), ret=Value,
        torch=lambda s, fn=fn: reduce_layers(fn, s), sympy=real_function(name, **assumptions),
        doc=doc, cache=True,
    )
    for name, (fn, assumptions, doc) in _REDUCTIONS.items()
)
