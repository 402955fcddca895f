"""One generation of each search strategy, as small functions over a population (as DEAP's
``algorithms.py`` holds its loops). ``evaluate(individuals, windows=None)`` gives fitnesses (or, with
``windows``, the cheaper ``partial`` estimate) and returns counts; ``known(key)`` tells whether a
candidate was evaluated before (None: no cache)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable

from deap import gp, tools

from primitives.pset import CONSTANT_BOUNDS

from .config import SearchConfig
from .operators import vary

CONSTANT_FACTORS = (0.5, 0.7, 1.4, 2.0)  # tried in this order around a constant, within its bounds


def elitist(pop: list, toolbox, cfg: SearchConfig, evaluate: Callable, known: Callable | None):
    """Tournament selection, crossover and mutation, the ``elitism`` best copied unchanged."""
    elites = [toolbox.clone(e) for e in tools.selBest(pop, cfg.elitism)]
    offspring = vary(toolbox.select(pop, len(pop) - cfg.elitism), toolbox, cfg.cxpb, cfg.mutpb, known)
    counts = evaluate([ind for ind in offspring if not ind.fitness.valid])
    return elites + offspring, counts


def staged(pop: list, toolbox, cfg: SearchConfig, evaluate: Callable, known: Callable | None):
    """Multi-step selection (EvoPress's, for trees): ``offspring`` children scored on the first windows
    of each stage, the best going on to more windows; the last stage, on all windows, gives the
    population − elitism survivors that join the elites. Only full scores reach the hall of fame."""
    elites = [toolbox.clone(e) for e in tools.selBest(pop, cfg.elitism)]
    candidates = vary(toolbox.select(pop, cfg.offspring), toolbox, cfg.cxpb, cfg.mutpb, known)
    counts: Counter = Counter()
    for windows, survivors in cfg.stages:
        fresh = [ind for ind in candidates if not ind.fitness.valid]
        counts.update(evaluate(fresh, windows=windows))
        score = {id(ind): ind.fitness.values[0] if ind.fitness.valid else ind.partial for ind in candidates}
        candidates = sorted(candidates, key=lambda ind: score[id(ind)])[:survivors]
    counts.update(evaluate([ind for ind in candidates if not ind.fitness.valid]))
    return elites + sorted(candidates, key=lambda ind: ind.fitness.values[0])[:cfg.population - cfg.elitism], dict(counts)


def nsga2(pop: list, toolbox, cfg: SearchConfig, evaluate: Callable, known: Callable | None):
    """NSGA-II (mu + lambda): random mating, survivors by non-dominated rank and crowding distance."""
    offspring = vary(tools.selRandom(pop, len(pop)), toolbox, cfg.cxpb, cfg.mutpb, known)
    counts = evaluate([ind for ind in offspring if not ind.fitness.valid])
    return tools.selNSGA2(pop + offspring, cfg.population), counts


def random_search(pop: list, toolbox, cfg: SearchConfig, evaluate: Callable, known: Callable | None):
    """A fresh random population every generation (the paper's ablation baseline, same budget)."""
    pop = toolbox.population(cfg.population)
    return pop, evaluate(pop)


def restart(pop: list, toolbox, cfg: SearchConfig, evaluate: Callable, known: Callable | None):
    """All but the ``elitism`` best replaced by fresh random trees (``restart_after``: a stalled population)."""
    elites = [toolbox.clone(e) for e in tools.selBest(pop, cfg.elitism)]
    fresh = toolbox.population(cfg.population - cfg.elitism)
    return elites + fresh, evaluate(fresh)


def stalled(logbook) -> int:
    """Generations since the best last improved, or since the last restart (the logbook's ``restart``)."""
    rows = list(logbook)
    last = max([0, *(i for i in range(1, len(rows))
                     if rows[i]["best"] < rows[i - 1]["best"] or rows[i].get("restart"))])
    return len(rows) - 1 - last


def strategy(cfg: SearchConfig) -> Callable:
    if cfg.mode == "random":
        return random_search
    if len(cfg.objectives) > 1:
        return nsga2
    return staged if cfg.stages else elitist


def tune_constants(pop: list, toolbox, budget: int, evaluate: Callable) -> dict:
    """Constant optimisation for the best structure (as PySR optimises each equation's constants, here by
    a cheap search): its constants, one at a time, times each of :data:`CONSTANT_FACTORS` (kept within
    their bounds), at most ``budget`` new evaluations; the best tree found replaces it in ``pop``."""
    best = tools.selBest(pop, 1)[0]
    where = pop.index(best)
    tries = []
    for i, node in enumerate(best):
        if isinstance(type(node), gp.MetaEphemeral):
            lo, hi = CONSTANT_BOUNDS.get(node.ret, (-math.inf, math.inf))
            for factor in CONSTANT_FACTORS:
                value = min(max(round(node.value * factor, 4), lo), hi)
                if value != node.value:
                    child = toolbox.clone(best)
                    const = type(node).__new__(type(node))
                    const.value = value
                    child[i] = const
                    del child.fitness.values
                    tries.append(child)
    tries = tries[:budget]
    counts = evaluate(tries)
    winner = min([best, *tries], key=lambda ind: ind.fitness.values[0])
    pop[where] = winner
    return counts
