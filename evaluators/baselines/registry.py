"""The registry of baselines and the one tuner for those with a grid.

Every entry is called as ``BASELINES[name](blocks, target, lo=0.0, hi=0.99, **params)``; ``params``
override its ``defaults``. A ``*-tuned`` entry picks its parameters on the validation perplexity and so
needs ``fitness=`` (or call :func:`tune`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..blockscores import BlockScores
from ..errors import UserError
from .alpha import alphapruning
from .depth import DLP_ALPHA, atp, atp_grid, dlp
from .dsa import DSA_LAMBDA, dsa_code, dsa_paper
from .owl import OWL_GRID, OWL_LAMBDA, OWL_M, owl, owl_prepare
from .simple import global_threshold, uniform

Fitness = Callable[[list[float]], float]


@dataclass(frozen=True)
class Baseline:
    """An allocator with its default parameters and, for a tunable one, its grid ``grid(L, target)``.
    ``prepare(blocks, grid)``, where given, returns ``params → extra kwargs`` (statistics shared by
    grid points, computed once). ``tuned``: calling it runs :func:`tune` (needs ``fitness=``)."""

    name: str
    fn: Callable[..., list[float]]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    grid: Callable[[int, float], list[dict]] | None = None
    prepare: Callable[[BlockScores, list[dict]], Callable[[dict], dict]] | None = None
    tuned: bool = False

    def __call__(self, blocks: BlockScores, target: float, lo: float = 0.0, hi: float = 0.99, *,
                 fitness: Fitness | None = None, **params) -> list[float]:
        if self.tuned:
            if fitness is None:
                raise UserError(f"{self.name} chooses its parameters by validation perplexity: it needs a fitness "
                                f"(evaluators.baselines.tune)")
            return tune(self.name, blocks, target, fitness, lo=lo, hi=hi).sparsities
        return self.fn(blocks, target, lo, hi, **{**self.defaults, **params})

    def candidates(self, blocks: BlockScores, target: float, grid: Sequence[dict] | None = None,
                   lo: float = 0.0, hi: float = 0.99) -> list[tuple[dict, list[float]]]:
        """``(params, sparsities)`` at every grid point (default: :attr:`grid` for ``len(blocks)`` blocks
        at ``target``), in grid order; statistics shared by the grid are computed once (:attr:`prepare`)."""
        if self.grid is None and grid is None:
            raise UserError(f"{self.name!r} has no tuning grid")
        points = [dict(p) for p in (grid if grid is not None else self.grid(len(blocks), target))]
        if not points:
            raise UserError(f"{self.name}: empty tuning grid for {len(blocks)} blocks at sparsity {target}")
        extra = self.prepare(blocks, points) if self.prepare is not None else (lambda p: {})
        return [(p, self.fn(blocks, target, lo, hi, **{**self.defaults, **p, **extra(p)})) for p in points]


@dataclass
class TuneResult:
    """What :func:`tune` chose: ``params`` (the grid point), its ``sparsities`` and ``fitness``, and the
    whole ``table`` of ``(params, fitness)`` rows in grid order."""

    name: str
    params: dict
    sparsities: list[float]
    fitness: float
    table: list[tuple[dict, float]]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["table"] = [{"params": p, "fitness": f} for p, f in self.table]
        return out


def tune(name: str, blocks: BlockScores, target: float, fitness: Fitness, grid: Sequence[dict] | None = None,
         *, lo: float = 0.0, hi: float = 0.99) -> TuneResult:
    """Evaluate ``BASELINES[name]`` at every grid point (default: its grid for ``len(blocks)`` blocks at
    ``target``) with ``fitness(sparsities)`` — the *validation* perplexity, lower is better — and keep
    the lowest (ties and NaN: the first in grid order wins; a NaN never beats a number). The caller
    reports the chosen allocation's perplexity on the test split."""
    base = BASELINES.get(name)
    if base is None or base.grid is None:
        tunable = ", ".join(n for n, b in BASELINES.items() if b.grid is not None)
        raise UserError(f"{name!r} has no tuning grid: tunable baselines are {tunable}")
    table, best = [], None
    for params, sparsities in base.candidates(blocks, target, grid, lo, hi):
        value = float(fitness(sparsities))
        table.append((params, value))
        if best is None or value < best[2] or (math.isnan(best[2]) and not math.isnan(value)):
            best = (params, sparsities, value)
    return TuneResult(name, best[0], best[1], best[2], table)


OWL_DEFAULTS = {"m": OWL_M, "lam": OWL_LAMBDA}


def _owl_grid(n_blocks: int, target: float) -> list[dict]:
    return [dict(p) for p in OWL_GRID]


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("uniform", uniform),
    Baseline("global", global_threshold),
    Baseline("alphapruning", alphapruning, {"epsilon": None, "fix_fingers": "xmin_peak"}),  # ε None: per pruner
    Baseline("owl", owl, OWL_DEFAULTS, _owl_grid, owl_prepare),
    Baseline("owl-tuned", owl, OWL_DEFAULTS, _owl_grid, owl_prepare, tuned=True),
    Baseline("dsa-code", dsa_code, {"lam": DSA_LAMBDA}),
    Baseline("dsa-paper", dsa_paper, {"lam": DSA_LAMBDA}),
    Baseline("atp", atp, {"beta": None}, atp_grid),  # β None: required (ATP has no default)
    Baseline("atp-tuned", atp, {"beta": None}, atp_grid, tuned=True),
    Baseline("dlp", dlp, {"alpha": DLP_ALPHA}),
)}
