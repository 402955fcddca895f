"""ER and ER-plus (Erdős–Rényi layer-wise sparsity; Mocanu et al. 2018, Evci et al. 2020; ER-plus: Liu et al.,
ICLR 2022, "The Unreasonable Effectiveness of Random Pruning", VITA-Group/Random_Pruning ``ImageNet/core.py``,
modes ``ERK`` and ``ERK_plus`` at ``erk_power_scale`` 1). The DSA and OWL papers list both as competitors.

A weight matrix of shape ``n_out × n_in`` keeps a share ``ε·(n_in + n_out)/(n_in·n_out)`` of its weights, one
``ε`` for the model chosen so that the kept weights total ``(1 − target)`` of all; a matrix whose share comes out
above 1 is made dense and ``ε`` is solved again without it (the reference's loop). ER-plus first makes the *last*
layer dense (the reference's ``fc.weight`` with ``--fc_density 1.0``) and spreads the remaining budget over the
others by ER. Our allocations are per decoder block and the language-model head is never pruned, so "the last
layer" here is the last decoder block, and a block's sparsity is its linears' ER shares weighted by their sizes.

On models whose decoder blocks all have the same shapes (SmolLM2, Gemma-3 and every LLaMA-family model) ER is
therefore *uniform* at block granularity — its shares differ only between the linears inside a block, which a
per-block allocation does not express — and ER-plus is uniform over all blocks but the last, which stays dense.
"""
from __future__ import annotations

from typing import Sequence

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY

from evaluators.pruning.blockscores import BlockScores
from evaluators.errors import UserError
from evaluators.models.loading import model_linears
from evaluators.baselines.common import check_target, finish

Shape = tuple[int, int]


def er_densities(shapes: Sequence[Shape], density: float) -> list[float]:
    """The reference's ERK densities (power scale 1) of matrices ``shapes`` whose kept weights total
    ``density`` of theirs: ``ε·(n_in + n_out)/(n_in·n_out)``, the matrices whose share would exceed 1 dense."""
    if not 0.0 <= density <= 1.0:
        raise UserError(f"ER: the layers left to spread over would need density {density:.4g} (outside [0, 1])")
    sizes = [float(a * b) for a, b in shapes]
    raw = [(a + b) / (a * b) for a, b in shapes]
    dense: set[int] = set()
    while True:
        rhs = sum(n * density for i, n in enumerate(sizes) if i not in dense) \
            - sum(n * (1.0 - density) for i, n in enumerate(sizes) if i in dense)
        divisor = sum(r * n for i, (r, n) in enumerate(zip(raw, sizes)) if i not in dense)
        if divisor == 0.0:  # every matrix dense
            return [1.0] * len(shapes)
        eps = rhs / divisor
        top = max(r for i, r in enumerate(raw) if i not in dense)
        if top * eps <= 1.0:
            return [1.0 if i in dense else eps * r for i, r in enumerate(raw)]
        dense |= {i for i, r in enumerate(raw) if i not in dense and r == top}  # the reference: all at the max


def block_shapes(blocks: BlockScores) -> list[list[Shape]]:
    """Per decoder block, its linears' weight shapes (needs the model)."""
    if blocks.model is None:
        raise UserError("ER needs the model's layer shapes")
    return [[tuple(lin.weight.shape) for lin in block.values()] for block in model_linears(blocks.model)]


def _block_sparsities(shapes: list[list[Shape]], densities: list[float]) -> list[float]:
    out, i = [], 0
    for block in shapes:
        sizes = [a * b for a, b in block]
        kept = sum(d * n for d, n in zip(densities[i:i + len(block)], sizes))
        out.append(1.0 - kept / sum(sizes))
        i += len(block)
    return out


def er(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY, *,
       shapes: list[list[Shape]] | None = None) -> list[float]:
    """ER: each linear's ERK share, summed per block (``shapes``: per block its linears' ``(out, in)``;
    default: read from the model)."""
    check_target(target, lo, hi)
    shapes = shapes if shapes is not None else block_shapes(blocks)
    flat = [s for block in shapes for s in block]
    return finish(_block_sparsities(shapes, er_densities(flat, 1.0 - target)), blocks, target, lo, hi)


def er_plus(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY, *,
            shapes: list[list[Shape]] | None = None) -> list[float]:
    """ER-plus: the last block dense, ER over the others at the density that keeps the model's total."""
    check_target(target, lo, hi)
    shapes = shapes if shapes is not None else block_shapes(blocks)
    if len(shapes) < 2:
        raise UserError("ER-plus keeps the last block dense: it needs at least two blocks")
    head, last = shapes[:-1], shapes[-1]
    total = sum(a * b for block in shapes for a, b in block)
    n_last = sum(a * b for a, b in last)
    density = ((1.0 - target) * total - n_last) / (total - n_last)
    flat = [s for block in head for s in block]
    return finish(_block_sparsities(head, er_densities(flat, density)) + [0.0], blocks, target, lo, hi)
