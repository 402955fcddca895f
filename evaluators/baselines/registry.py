"""The registry of baselines and the one tuner for those with a grid.

Every entry is called as ``BASELINES[name](blocks, target, lo=MIN_SPARSITY, hi=MAX_SPARSITY, **params)``; ``params``
override its ``defaults``. A ``*-tuned`` entry picks its parameters on the validation perplexity and so
needs ``fitness=`` (or call :func:`tune`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY

from evaluators.pruning.blockscores import BlockScores
from evaluators.errors import UserError
from evaluators.baselines.alpha import alphapruning
from evaluators.baselines.depth import DLP_ALPHA, atp, atp_grid, dlp
from evaluators.baselines.dsa import DSA_LAMBDA, dsa_code, dsa_paper
from evaluators.baselines.er import er, er_plus
from evaluators.baselines.owl import OWL_GRID, OWL_LAMBDA, OWL_M, OWL_NM_DEFAULTS, owl, owl_nm, owl_prepare
from evaluators.baselines.simple import global_threshold, uniform

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
    # what the rest of the tool reads about it (dsa/run/allocations.py, the CLI's help, --seed-baselines):
    wanda_metric: bool = False  # reads Wanda's metric whatever the pruner (so needs calibration data)
    search: int | None = None  # its place among the baselines every search scores at its start (None: not one)
    seeds: tuple[str, ...] = ()  # itself as formulas of the GP grammar, ``{param}`` filled from ``defaults``
    seed_rank: int = 0  # the seeds' place in the initial population (as the search has always placed them)
    compared: bool = True  # in dsa compare's default list (not: atp, which needs its β; owl-nm, N:M targets only)

    def seed_formulas(self) -> tuple[str, ...]:
        """:attr:`seeds` with this baseline's default parameters filled in (``{lam}`` → ``0.08``)."""
        return tuple(text.format(**self.defaults) for text in self.seeds)

    def __call__(self, blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY, *,
                 fitness: Fitness | None = None, **params) -> list[float]:
        if self.tuned:
            if fitness is None:
                raise UserError(f"{self.name} chooses its parameters by validation perplexity: it needs a fitness "
                                f"(evaluators.baselines.tune)")
            return tune(self.name, blocks, target, fitness, lo=lo, hi=hi).sparsities
        return self.fn(blocks, target, lo, hi, **{**self.defaults, **params})

    def candidates(self, blocks: BlockScores, target: float, grid: Sequence[dict] | None = None,
                   lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY) -> list[tuple[dict, list[float]]]:
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
         *, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY) -> TuneResult:
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


# Seeds (``dsa`` gives *more important* layers *lower* sparsity, so a baseline that prunes high-statistic
# layers harder enters inverted; S is the active pruner's scores, where the baselines read Wanda's metric).
# r_outlier's M is OWL's (primitives.reduction.OWL_M); λ is the baseline's own default.
OWL_SEEDS = ("dsa(r_outlier(S), {lam})",)  # more outliers → less pruned
DSA_SEEDS = ("dsa(t_reciprocal(t_asin(t_atan(r_var(p_abslog(S))))), {lam})",  # DSA's released graph and direction
             "dsa(t_asin(t_atan(r_var(p_abslog(S)))), {lam})")  # the same graph, OWL's direction
DLP_SEEDS = ("dsa(t_reciprocal(r_mean(S)), {alpha})",)  # larger mean score → more pruned
# ATP has no default β: a linear ramp, deeper → more pruned, with λ 0.1 as a typical β·(L−1)/2 (a depth-only
# tree enters with a zero-weighted reduction: the search's space holds only trees that read the scores)
ATP_SEEDS = ("dsa(sub(mul(r_mean(S), 0.0), d), 0.1)",)

BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("uniform", uniform, search=0),
    Baseline("global", global_threshold),
    Baseline("er", er),
    Baseline("er-plus", er_plus),
    Baseline("alphapruning", alphapruning, {"epsilon": None, "fix_fingers": "xmin_peak"}),  # ε None: per pruner
    Baseline("owl", owl, OWL_DEFAULTS, _owl_grid, owl_prepare, wanda_metric=True, search=1, seeds=OWL_SEEDS),
    Baseline("owl-tuned", owl, OWL_DEFAULTS, _owl_grid, owl_prepare, tuned=True, wanda_metric=True),
    Baseline("owl-nm", owl_nm, OWL_NM_DEFAULTS, wanda_metric=True, compared=False),  # OWL's own N:M rule (its README's 5:8 run)
    Baseline("dsa-code", dsa_code, {"lam": DSA_LAMBDA}, wanda_metric=True, search=3, seeds=DSA_SEEDS, seed_rank=1),
    Baseline("dsa-paper", dsa_paper, {"lam": DSA_LAMBDA}, wanda_metric=True),
    Baseline("atp", atp, {"beta": None}, atp_grid, seeds=ATP_SEEDS, seed_rank=3, compared=False),  # β None: required (no default)
    # atp-tuned (its β grid, ~10 evaluations) is the strongest simple yardstick a search starts with
    Baseline("atp-tuned", atp, {"beta": None}, atp_grid, tuned=True, search=2),
    Baseline("dlp", dlp, {"alpha": DLP_ALPHA}, wanda_metric=True, search=4, seeds=DLP_SEEDS, seed_rank=2),
)}


def search_baselines() -> tuple[str, ...]:
    """The baselines every search scores at its start, in their :attr:`Baseline.search` order."""
    ranked = sorted((b for b in BASELINES.values() if b.search is not None), key=lambda b: b.search)
    return tuple(b.name for b in ranked)


def baseline_seeds() -> tuple[str, ...]:
    """Every baseline's seed formulas (``--seed-baselines``), in :attr:`Baseline.seed_rank` order."""
    ranked = sorted((b for b in BASELINES.values() if b.seeds), key=lambda b: b.seed_rank)
    return tuple(text for b in ranked for text in b.seed_formulas())
