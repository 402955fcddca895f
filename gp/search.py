"""The search loop: initial population, one generation of the configured strategy at a time
(:mod:`gp.algorithms`), a hall of fame of distinct candidates, a logbook, and a JSON checkpoint every
generation from which a killed run resumes to the same result (:mod:`gp.checkpoint`).

With ``objectives=("fitness", "size")`` the strategy is NSGA-II and a ``tools.ParetoFront`` of
candidates trading fitness against tree size is kept too.

Against overfitting (each a :class:`~gp.config.SearchConfig` field, off by default): lexicase selection
and resampled windows score from the problem's per-case losses (:class:`~gp.evaluation.Cases`). With
``resample_windows`` every generation draws its cases from the pool, seeded by (seed, generation) alone
(so the GP's own random stream is untouched, and a resumed run draws what the uninterrupted one drew;
the draws are recorded in the checkpoint); the cache keys on (candidate, cases), and the individuals a
generation carries over (elites, unchanged children) are re-scored on its cases, so that selection
always compares candidates on the same cases. A fitness is then the pool's mean estimated from the
generation's cases, paired with the problem's reference output (scored once on the whole pool: one
evaluation), which keeps the hall of fame comparable across generations (an entry keeps the estimate
it entered with; re-scoring survivors costs evaluations, counted as any other). ``dedup`` re-mutates a
child whose output repeats one scored before; ``restart_after`` replaces all but the elites with random
trees once the best has not improved for that many generations (the logbook's ``restart`` column marks
those generations).
"""
from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from deap import creator, gp, tools

from primitives.parse import parse_tree

from . import checkpoint, schema
from .algorithms import restart, stalled, strategy, tune_constants
from .config import ConfigError, SearchConfig
from .evaluation import Cases, FitnessCache, evaluate
from .loop import GenerationLoop
from .operators import toolbox_for
from .problem import WORST, Problem

@dataclass
class SearchResult:
    hall_of_fame: list[dict]
    logbook: tools.Logbook
    cache: FitnessCache
    evaluations: int
    run_dir: Path | None = None
    best: Any = field(default=None, repr=False)
    pareto_front: list[dict] | None = None  # multi-objective runs: the non-dominated candidates, by size


