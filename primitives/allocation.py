"""Run an allocation function (a tree rooted at a post-process) on the scores of every layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from deap import gp

from .bounds import MAX_SPARSITY, MIN_SPARSITY
from .postprocess import AllocationContext
from .program import run
from .pset import build_pset


@dataclass
class AllocationResult:
    """Per-layer sparsities, the importances they came from, and whether the candidate is valid.

    An invalid candidate (non-finite importances, or a failure while evaluating) still carries a
    valid uniform allocation, but must get the worst fitness.
    """

    sparsities: torch.Tensor
    importance: torch.Tensor | None
    valid: bool
    error: str | None = None

    @property
    def uniform(self) -> bool:
        """True when every layer got the target (the importances did not tell the layers apart)."""
        return bool((self.sparsities - self.sparsities[0]).abs().max() < 1e-12)

    def tolist(self) -> list[float]:
        return [float(s) for s in self.sparsities]


def stack_scores(scores: Sequence[torch.Tensor] | torch.Tensor):
    """A ``[L, N]`` tensor when every layer has the same number of scores, else a list of 1-D tensors."""
    if isinstance(scores, torch.Tensor):
        return scores.reshape(scores.shape[0], -1)
    flat = [s.reshape(-1) for s in scores]
    if len({s.numel() for s in flat}) == 1:
        return torch.stack(flat)
    return flat


def relative_depth(n_layers: int) -> torch.Tensor:
    """l / (L − 1) for l = 0 … L − 1 (all zeros for a single layer)."""
    if n_layers == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.arange(n_layers, dtype=torch.float64) / (n_layers - 1)


class LayerAllocator:
    """Turns allocation trees into per-layer sparsities for one fixed set of layer scores.

    >>> alloc = LayerAllocator(scores, target=0.7)          # scores: one tensor per layer
    >>> alloc(tree).sparsities                              # tensor [L], weighted mean 0.7

    Reductions are memoised per (pre-process, reduction) subtree for the allocator's lifetime.
    """

    def __init__(self, scores, target: float, weights: Sequence[float] | torch.Tensor | None = None,
                 lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY, pset: gp.PrimitiveSetTyped | None = None):
        self.scores = stack_scores(scores)
        n = len(self.scores)
        if weights is None:
            weights = [s.numel() for s in self.scores]
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if len(weights) != n:
            raise ValueError(f"{len(weights)} weights for {n} layers")
        self.ctx = AllocationContext(weights=weights, target=float(target), lo=lo, hi=hi)
        self.pset = pset if pset is not None else build_pset()
        self.inputs = {"S": self.scores, "d": relative_depth(n)}
        self.cache: dict[str, torch.Tensor] = {}

    @property
    def n_layers(self) -> int:
        return len(self.ctx.weights)

    def __call__(self, tree: gp.PrimitiveTree) -> AllocationResult:
        root = self.pset.records.get(tree[0].name) if isinstance(tree[0], gp.Primitive) else None
        if root is None or not root.needs_context:
            raise ValueError(f"an allocation tree must start with a post-process, got {tree[0].name!r}")
        try:
            importance = torch.as_tensor(self._run(tree, 1), dtype=torch.float64)
            if importance.dim() == 0:
                importance = importance.expand(self.n_layers)
            param = self._run(tree, tree.searchSubtree(1).stop)
            sparsities = root.torch(importance, param, self.ctx)
        except (RuntimeError, ValueError, OverflowError, ZeroDivisionError, IndexError) as exc:
            return AllocationResult(self.ctx.uniform, None, False, f"{type(exc).__name__}: {exc}")
        valid = bool(torch.isfinite(importance).all())
        return AllocationResult(sparsities, importance, valid, None if valid else "non-finite importance")

    def _run(self, tree, start):
        return run(tree, self.pset, self.inputs, self.ctx, self.cache, start)
