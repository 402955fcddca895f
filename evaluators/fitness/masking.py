"""How a candidate's masks reach the model (``PruningEvaluator(masking=…)``), from per-row score ranks
computed once:

- ``"inplace"`` (default): a copy of the dense weights is kept; a candidate costs one comparison +
  ``masked_fill_`` per linear and a weight copy back. Memory: weights ×2 + ranks (int16: 2 bytes per
  prunable weight). At LLaMA-2-7B in bf16: ≈ 3× the weights.
- ``"forward"``: no copy; each linear is parametrised (:mod:`torch.nn.utils.parametrize`) to use
  ``W.masked_fill(rank < k, 0)`` in its forward, so masks are rebuilt in every forward call and the
  weights are never written. Memory: weights + int16 ranks (+ one linear's masked weight at a time).
- ``"block"``: no copy, and ranks quantised to uint8 levels per row (``level = rank·256 // cols``, 1
  byte per prunable weight; :func:`evaluators.pruning.selection.level_threshold` turns a sparsity into a level
  threshold ``q``, at a resolution of 1/256 of a row). A forward pre-hook on each decoder block builds
  that block's masked weights ``W.masked_fill(level < q, 0)`` just before the block runs and points
  each linear's ``weight.data`` at them; a forward post-hook points it back at the untouched
  original. At most one block's masked copy exists at a time, and masks are built once per forward
  call (with all validation windows in one batch, ``batch_size ≥`` windows: once per evaluation).
  Memory: weights + levels (half the prunable weights' bytes in bf16) + one block's masked weights.

``"inplace"`` and ``"forward"`` prune exactly ``prune_count(s, cols)`` weights per row and give
identical perplexities. ``"block"`` prunes ``level_count(q, cols) = ceil(q·cols/256)`` per row, the
grid point nearest ``prune_count(s, cols)`` (off by at most ``ceil(cols/256)/2`` weights, i.e. ≤ 1/512
of a row); its masks are then exactly ``rank < level_count(q, cols)``, so wherever that equals
``prune_count(s, cols)`` (always when ``cols ≤ 256``; when ``s = j/256`` and ``cols`` is a multiple of
256) its perplexity equals the other modes' bit for bit.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from evaluators.errors import UserError
from evaluators.pruning.selection import (LEVELS, group_ranks, level_mask, level_threshold, nm_count, prune_count,
                                          row_levels, row_ranks)
from evaluators.models.loading import decoder_blocks

MASKING = ("inplace", "forward", "block")


class RankMask(nn.Module):
    """Parametrisation of a linear's weight: zero the weights whose row rank is below ``k``."""

    def __init__(self, ranks: torch.Tensor):
        super().__init__()
        self.ranks, self.k = ranks, 0  # a plain attribute, not a buffer: kept out of state_dict

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.masked_fill(self.ranks < self.k, 0) if self.k else weight


