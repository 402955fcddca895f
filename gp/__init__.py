"""Evolutionary search of typed GP trees on DEAP (knows nothing about LLMs)."""
from .cache import FitnessCache
from .config import SearchConfig
from .engine import WORST, Problem, Search, SearchResult, rounded_key
from .generate import generate, half_and_half, min_height

__all__ = ["WORST", "FitnessCache", "Problem", "Search", "SearchConfig", "SearchResult", "generate",
           "half_and_half", "min_height", "rounded_key"]
