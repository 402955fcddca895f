"""Per-output-row pruning masks: how many weights a row loses, and which (lowest-score first).

Every pruner and the fast evaluator select weights the same way: in each output row (Wanda's
comparison group), the ``prune_count(s, cols)`` weights with the lowest scores, ties broken by
column index (stable sort). So a row's measured sparsity is exactly ``round(s·cols)/cols``.
"""
from __future__ import annotations

import math

import torch


def prune_count(sparsity: float, cols: int) -> int:
    """Weights pruned per row: ``round(sparsity·cols)`` (halves round up)."""
    return min(cols, max(0, int(math.floor(float(sparsity) * cols + 0.5))))


def rank_dtype(cols: int) -> torch.dtype:
    return torch.int16 if cols <= torch.iinfo(torch.int16).max else torch.int32


def row_ranks(scores: torch.Tensor) -> torch.Tensor:
    """``rank[i, j]`` = position of column ``j`` in row ``i`` sorted ascending by score (stable);
    int16 when the row is at most 32767 long, else int32."""
    rows, cols = scores.shape
    dtype = rank_dtype(cols)
    order = torch.argsort(scores, dim=1, stable=True)
    positions = torch.arange(cols, dtype=dtype, device=scores.device).expand(rows, cols)
    return torch.empty(rows, cols, dtype=dtype, device=scores.device).scatter_(1, order, positions)


def lowest_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the weights to prune: per row, the ``k`` lowest scores."""
    return row_ranks(scores) < k
