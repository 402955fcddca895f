"""A synthetic allocation task with a known optimum, for trying the engine in seconds and testing it.

Layer scores are drawn with layer-dependent spread; the "true" allocation is what a hidden formula
gives on them; the fitness is the mean absolute difference (in percentage points) to that
allocation, so the optimum is 0.
"""
from __future__ import annotations

import torch

from primitives import LayerAllocator, build_pset, parse_tree

HIDDEN_FORMULA = "dsa(t_sqrt(r_kurt(p_abslog(S))), 0.12)"


def synthetic_scores(n_layers: int = 12, per_layer: int = 4096, seed: int = 0) -> list[torch.Tensor]:
    """Non-negative scores whose heavy tail grows, then shrinks, with depth."""
    g = torch.Generator().manual_seed(seed)
    scores = []
    for l in range(n_layers):
        shape = 0.5 + 2.0 * abs(l - n_layers / 3) / n_layers
        base = torch.randn(per_layer, generator=g).abs()
        scores.append(base ** (1.0 + shape) * (1.0 + 0.1 * l))
    return scores


class TargetDistance:
    """Fitness: mean |allocation − target| × 100."""

    def __init__(self, target: torch.Tensor):
        self.target = target.to(torch.float64)

    def __call__(self, sparsities: torch.Tensor) -> float:
        return float((sparsities.to(torch.float64) - self.target).abs().mean() * 100)


def synthetic_task(target_sparsity: float = 0.7, n_layers: int = 12, seed: int = 0):
    """(allocator, fitness) for the synthetic task."""
    allocator = LayerAllocator(synthetic_scores(n_layers, seed=seed), target=target_sparsity, pset=build_pset())
    hidden = allocator(parse_tree(HIDDEN_FORMULA, allocator.pset))
    return allocator, TargetDistance(hidden.sparsities)
