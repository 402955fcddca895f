"""Post-process primitives: per-layer importances → per-layer sparsities (the root of every tree).

Every post-process returns sparsities in ``[lo, hi]`` (``hi < 1``) whose parameter-weighted mean
equals the target to float64 precision, whatever the input: constant vectors give the uniform
allocation, and a non-finite importance vector gives the uniform allocation too (the caller flags
such a candidate as invalid). More important layers get lower sparsity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .bounds import MAX_SPARSITY, MIN_SPARSITY
from .record import Prim
from .symbols import real_function
from .types import Allocation, Spread, Temperature, Value

CONSTANT_TOL = 1e-5  # importances whose range is below this share of their magnitude count as constant


@dataclass(frozen=True)
class AllocationContext:
    """What every post-process needs besides the importances: parameter counts and the target."""

    weights: torch.Tensor  # [L] float64, the number of prunable parameters per layer
    target: float
    lo: float = MIN_SPARSITY
    hi: float = MAX_SPARSITY

    def __post_init__(self):
        if not (0.0 <= self.lo <= self.target <= self.hi < 1.0):
            raise ValueError(f"need 0 ≤ lo ≤ target ≤ hi < 1, got lo={self.lo}, target={self.target}, hi={self.hi}")

    @property
    def uniform(self) -> torch.Tensor:
        return torch.full_like(self.weights, self.target)


def project_to_target(raw: torch.Tensor, weights: torch.Tensor, target: float,
                      lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY) -> torch.Tensor:
    """Shift ``raw`` by one constant ``c`` so that ``clip(raw + c, lo, hi)`` has weighted mean ``target``.

    The weighted mean of the clipped vector grows monotonically and piecewise linearly with ``c``; its
    knots are the shifts at which a layer reaches ``lo`` or ``hi``. A binary search over the knots finds
    the piece where the mean reaches the target, and a linear solve on that piece gives the result. Each
    knot is evaluated relative to its own layer (``raw − raw_j``), so huge inputs (``1e300`` beside
    ``0.5``) lose no precision. The result keeps the order of ``raw`` and is exact to ~1e-15.
    Non-finite input → uniform target.
    """
    raw = raw.detach().to(device="cpu", dtype=torch.float64)
    w = weights.detach().to(device="cpu", dtype=torch.float64)
    w = w / w.sum()
    if not bool(torch.isfinite(raw).all()):
        return torch.full_like(raw, target)
    if target <= lo or target >= hi:  # every layer at the bound (weights are positive)
        return torch.full_like(raw, min(max(target, lo), hi))
    values = raw.tolist()
    # (shift c, tie-breakers, bound, layer): layer j reaches `bound` at c = bound − raw_j
    knots = sorted((bound - v, -v, bound, j) for j, v in enumerate(values) for bound in (lo, hi))

    def clipped(knot):
        _, _, bound, j = knot
        return ((raw - values[j]) + bound).clamp(lo, hi)

    a, b = 0, len(knots) - 1  # first knot: every layer at lo (< target); last: every layer at hi
    while b - a > 1:
        m = (a + b) // 2
        if float((w * clipped(knots[m])).sum()) < target:
            a = m
        else:
            b = m
    start, end = clipped(knots[a]), clipped(knots[b])
    at_hi, at_lo = start >= hi, end <= lo
    free = ~(at_hi | at_lo)
    if not bool(free.any()):
        out = end
    else:
        rel = raw - values[int(free.nonzero()[0])]
        rest = target - hi * float(w[at_hi].sum()) - lo * float(w[at_lo].sum())
        d = (rest - float((w[free] * rel[free]).sum())) / float(w[free].sum())
        out = torch.where(at_hi, torch.full_like(raw, hi), torch.where(at_lo, torch.full_like(raw, lo), rel + d))
        out = out.clamp(lo, hi)
    # Remove the last rounding residue on the layers that are not at a bound.
    free = (out > lo) & (out < hi)
    err = float((w * out).sum()) - target
    if bool(free.any()) and err != 0.0:
        out = torch.where(free, out - err / float(w[free].sum()), out).clamp(lo, hi)
    return out


def _finite_unit(v: torch.Tensor) -> torch.Tensor | None:
    """Importances scaled to [0, 1] by min-max (None when not finite; constant → all 0.5).

    "Constant" is relative: a range below ``CONSTANT_TOL`` × max |v| is rounding noise of the
    float32 reductions (e.g. ``l2(zscore(S))`` = √N in every layer), not a signal to allocate by."""
    v = v.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(v).all()):
        return None
    scale = float(v.abs().max())
    if scale > 0:
        v = v / scale  # keeps max − min finite for huge values
    span = float(v.max() - v.min())
    if span <= CONSTANT_TOL:
        return torch.full_like(v, 0.5)
    return (v - v.min()) / span


def _spread(unit: torch.Tensor, lam: float, ctx: AllocationContext) -> torch.Tensor:
    """Invert (important → sparser less) and scale to ``target ± λ``, then fix the weighted mean."""
    lam = min(max(float(lam), 0.0), 1.0)
    raw = ctx.target + lam * (1.0 - 2.0 * unit)
    return project_to_target(raw, ctx.weights, ctx.target, ctx.lo, ctx.hi)


def _broadcast(v, ctx: AllocationContext) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float64)
    return v.expand_as(ctx.weights) if v.dim() == 0 else v


def post_dsa(v, lam, ctx: AllocationContext) -> torch.Tensor:
    """DSA's post-process: min-max normalise → invert → scale to [target − λ, target + λ]."""
    unit = _finite_unit(_broadcast(v, ctx))
    return ctx.uniform if unit is None else _spread(unit, lam, ctx)


def post_rank(v, lam, ctx: AllocationContext) -> torch.Tensor:
    """Rank-based: evenly spaced by importance rank (robust to outliers), then as DSA's."""
    v = _broadcast(v, ctx)
    unit = _finite_unit(v)
    if unit is None:
        return ctx.uniform
    if len(v) > 1 and float(unit.max() - unit.min()) > 0:
        ranks = torch.argsort(torch.argsort(unit, stable=True), stable=True).to(torch.float64)
        unit = ranks / (len(v) - 1)
    return _spread(unit, lam, ctx)


def post_softmax(v, temperature, ctx: AllocationContext) -> torch.Tensor:
    """Softmax: density ∝ softmax(z-scored importance / temperature), so the dense budget
    ``(1 − target)·Σw`` is shared out by importance; clipped to the bounds and re-centred."""
    v = _broadcast(v, ctx)
    unit = _finite_unit(v)
    if unit is None:
        return ctx.uniform
    std = float(unit.std(unbiased=False)) if len(unit) > 1 else 0.0
    if std <= 0:
        return ctx.uniform
    z = (unit - unit.mean()) / std
    q = torch.softmax(z / max(float(temperature), 1e-3), dim=0)
    w = ctx.weights.to(torch.float64)
    raw = 1.0 - (1.0 - ctx.target) * q * w.sum() / w
    return project_to_target(raw, w, ctx.target, ctx.lo, ctx.hi)


POSTPROCESS: tuple[Prim, ...] = (
    Prim("dsa", "post", (Value, Spread), Allocation, post_dsa, real_function("dsa"),
         post_dsa.__doc__.splitlines()[0], needs_context=True),
    Prim("rank", "post", (Value, Spread), Allocation, post_rank, real_function("rank"),
         post_rank.__doc__.splitlines()[0], needs_context=True),
    Prim("softmax", "post", (Value, Temperature), Allocation, post_softmax, real_function("softmax"),
         post_softmax.__doc__.splitlines()[0], needs_context=True),
)
