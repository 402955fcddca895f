"""OWL (Yin et al., ICML 2024; luuyin/OWL ``prune_wanda_outlier``): per block the share of outlier
weights in **Wanda's metric** (whatever the pruner: the released code reads it for magnitude and
SparseGPT too); more outliers → denser block."""
from __future__ import annotations

from typing import Sequence

import torch

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY
from primitives.reduction import OWL_M  # Hyper_m of every README script (the CLI default, 3, is unused there)

from evaluators.pruning.blockscores import BlockScores
from evaluators.baselines.common import check_target, constant_statistic, finish, floor_nonpositive, wanda_metric
from evaluators.errors import UserError
from evaluators.pruning.nm import mixed_nm

OWL_LAMBDA = 0.08  # Lamda: the CLI default and every README script
OWL_GRID = [{"m": m, "lam": lam} for m in (3.0, 5.0, 7.0, 10.0) for lam in (0.02, 0.05, 0.08, 0.1, 0.2)]  # EvoPress's


def outlier_ratio(metric: torch.Tensor, m: float) -> float:
    """``check_outlier_mean``: percent of the block's metric values strictly above ``M·mean`` (float32
    threshold, as the reference's ``torch.mean(v) * M``; the mean accumulated in float64)."""
    v = metric.reshape(-1).float()
    threshold = v.mean(dtype=torch.float64).float() * m
    return float((v > threshold).sum()) / v.numel() * 100


def outlier_ratios(blocks: BlockScores, ms: Sequence[float], sequences: int | None = None) -> dict[float, list[float]]:
    """Per ``M`` in ``ms``, every block's :func:`outlier_ratio` (one pass over the blocks for all ``M``)."""
    out: dict[float, list[float]] = {m: [] for m in ms}
    for l in range(len(blocks)):
        v = wanda_metric(blocks, l, sequences)
        for m in out:
            out[m].append(outlier_ratio(v, m))
    return out


def owl_sparsities(ratios: Sequence[float], target: float, lam: float) -> list[float]:
    """``d = (r − min r)·(1/(max r − min r)·2λ)``, density ``d − mean(d) + (1 − s)`` (plain mean),
    sparsity ``1 − density``, ``≤ 0 → 0.01``. Higher outlier ratio → lower sparsity; range width 2λ."""
    uniform = constant_statistic("owl", list(ratios), target)
    if uniform is not None:
        return uniform
    r = torch.tensor(ratios, dtype=torch.float64)
    d = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
    d = d - d.mean() + (1 - target)
    return floor_nonpositive(1 - d)


def owl(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY, m: float = OWL_M,
        lam: float = OWL_LAMBDA, ratios: Sequence[float] | None = None, sequences: int | None = None) -> list[float]:
    """OWL with outlier multiplier ``m`` (M) and spread ``lam`` (λ). ``ratios``: precomputed
    :func:`outlier_ratios` for this ``m`` (the tuner computes them once per ``M``)."""
    check_target(target, lo, hi)
    if ratios is None:
        ratios = outlier_ratios(blocks, [m], sequences)[m]
    return finish(owl_sparsities(ratios, target, lam), blocks, target, lo, hi)


def owl_prepare(blocks: BlockScores, grid: list[dict]):
    """For :func:`evaluators.baselines.tune`: the outlier ratios of every ``M`` of the grid, computed in
    one pass; returns ``params → extra keyword arguments``."""
    table = outlier_ratios(blocks, sorted({float(p.get("m", OWL_M)) for p in grid}))
    return lambda params: {"ratios": table[float(params.get("m", OWL_M))]}


OWL_NM_DEFAULTS = {"m": 8, "lam": 2.0, "hyper_m": 6.0}  # the README's N:M script: --Lamda 2 --Hyper_m 6, 5:8


def owl_nm(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY, m: int = 8,
           lam: float = 2.0, hyper_m: float = 6.0, ratios: Sequence[float] | None = None,
           sequences: int | None = None) -> list[float]:
    """OWL's mixed N:M allocation (luuyin/OWL ``prune_wanda_outlier_structure``): outlier ratios (M =
    ``hyper_m``) min-max scaled to ``[0, lam]``, centred on their plain mean, rounded half to even
    (``np.round``), and block ``l`` prunes ``n − rounded_l`` of every ``m``, where ``n = target·m``. The
    reference's rounding can leave the mean off ``n/m``; the largest-remainder step of
    :func:`evaluators.pruning.nm.mixed_nm` then restores it exactly (equal blocks: a block or two moved by one)."""
    check_target(target, lo, hi)
    n = target * m
    if abs(n - round(n)) > 1e-9:
        raise UserError(f"owl-nm prunes n of every {m}: the target {target:g} is not a multiple of 1/{m}")
    if ratios is None:
        ratios = outlier_ratios(blocks, [hyper_m], sequences)[hyper_m]
    r = torch.tensor(ratios, dtype=torch.float64)
    if float(r.max() - r.min()) == 0.0:
        return finish([float(target)] * len(ratios), blocks, target, lo, hi)
    d = (r - r.min()) * (1 / (r.max() - r.min()) * lam)
    counts = (round(n) - torch.round(d - d.mean())).clamp(0, m)
    return finish(mixed_nm((counts / m).tolist(), blocks.counts, target, m), blocks, target, lo, hi)

