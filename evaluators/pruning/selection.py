"""Pruning masks: which weights a group of scores loses (lowest score first).

Two comparison groups:

- **per output row** (Wanda's; every pruner's but SparseGPT's default, and the fast evaluator's): in
  each row, the ``prune_count(s, cols)`` weights with the lowest scores, ties broken by column index
  (stable sort). A row's measured sparsity is exactly ``round(s·cols)/cols``.
- **one threshold per score block** (SparseGPT's reference ``fasterprune``, unstructured): over all
  rows × columns of a 128-column block, prune every score ``≤`` the value at sorted position
  ``int(n·s)`` (:func:`threshold_mask`).

Quantised per-row ranks (the fast evaluator's ``masking="block"``): a row's rank is stored as a
uint8 **level** ``level = rank·256 // cols`` (:func:`row_levels`; 1 byte per weight instead of
int16's 2). ``level < q`` ⇔ ``rank < level_count(q, cols) = ceil(q·cols/256)``, so a level mask is
always an exact-rank mask ``rank < c`` for a ``c`` on the grid ``ceil(q·cols/256)``, ``q = 0..256``
(:func:`level_threshold` picks the grid point nearest ``prune_count(s, cols)``, ties to the lower
``q``). Resolution: 1/256 of a row (≈ 0.4 % sparsity); the pruned count per row is off
``prune_count(s, cols)`` by at most ``ceil(cols/256)/2`` weights, and is exactly it when
``cols ≤ 256`` (every count is on the grid) or when ``256·prune_count(s, cols)`` is a multiple of
``cols`` (e.g. ``s = j/256`` and ``cols`` a multiple of 256: 4096, 11008). Masks are nested: a higher
sparsity prunes a superset.
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


LEVELS = 256  # quantisation levels per row (uint8)


def row_levels(scores: torch.Tensor) -> torch.Tensor:
    """``level[i, j] = rank[i, j]·256 // cols`` (uint8), ``rank`` as in :func:`row_ranks` (stable,
    lowest score first) — built without the int16/int32 ranks."""
    rows, cols = scores.shape
    order = torch.argsort(scores, dim=1, stable=True)
    of_position = (torch.arange(cols, dtype=torch.int64, device=scores.device) * LEVELS // cols).to(torch.uint8)
    return torch.empty(rows, cols, dtype=torch.uint8, device=scores.device).scatter_(
        1, order, of_position.expand(rows, cols))


def level_count(q: int, cols: int) -> int:
    """Weights per row with ``level < q``: ``ceil(q·cols/256)`` (``q`` in 0..256)."""
    return (q * cols + LEVELS - 1) // LEVELS


def level_threshold(sparsity: float, cols: int) -> int:
    """The ``q`` in 0..256 whose :func:`level_count` is nearest ``prune_count(sparsity, cols)`` (ties:
    the lower ``q``, i.e. fewer weights pruned). ``q = 256`` prunes the whole row."""
    k = prune_count(sparsity, cols)
    q = k * LEVELS // cols  # level_count(q) ≤ k < level_count(q + 1)
    if q < LEVELS and level_count(q + 1, cols) - k < k - level_count(q, cols):
        q += 1
    return q


def level_mask(levels: torch.Tensor, q: int) -> torch.Tensor:
    """Boolean mask of the weights to prune: ``levels < q`` (``q ≥ 256``: all; a uint8 comparison with
    256 would wrap to 0)."""
    if q >= LEVELS:
        return torch.ones_like(levels, dtype=torch.bool)
    return levels < q


def lowest_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the weights to prune: per row, the ``k`` lowest scores."""
    return row_ranks(scores) < k


def threshold_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """SparseGPT's unstructured mask of one score block (IST-DASLab/sparsegpt ``fasterprune``):
    ``thresh = sorted(scores.flatten())[int(n·s)]``, prune ``scores ≤ thresh``.

    The ``≤`` takes the element at position ``int(n·s)`` too, so absent ties this prunes
    ``int(n·s) + 1`` of the ``n`` scores (all tied at the threshold go). Guards the reference lacks:
    ``s ≤ 0`` prunes nothing (the reference would prune the minimum), ``int(n·s) ≥ n`` prunes all
    (the reference would index out of range)."""
    n = scores.numel()
    k = int(n * float(sparsity))
    if sparsity <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    thresh = torch.kthvalue(scores.reshape(-1), k + 1).values  # = sorted(...)[k]
    return scores <= thresh


def nm_count(sparsity: float, m: int) -> int:
    """Weights pruned in every group of ``m`` for an N:M sparsity ``sparsity = n/m``; a sparsity that is
    not a whole number of ``m``-ths is refused (an N:M pattern has no other densities)."""
    n = round(float(sparsity) * m)
    if abs(n - float(sparsity) * m) > 1e-9 or not 0 <= n <= m:
        raise ValueError(f"sparsity {sparsity:g} is not an N:M sparsity with M = {m} (a multiple of 1/{m})")
    return n


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask of the weights to prune in the N:M pattern (Wanda's and SparseGPT's ``prune_n``,
    ``prune_m``): in every row, the ``n`` lowest scores of each group of ``m`` consecutive columns (ties:
    the lower column first). ``cols`` must be a multiple of ``m``."""
    return group_ranks(scores, m) < n


def group_ranks(scores: torch.Tensor, m: int) -> torch.Tensor:
    """``rank[i, j]`` = position of column ``j`` within its group of ``m`` consecutive columns of row ``i``,
    sorted ascending by score (stable; uint8). ``cols`` must be a multiple of ``m`` (≤ 128)."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{cols} columns do not split into groups of {m}")
    order = torch.argsort(scores.reshape(rows, cols // m, m), dim=2, stable=True)
    positions = torch.arange(m, dtype=torch.uint8, device=scores.device).expand_as(order)
    return torch.empty(order.shape, dtype=torch.uint8, device=scores.device).scatter_(2, order, positions).reshape(rows, cols)
