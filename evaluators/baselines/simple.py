"""Allocations that read no reference statistic: ``uniform`` and ``global`` (one score threshold)."""
from __future__ import annotations

import torch

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY

from evaluators.pruning.blockscores import BlockScores, subsample_scores
from evaluators.baselines.common import check_target, finish

GLOBAL_MAX_SCORES = 2**27  # above this many scores in total, global_threshold subsamples every block


def uniform(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY) -> list[float]:
    """The same sparsity in every block."""
    check_target(target, lo, hi)
    return [float(target)] * len(blocks)


def threshold_shares(scores: list[torch.Tensor], target: float) -> list[float]:
    """Per block, the share of its scores ``≤`` the global ``target`` quantile of all scores
    (``torch.kthvalue``, not ``torch.quantile``, which stops at 2²⁴ elements)."""
    flat = torch.cat(scores)
    k = min(max(1, round(target * flat.numel())), flat.numel())
    threshold = flat.kthvalue(k).values
    return [float((s <= threshold).double().mean()) for s in scores]


def global_threshold(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY,
                     hi: float = MAX_SPARSITY) -> list[float]:
    """One score threshold for the whole model (on the pruner's scores ``blocks.scores``): block sparsity =
    share of its scores below the global ``target`` quantile. With more than 2²⁷ scores in total, each
    block contributes a seeded subsample of ``2²⁷ // L`` of them (seed = block index); the final step
    restores the exact weighted mean."""
    check_target(target, lo, hi)
    scores = [s.float().reshape(-1) for s in blocks.scores]
    if sum(s.numel() for s in scores) > GLOBAL_MAX_SCORES:
        limit = GLOBAL_MAX_SCORES // len(scores)
        scores = [subsample_scores(s, limit, seed=l) for l, s in enumerate(scores)]
    return finish(threshold_shares(scores, target), blocks, target, lo, hi)
