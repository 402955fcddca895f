"""Exact layer-wise pruning (as the papers do): block by block, every linear of block ``l`` at
``sparsities[l]``, with calibration inputs propagated through the already-pruned blocks (Wanda's
``prune_wanda``, SparseGPT's ``llama_sequential``; all linears of a block share one calibration pass).

Pruning plug-ins, one interface (``prune_linear``):

- ``magnitude`` / ``wanda``: zero the lowest-score weights of every output row (Wanda's comparison
  group; magnitude uses it too, unlike its per-matrix original, so the sparsity is exact per row).
- ``sparsegpt``: SparseGPT's OBS update, blocked (128 columns), dampening 0.01, unstructured, with the
  reference's adaptive mask (IST-DASLab/sparsegpt ``fasterprune``): per 128-column block, one threshold
  over all its rows (:func:`evaluators.pruning.selection.threshold_mask`), which prunes ``int(n·s) + 1`` of the
  block's ``n = rows·128`` weights absent ties. Rows differ; each column block, hence each linear, is at
  its requested sparsity + at most ``1/n`` (+ ties).
- ``sparsegpt-row``: the same OBS update with the mask chosen per output row instead: a column block
  prunes ``round(s·end) − round(s·start)`` weights of each row, so every row ends at ``round(s·cols)``.

Score pruners and ``sparsegpt-row`` therefore give rows of measured sparsity ``round(s·cols)/cols``,
i.e. each block at its requested sparsity ± one weight per row. (SparseGPT, both masks, prunes the
weights of inputs that are always zero first; they count toward the quota.)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from evaluators.data.calibration import LinearStats, StatsCollector, capture_per_block_inputs, run_block
from evaluators.errors import UserError
from evaluators.pruning.nm import check_group
from evaluators.pruning.selection import lowest_mask, nm_count, nm_mask, prune_count, threshold_mask
from evaluators.models.loading import decoder_blocks, model_linears
from evaluators.pruning.scores import PERCDAMP, SCORERS, Scorer, inverse_hessian_factor


class Pruner:
    """One pruning method: prunes a single linear in place given its calibration statistics."""

    name: str = ""
    needs_calibration: bool = False
    needs_hessian: bool = False
    # whether it changes the weights it keeps (SparseGPT's OBS update): then masks from dense scores are not
    # its result, and an exact fitness needs the level database (:mod:`evaluators.fitness.leveldb`)
    updates_weights: bool = False

    def prune_linear(self, linear: nn.Linear, sparsity: float, stats: LinearStats | None,
                     m: int | None = None) -> None:
        """Prune ``linear`` in place to ``sparsity``; with ``m``, in the N:M pattern (``sparsity = n/m``:
        ``n`` of every ``m`` consecutive input weights of each row)."""
        raise NotImplementedError


class ScorePruner(Pruner):
    """Zero, per output row, the ``round(s·cols)`` weights with the lowest element-wise score."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.name = scorer.name
        self.needs_calibration = scorer.needs_calibration
        self.needs_hessian = scorer.needs_hessian

    def prune_linear(self, linear, sparsity, stats, m=None):
        if m is not None:
            n = nm_count(sparsity, m)
            if n:
                linear.weight.masked_fill_(nm_mask(self.scorer.score(linear.weight, stats), n, m), 0)
            return
        k = prune_count(sparsity, linear.in_features)
        if k:
            linear.weight.masked_fill_(lowest_mask(self.scorer.score(linear.weight, stats), k), 0)


class SparseGPTPruner(Pruner):
    """SparseGPT (Frantar & Alistarh 2023) ``fasterprune``, unstructured.

    ``mask="block"`` (default, the reference): one threshold per 128-column block over all its rows.
    ``mask="row"``: per output row, ``round(s·end) − round(s·start)`` weights of each column block."""

    needs_calibration = True
    needs_hessian = True
    updates_weights = True
    MASKS = ("block", "row")

    def __init__(self, blocksize: int = 128, percdamp: float = PERCDAMP, mask: str = "block"):
        if mask not in self.MASKS:
            raise UserError(f"SparseGPT mask must be one of {', '.join(self.MASKS)}, got {mask!r}")
        self.blocksize = blocksize
        self.percdamp = percdamp
        self.mask = mask
        self.name = "sparsegpt" if mask == "block" else f"sparsegpt-{mask}"

    def _block_mask(self, scores: torch.Tensor, sparsity: float, i1: int, i2: int) -> torch.Tensor:
        if self.mask == "block":
            return threshold_mask(scores, sparsity)
        return lowest_mask(scores, prune_count(sparsity, i2) - prune_count(sparsity, i1))

    def prune_linear(self, linear, sparsity, stats, m=None):
        cols = linear.in_features
        n = nm_count(sparsity, m) if m is not None else None
        if sparsity <= 0 or n == 0 or (self.mask == "row" and prune_count(sparsity, cols) == 0):
            return
        if m is not None and (cols % m or self.blocksize % m):
            raise ValueError(f"N:M groups of {m} must divide the {cols} columns and the {self.blocksize}-column "
                             f"blocks")
        hinv, dead = inverse_hessian_factor(stats.hessian.to(linear.weight.device), self.percdamp)
        W = linear.weight.detach().float().clone()
        W[:, dead] = 0.0
        for i1 in range(0, cols, self.blocksize):
            i2 = min(i1 + self.blocksize, cols)
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Hinv1 = hinv[i1:i2, i1:i2]
            if m is None:
                mask1 = self._block_mask(W1.square() / torch.diag(Hinv1).square()[None, :], sparsity, i1, i2)
            else:  # the reference's prunen/prunem: each group of m chosen as the OBS update reaches it
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
            for i in range(i2 - i1):
                if m is not None and i % m == 0:
                    group = W1[:, i:i + m].square() / torch.diag(Hinv1)[i:i + m].square()[None, :]
                    mask1[:, i:i + m] = nm_mask(group, n, m)
                w = W1[:, i]
                q = w.masked_fill(mask1[:, i], 0.0)
                Q1[:, i] = q
                err1 = (w - q) / Hinv1[i, i]
                W1[:, i:].addr_(err1, Hinv1[i, i:], alpha=-1.0)
                Err1[:, i] = err1
            W[:, i1:i2] = Q1
            W[:, i2:] -= Err1 @ hinv[i1:i2, i2:]
        linear.weight.copy_(W.to(linear.weight.dtype))


