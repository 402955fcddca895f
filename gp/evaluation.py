"""Cached fitness evaluation: a candidate whose exact text, or whose output (e.g. the rounded per-layer
allocation), was already evaluated is not evaluated again; distinct outputs of a batch go through the
pluggable ``map`` (the builtin, or Ray workers) in one call. A search may score from per-case losses
instead (:class:`Cases`: lexicase selection, resampled windows); the cache then keys on the cases scored
and keeps each output's losses."""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from tqdm.auto import tqdm

from .problem import WORST, Problem


@dataclass
class FitnessCache:
    by_text: dict[str, float] = field(default_factory=dict)
    by_output: dict[Hashable, float] = field(default_factory=dict)
    text_hits: int = 0
    output_hits: int = 0
    misses: int = 0
    cases: dict[Hashable, list[float]] = field(default_factory=dict)  # per-case losses, by output key (Cases)
    seen: set = field(default_factory=set)  # texts and output keys scored in full, where a search asks (remember)

    def text(self, key: str) -> float | None:
        value = self.by_text.get(key)
        self.text_hits += value is not None
        return value

    def output(self, key: Hashable) -> float | None:
        value = self.by_output.get(key)
        self.output_hits += value is not None
        return value

    def store(self, text_key: str, output_key: Hashable | None, value: float) -> None:
        self.by_text[text_key] = value
        if output_key is not None:
            self.by_output[output_key] = value

    @property
    def lookups(self) -> int:
        return self.text_hits + self.output_hits + self.misses

    @property
    def hit_rate(self) -> float:
        return (self.text_hits + self.output_hits) / self.lookups if self.lookups else 0.0

    def to_json(self) -> dict:
        data = {"by_text": self.by_text, "by_output": [[as_list(k), v] for k, v in self.by_output.items()],
                "text_hits": self.text_hits, "output_hits": self.output_hits, "misses": self.misses}
        if self.cases:  # only where a search scores from cases: other checkpoints are as they were
            data["cases"] = [[as_list(k), v] for k, v in self.cases.items()]
        if self.seen:
            data["seen"] = sorted((as_list(k) for k in self.seen), key=json.dumps)  # a set: in a fixed order
        return data

    @classmethod
    def from_json(cls, data: dict) -> "FitnessCache":
        return cls({str(k): float(v) for k, v in data["by_text"].items()},
                   {as_tuple(k): float(v) for k, v in data["by_output"]},
                   int(data["text_hits"]), int(data["output_hits"]), int(data["misses"]),
                   {as_tuple(k): [float(x) for x in v] for k, v in data.get("cases", [])},
                   {as_tuple(k) for k in data.get("seen", [])})


@dataclass(frozen=True)
class Cases:
    """Full scores from per-case losses (:attr:`gp.Problem.cases`): each candidate's losses on ``windows``
    (case indices; None: every case), and its fitness ``link(mean loss)``. On a subset the mean is paired
    with ``reference``'s losses on every case: link(mean reference loss + mean over the subset of (loss −
    the reference's loss)), an estimate of the full mean that is comparable between subsets (the subset's
    easy or hard cases shift the reference too). ``losses``: what ``map`` calls on each output (a
    ``functools.partial`` of :attr:`gp.Problem.cases`: Ray workers read its keywords)."""

    losses: Callable[[Any], list[float]]
    link: Callable[[float], float]
    windows: tuple[int, ...] | None = None
    reference: tuple[float, ...] | None = None

    @property
    def tag(self) -> str:
        """What the cache keys append: the cases scored."""
        return "" if self.windows is None else "@" + ",".join(map(str, self.windows))

    def fitness(self, losses: list[float]) -> float:
        if self.windows is None or self.reference is None:
            mean = math.fsum(losses) / len(losses)
        else:
            mean = (math.fsum(self.reference) / len(self.reference)
                    + math.fsum(x - self.reference[w] for x, w in zip(losses, self.windows)) / len(losses))
        value = float(self.link(mean)) if math.isfinite(mean) else WORST
        return value if math.isfinite(value) else WORST


