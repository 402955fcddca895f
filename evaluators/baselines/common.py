"""What every allocator shares: the target check, the final step into ``[lo, hi]``, Wanda's metric per
block (as the reference code computes it) and the reference mappings' guard for a constant statistic.

Every allocator is two pure steps: a per-block statistic computed from the model, and a mapping
statistic → per-block sparsities that follows the reference code's arithmetic (float64, *plain* means
over blocks, as the released code does). :func:`finish` then returns the reference result unchanged
when it lies in ``[lo, hi]`` with parameter-weighted mean ``target`` — always the case for models whose
blocks all have the same size (every model here: the plain mean is then the weighted mean) and targets
where no reference clip fired — and otherwise shifts and clips it (``project_to_target``) so that the
weighted mean is exactly ``target``.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch

from primitives.postprocess import project_to_target

from evaluators.pruning.blockscores import BlockScores
from evaluators.errors import UserError

TARGET_TOL = 1e-12  # a reference result whose weighted mean is this close to the target is kept as is
FLOOR = 0.01  # OWL / DSA / DLP: a block whose sparsity comes out ≤ 0 gets 0.01 instead


def check_target(target: float, lo: float, hi: float) -> None:
    if not (0.0 <= lo <= target <= hi < 1.0):
        raise UserError(f"target sparsity must satisfy {lo} ≤ target ≤ {hi}, got {target}")


def finish(raw: Sequence[float] | torch.Tensor, blocks: BlockScores, target: float, lo: float,
           hi: float) -> list[float]:
    """The reference result as is when it is in ``[lo, hi]`` with weighted mean ``target``; else the
    one constant shift + clip that makes it so (``primitives.postprocess.project_to_target``)."""
    values = [float(v) for v in raw]
    counts = [float(c) for c in blocks.counts]
    mean = sum(v * c for v, c in zip(values, counts)) / sum(counts)
    if all(lo <= v <= hi for v in values) and abs(mean - target) <= TARGET_TOL:
        return values
    out = project_to_target(torch.tensor(values, dtype=torch.float64), torch.tensor(counts, dtype=torch.float64),
                            target, lo, hi)
    return [float(v) for v in out]


def constant_statistic(name: str, values: Sequence[float], target: float) -> list[float] | None:
    """The uniform allocation (with a warning) where every block has the same statistic: the
    reference's min-max divides 0 by 0 there (NaN sparsities, then a crash). None otherwise."""
    if max(values) != min(values):
        return None
    warnings.warn(f"{name}: every block has the same statistic ({values[0]!r}); the reference code would "
                  f"divide by zero here: using the uniform allocation", RuntimeWarning, stacklevel=3)
    return [float(target)] * len(values)


def floor_nonpositive(sparsities: torch.Tensor) -> list[float]:
    """The reference rule ``if sparsity <= 0: sparsity = 0.01`` (not a clip: 0.005 stays 0.005)."""
    return [FLOOR if v <= 0 else float(v) for v in sparsities.tolist()]


def wanda_metric(blocks: BlockScores, block: int, sequences: int | None = None) -> torch.Tensor:
    """Block ``block``'s concatenated Wanda metric ``|W|·‖X_j‖₂`` (float32, CPU, exact: no subsample),
    the vector OWL's, DSA's and DLP's released code read whatever the pruner.

    Our scores' ``‖X_j‖²`` is ``Σ_tokens x_j² / tokens``; the reference's ``scaler_row`` is the sum divided
    by the number of calibration *sequences*. That is one constant factor for the whole model, which the
    OWL ratio (``v > M·mean v``), DLP's ``score/Σ score`` and DSA-code's ``var(log v)`` do not depend on
    (the last up to exact zeros, which the reference maps to ``log 1`` whatever the scale). DSA-paper's
    ``log(v + 1e-6)`` does depend on it: with ``sequences`` (the number of calibration sequences; by
    default ``blocks.sequences``) and ``blocks.tokens``, the metric is returned at the reference's scale."""
    if blocks.model is None or blocks.sq_norms is None:
        raise UserError("this allocation reads Wanda's metric |W|·‖X‖ whatever the pruner: it needs the model "
                        "and its calibration statistics (--calib; magnitude pruning collects none)")
    v = blocks.wanda_metric(block).float().cpu()
    sequences = sequences if sequences is not None else blocks.sequences
    return v * math.sqrt(blocks.tokens / sequences) if sequences and blocks.tokens else v


def block_statistic(blocks: BlockScores, stat, sequences: int | None = None) -> list[float]:
    """``stat`` (a function of one block's Wanda metric → float) for every block."""
    return [float(stat(wanda_metric(blocks, l, sequences))) for l in range(len(blocks))]
