"""The generation loop every search here runs (:class:`~gp.search.Search` over trees,
:class:`~gp.direct.DirectSearch` over integer vectors): start, or resume from the run folder's checkpoint;
one generation at a time until ``generations``, or until ``max_evaluations`` is reached; a checkpoint
after every generation; then the result.

A search supplies the parts that differ (:meth:`start`, :meth:`generation`, :meth:`save`, :meth:`load`,
:meth:`best`, :meth:`result`); its *state* is whatever those pass between them.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import checkpoint


class GenerationLoop:
    config: Any  # generations, seed, max_evaluations
    run_dir: Path | None
    progress: bool
    evaluations: int

    def run(self, resume: bool = False):
        """Run (or, with ``resume``, continue the run folder's checkpoint) to the end; returns :meth:`result`."""
        cfg = self.config
        loaded = self.load() if resume else None
        if loaded is None:
            checkpoint.seed_everything(cfg.seed)
            state, start = self.start(time.perf_counter()), 1
            self.save(0, state)
        else:
            state, start = loaded
            if start > cfg.generations:  # nothing left: the tables again, as the checkpoint has them (a kill
                self.save(start - 1, state)  # between a checkpoint and its tables leaves them behind)
        gens = tqdm(range(start, cfg.generations + 1), desc="generations", disable=not self.progress,
                    initial=start - 1, total=cfg.generations)
        for gen in gens:
            if cfg.max_evaluations is not None and self.evaluations >= cfg.max_evaluations:
                break
            state = self.generation(gen, state, time.perf_counter())
            gens.set_postfix(best=f"{self.best(state):.4g}", evals=self.evaluations)
            self.save(gen, state)
        return self.result(state)

    # --- what a search supplies ----------------------------------------------------------------------
    def start(self, t0: float):
        """The initial state, scored and recorded as generation 0 (``t0``: when it began)."""
        raise NotImplementedError

    def generation(self, gen: int, state, t0: float):
        """One generation from ``state``: vary, score, select, update and record; the new state."""
        raise NotImplementedError

    def save(self, gen: int, state) -> None:
        """The checkpoint and readable tables after generation ``gen`` (nothing without a run folder)."""
        raise NotImplementedError

    def load(self):
        """``(state, next generation)`` from the run folder's checkpoint, or None when there is none."""
        raise NotImplementedError

    def best(self, state) -> float:
        raise NotImplementedError

    def result(self, state):
        raise NotImplementedError
