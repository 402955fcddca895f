"""Variation operators as free functions of individuals (as in ``deap/gp.py``): typed one-point
crossover, three mutations, a constraint decorator, ``vary`` (DEAP's varAnd plus re-mutation of
offspring that repeat a known candidate), and ε-lexicase selection on per-case losses (DEAP's)."""
from __future__ import annotations

import copy
import math
import random
from functools import wraps
from types import SimpleNamespace
from typing import Callable

from deap import algorithms, base, creator, gp, tools

from primitives.pset import CONSTANT_BOUNDS

from .config import ConfigError, SearchConfig
from .generate import generate, half_and_half, min_height
from .problem import Problem


def cx_one_point(ind1, ind2):
    """Typed one-point crossover: swap two random subtrees of a common return type.

    Same operator as ``gp.cxOnePoint``, but the common types are put in a fixed order before the
    random pick: DEAP draws from a ``set`` of classes, whose order changes from one process to the
    next, which would make a seeded run (and its resumption) irreproducible.
    """
    if len(ind1) < 2 or len(ind2) < 2:
        return ind1, ind2
    where1, where2 = {}, {}
    for where, ind in ((where1, ind1), (where2, ind2)):
        for i, node in enumerate(ind[1:], 1):
            where.setdefault(node.ret, []).append(i)
    common = [t for t in where1 if t in where2]  # first-appearance order in ind1: deterministic
    if common:
        type_ = random.choice(common)
        slice1 = ind1.searchSubtree(random.choice(where1[type_]))
        slice2 = ind2.searchSubtree(random.choice(where2[type_]))
        ind1[slice1], ind2[slice2] = ind2[slice2], ind1[slice1]
    return ind1, ind2


def perturb_constant(ind):
    """Multiply one ephemeral constant by a log-normal factor (σ = 0.2), kept within its bounds: a local
    step, where ``gp.mutEphemeral`` redraws the constant from scratch."""
    positions = [i for i, node in enumerate(ind) if isinstance(type(node), gp.MetaEphemeral)]
    if positions:
        i = random.choice(positions)
        node = type(ind[i]).__new__(type(ind[i]))
        lo, hi = CONSTANT_BOUNDS.get(ind[i].ret, (-math.inf, math.inf))
        node.value = min(max(round(ind[i].value * math.exp(random.gauss(0.0, 0.2)), 4), lo), hi)
        ind[i] = node
    return ind,


def mutate(ind, pset):
    """One of: a new random subtree (40 %), a node swapped for one of the same type (30 %), or a
    constant nudged (30 %, when the tree has one)."""
    choice = random.random()
    if choice < 0.4:
        return gp.mutUniform(ind, expr=lambda pset, type_: generate(pset, 0, 2, type_), pset=pset)
    if choice < 0.7 or not any(isinstance(type(n), gp.MetaEphemeral) for n in ind):
        return gp.mutNodeReplacement(ind, pset=pset)
    return perturb_constant(ind)


def constrain(valid: Callable) -> Callable:
    """Like ``gp.staticLimit``: a child that fails ``valid`` is replaced by one of the parents."""
    def decorator(func):
        @wraps(func)
        def wrapper(*args, **kwargs):
            keep = [copy.deepcopy(a) for a in args]
            children = list(func(*args, **kwargs))
            for i, child in enumerate(children):
                if not valid(child):
                    children[i] = random.choice(keep)
            return children
        return wrapper
    return decorator


def vary(parents: list, toolbox: base.Toolbox, cxpb: float, mutpb: float,
         known: Callable[[str], bool] | None = None) -> list:
    """Crossover and mutation (DEAP's ``varAnd``); with ``known`` (a test on each of a child's
    ``toolbox.identities``: its text, and with dedup its output's key), an offspring that repeats a known
    candidate or a sibling is mutated again (up to 10 times), so that the evaluation budget goes to new
    candidates."""
    offspring = algorithms.varAnd(parents, toolbox, cxpb, mutpb)
    if known is None:
        return offspring
    seen: set = set()
    for i, child in enumerate(offspring):
        for _ in range(10):
            keys = toolbox.identities(child)
            if not any(k in seen or known(k) for k in keys):
                break
            child, = toolbox.mutate(toolbox.clone(child))
            del child.fitness.values
        seen.update(keys)
        offspring[i] = child
    return offspring


def text_identity(ind) -> tuple:
    """What makes a child a repeat by default: its text."""
    return (str(ind),)


def select_lexicase(individuals: list, k: int) -> list:
    """DEAP's automatic ε-lexicase selection (``tools.selAutomaticEpsilonLexicase``: cases in a random
    order, each keeping the candidates within one median absolute deviation of the best) on each
    individual's ``cases`` (its per-case losses), while its fitness stays their mean (hall of fame,
    elites, logbook). Candidates without cases (invalid) take part only where none has them."""
    pool = [SimpleNamespace(ind=ind, fitness=SimpleNamespace(values=tuple(ind.cases),
                                                             weights=(-1.0,) * len(ind.cases)))
            for ind in individuals if getattr(ind, "cases", None)]
    if not pool:
        return tools.selRandom(individuals, k)
    return [entry.ind for entry in tools.selAutomaticEpsilonLexicase(pool, k)]


GENERATION_TRIES = 1000


def toolbox_for(problem: Problem, cfg: SearchConfig, individual: type) -> base.Toolbox:
    """DEAP toolbox: typed half-and-half trees within the limits, the configured selection (tournament,
    double tournament with parsimony, or ε-lexicase), one-point crossover, mutation, static limits and the
    problem's structural constraint on both operators; ``identities``: what makes a child a repeat."""
    pset = problem.pset
    tb = base.Toolbox()
    low, high = min(cfg.init_min_height, cfg.max_height), min(cfg.init_max_height, cfg.max_height)
    floor = int(min(min_height(pset, pset.ret), cfg.max_height))

    def fits(ind) -> bool:
        return problem.valid(ind) and ind.height <= cfg.max_height and len(ind) <= cfg.max_size

    def new_individual():
        for i in range(GENERATION_TRIES):  # after half the tries, allow the grammar's smallest heights too
            ind = individual(half_and_half(pset, low if i < GENERATION_TRIES // 2 else floor, high))
            if fits(ind):
                return ind
        raise ConfigError(f"no tree within max_height={cfg.max_height} and max_size={cfg.max_size} passes "
                          f"this grammar's constraints; raise the limits")

    tb.register("individual", new_individual)
    tb.register("population", tools.initRepeat, list, tb.individual)
    if cfg.selection == "lexicase":
        tb.register("select", select_lexicase)
    elif cfg.parsimony:  # Luke & Panait's double tournament: fitness tournaments, then a size tournament
        tb.register("select", tools.selDoubleTournament, fitness_size=cfg.tournament, parsimony_size=cfg.parsimony,
                    fitness_first=True)
    else:
        tb.register("select", tools.selTournament, tournsize=cfg.tournament)
    tb.register("identities", text_identity)
    tb.register("mate", cx_one_point)
    tb.register("mutate", mutate, pset=pset)
    for op in ("mate", "mutate"):
        tb.decorate(op, gp.staticLimit(key=lambda t: t.height, max_value=cfg.max_height))
        tb.decorate(op, gp.staticLimit(key=len, max_value=cfg.max_size))
        tb.decorate(op, constrain(problem.valid))
    return tb


def check_limits(problem: Problem, config: SearchConfig) -> None:
    """ConfigError when ``config``'s size and height limits admit no tree of ``problem``'s grammar
    (cheap: call it before any expensive set-up)."""
    toolbox_for(problem, config, creator.Individual).individual()