def evaluate(individuals: list, problem: Problem, cache: FitnessCache, set_fitness: Callable[[Any, float], None],
             map_fn: Callable = map, use_cache: bool = True, progress: bool = False,
             windows: int | None = None, cases: Cases | None = None, remember: bool = False) -> dict[str, int]:
    """Give every individual a fitness (``set_fitness``), through the cache where possible; sets each
    individual's ``key`` and ``output`` (JSON data) attributes; returns counts.

    ``windows``: score on the first ``windows`` validation windows only (``problem.fitness(output,
    windows=n)``, a cheaper, noisier estimate for multi-step selection); the value goes to the
    individual's ``partial`` attribute, not to its fitness (so never into a hall of fame).
    ``cases``: full scores from per-case losses (:class:`Cases`); each individual's ``cases`` attribute gets
    its losses (None where it is invalid). ``remember``: the texts and output keys scored in full go to
    ``cache.seen`` (what a search tells repeats by)."""
    if windows is not None:
        set_fitness = functools.partial(setattr_value, "partial")
        cases = None  # partial scores are plain fitness values
    fitness = problem.fitness if windows is None else functools.partial(problem.fitness, windows=windows)
    tag = "" if windows is None else f"@{windows}"
    if cases is not None:
        fitness, tag = cases.losses, cases.tag
    jobs: list[Any] = []
    job_of: dict[Hashable, int] = {}
    waiting: list[tuple[Any, int, str, Hashable]] = []
    counts = {"evals": 0, "partial_evals": 0, "text_hits": 0, "output_hits": 0, "invalid": 0}
    for ind in individuals:
        ind.key = problem.key(ind)
        ind.output = None
        if cases is not None:
            ind.cases = None
        cached = cache.text(ind.key + tag) if use_cache else None
        output = problem.decode(ind) if cached is None or cached != WORST else None  # decoding is cheap
        plain = problem.output_key(output) if problem.output_key and output is not None else None
        okey = plain
        if okey is not None and windows is not None:
            okey = (okey, windows)
        if okey is not None and cases is not None and cases.windows is not None:
            okey = (okey, cases.windows)
        if cached is not None:
            set_fitness(ind, cached)
            ind.output = None if output is None else problem.describe(output)
            if cases is not None and okey is not None:
                ind.cases = cache.cases.get(okey)
            counts["text_hits"] += 1
            continue
        if remember:
            cache.seen.update(k for k in (ind.key, plain) if k is not None)
        if output is None:
            set_fitness(ind, WORST)
            counts["invalid"] += 1
            cache.store(ind.key + tag, None, WORST)
            continue
        ind.output = problem.describe(output)
        if use_cache and okey is not None and (value := cache.output(okey)) is not None:
            set_fitness(ind, value)
            if cases is not None:
                ind.cases = cache.cases.get(okey)
            cache.store(ind.key + tag, None, value)
            counts["output_hits"] += 1
            continue
        if use_cache and okey is not None and okey in job_of:
            cache.output_hits += 1
            counts["output_hits"] += 1
            waiting.append((ind, job_of[okey], ind.key + tag, okey))
            continue
        cache.misses += 1
        if okey is not None:
            job_of[okey] = len(jobs)
        waiting.append((ind, len(jobs), ind.key + tag, okey))
        jobs.append(output)
    outputs = tqdm(jobs, desc="evaluating", leave=False, disable=not progress or not jobs)
    if cases is None:
        losses = [None] * len(jobs)
        results = [float(v) for v in map_fn(fitness, outputs)]
        results = [v if math.isfinite(v) else WORST for v in results]
    else:
        losses = [[float(x) for x in v] for v in map_fn(fitness, outputs)]
        results = [cases.fitness(v) for v in losses]
        losses = [v if r != WORST else None for v, r in zip(losses, results)]  # an invalid one has no cases
    for ind, j, tkey, okey in waiting:
        set_fitness(ind, results[j])
        cache.store(tkey, okey, results[j])
        if cases is not None:
            ind.cases = losses[j]
            if okey is not None and losses[j] is not None:
                cache.cases[okey] = losses[j]
    counts["evals" if windows is None else "partial_evals"] = len(jobs)
    return counts


def as_tuple(value):
    """JSON lists back to the (nested) tuples the cache keys were."""
    return tuple(as_tuple(v) for v in value) if isinstance(value, list) else value


def as_list(value):
    """A (nested) tuple cache key as JSON lists."""
    return [as_list(v) for v in value] if isinstance(value, tuple) else value


def setattr_value(name: str, ind, value: float) -> None:
    setattr(ind, name, value)

