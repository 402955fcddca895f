"""Allocations in N:M patterns: an allocation's per-block sparsities put on what N:M hardware runs.

- **mixed N:M with a fixed M** (:func:`mixed_nm`; OWL's and ATP's N:M setting): block ``l`` prunes
  ``n_l`` of every ``M`` consecutive input weights, ``n_l`` in ``0..M``. From the requested sparsities
  ``s_l``: ``n_l = floor(s_l·M)``, then one more for the blocks with the largest remainders
  ``s_l·M − n_l`` (ties: the earlier block) until the parameter-weighted mean of ``n_l/M`` reaches the target (largest remainder;
  exact whenever the target is a whole number of ``min(counts)/(M·Σ counts)`` steps, e.g. every
  ``j/(M·L)`` on equal blocks).
- **dense or N:M** (:func:`dense_or_nm`; what GPUs run fast, 2:4): the blocks the allocation prunes
  hardest become N:M, the others stay dense, until N:M holds ``share`` of the parameters, i.e. the mean
  sparsity is ``share·N/M``; any allocation function ranks the blocks.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

from evaluators.errors import UserError

TOL = 1e-9


def mixed_nm(sparsities: Sequence[float], counts: Sequence[int], target: float, m: int) -> list[float]:
    """Per block ``n_l/m`` with parameter-weighted mean ``target`` (largest remainder; see module doc)."""
    total = float(sum(counts))
    n = [min(m, max(0, math.floor(float(s) * m + TOL))) for s in sparsities]
    need = target * m * total - sum(c * k for c, k in zip(counts, n))  # in weights × (1/m)
    order = sorted(range(len(n)), key=lambda l: (-(float(sparsities[l]) * m - n[l]), l))
    moved = True
    while need > TOL * total and moved:  # one more for each block in remainder order, pass after pass
        moved = False
        for l in order:
            if need > TOL * total and n[l] < m and counts[l] <= need + TOL * total:
                n[l], need, moved = n[l] + 1, need - counts[l], True
    moved = True
    while need < -TOL * total and moved:  # requested above the target: one less, smallest remainders first
        moved = False
        for l in reversed(order):
            if need < -TOL * total and n[l] > 0 and counts[l] <= -need + TOL * total:
                n[l], need, moved = n[l] - 1, need + counts[l], True
    out = [k / m for k in n]
    mean = sum(c * v for c, v in zip(counts, out)) / total
    if abs(mean - target) > 1e-6:
        raise UserError(f"mixed N:M with M = {m}: no choice of N per block gives mean sparsity {target:g} "
                        f"(nearest {mean:.6g}); use a multiple of 1/{m * len(counts)}")
    return out


def dense_or_nm(sparsities: Sequence[float], counts: Sequence[int], target: float, n: int = 2,
                m: int = 4) -> list[float]:
    """``n/m`` for the blocks with the highest requested sparsity, 0 for the rest, with mean sparsity
    ``target`` (so N:M holds ``target·m/n`` of the parameters); ties: the later block is pruned first."""
    if not 0 < n < m:
        raise UserError(f"dense or N:M needs 0 < N < M, got {n}:{m}")
    total = float(sum(counts))
    share = target * m / n
    if share > 1 + TOL:
        raise UserError(f"dense or {n}:{m} reaches at most mean sparsity {n / m:g}, asked for {target:g}")
    out, left = [0.0] * len(counts), share * total
    for l in sorted(range(len(counts)), key=lambda l: (-float(sparsities[l]), -l)):
        if left < counts[l] - TOL * total:
            break
        out[l] = n / m
        left -= counts[l]
    if abs(left) > 1e-6 * total:
        raise UserError(f"dense or {n}:{m}: whole blocks cannot hold {share:.4g} of the parameters (nearest "
                        f"{share - left / total:.4g} below); use a multiple of {min(counts) / total:.4g}")
    return out


def check_group(m: int) -> int:
    """``m`` when it is an N:M group size this tool prunes with (a divisor of 128, SparseGPT's column
    blocks, from 2 up); UserError otherwise."""
    if not (isinstance(m, int) and not isinstance(m, bool) and 2 <= m <= 128 and 128 % m == 0):
        raise UserError(f"N:M: M must divide 128 (a divisor of 128: 2, 4, 8, …), got {m!r}")
    return m


class Pattern(NamedTuple):
    """An N:M pattern, parsed (:func:`parse_nm`): ``n`` None for mixed N:M with group ``m`` (each block its own
    N), else every pruned block N:M (dense or N:M). Written as its flag's text (``"8"``, ``"2:4"``)."""

    n: int | None
    m: int

    def __str__(self) -> str:
        return f"{self.m}" if self.n is None else f"{self.n}:{self.m}"


def parse_nm(text: str | Pattern) -> Pattern:
    """``"M"`` → (None, M): mixed N:M with that M; ``"N:M"`` → (N, M): dense or N:M. M divides 128
    (SparseGPT's column blocks), 0 < N < M. A :class:`Pattern` is returned as it is (parsed once)."""
    if isinstance(text, Pattern):
        return text
    parts = str(text).split(":")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise UserError(f"an N:M pattern is M (e.g. 8) or N:M (e.g. 2:4), got {text!r}")
    m = check_group(int(parts[-1]))
    n = int(parts[0]) if len(parts) == 2 else None
    if n is not None and not 0 < n < m:
        raise UserError(f"N:M needs 0 < N < M, got {text}")
    return Pattern(n, m)


def on_pattern(nm: str, sparsities: Sequence[float], counts: Sequence[int],
               target: float | None = None) -> tuple[list[float], int]:
    """(per-block sparsities on the pattern ``nm``, M): ``"M"`` → :func:`mixed_nm`, ``"N:M"`` →
    :func:`dense_or_nm`, at mean ``target`` (default: the allocation's own parameter-weighted mean)."""
    n, m = parse_nm(nm)
    if target is None:
        target = sum(float(s) * c for s, c in zip(sparsities, counts)) / sum(counts)
    if n is None:
        return mixed_nm(sparsities, counts, target, m), m
    return dense_or_nm(sparsities, counts, target, n, m), m

