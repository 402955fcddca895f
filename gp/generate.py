"""Typed tree generation that always completes.

DEAP's ``genFull``/``genGrow`` pick a terminal at the depth limit and fail when a type has none
(here: the allocation root). This generator knows, per type, the smallest height that can still
be completed, and only picks nodes that fit the remaining height, so every tree it returns is
well typed and within ``max_`` height whenever that is possible at all.
"""
from __future__ import annotations

import functools
import random

from deap import gp

INF = float("inf")


@functools.cache
def _min_heights(pset: gp.PrimitiveSetTyped) -> dict:
    """Per type, the height of the smallest complete subtree of that type (0 = a terminal)."""
    heights = {t: 0 for t, terms in pset.terminals.items() if terms}
    changed = True
    while changed:
        changed = False
        for t, prims in pset.primitives.items():
            for p in prims:
                h = 1 + max((heights.get(a, INF) for a in p.args), default=0)
                if h < heights.get(t, INF):
                    heights[t] = h
                    changed = True
    return heights


def min_height(pset: gp.PrimitiveSetTyped, type_) -> float:
    return _min_heights(pset).get(type_, INF)


def generate(pset: gp.PrimitiveSetTyped, min_: int, max_: int, type_=None, full: bool = False) -> list:
    """A random typed tree (as a node list) of height in [min_, max_] where the types allow it.

    ``full``: primitives until the drawn height (DEAP's genFull); else grow (genGrow).
    """
    type_ = pset.ret if type_ is None else type_
    floor = min_height(pset, type_)
    if floor == INF:
        raise ValueError(f"no complete tree of type {type_.__name__} can be built from this primitive set")
    height = max(random.randint(min_, max_), int(floor))
    nodes: list = []
    _grow(pset, type_, 0, height, min_, full, nodes)
    return nodes


def _grow(pset, type_, depth, height, min_, full, nodes):
    remaining = height - depth
    terminals = pset.terminals.get(type_, [])
    fitting = [p for p in pset.primitives.get(type_, [])
               if 1 + max(min_height(pset, a) for a in p.args) <= remaining]
    stop = depth >= height or (not full and depth >= min_ and random.random() < pset.terminalRatio)
    if terminals and (stop or not fitting):
        term = random.choice(terminals)
        nodes.append(term() if isinstance(term, gp.MetaEphemeral) else term)
        return
    if not fitting:  # no terminal and nothing fits: take the shortest way to complete
        best = min(1 + max(min_height(pset, a) for a in p.args) for p in pset.primitives[type_])
        fitting = [p for p in pset.primitives[type_] if 1 + max(min_height(pset, a) for a in p.args) == best]
    prim = random.choice(fitting)
    nodes.append(prim)
    for arg in prim.args:
        _grow(pset, arg, depth + 1, height, min_, full, nodes)


def half_and_half(pset: gp.PrimitiveSetTyped, min_: int, max_: int, type_=None) -> list:
    """Half full, half grow (DEAP's genHalfAndHalf), typed and always complete."""
    return generate(pset, min_, max_, type_, full=random.random() < 0.5)
