"""The allocation-search problem: trees → per-layer sparsities → a caller's fitness."""
from __future__ import annotations

from typing import Callable

import torch
from deap import gp

from gp import Problem
from primitives import LayerAllocator


def has_reduction(tree: gp.PrimitiveTree) -> bool:
    """A usable allocation function reads the scores: it holds at least one reduction."""
    return any(isinstance(node, gp.Primitive) and node.name.startswith("r_") for node in tree)


def allocation_problem(allocator: LayerAllocator, fitness: Callable[[torch.Tensor], float]) -> Problem:
    """A GP :class:`~gp.Problem` whose output is the per-layer sparsity vector of a tree.

    Candidates with non-finite importances decode to ``None`` (the worst fitness), and so do
    candidates that give the uniform allocation: uniform is the baseline, not a discovery, and the
    many formulas that cannot tell layers apart (constants, scale-free statistics of normalised
    scores) would otherwise fill the population with copies of it.
    """
    def decode(tree):
        result = allocator(tree)
        return result.sparsities if result.valid and not result.uniform else None

    return Problem(pset=allocator.pset, decode=decode, fitness=fitness, valid=has_reduction)
