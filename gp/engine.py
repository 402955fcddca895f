"""The evolutionary search on DEAP: typed init, tournament selection, one-point crossover, three
mutations, elitism, static limits, a hall of fame of distinct formulas, a fitness cache, and a
checkpoint every generation from which a killed run resumes to the same result.

With ``objectives=("fitness", "size")`` it is NSGA-II instead: random mating selection, survivors
chosen by ``tools.selNSGA2`` from parents + offspring (mu + lambda), and a ``tools.ParetoFront`` of
formulas trading fitness against tree size.

The engine knows nothing about LLMs: a :class:`Problem` supplies ``decode`` (tree → output, ``None``
when invalid) and ``fitness`` (output → float, lower is better).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import random
import time
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import torch
from deap import algorithms, base, creator, gp, tools
from tqdm.auto import tqdm

from . import checkpoint
from .cache import FitnessCache
from .config import SearchConfig
from .generate import generate, half_and_half

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


@dataclass
class Problem:
    """What the engine optimises. ``decode`` returns ``None`` for a candidate that must get the worst fitness."""

    pset: gp.PrimitiveSetTyped
    decode: Callable[[gp.PrimitiveTree], Any]
    fitness: Callable[[Any], float]
    valid: Callable[[gp.PrimitiveTree], bool] = lambda tree: True
    output_key: Callable[[Any], Hashable] | None = rounded_key
    describe: Callable[[Any], Any] = as_list

    def formula_key(self, tree: gp.PrimitiveTree) -> Hashable:
        if hasattr(self.pset, "records"):
            from primitives.symbolic import canonical_key
            return canonical_key(tree, self.pset)
        return str(tree)


@dataclass
class SearchResult:
    hall_of_fame: list[dict]
    logbook: tools.Logbook
    cache: FitnessCache
    evaluations: int
    run_dir: Path | None = None
    best: Any = field(default=None, repr=False)
    pareto_front: list[dict] | None = None  # multi-objective runs: the non-dominated formulas, by size


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


def same_formula(a, b) -> bool:
    """Hall-of-fame similarity: the same canonical formula."""
    return a.key == b.key


def perturb_constant(ind):
    """Multiply one ephemeral constant by a log-normal factor (σ = 0.2): a local step, where
    ``gp.mutEphemeral`` redraws the constant from scratch."""
    positions = [i for i, node in enumerate(ind) if isinstance(type(node), gp.MetaEphemeral)]
    if positions:
        i = random.choice(positions)
        node = type(ind[i]).__new__(type(ind[i]))
        node.value = round(ind[i].value * math.exp(random.gauss(0.0, 0.2)), 4)
        ind[i] = node
    return ind,


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


class Search:
    """``Search(problem, config, run_dir).run(resume=False)`` → :class:`SearchResult`."""

    def __init__(self, problem: Problem, config: SearchConfig | None = None, run_dir: str | Path | None = None,
                 map_fn: Callable = map, progress: bool = False):
        self.problem = problem
        self.config = config or SearchConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.map = map_fn
        self.progress = progress
        self.cache = FitnessCache()
        self.evaluations = 0
        self._formulas: dict[Hashable, dict] = {}
        self.multi = len(self.config.objectives) > 1
        self.individual = creator.IndividualMulti if self.multi else creator.Individual
        self.toolbox = self._toolbox()

    # --- operators ----------------------------------------------------------------------------
    def _toolbox(self) -> base.Toolbox:
        cfg, pset = self.config, self.problem.pset
        tb = base.Toolbox()
        tb.register("expr", half_and_half, pset=pset, min_=cfg.init_min_height, max_=cfg.init_max_height)
        if self.multi:  # NSGA-II: random mating, survivors by non-dominated rank and crowding distance
            tb.register("select", tools.selRandom)
            tb.register("survive", tools.selNSGA2)
        else:
            tb.register("select", tools.selTournament, tournsize=cfg.tournament)
        tb.register("mate", cx_one_point)
        tb.register("mutate", self._mutate)
        for op in ("mate", "mutate"):
            tb.decorate(op, gp.staticLimit(key=lambda t: t.height, max_value=cfg.max_height))
            tb.decorate(op, gp.staticLimit(key=len, max_value=cfg.max_size))
            tb.decorate(op, constrain(self.problem.valid))
        return tb

    def _mutate(self, ind):
        """One of: a new random subtree, a node swapped for one of the same type, or a constant nudged."""
        pset = self.problem.pset
        choice = random.random()
        if choice < 0.4:
            return gp.mutUniform(ind, expr=lambda pset, type_: generate(pset, 0, 2, type_), pset=pset)
        if choice < 0.7 or not any(isinstance(type(n), gp.MetaEphemeral) for n in ind):
            return gp.mutNodeReplacement(ind, pset=pset)
        return perturb_constant(ind)

    def _vary(self, parents: list) -> list:
        """Crossover and mutation (DEAP's varAnd); with the cache on, an offspring whose formula was
        already evaluated, or repeats a sibling, is mutated again (up to 10 times) so that the
        evaluation budget goes to new candidates."""
        offspring = algorithms.varAnd(parents, self.toolbox, self.config.cxpb, self.config.mutpb)
        if not self.config.cache:
            return offspring
        seen: set = set()
        for i, child in enumerate(offspring):
            for _ in range(10):
                key = self.problem.formula_key(child)
                if key not in seen and key not in self.cache.by_formula:
                    break
                child, = self.toolbox.mutate(self.toolbox.clone(child))
                del child.fitness.values
            seen.add(key)
            offspring[i] = child
        return offspring

    def new_individual(self) -> gp.PrimitiveTree:
        """A random tree that passes the problem's ``valid`` and the static limits."""
        cfg = self.config
        for _ in range(1000):
            ind = self.individual(self.toolbox.expr())
            if self.problem.valid(ind) and ind.height <= cfg.max_height and len(ind) <= cfg.max_size:
                return ind
        raise RuntimeError("could not generate a valid tree in 1000 tries; loosen the limits")

    def population(self, n: int) -> list:
        return [self.new_individual() for _ in range(n)]

    # --- evaluation ---------------------------------------------------------------------------
    def _set_fitness(self, ind, value: float) -> None:
        """``(value,)``, or with two objectives ``(value, tree size)``; an invalid candidate is the worst
        in both, so that a tiny invalid tree never sits on the Pareto front."""
        if self.multi:
            ind.fitness.values = (value, len(ind)) if value != WORST else (WORST, WORST)
        else:
            ind.fitness.values = (value,)

    def evaluate(self, individuals: list) -> dict[str, int]:
        """Give every individual a fitness, through the cache where possible; returns counts."""
        use_cache = self.config.cache
        jobs: list[Any] = []
        job_of: dict[Hashable, int] = {}
        waiting: list[tuple[Any, int, Hashable, Hashable]] = []
        counts = {"evals": 0, "formula_hits": 0, "output_hits": 0, "invalid": 0}
        for ind in individuals:
            ind.key = self.problem.formula_key(ind)
            ind.output = None
            if use_cache and (value := self.cache.formula(ind.key)) is not None:
                self._set_fitness(ind, value)
                counts["formula_hits"] += 1
                continue
            output = self.problem.decode(ind)
            if output is None:
                self._set_fitness(ind, WORST)
                counts["invalid"] += 1
                self.cache.store(ind.key, None, WORST)
                continue
            ind.output = self.problem.describe(output)
            okey = self.problem.output_key(output) if self.problem.output_key else None
            if use_cache and okey is not None and (value := self.cache.output(okey)) is not None:
                self._set_fitness(ind, value)
                self.cache.store(ind.key, None, value)
                counts["output_hits"] += 1
                continue
            if use_cache and okey is not None and okey in job_of:
                self.cache.output_hits += 1
                counts["output_hits"] += 1
            else:
                self.cache.misses += 1
                if okey is not None:
                    job_of[okey] = len(jobs)
                waiting.append((ind, len(jobs), ind.key, okey))
                jobs.append(output)
                continue
            waiting.append((ind, job_of[okey], ind.key, okey))
        outputs = tqdm(jobs, desc="evaluating", leave=False, disable=not self.progress or not jobs)
        results = [float(v) for v in self.map(self.problem.fitness, outputs)]
        results = [v if math.isfinite(v) else WORST for v in results]
        for ind, j, fkey, okey in waiting:
            self._set_fitness(ind, results[j])
            self.cache.store(fkey, okey, results[j])
        counts["evals"] = len(jobs)
        self.evaluations += len(jobs)
        return counts

    # --- the loop -----------------------------------------------------------------------------
    def run(self, resume: bool = False) -> SearchResult:
        cfg = self.config
        state = self._load() if resume else None
        if state is None:
            checkpoint.seed_everything(cfg.seed)
            hof = tools.HallOfFame(cfg.hof_size, similar=same_formula)
            front = tools.ParetoFront(similar=same_formula) if self.multi else None
            logbook = tools.Logbook()
            pop = self.population(cfg.population)
            t0 = time.perf_counter()
            counts = self.evaluate(pop)
            self._update(hof, front, pop)
            self._record(logbook, 0, pop, hof, counts, t0)
            self._save(0, pop, hof, front, logbook)
            start = 1
        else:
            pop, hof, logbook, start = state["population"], state["hof"], state["logbook"], state["gen"] + 1
            front = state.get("front")
        gens = tqdm(range(start, cfg.generations + 1), desc="generations", disable=not self.progress,
                    initial=start - 1, total=cfg.generations)
        for gen in gens:
            t0 = time.perf_counter()
            if cfg.mode == "evolution" and self.multi:  # mu + lambda
                offspring = self._vary(self.toolbox.select(pop, len(pop)))
                counts = self.evaluate([ind for ind in offspring if not ind.fitness.valid])
                pop = self.toolbox.survive(pop + offspring, cfg.population)
            elif cfg.mode == "evolution":
                elites = [self.toolbox.clone(e) for e in tools.selBest(pop, cfg.elitism)]
                offspring = self.toolbox.select(pop, len(pop) - cfg.elitism)
                offspring = self._vary(offspring)
                counts = self.evaluate([ind for ind in offspring if not ind.fitness.valid])
                pop = elites + offspring
            else:
                pop = self.population(cfg.population)
                counts = self.evaluate(pop)
            self._update(hof, front, pop)
            self._record(logbook, gen, pop, hof, counts, t0)
            gens.set_postfix(best=f"{hof[0].fitness.values[0]:.4g}", evals=self.evaluations)
            self._save(gen, pop, hof, front, logbook)
        return SearchResult(self.rows(hof), logbook, self.cache, self.evaluations, self.run_dir,
                            best=hof[0] if len(hof) else None,
                            pareto_front=self.pareto_rows(front) if front is not None else None)

    @staticmethod
    def _update(hof, front, pop) -> None:
        hof.update(pop)
        if front is not None:  # valid formulas only: an all-invalid generation leaves the front empty
            front.update([ind for ind in pop if ind.fitness.values[0] != WORST])

    def _record(self, logbook, gen, pop, hof, counts, t0):
        stats = tools.Statistics(lambda ind: ind.fitness.values[0])
        stats.register("min", np.min)
        stats.register("median", np.median)
        logbook.record(
            gen=gen, **counts, total_evals=self.evaluations, **stats.compile(pop),
            best=float(hof[0].fitness.values[0]) if len(hof) else WORST,
            hit_rate=round(self.cache.hit_rate, 4),
            seconds=round(time.perf_counter() - t0, 3),
        )

    # --- results and checkpoints ---------------------------------------------------------------
    def rows(self, individuals) -> list[dict]:
        """Individuals (the hall of fame, a Pareto front) as JSON-able rows, ranked in the given order:
        rank, fitness, tree, simplified formula, size, output."""
        rows = []
        for rank, ind in enumerate(individuals, 1):
            rows.append({"rank": rank, "fitness": ind.fitness.values[0], "tree": str(ind),
                         **self._formula(ind), "size": len(ind), "height": ind.height, "output": ind.output})
        return rows

    def pareto_rows(self, front) -> list[dict]:
        """The Pareto front as rows ranked by size, smallest formula first (so fitness falls down the table)."""
        return self.rows(sorted(front, key=len))

    def _formula(self, ind) -> dict:
        if ind.key not in self._formulas:
            if hasattr(self.problem.pset, "records"):
                from primitives.symbolic import Formula
                f = Formula.of(ind, self.problem.pset)
                self._formulas[ind.key] = {"formula": f.text, "latex": f.latex}
            else:
                self._formulas[ind.key] = {"formula": str(ind), "latex": str(ind)}
        return self._formulas[ind.key]

    def _save(self, gen, pop, hof, front, logbook):
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {"gen": gen, "population": pop, "hof": hof, "front": front, "logbook": logbook, "cache": self.cache,
                 "evaluations": self.evaluations, "rng": checkpoint.rng_state(), "config": self.config.to_dict()}
        if hasattr(self.problem.fitness, "state_dict"):
            state["fitness_state"] = self.problem.fitness.state_dict()
        checkpoint.save(self.run_dir / "checkpoint.pkl", state)
        checkpoint.write_atomic(self.run_dir / "hall_of_fame.json",
                                json.dumps(self.rows(hof), indent=1, default=float).encode())
        if front is not None:
            checkpoint.write_atomic(self.run_dir / "pareto_front.json",
                                    json.dumps(self.pareto_rows(front), indent=1, default=float).encode())
        with open(self.run_dir / ".logbook.csv.tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(logbook[0].keys()))
            writer.writeheader()
            writer.writerows(logbook)
        Path(self.run_dir / ".logbook.csv.tmp").replace(self.run_dir / "logbook.csv")

    def _load(self) -> dict | None:
        path = self.run_dir / "checkpoint.pkl" if self.run_dir else None
        if path is None or not path.exists():
            return None
        state = checkpoint.load(path)
        saved = {**SearchConfig().to_dict(), **state["config"]}  # settings added since: their defaults
        now = self.config.to_dict()
        saved.pop("generations"), now.pop("generations")
        if saved != now:
            diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
            raise ValueError(f"cannot resume: settings differ from the checkpoint's {diff}")
        self.cache = state["cache"]
        self.evaluations = state["evaluations"]
        if "fitness_state" in state and hasattr(self.problem.fitness, "load_state_dict"):
            self.problem.fitness.load_state_dict(state["fitness_state"])
        checkpoint.set_rng_state(state["rng"])
        return state
