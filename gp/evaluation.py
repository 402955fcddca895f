"""Cached fitness evaluation: a candidate whose exact text, or whose output (e.g. the rounded per-layer
allocation), was already evaluated is not evaluated again; distinct outputs of a batch go through the
pluggable ``map`` (the builtin, or Ray workers) in one call."""
from __future__ import annotations

import functools
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
        return {"by_text": self.by_text, "by_output": [[list(k), v] for k, v in self.by_output.items()],
                "text_hits": self.text_hits, "output_hits": self.output_hits, "misses": self.misses}

    @classmethod
    def from_json(cls, data: dict) -> "FitnessCache":
        return cls({str(k): float(v) for k, v in data["by_text"].items()},
                   {as_tuple(k): float(v) for k, v in data["by_output"]},
                   int(data["text_hits"]), int(data["output_hits"]), int(data["misses"]))


def evaluate(individuals: list, problem: Problem, cache: FitnessCache, set_fitness: Callable[[Any, float], None],
             map_fn: Callable = map, use_cache: bool = True, progress: bool = False,
             windows: int | None = None) -> dict[str, int]:
    """Give every individual a fitness (``set_fitness``), through the cache where possible; sets each
    individual's ``key`` and ``output`` (JSON data) attributes; returns counts.

    ``windows``: score on the first ``windows`` validation windows only (``problem.fitness(output,
    windows=n)``, a cheaper, noisier estimate for multi-step selection); the value goes to the
    individual's ``partial`` attribute, not to its fitness (so never into a hall of fame)."""
    if windows is not None:
        set_fitness = functools.partial(setattr_value, "partial")
    fitness = problem.fitness if windows is None else functools.partial(problem.fitness, windows=windows)
    tag = "" if windows is None else f"@{windows}"
    jobs: list[Any] = []
    job_of: dict[Hashable, int] = {}
    waiting: list[tuple[Any, int, str, Hashable]] = []
    counts = {"evals": 0, "partial_evals": 0, "text_hits": 0, "output_hits": 0, "invalid": 0}
    for ind in individuals:
        ind.key = problem.key(ind)
        ind.output = None
        cached = cache.text(ind.key + tag) if use_cache else None
        output = problem.decode(ind) if cached is None or cached != WORST else None  # decoding is cheap
        if cached is not None:
            set_fitness(ind, cached)
            ind.output = None if output is None else problem.describe(output)
            counts["text_hits"] += 1
            continue
        if output is None:
            set_fitness(ind, WORST)
            counts["invalid"] += 1
            cache.store(ind.key + tag, None, WORST)
            continue
        ind.output = problem.describe(output)
        okey = problem.output_key(output) if problem.output_key else None
        if okey is not None and windows is not None:
            okey = (okey, windows)
        if use_cache and okey is not None and (value := cache.output(okey)) is not None:
            set_fitness(ind, value)
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
    results = [float(v) for v in map_fn(fitness, outputs)]
    results = [v if math.isfinite(v) else WORST for v in results]
    for ind, j, tkey, okey in waiting:
        set_fitness(ind, results[j])
        cache.store(tkey, okey, results[j])
    counts["evals" if windows is None else "partial_evals"] = len(jobs)
    return counts


def as_tuple(value):
    """JSON lists back to the (nested) tuples the cache keys were."""
    return tuple(as_tuple(v) for v in value) if isinstance(value, list) else value


def setattr_value(name: str, ind, value: float) -> None:
    setattr(ind, name, value)

