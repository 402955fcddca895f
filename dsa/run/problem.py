"""The allocation-search problem: trees → per-layer sparsities → a caller's fitness."""
from __future__ import annotations

from typing import Callable

import torch
from deap import gp

from evaluators.baselines import baseline_seeds as registry_seeds
from gp import Problem
from primitives import Formula, LayerAllocator


def has_reduction(tree: gp.PrimitiveTree) -> bool:
    """A usable allocation function reads the scores: it holds at least one reduction. (Depth-only trees
    are left out of the space: allowed, they crowd a size-aware search with 3-node ramps; a depth ramp
    still enters with a zero-weighted reduction, as the ATP seed of :func:`baseline_seeds` does.)"""
    return any(isinstance(node, gp.Primitive) and node.name.startswith("r_") for node in tree)


def baseline_seeds(target: float) -> tuple[str, ...]:
    """The baselines as formulas of this grammar, to seed a search (``--seed-baselines``): each
    baseline's :attr:`~evaluators.baselines.Baseline.seeds` with its default parameters."""
    del target  # the same seeds at every sparsity: λ as the authors set it (ATP's ramp: a typical β·(L−1)/2)
    return registry_seeds()


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

    return Problem(pset=allocator.pset, decode=decode, fitness=fitness, valid=has_reduction,
                   display=lambda tree: formula_display(tree, allocator.pset))


def formula_display(tree, pset) -> dict:
    """What the hall of fame shows of a tree: its simplified formula as text and LaTeX, and a ``note``
    where simplification was cut short (:attr:`primitives.Formula.note`)."""
    formula = Formula.of(tree, pset)
    return {"formula": formula.text, "latex": formula.latex, **({"note": formula.note} if formula.note else {})}
