"""Evolutionary search of typed GP trees on DEAP (knows nothing about LLMs).

- ``problem``: :class:`Problem` (decode, fitness, constraints, display) and the DEAP individual types
- ``config``: :class:`SearchConfig` and :class:`~gp.config.DirectConfig`, their defaults and checks
  (:class:`ConfigError`)
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

The names below load their module on first use (PEP 562), so that ``config`` imports without torch or
SymPy: the command line's parser reads it. ``generate`` loads here: the function's name is also its
module's, which importing the module would bind in its place.
"""
import importlib

from .generate import generate, half_and_half, min_height  # noqa: F401 (exported)

# exported name → the module of this package that defines it
_HOMES = {"CheckpointError": "checkpoint", "resumable": "checkpoint", "ConfigError": "config", "SearchConfig": "config",
          "FitnessCache": "evaluation", "check_limits": "operators", "WORST": "problem", "Problem": "problem",
          "rounded_key": "problem", "Search": "search", "SearchResult": "search"}

__all__ = sorted([*_HOMES, "generate", "half_and_half", "min_height"])


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    try:  # a module of this package not imported yet (``gp.checkpoint`` after ``import gp``)
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
