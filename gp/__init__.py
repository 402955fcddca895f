"""Evolutionary search of typed GP trees on DEAP (knows nothing about LLMs).

- ``problem``: :class:`Problem` (decode, fitness, constraints, display) and the DEAP individual types
- ``config``: :class:`SearchConfig`, its defaults and checks (:class:`ConfigError`)
- ``generate``: typed tree generation that always completes
- ``operators``: crossover, mutations, constraints, ``vary`` (free functions), the toolbox
- ``algorithms``: one generation of each strategy (elitist GA, multi-step selection, NSGA-II, random
  search) and constant tuning
- ``evaluation``: the fitness cache and cached batch evaluation (full, on a few windows, or from per-case losses)
- ``checkpoint``: JSON checkpoints, random states, the resume check, bounded reads of regular files
- ``schema``: what a checkpoint may hold, checked in full before a search is restored from it
- ``loop``: the generation loop both searches run (start or resume, generations, checkpoints)
- ``search``: the tree search: hall of fame, Pareto front, logbook, resume (:class:`Search`)
- ``direct``: a direct search over integer vectors (EvoPress-style, :class:`~gp.direct.DirectSearch`)
"""
from .checkpoint import CheckpointError, resumable
from .config import ConfigError, SearchConfig
from .evaluation import FitnessCache
from .generate import generate, half_and_half, min_height
from .operators import check_limits
from .problem import WORST, Problem, rounded_key
from .search import Search, SearchResult

__all__ = ["WORST", "CheckpointError", "ConfigError", "FitnessCache", "Problem", "Search", "SearchConfig",
           "SearchResult", "check_limits", "generate", "resumable", "half_and_half", "min_height", "rounded_key"]
