"""Build DEAP typed primitive sets from chosen groups of primitive records.

The allocation grammar uses every group; other GP tasks pick the groups they need, e.g. a symbolic
regression over one variable uses ``build_pset(("transform", "binary"), args=[("x", Value)], ret=Value)``.
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence

import sympy as sp
from deap import gp

from .postprocess import POSTPROCESS
from .preprocess import PREPROCESS
from .record import Prim
from .reduction import REDUCTION
from .transform import BINARY, TRANSFORM
from .types import Allocation, Scores, Spread, Temperature, Value

GROUPS: dict[str, tuple[Prim, ...]] = {
    "pre": PREPROCESS,
    "reduce": REDUCTION,
    "transform": TRANSFORM,
    "binary": BINARY,
    "post": POSTPROCESS,
}
ALLOCATION_GROUPS = tuple(GROUPS)
ALLOCATION_ARGS = (("S", Scores), ("d", Value))

SPREAD_RANGE = (0.02, 0.25)
TEMPERATURE_RANGE = (0.1, 3.0)
CONSTANT_RANGE = (-2.0, 2.0)


# Ephemeral generators are module-level functions: DEAP requires the same function object for an
# ephemeral name, and checkpoints pickle them by reference.
def constant() -> float:
    return round(random.uniform(*CONSTANT_RANGE), 2)


def spread() -> float:
    return round(random.uniform(*SPREAD_RANGE), 3)


def temperature() -> float:
    return round(random.uniform(*TEMPERATURE_RANGE), 2)


EPHEMERALS = {Value: ("const", constant), Spread: ("spread", spread), Temperature: ("temp", temperature)}
# Where a constant of each type may lie (parsed formulas are checked, nudged constants kept inside): a
# spread beyond 1 only clips, a temperature is positive, a value is any moderate finite number.
CONSTANT_BOUNDS = {Value: (-1e6, 1e6), Spread: (0.0, 1.0), Temperature: (1e-3, 1e3)}

# Scores and relative depth are non-negative by construction; other arguments are just real.
ARG_ASSUMPTIONS = {"S": {"nonnegative": True}, "d": {"nonnegative": True}}


def primitives(groups: Iterable[str] = ALLOCATION_GROUPS, exclude: Iterable[str] = ()) -> list[Prim]:
    """The records of the chosen groups, minus any names in ``exclude``."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown primitive groups {sorted(unknown)}; choose from {sorted(GROUPS)}")
    skip = set(exclude)
    return [p for g in groups for p in GROUPS[g] if p.name not in skip]


def build_pset(groups: Iterable[str] = ALLOCATION_GROUPS, *, args: Sequence[tuple[str, type]] = ALLOCATION_ARGS,
               ret: type = Allocation, constants: bool = True, exclude: Iterable[str] = (),
               name: str = "dsa") -> gp.PrimitiveSetTyped:
    """A DEAP ``PrimitiveSetTyped`` holding the chosen primitives, the arguments and ephemeral constants.

    The set also carries ``records`` (name → :class:`Prim`) and ``symbols`` (argument → SymPy symbol),
    which the interpreter (:mod:`primitives.program`) and :mod:`primitives.symbolic` use.
    """
    records = primitives(groups, exclude)
    pset = gp.PrimitiveSetTyped(name, [t for _, t in args], ret)
    pset.renameArguments(**{f"ARG{i}": arg for i, (arg, _) in enumerate(args)})
    for p in records:
        pset.addPrimitive(p.torch, list(p.args), p.ret, name=p.name)
    used = {t for p in records for t in p.args} | {t for _, t in args}
    for type_, (eph_name, fn) in EPHEMERALS.items():
        if type_ in used and (constants or type_ is not Value):
            pset.addEphemeralConstant(eph_name, fn, type_)
    pset.records = {p.name: p for p in records}
    pset.symbols = {arg: sp.Symbol(arg, real=True, **ARG_ASSUMPTIONS.get(arg, {})) for arg, _ in args}
    return pset


def stage_counts(pset: gp.PrimitiveSetTyped) -> dict[str, int]:
    """How many primitives each stage of ``pset`` holds."""
    counts: dict[str, int] = {}
    for p in pset.records.values():
        counts[p.stage] = counts.get(p.stage, 0) + 1
    return counts
