"""Depth allocations: ATP's arithmetic progression and DLP's per-block mean Wanda score.

- ATP (Huang et al., ICML 2025; wzhuang-xmu/ATP ``main.py``): ``s_i = s + β(i − (L−1)/2)``, 0-based
  ``i`` from the input side, deeper blocks sparser. ``β`` has no default there: it is chosen by a grid
  search (their ``search.sh``: ``β = 0.002, 0.004, …`` up to the first illegal value; never ``β = 0``).
- DLP (arXiv 2505.23807, ICML 2025; ironartisan/DLP ``get_dlp_ratios``): per block ``|mean|`` of Wanda's
  metric (the released code uses the mean, not the paper's median), ``r = 1 − score/Σ score``
  min-max to ``[0, 2α]``; higher mean score → higher sparsity.
"""
from __future__ import annotations

from typing import Sequence

import torch

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY

from evaluators.pruning.blockscores import BlockScores
from evaluators.errors import UserError
from evaluators.baselines.common import block_statistic, check_target, constant_statistic, finish, floor_nonpositive

ATP_STEP = 0.002  # search.sh's grid step
DLP_ALPHA = 0.15  # --alpha default; README and every script at 70 % sparsity


def atp_bound(n_blocks: int, target: float) -> float:
    """The largest legal β: ``min(2s/(L−1), 2(1−s)/(L−1))`` (evaluated as the reference does)."""
    if n_blocks < 2:
        return float("inf")
    return min(2 * target / (n_blocks - 1), 2 * (1 - target) / (n_blocks - 1))


def atp_sparsities(n_blocks: int, target: float, beta: float) -> list[float]:
    """``first = s − β(L−1)/2``, ``s_i = first + iβ``; ``UserError`` where the reference prints
    "Illegal beta" (``β > bound``) and, beyond it, for ``β < 0`` (ATP's ramp increases with depth)."""
    if beta < 0 or beta > atp_bound(n_blocks, target):
        raise UserError(f"illegal ATP beta {beta}: need 0 ≤ beta ≤ {atp_bound(n_blocks, target):.6g} "
                        f"for {n_blocks} blocks at sparsity {target}")
    first = target - beta * (n_blocks - 1) / 2
    return [first + i * beta for i in range(n_blocks)]


def atp_grid(n_blocks: int, target: float) -> list[dict]:
    """search.sh's grid: ``β = 0.002·k``, ``k = 1, 2, …`` while legal (decimal values, as ``bc`` prints them)."""
    bound, grid, k = atp_bound(n_blocks, target), [], 1
    while n_blocks > 1 and (beta := round(ATP_STEP * k, 10)) <= bound:
        grid.append({"beta": beta})
        k += 1
    return grid


def atp(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY,
        beta: float | None = None) -> list[float]:
    """ATP's ramp with common difference ``beta`` (required: the reference has no default; ``atp-tuned``
    picks it on validation perplexity)."""
    check_target(target, lo, hi)
    if beta is None:
        raise UserError("atp needs beta= (ATP has no default β; use atp-tuned to choose it on validation data)")
    return finish(atp_sparsities(len(blocks), target, beta), blocks, target, lo, hi)


def dlp_score(metric: torch.Tensor) -> float:
    """``|mean|`` of the block's concatenated Wanda metric (float32, as ``torch.mean`` in the reference)."""
    return float(metric.reshape(-1).float().cpu().mean().abs())


def dlp_sparsities(scores: Sequence[float], target: float, alpha: float) -> list[float]:
    """``r = 1 − score/Σ score``, ``z = (r − min r)·(2α/(max r − min r))``, keep ``z − mean(z) + (1 − s)``
    (plain mean), sparsity ``1 − keep``, ``≤ 0 → 0.01`` (float64)."""
    uniform = constant_statistic("dlp", list(scores), target)
    if uniform is not None:
        return uniform
    sc = torch.tensor(scores, dtype=torch.float64)
    r = 1 - sc / sc.sum()
    z = (r - r.min()) * (2 * alpha / (r.max() - r.min()))
    keep = z - z.mean() + (1 - target)
    return floor_nonpositive(1 - keep)


def dlp(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY,
        alpha: float = DLP_ALPHA, scores: Sequence[float] | None = None) -> list[float]:
    """DLP with spread ``alpha`` (α); ``scores``: precomputed :func:`dlp_score` per block."""
    check_target(target, lo, hi)
    if scores is None:
        scores = block_statistic(blocks, dlp_score)
    return finish(dlp_sparsities(scores, target, alpha), blocks, target, lo, hi)
