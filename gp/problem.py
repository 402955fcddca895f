"""What the engine optimises: a :class:`Problem` turns an individual into an output (``decode``) and an
output into a fitness (lower is better). The engine knows nothing about LLMs."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import torch
from deap import base, creator, gp

from primitives.parse import parse_tree

WORST = math.inf

if not hasattr(creator, "FitnessMin"):
    creator.create("FitnessMin", base.Fitness, weights=(-1.0,))
if not hasattr(creator, "Individual"):
    creator.create("Individual", gp.PrimitiveTree, fitness=creator.FitnessMin)
if not hasattr(creator, "FitnessMulti"):  # (fitness, tree size), both minimised
    creator.create("FitnessMulti", base.Fitness, weights=(-1.0, -1.0))
if not hasattr(creator, "IndividualMulti"):
    creator.create("IndividualMulti", gp.PrimitiveTree, fitness=creator.FitnessMulti)


def rounded_key(output: Any, digits: int = 4) -> Hashable:
    """The output rounded, as a hashable key (tensors and sequences of numbers)."""
    values = torch.as_tensor(output, dtype=torch.float64).flatten().tolist()
    return tuple(round(v, digits) for v in values)


def as_list(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return [float(v) for v in output.flatten()]
    return output


def tree_text(tree) -> dict:
    """The display of a tree without a symbolic form: its text."""
    return {"formula": str(tree), "latex": str(tree)}


@dataclass
class Problem:
    """A GP problem on typed trees of ``pset``.

    ``decode(tree)`` → output, or ``None`` for a candidate that must get the worst fitness;
    ``fitness(output)`` → float (lower is better; non-finite counts as the worst);
    ``valid(tree)``: a structural constraint the operators keep (like the static limits);
    ``output_key(output)``: outputs with equal keys have equal fitness (the cache and the hall of fame's
    duplicate test use it; None: no such key); ``describe(output)``: the output as JSON data;
    ``display(tree)``: ``{"formula", "latex"}`` shown in the hall of fame (e.g. a simplified SymPy form).

    Per-case losses (lexicase selection, resampled windows: :class:`~gp.evaluation.Cases`):
    ``cases(output, windows=None)`` → one loss per case (e.g. per validation window) on those case indices
    (None: all ``n_cases``); a search that reads them gives a candidate the fitness ``link(mean loss)``;
    ``reference``: an output whose losses on every case pair the estimate from a subset of them (None: unpaired).
    """

    pset: gp.PrimitiveSetTyped
    decode: Callable[[gp.PrimitiveTree], Any]
    fitness: Callable[[Any], float]
    valid: Callable[[gp.PrimitiveTree], bool] = lambda tree: True
    output_key: Callable[[Any], Hashable] | None = rounded_key
    describe: Callable[[Any], Any] = as_list
    display: Callable[[gp.PrimitiveTree], dict] = field(default=tree_text)
    cases: Callable[..., list[float]] | None = None
    n_cases: int = 0
    link: Callable[[float], float] = float
    reference: Any = None

    @staticmethod
    def key(tree: gp.PrimitiveTree) -> str:
        """What identifies a candidate for the cache: its exact text (two trees that SymPy calls equal may
        still compute different outputs, e.g. ``log(exp(x))`` with a clamped ``exp``)."""
        return str(tree)

    def parse(self, text: str, individual: type = creator.Individual) -> gp.PrimitiveTree:
        """An individual back from :meth:`key`'s text (checkpoints store trees as text)."""
        return individual(parse_tree(text, self.pset))
