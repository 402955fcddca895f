"""A direct search over integer vectors, after EvoPress (Sieberling et al., ICML 2025), in the engine's
conventions and loop (:class:`gp.loop.GenerationLoop`): hall of fame, logbook, JSON checkpoints, resume.

An individual is one integer *level* per coordinate, within per-coordinate bounds, starting from all
zeros; the space (:class:`IntegerSpace`) says what a vector stands for (``decode``). The LLM task's space
is :class:`dsa.run.levels.LevelSpace`: a level is a per-layer sparsity step around a base allocation, and
levels summing to 0 keep the target mean exactly.

Each generation (EvoPress's ``evo_prune_search.py``): ``offspring`` distinct children of the parent by
level switches (1–3 switches, P = 5/9, 3/9, 1/9; each moves one coordinate down a level and one up),
then multi-step selection — all children scored on a few validation windows, the best ``survivors``
of each stage go on to more windows, the parent joins the last stage (elitism), and the last stage's
best becomes the parent. Stages score on the first ``windows`` validation windows (fixed, so values
are comparable across generations and cacheable); the last stage must use them all.
"""
from __future__ import annotations

import functools
import math
import random
import statistics
import time
from pathlib import Path
from typing import Callable, Protocol

import torch

from . import checkpoint, schema
from .config import DirectConfig
from .problem import WORST, rounded_key
from .loop import GenerationLoop
from .search import SearchResult


class IntegerSpace(Protocol):
    """What the direct search needs of its space: the vector length, each coordinate's bounds
    (``low[i] ≤ level[i] ≤ high[i]``, with 0 inside) and what a vector stands for (``decode``: a float
    tensor, cached by its rounded values and reported as the row's ``output``)."""

    low: list[int]
    high: list[int]

    def __len__(self) -> int: ...

    def decode(self, levels) -> torch.Tensor: ...


def switch_levels(levels: list[int], low: list[int], high: list[int]) -> list[int]:
    """EvoPress's mutation: 1–3 level switches (P = 5/9, 3/9, 1/9), each one coordinate down a level and one
    up within the bounds (Σ levels unchanged)."""
    child = list(levels)
    for _ in range(min(random.randint(1, 3), random.randint(1, 3))):
        down = [i for i in range(len(child)) if child[i] - 1 >= low[i]]
        up = [i for i in range(len(child)) if child[i] + 1 <= high[i]]
        if not down or not up:
            break
        d, u = random.choice(down), random.choice(up)
        child[d] -= 1
        child[u] += 1
    return child


def text(levels) -> str:
    return "levels(" + ", ".join(str(int(v)) for v in levels) + ")"


