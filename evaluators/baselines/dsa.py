"""DSA (Li et al., NeurIPS 2024; lliai/DSA ``test_prune_wanda_outlier_use_var``): a per-block importance
of Wanda's metric, mapped to sparsities by the released post-process. Higher importance → higher
sparsity (the opposite direction of OWL).

- ``dsa-code``: the released README graph ``W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)``:
  ``asin(atan(var_unbiased(log v)))`` with ``v == 0 → 1`` before the log, float32, unprotected ops: a
  block whose variance exceeds ``tan 1 ≈ 1.557`` gives NaN (asin of a value > 1). The graph's "(7)"
  is parsed into a field that the pruning path never reads; λ is ``--Lamda`` (default 0.08).
- ``dsa-paper``: the formula printed in the paper's Section 6, geometric mean of ``|ln(ln S)|`` then
  ``exp(cos(·))``, with the released ops and the same post-process (:func:`dsa_paper_importance`).

Both map the importance as the released ``compute_importance`` does (NaN → 0.0, ±inf → −1), so a NaN
block sits at the bottom of the range and gets the *lowest* sparsity.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY

from evaluators.pruning.blockscores import BlockScores
from evaluators.baselines.common import block_statistic, check_target, constant_statistic, finish, floor_nonpositive

DSA_LAMBDA = 0.08  # --Lamda default (the README command does not set it)


def released_value(value: float) -> float:
    """``compute_importance``'s special values: NaN → 0.0, ±inf → −1, anything else unchanged."""
    if math.isnan(value):
        return 0.0
    if math.isinf(value):
        return -1.0
    return float(value)


def dsa_code_importance(metric: torch.Tensor) -> float:
    """``asin(atan(var(log v)))``: ABSLOG (``v == 0 → 1``, ``ln|v|``, no epsilon), torch's default
    (unbiased) variance, then ATAN and ASIN, all on float32 CPU tensors like the released code; then
    :func:`released_value` (so var > tan 1 → NaN → 0.0)."""
    v = metric.reshape(-1).float().cpu().clone()
    v[v == 0] = 1
    u = torch.asin(torch.atan(torch.var(v.abs().log())))
    return released_value(u.item())


def dsa_paper_importance(metric: torch.Tensor) -> float:
    """``exp(cos(G))`` with ``G`` the geometric mean of ``|ln |ln(v + 1e-6)||``, precisely:

    1. the released LOG op: ``v ≤ 0 → 1``, ``x = ln(v + 1e-6)`` (float32);
    2. the released ABSLOG op: ``x == 0 → 1``, ``y = ln|x|`` (float32);
    3. ``G = exp(mean(ln|y|))``, the geometric mean of ``|y|`` computed in log space (mean in float64;
       a zero ``y`` gives ``G = 0``). The released GEOMETRIC_MEAN op, ``prod(y)**(1/n)``, under- or
       overflows to 0 / inf at millions of elements (and is NaN for a negative product), so it cannot
       be what the paper's numbers come from;
    4. ``exp(cos(G))`` (float64), then :func:`released_value`.
    """
    x = metric.reshape(-1).float().cpu().clone()
    x[x <= 0] = 1
    x = torch.log(x + 1e-6)
    x[x == 0] = 1
    y = torch.log(x.abs())
    g = torch.exp(torch.log(y.abs()).mean(dtype=torch.float64))
    return released_value(float(torch.exp(torch.cos(g))))  # torch, not math: cos(inf) is NaN, not an error


def dsa_sparsities(importances: Sequence[float], target: float, lam: float) -> list[float]:
    """The released post-process (float64): min-max → ``1 − x`` → rescale to ``[0, 2λ]`` →
    ``− mean + (1 − s)`` (plain mean) = density; sparsity ``1 − density``, ``≤ 0 → 0.01``."""
    uniform = constant_statistic("dsa", list(importances), target)
    if uniform is not None:
        return uniform
    a = torch.tensor(importances, dtype=torch.float64)
    a = (a - a.min()) / (a.max() - a.min())
    a = 1 - a
    a = (a - a.min()) * (1 / (a.max() - a.min()) * lam * 2)
    a = a - a.mean() + (1 - target)
    return floor_nonpositive(1 - a)


def dsa_code(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY,
             lam: float = DSA_LAMBDA, importances: Sequence[float] | None = None,
             sequences: int | None = None) -> list[float]:
    """DSA as released (``dsa-code``); ``importances``: precomputed :func:`dsa_code_importance` per block."""
    check_target(target, lo, hi)
    if importances is None:
        importances = block_statistic(blocks, dsa_code_importance, sequences)
    return finish(dsa_sparsities(importances, target, lam), blocks, target, lo, hi)


def dsa_paper(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY,
              lam: float = DSA_LAMBDA, importances: Sequence[float] | None = None,
              sequences: int | None = None) -> list[float]:
    """DSA's Section-6 formula (``dsa-paper``, :func:`dsa_paper_importance`) with the released post-process.
    Its ``ln(v + 1e-6)`` depends on the metric's scale: see ``sequences`` in :func:`.common.wanda_metric`."""
    check_target(target, lo, hi)
    if importances is None:
        importances = block_statistic(blocks, dsa_paper_importance, sequences)
    return finish(dsa_sparsities(importances, target, lam), blocks, target, lo, hi)
