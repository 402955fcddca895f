"""95 % bootstrap intervals over token windows, for reported perplexities and for comparisons.

Every window has the same number of tokens, so the log-perplexity of a split is the mean of its
windows' NLLs (:func:`evaluators.fitness.perplexity.window_nlls`). The windows are the sampling unit (tokens
inside a window are not independent): an interval resamples windows with replacement.

- :func:`perplexity_interval`: the percentile interval of ``exp(mean NLL)`` (one allocation).
- :func:`paired_interval`: for two allocations measured on the *same* windows, the interval of the
  mean per-window difference of their NLLs, i.e. of ``log(ppl_A / ppl_B)``. Pairing removes the
  windows' own difficulty, which dominates the spread of either perplexity alone. "A beats B" means
  this interval lies below 0 (:func:`verdict`).

Bootstrap replicates use a fixed seed, so a table is reproducible; 10,000 replicates put the Monte
Carlo error of a 95 % bound well under the interval's width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

REPLICATES = 10_000
LEVEL = 0.95


def _means(values: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(replicates, len(values)))
    return values[idx].mean(axis=1)


def _bounds(replicated: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(replicated, [tail, 100 - tail])
    return float(lo), float(hi)


def _array(nlls: Sequence[float]) -> np.ndarray:
    values = np.asarray([float(v) for v in nlls], dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("need a non-empty list of per-window NLLs")
    return values


@dataclass(frozen=True)
class Interval:
    value: float   # the point estimate
    lo: float
    hi: float

    def text(self, digits: int = 4) -> str:
        return f"{self.value:.{digits}g} [{self.lo:.{digits}g}, {self.hi:.{digits}g}]"


def perplexity_interval(nlls: Sequence[float], replicates: int = REPLICATES, seed: int = 0,
                        level: float = LEVEL) -> Interval:
    """``exp(mean NLL)`` and its percentile bootstrap interval over windows (inf where not finite)."""
    values = _array(nlls)
    if not np.isfinite(values).all():
        return Interval(math.inf, math.inf, math.inf)
    lo, hi = _bounds(_means(values, replicates, seed), level)
    return Interval(math.exp(values.mean()), math.exp(lo), math.exp(hi))


def paired_interval(nlls_a: Sequence[float], nlls_b: Sequence[float], replicates: int = REPLICATES,
                    seed: int = 0, level: float = LEVEL) -> Interval:
    """``log(ppl_A / ppl_B)`` = mean over windows of ``nll_A − nll_B``, with its paired bootstrap interval
    (the same resampled windows for both). Negative: A has the lower perplexity."""
    a, b = _array(nlls_a), _array(nlls_b)
    if a.shape != b.shape:
        raise ValueError(f"paired windows differ in number: {len(a)} and {len(b)}")
    diff = a - b
    if not np.isfinite(diff).all():
        return Interval(math.nan, math.nan, math.nan)
    lo, hi = _bounds(_means(diff, replicates, seed), level)
    return Interval(float(diff.mean()), lo, hi)


def verdict(interval: Interval) -> str:
    """"beats" (interval below 0), "loses" (above 0) or "tie" (it holds 0, or is undefined)."""
    if interval.hi < 0:
        return "beats"
    if interval.lo > 0:
        return "loses"
    return "tie"