PRUNERS: dict[str, Pruner] = {
    "magnitude": ScorePruner(SCORERS["magnitude"]),
    "wanda": ScorePruner(SCORERS["wanda"]),
    "sparsegpt": SparseGPTPruner(),  # the reference's mask: one threshold per 128-column block
    "sparsegpt-row": SparseGPTPruner(mask="row"),  # the same OBS update, masks chosen per output row
}


def get_pruner(method: str) -> Pruner:
    if method not in PRUNERS:
        raise UserError(f"unknown pruning method {method!r}: choose one of {', '.join(PRUNERS)}")
    return PRUNERS[method]


def check_nm(sparsities: Sequence[float], m: int, linears: list[dict[str, nn.Linear]]) -> None:
    """UserError unless every block's sparsity is a whole number of ``m``-ths and every linear's input
    width a multiple of ``m`` (and of SparseGPT's 128-column blocks' divisor)."""
    check_group(m)
    for l, s in enumerate(sparsities):
        try:
            nm_count(s, m)
        except ValueError as exc:
            raise UserError(f"block {l}: {exc}") from None
    widths = sorted({lin.in_features for block in linears for lin in block.values() if lin.in_features % m})
    if widths:
        raise UserError(f"N:M with M = {m}: input widths {widths} are not multiples of {m}")


def check_sparsities(sparsities: Sequence[float], n_blocks: int) -> list[float]:
    """Validate a per-block sparsity vector (length, values in [0, 1])."""
    values = [float(s) for s in sparsities]
    if len(values) != n_blocks:
        raise UserError(f"{len(values)} sparsities given for {n_blocks} decoder blocks")
    if not all(0.0 <= s <= 1.0 for s in values):
        raise UserError(f"sparsities must lie in [0, 1], got min {min(values)} max {max(values)}")
    return values


@torch.inference_mode()
def prune(model: nn.Module, method: str, sparsities: Sequence[float], calib_ids: torch.Tensor | None = None,
          progress: bool = False, batch_size: int = 1, m: int | None = None) -> None:
    """Prune ``model`` in place, block ``l`` at ``sparsities[l]``, sequentially (see module doc). With
    ``m``, every block in the N:M pattern: ``sparsities[l]`` must be ``n_l/m`` (``n_l`` of every ``m``
    consecutive input weights pruned in each row; 0 = dense)."""
    pruner = get_pruner(method)
    blocks = decoder_blocks(model)
    linears = model_linears(model)
    sparsities = check_sparsities(sparsities, len(blocks))
    if m is not None:
        check_nm(sparsities, m, linears)
    bar = tqdm(total=len(blocks), desc=f"prune {method}", disable=not progress)
    if not pruner.needs_calibration:
        for s, block_lin in zip(sparsities, linears):
            for lin in block_lin.values():
                pruner.prune_linear(lin, s, None, m)
            bar.update()
        bar.close()
        return
    if calib_ids is None:
        raise UserError(f"{method} pruning needs calibration data (--calib)")
    # per batch: hidden states entering block 0, and each block's own keyword arguments (Gemma-2/3's
    # sliding-window and full-attention layers get different masks / RoPE)
    captured = capture_per_block_inputs(model, calib_ids, batch_size)
    for index, (block, block_lin, s) in enumerate(zip(blocks, linears, sparsities)):
        with StatsCollector(block_lin, pruner.needs_hessian) as collector:
            for hidden, block_kwargs in captured:
                run_block(block, hidden, block_kwargs[index])
        stats = collector.stats()
        for name, lin in block_lin.items():
            pruner.prune_linear(lin, s, stats[name], m)
        del stats
        captured = [(run_block(block, hidden, block_kwargs[index]), block_kwargs)
                    for hidden, block_kwargs in captured]
        bar.update()
    bar.close()


def measured_sparsity(model: nn.Module) -> list[float]:
    """Per decoder block, the fraction of zero weights over its linears."""
    out = []
    for block in model_linears(model):
        zeros = sum(int((lin.weight == 0).sum()) for lin in block.values())
        total = sum(lin.weight.numel() for lin in block.values())
        out.append(zeros / total)
    return out