class BlockMask:
    """``masking="block"``'s hooks on one decoder block: just before the block runs, each of its linears
    with a level threshold ``q > 0`` gets ``weight.data`` = ``W.masked_fill(levels < q, 0)`` (a new
    tensor); right after (also when the block raises), the original tensor is put back. The original
    weights are never written."""

    def __init__(self, block: nn.Module, linears: dict[str, nn.Linear], levels: dict[str, torch.Tensor]):
        self.names = list(linears)
        self.linears, self.levels = linears, levels
        self.q: dict[str, int] = {}  # name → level threshold; absent or 0 = dense
        self._saved: list[tuple[nn.Linear, torch.Tensor]] = []
        self._handles = [block.register_forward_pre_hook(self._mask),
                         block.register_forward_hook(self._unmask, always_call=True)]

    @torch.no_grad()
    def _mask(self, module, args) -> None:
        self.unmask()
        for name, q in self.q.items():
            lin = self.linears[name]
            dense = lin.weight.data
            if q >= LEVELS:
                masked = torch.zeros_like(dense)
            else:
                masked = dense.masked_fill(level_mask(self.levels[name], q), 0)
            self._saved.append((lin, dense))
            lin.weight.data = masked

    def _unmask(self, module, args, output) -> None:
        self.unmask()

    def unmask(self) -> None:
        """Point every swapped linear back at its original weight tensor."""
        for lin, dense in reversed(self._saved):
            lin.weight.data = dense
        self._saved = []

    def remove(self) -> None:
        self.unmask()
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Masks:
    """A model's rank tables and the masking mode that applies a candidate's per-block sparsities."""

    def __init__(self, model: nn.Module, linears: list[dict[str, nn.Linear]], masking: str = "inplace",
                 m: int | None = None):
        """``m``: N:M groups: ranks within each group of ``m`` consecutive inputs of a row (uint8), and a
        block at sparsity ``n/m`` loses the ``n`` lowest of every group (``masking="inplace"`` only)."""
        if masking not in MASKING:
            raise UserError(f"masking must be one of {', '.join(MASKING)}, got {masking!r}")
        if m is not None and masking != "inplace":
            raise UserError(f"N:M masks are applied in place: masking={masking!r} does not apply")
        self.masking, self.linears, self.m = masking, linears, m
        self._ranks: list[dict[str, torch.Tensor]] = [{} for _ in linears]  # int16/int32 ranks, or uint8 levels
        self._dense: list[dict[str, torch.Tensor]] = [{} for _ in linears]
        self._blocks = decoder_blocks(model) if masking == "block" else []
        self._block_masks: list[BlockMask] = []
        self._touched: list[tuple[nn.Module, torch.Tensor | None]] = []

    def add(self, block: int, name: str, lin: nn.Linear, score: torch.Tensor) -> None:
        """Rank ``lin``'s weights by ``score`` (block ``block``, linear ``name``); the blocks in order."""
        if self.m is not None:
            if lin.in_features % self.m:
                raise UserError(f"N:M with M = {self.m}: {name} has {lin.in_features} inputs, not a multiple of {self.m}")
            ranks = group_ranks(score, self.m)
        else:
            ranks = row_levels(score) if self.masking == "block" else row_ranks(score)
        self._ranks[block][name] = ranks
        if self.masking == "inplace":
            self._dense[block][name] = lin.weight.detach().clone()
        elif self.masking == "forward":
            parametrize.register_parametrization(lin, "weight", RankMask(ranks), unsafe=True)
        if self.masking == "block" and len(self._ranks[block]) == len(self.linears[block]):
            self._block_masks.append(BlockMask(self._blocks[block], self.linears[block], self._ranks[block]))

    @property
    def state_bytes(self) -> int:
        """Bytes kept besides the model: dense copies ("inplace") + ranks or levels."""
        return sum(t.numel() * t.element_size() for group in (self._ranks, self._dense)
                   for block in group for t in block.values())

    @torch.no_grad()
    def apply(self, values: Sequence[float]) -> None:
        """Prune: in each row, zero the weights ranked below ``round(s_l·cols)`` (in place, or in the
        forward with ``masking="forward"``); with ``masking="block"``, those whose level is below
        :func:`~evaluators.pruning.selection.level_threshold` (inside each block's forward only)."""
        self.restore()
        if self.masking == "block":
            for s, masks in zip(values, self._block_masks):
                masks.q = {name: q for name in masks.names
                           if (q := level_threshold(s, masks.linears[name].in_features))}
            return
        for s, block, ranks, dense in zip(values, self.linears, self._ranks, self._dense):
            for name, lin in block.items():
                k = prune_count(s, lin.in_features) if self.m is None else nm_count(s, self.m)
                if not k:
                    continue
                if self.masking == "forward":
                    mask = lin.parametrizations.weight[0]
                    mask.k = k
                    self._touched.append((mask, None))
                else:
                    self._touched.append((lin, dense[name]))
                    lin.weight.masked_fill_(ranks[name] < k, 0)

    @torch.no_grad()
    def restore(self) -> None:
        """Undo :meth:`apply`: copy the dense weights back (bit-exact), or switch the masks off."""
        for masks in self._block_masks:
            masks.unmask()
            masks.q = {}
        for target, dense in self._touched:
            if dense is None:
                target.k = 0
            else:
                target.weight.copy_(dense)
        self._touched = []

    def close(self) -> None:
        """Leave the model dense and plain (removes ``"forward"``'s parametrisations and ``"block"``'s hooks)."""
        self.restore()
        for masks in self._block_masks:
            masks.remove()
        self._block_masks = []
        for block in self.linears:
            for lin in block.values():
                if parametrize.is_parametrized(lin, "weight"):
                    parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
