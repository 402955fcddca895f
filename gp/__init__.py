"""Evolutionary search of typed GP trees on DEAP (knows nothing about LLMs).

- ``problem``: :class:`Problem` (decode, fitness, constraints, display) and the DEAP individual types
- ``config``: :class:`SearchConfig`, its defaults and checks (:class:`ConfigError`)
- ``generate``: typed tree generation that always completes
- ``operators``: crossover, mutations, constraints, ``vary`` (free functions)
- ``algorithms``: one generation of each strategy (elitist GA, NSGA-II, random search)
- ``evaluation``: the fitness cache and cached batch evaluation
- ``checkpoint``: JSON checkpoints, random states
- ``search``: the loop, hall of fame, logbook, resume (:class:`Search`)
"""
from .checkpoint import CheckpointError
from .config import ConfigError, SearchConfig
from .evaluation import FitnessCache
from .generate import generate, half_and_half, min_height
from .problem import WORST, Problem, rounded_key
from .search import Search, SearchResult, check_limits, resumable

__all__ = ["WORST", "CheckpointError", "ConfigError", "FitnessCache", "Problem", "Search", "SearchConfig",
           "SearchResult", "check_limits", "generate", "resumable", "half_and_half", "min_height", "rounded_key"]