class DirectSearch(GenerationLoop):
    """``DirectSearch(space, fitness, config, run_dir).run(resume=False)`` → :class:`~gp.SearchResult`.

    ``fitness(decoded)`` scores on all ``all_windows`` validation windows, ``fitness(decoded,
    windows=n)`` on the first ``n``; ``map_fn`` evaluates a batch (the builtin, or Ray workers). The
    logbook counts evaluations and the windows they read (``windows_used``: the budget in tokens)."""

    def __init__(self, space: IntegerSpace, fitness: Callable, all_windows: int, config: DirectConfig | None = None,
                 run_dir: str | Path | None = None, map_fn: Callable = map, progress: bool = False,
                 identity: dict | None = None, describe: str = "direct (EvoPress levels)"):
        self.space, self.fitness, self.all_windows, self.config = space, fitness, all_windows, config or DirectConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.map, self.progress, self.identity, self.describe = map_fn, progress, identity or {}, describe
        self.cache: dict[tuple, float] = {}
        self.hits = self.evaluations = self.windows_used = 0

    # --- evaluation -------------------------------------------------------------------------------
    def score(self, candidates: list[list[int]], windows: int | None, counts: dict) -> list[float]:
        """Fitness of each candidate on the first ``windows`` validation windows (None: all), cached by
        (rounded allocation, windows); new allocations go through ``map`` in one batch."""
        keys = [(rounded_key(self.space.decode(c)), windows) for c in candidates]
        todo: dict[tuple, torch.Tensor] = {}
        for levels, key in zip(candidates, keys):
            if (self.config.cache and key in self.cache) or key in todo:
                self.hits += 1
            else:
                todo[key] = self.space.decode(levels)
        fn = self.fitness if windows is None else functools.partial(self.fitness, windows=windows)
        for key, value in zip(todo, self.map(fn, list(todo.values()))):
            value = float(value)
            self.cache[key] = value if math.isfinite(value) else WORST
        self.evaluations += len(todo)
        self.windows_used += len(todo) * (windows or self.all_windows)
        counts["evals"] += len(todo)
        return [self.cache[k] for k in keys]

    def step(self, parent: list[int], counts: dict) -> tuple[list[int], list[float]]:
        """One generation: children, multi-step selection, the parent in the last stage."""
        cfg, seen, children = self.config, {tuple(parent)}, []
        for _ in range(cfg.offspring * 20):
            if len(children) == cfg.offspring:
                break
            child = switch_levels(parent, self.space.low, self.space.high)
            if tuple(child) not in seen:
                seen.add(tuple(child))
                children.append(child)
        candidates, values = children, []
        for k, (windows, survivors) in enumerate(cfg.stages):
            if k == len(cfg.stages) - 1:
                candidates = candidates + [parent]
            scored = self.score(candidates, windows, counts)
            ranked = sorted(range(len(candidates)), key=scored.__getitem__)
            values = [scored[i] for i in ranked]
            candidates = [candidates[i] for i in ranked[:survivors]]
        return candidates[0], values

    # --- the loop (gp.loop.GenerationLoop.run): state = (parent, hall of fame, logbook) ------------------
    def start(self, t0: float):
        parent, hof, logbook, counts = [0] * len(self.space), {}, [], {"evals": 0}
        values = self.score([parent], None, counts)
        self._update(hof, [parent], values)
        self._record(logbook, 0, values, hof, counts, t0)
        return parent, hof, logbook

    def generation(self, gen: int, state, t0: float):
        _, hof, logbook = state
        counts = {"evals": 0}
        parent, last = self.step(state[0], counts)
        self._update(hof, [parent], last[:1])
        self._record(logbook, gen, last, hof, counts, t0)
        return parent, hof, logbook

    def best(self, state) -> float:
        hof = state[1]
        return min(hof.values()) if hof else WORST

    def result(self, state) -> SearchResult:
        rows = self.rows(state[1])
        return SearchResult(rows, state[2], None, self.evaluations, self.run_dir,
                            best=rows[0]["output"] if rows else None)

    def _update(self, hof: dict, levels: list[list[int]], values: list[float]) -> None:
        for lv, value in zip(levels, values):
            hof[tuple(lv)] = value
        for key in sorted(hof, key=hof.get)[self.config.hof_size:]:
            del hof[key]

    def _record(self, logbook: list, gen: int, values: list[float], hof: dict, counts: dict, t0: float) -> None:
        lookups = self.evaluations + self.hits
        logbook.append({"gen": gen, "evals": counts["evals"], "total_evals": self.evaluations,
                        "windows_used": self.windows_used, "min": min(values), "median": statistics.median(values),
                        "best": min(hof.values()) if hof else WORST,
                        "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0,
                        "seconds": round(time.perf_counter() - t0, 3)})

    def rows(self, hof: dict) -> list[dict]:
        """The hall of fame as the engine's rows (``tree``: the levels; ``output``: what they decode to)."""
        return [{"rank": rank, "fitness": value, "tree": text(levels), "formula": self.describe, "latex": self.describe,
                 "size": len(levels), "height": 0, "output": self.space.decode(levels).tolist()}
                for rank, (levels, value) in enumerate(sorted(hof.items(), key=lambda kv: kv[1]), 1)]

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self, gen: int, state) -> None:
        parent, hof, logbook = state
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.save(self.run_dir, {
            "gen": gen, "parent": parent, "hof": [[list(k), v] for k, v in hof.items()], "logbook": logbook,
            "cache": [[list(k[0]), k[1], v] for k, v in self.cache.items()], "hits": self.hits,
            "evaluations": self.evaluations, "windows_used": self.windows_used, "rng": checkpoint.rng_state(),
            "config": self.config.to_dict(), "identity": self.identity})
        checkpoint.write_tables(self.run_dir, self.rows(hof), logbook)

    def checkpoint_state(self) -> dict | None:
        """The run folder's checkpoint as JSON data, checked in full against this search (settings and
        identity: :func:`gp.checkpoint.resumable`; levels within this space: :func:`gp.schema.check_direct`);
        None when there is none. Reads only: call it before writing anything."""
        state = checkpoint.resumable(self.run_dir, self.config, self.identity) if self.run_dir else None
        if state is not None:
            schema.check_direct(self.run_dir / checkpoint.FILE, state, self.config, self.space)
        return state

    def load(self):
        state = self.checkpoint_state()
        if state is None:
            return None
        try:
            hof = {tuple(k): float(v) for k, v in state["hof"]}
            self.cache = {(tuple(k), w): float(v) for k, w, v in state["cache"]}
            self.hits, self.evaluations = int(state["hits"]), int(state["evaluations"])
            self.windows_used = int(state["windows_used"])
            checkpoint.set_rng_state(state["rng"])
            return (list(state["parent"]), hof, list(state["logbook"])), int(state["gen"]) + 1
        except (KeyError, TypeError, ValueError) as exc:
            raise checkpoint.CheckpointError(f"{self.run_dir}/{checkpoint.FILE} is damaged ({exc})") from None
