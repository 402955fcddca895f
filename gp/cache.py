"""Fitness cache: a candidate whose canonical formula, or whose output (e.g. the rounded per-layer
allocation), was already evaluated is not evaluated again."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable


@dataclass
class FitnessCache:
    by_formula: dict[Hashable, float] = field(default_factory=dict)
    by_output: dict[Hashable, float] = field(default_factory=dict)
    formula_hits: int = 0
    output_hits: int = 0
    misses: int = 0

    def formula(self, key: Hashable) -> float | None:
        value = self.by_formula.get(key)
        self.formula_hits += value is not None
        return value

    def output(self, key: Hashable) -> float | None:
        value = self.by_output.get(key)
        self.output_hits += value is not None
        return value

    def store(self, formula_key: Hashable, output_key: Hashable | None, value: float) -> None:
        self.by_formula[formula_key] = value
        if output_key is not None:
            self.by_output[output_key] = value

    @property
    def lookups(self) -> int:
        return self.formula_hits + self.output_hits + self.misses

    @property
    def hit_rate(self) -> float:
        return (self.formula_hits + self.output_hits) / self.lookups if self.lookups else 0.0