class Search(GenerationLoop):
    """``Search(problem, config, run_dir).run(resume=False)`` → :class:`SearchResult` (the loop:
    :class:`~gp.loop.GenerationLoop`).

    ``map_fn`` evaluates a batch of outputs (the builtin ``map``, or Ray workers); ``identity``: what
    the run is about (task, model, data …), saved in the checkpoint and checked on resume."""

    def __init__(self, problem: Problem, config: SearchConfig | None = None, run_dir: str | Path | None = None,
                 map_fn: Callable = map, progress: bool = False, identity: dict | None = None):
        self.problem = problem
        self.config = config or SearchConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.map = map_fn
        self.progress = progress
        self.identity = identity or {}
        self.cache = FitnessCache()
        self.evaluations = 0
        self.partial_evaluations = 0
        self._displays: dict[str, dict] = {}
        self.multi = len(self.config.objectives) > 1
        self.individual = creator.IndividualMulti if self.multi else creator.Individual
        self.toolbox = toolbox_for(problem, self.config, self.individual)
        self.toolbox.individual()  # fail now (ConfigError) when the limits admit no tree
        cfg = self.config
        self.by_cases = cfg.selection == "lexicase" or cfg.resample_windows > 0
        if cfg.dedup:
            self.toolbox.register("identities", self._identities)
        self.remember = cfg.dedup or cfg.resample_windows > 0  # the text cache keys on the cases when resampled
        self.reference: tuple[float, ...] | None = None  # the reference output's losses on every case
        self.drawn: list[tuple[int, ...]] = []  # resampled: each generation's cases

    def run(self, resume: bool = False) -> SearchResult:
        """:meth:`gp.loop.GenerationLoop.run`, once the problem is checked to have what the settings read
        (ConfigError): per-case losses and an output key for lexicase selection and resampled cases, enough
        cases to resample from, an output key for dedup. (A search built only to check a checkpoint's trees
        needs none of them.)"""
        cfg, problem = self.config, self.problem
        if self.by_cases and (problem.cases is None or problem.output_key is None):
            raise ConfigError("lexicase selection and resampled windows need a problem with per-case losses "
                              "(validation windows) and an output key")
        if cfg.resample_windows and not cfg.resample_windows < problem.n_cases:
            raise ConfigError(f"resample_windows ({cfg.resample_windows}) draws from the problem's "
                              f"{problem.n_cases} cases: it must be fewer")
        if cfg.dedup and problem.output_key is None:
            raise ConfigError("dedup tells repeated outputs by the problem's output key, and this problem has none")
        return super().run(resume)

    def new_individual(self) -> gp.PrimitiveTree:
        return self.toolbox.individual()

    def population(self, n: int) -> list:
        return self.toolbox.population(n)

    # --- evaluation ---------------------------------------------------------------------------
    def _set_fitness(self, ind, value: float) -> None:
        """``(value,)``, or with two objectives ``(value, tree size)``; an invalid candidate is the worst
        in both, so that a tiny invalid tree never sits on the Pareto front."""
        if self.multi:
            ind.fitness.values = (value, len(ind)) if value != WORST else (WORST, WORST)
        else:
            ind.fitness.values = (value,)

    def evaluate(self, individuals: list, windows: int | None = None) -> dict[str, int]:
        """Give every individual a fitness (with ``windows``: a partial score on that many validation
        windows), through the cache where possible; returns counts."""
        counts = evaluate(individuals, self.problem, self.cache, self._set_fitness, self.map,
                          use_cache=self.config.cache, progress=self.progress, windows=windows,
                          cases=self.cases() if self.by_cases else None, remember=self.remember and windows is None)
        if windows is None and self.drawn:
            for ind in individuals:
                ind.windows = self.drawn[-1]
        self.evaluations += counts["evals"]
        self.partial_evaluations += counts["partial_evals"]
        return counts

    def cases(self) -> Cases:
        """How full scores come from the problem's per-case losses now: on this generation's cases where
        they are resampled (paired with the reference's losses), else on all of them."""
        windows = self.drawn[-1] if self.drawn else None
        return Cases(functools.partial(self.problem.cases, windows=windows), self.problem.link, windows,
                     self.reference if windows is not None else None)

    def draw(self, gen: int) -> tuple[int, ...]:
        """Generation ``gen``'s cases: ``resample_windows`` of the pool, seeded by the run's seed and ``gen``."""
        rng = random.Random(f"cases {self.config.seed} {gen}")
        return tuple(sorted(rng.sample(range(self.problem.n_cases), self.config.resample_windows)))

    def score_reference(self) -> int:
        """The reference output's losses on every case (what a subset's estimate is paired with); returns
        the evaluations spent (1, or 0 without a reference)."""
        if self.problem.reference is None:
            return 0
        losses, = self.map(functools.partial(self.problem.cases, windows=None), [self.problem.reference])
        self.reference = tuple(float(v) for v in losses)
        self.evaluations += 1
        return 1

    def rescore(self, pop: list) -> dict[str, int]:
        """Resampled cases: the individuals scored on an earlier generation's cases (elites, children left
        unchanged), scored on this generation's (the cache keys on them)."""
        return self.evaluate([ind for ind in pop if getattr(ind, "windows", None) != self.drawn[-1]])

    def _identities(self, ind) -> tuple:
        """dedup: what makes a child a repeat: its text, and the key of its output where it decodes to one."""
        output = self.problem.decode(ind)
        return (str(ind),) if output is None else (str(ind), self.problem.output_key(output))

    def seeded_population(self) -> list:
        """The initial population: the configured seed trees first, then random ones."""
        seeds = [self.problem.parse(text, self.individual) for text in self.config.seeds[:self.config.population]]
        return seeds + self.population(self.config.population - len(seeds))

    def _known(self, key) -> bool:
        return key in self.cache.by_text or key in self.cache.seen

    # --- the loop (gp.loop.GenerationLoop.run): state = (population, hall of fame, front, logbook) ---------
    def start(self, t0: float):
        hof = tools.HallOfFame(self.config.hof_size, similar=self._same)
        front = tools.ParetoFront(similar=self._same) if self.multi else None
        logbook = tools.Logbook()
        pop = self.seeded_population()
        spent = 0
        if self.config.resample_windows:
            spent = self.score_reference()
            self.drawn.append(self.draw(0))
        counts = self.evaluate(pop)
        counts["evals"] += spent
        self._update(hof, front, pop)
        self._record(logbook, 0, pop, hof, counts, t0)
        return pop, hof, front, logbook

    def generation(self, gen: int, state, t0: float):
        cfg = self.config
        pop, hof, front, logbook = state
        known = self._known if cfg.cache else None
        if cfg.resample_windows:
            self.drawn.append(self.draw(gen))
        restarting = bool(cfg.restart_after) and stalled(logbook) >= cfg.restart_after
        step = restart if restarting else strategy(cfg)
        pop, counts = step(pop, self.toolbox, cfg, self.evaluate, known)
        if cfg.resample_windows:
            counts = added(counts, self.rescore(pop))
        if cfg.tune_constants and cfg.mode == "evolution" and not self.multi:
            counts = added(counts, tune_constants(pop, self.toolbox, cfg.tune_constants, self.evaluate))
        self._update(hof, front, pop)
        self._record(logbook, gen, pop, hof, counts, t0, restarting)
        return pop, hof, front, logbook

    def best(self, state) -> float:
        hof = state[1]
        return float(hof[0].fitness.values[0]) if len(hof) else WORST

    def result(self, state) -> SearchResult:
        _, hof, front, logbook = state
        return SearchResult(self.rows(hof), logbook, self.cache, self.evaluations, self.run_dir,
                            best=hof[0] if len(hof) else None,
                            pareto_front=self.pareto_rows(front) if front is not None else None)

    def _same(self, a, b) -> bool:
        """Hall-of-fame duplicates: the same output (e.g. the same rounded allocation), else the same text."""
        key = self.problem.output_key
        if key is not None and a.output is not None and b.output is not None:
            return key(a.output) == key(b.output)
        return a.key == b.key

    @staticmethod
    def _update(hof, front, pop) -> None:
        hof.update(pop)
        if front is not None:  # valid candidates only: an all-invalid generation leaves the front empty
            front.update([ind for ind in pop if ind.fitness.values[0] != WORST])

    def _record(self, logbook, gen, pop, hof, counts, t0, restarted: bool = False):
        stats = tools.Statistics(lambda ind: ind.fitness.values[0])
        stats.register("min", np.min)
        stats.register("median", np.median)
        counts = {k: counts.get(k, 0) for k in ("evals", "partial_evals", "text_hits", "output_hits", "invalid")}
        logbook.record(
            gen=gen, **counts, total_evals=self.evaluations, total_partial_evals=self.partial_evaluations,
            **stats.compile(pop),
            best=float(hof[0].fitness.values[0]) if len(hof) else WORST,
            hit_rate=round(self.cache.hit_rate, 4),
            seconds=round(time.perf_counter() - t0, 3),
            **({"restart": int(restarted)} if self.config.restart_after else {}),
        )

    # --- results -------------------------------------------------------------------------------
    def rows(self, individuals) -> list[dict]:
        """Individuals (the hall of fame, a Pareto front) as JSON-able rows, ranked in the given order:
        rank, fitness, tree, displayed formula, size, output."""
        rows = []
        for rank, ind in enumerate(individuals, 1):
            if ind.output is None and ind.fitness.values[0] != WORST:  # answered from the cache by its text
                output = self.problem.decode(ind)
                ind.output = None if output is None else self.problem.describe(output)
            if ind.key not in self._displays:
                self._displays[ind.key] = self.problem.display(ind)
            rows.append({"rank": rank, "fitness": ind.fitness.values[0], "tree": ind.key, **self._displays[ind.key],
                         "size": len(ind), "height": ind.height, "output": ind.output})
        return rows

    def pareto_rows(self, front) -> list[dict]:
        """The Pareto front as rows ranked by size, smallest first (so fitness falls down the table)."""
        return self.rows(sorted(front, key=len))

    # --- checkpoints ----------------------------------------------------------------------------
    def _individuals(self, individuals) -> list[dict]:
        """Individuals as checkpoint rows (with their per-case losses where the search scores from cases)."""
        return [{"tree": ind.key if hasattr(ind, "key") else str(ind), "output": getattr(ind, "output", None),
                 "fitness": list(ind.fitness.values) if ind.fitness.valid else None,
                 **({"cases": getattr(ind, "cases", None)} if self.by_cases else {})} for ind in individuals]

    def _restore(self, rows: list[dict]) -> list:
        out = []
        for row in rows:
            ind = self.problem.parse(row["tree"], self.individual)
            ind.key, ind.output = self.problem.key(ind), row["output"]
            if row["fitness"] is not None:
                ind.fitness.values = tuple(row["fitness"])
            if self.by_cases:
                ind.cases = row.get("cases")
            if self.drawn:  # a checkpoint's population is scored on its generation's cases
                ind.windows = self.drawn[-1]
            out.append(ind)
        return out

    def save(self, gen: int, state) -> None:
        pop, hof, front, logbook = state
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {"gen": gen, "population": self._individuals(pop), "hof": self._individuals(hof),
                 "front": self._individuals(front) if front is not None else None, "logbook": list(logbook),
                 "cache": self.cache.to_json(), "evaluations": self.evaluations,
                 "partial_evaluations": self.partial_evaluations, "rng": checkpoint.rng_state(),
                 "config": self.config.to_dict(), "identity": self.identity,
                 **({"reference": self.reference, "windows": self.drawn} if self.config.resample_windows else {})}
        checkpoint.save(self.run_dir, state)
        checkpoint.write_tables(self.run_dir, self.rows(hof), list(logbook),
                                self.pareto_rows(front) if front is not None else None)

    def limits(self) -> tuple[int, int]:
        """The run's tree limits (height, size): max_height and max_size, or a seed tree's where larger
        (seeds enter the population as they are written)."""
        seeds = [parse_tree(text, self.problem.pset) for text in self.config.seeds]
        return (max([self.config.max_height, *(t.height for t in seeds)]),
                max([self.config.max_size, *(len(t) for t in seeds)]))

    def checkpoint_state(self) -> dict | None:
        """The run folder's checkpoint as JSON data, checked in full against this search (settings and
        identity: :func:`gp.checkpoint.resumable`; everything else: :func:`gp.schema.check_search`, trees
        within :meth:`limits`); None when there is none. Reads only: call it before writing anything."""
        state = checkpoint.resumable(self.run_dir, self.config, self.identity) if self.run_dir else None
        if state is not None:
            try:
                height, size = self.limits()
            except ValueError as exc:  # the checkpoint's settings (equal to this run's) hold a seed tree
                raise checkpoint.CheckpointError(f"{self.run_dir / checkpoint.FILE} is damaged: a seed tree of its "
                                                 f"settings does not parse ({exc})") from None
            schema.check_search(self.run_dir / checkpoint.FILE, state, self.config,
                                lambda text: parse_tree(text, self.problem.pset, height, size), self.problem.n_cases)
        return state

    def load(self):
        """((population, hof, front, logbook), next generation) from the run folder's checkpoint, with the
        cache, evaluation count and random states restored; None when there is no checkpoint."""
        state = self.checkpoint_state()
        if state is None:
            return None
        try:
            if self.config.resample_windows:
                self.reference = None if state.get("reference") is None else tuple(state["reference"])
                self.drawn = [tuple(w) for w in state["windows"]]
            pop = self._restore(state["population"])
            hof = tools.HallOfFame(self.config.hof_size, similar=self._same)
            for ind in self._restore(state["hof"]):
                hof.insert(ind)
            front = None
            if self.multi:
                front = tools.ParetoFront(similar=self._same)
                for ind in self._restore(state["front"] or []):
                    front.insert(ind)
            logbook = tools.Logbook()
            for row in state["logbook"]:
                logbook.record(**row)
            self.cache = FitnessCache.from_json(state["cache"])
            self.evaluations = int(state["evaluations"])
            self.partial_evaluations = int(state.get("partial_evaluations", 0))
            checkpoint.set_rng_state(state["rng"])
            return (pop, hof, front, logbook), int(state["gen"]) + 1
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise checkpoint.CheckpointError(f"{self.run_dir}/{checkpoint.FILE} is damaged "
                                             f"({type(exc).__name__}: {exc})") from None


def added(a: dict, b: dict) -> dict:
    """Two generations' counts, summed."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}
