"""Search settings, with the defaults the CLI documents."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

OBJECTIVES = (("fitness",), ("fitness", "size"))  # single-objective, or NSGA-II on fitness and tree size


@dataclass
class SearchConfig:
    population: int = 20          # individuals per generation
    generations: int = 10         # generations after the initial population
    cxpb: float = 0.7             # probability that a pair of offspring is crossed over
    mutpb: float = 0.3            # probability that an offspring is mutated
    tournament: int = 2           # tournament size (2: mild pressure; 3 collapsed onto one formula in tests)
    elitism: int = 2              # best individuals copied unchanged to the next generation (NSGA-II: mu + lambda)
    hof_size: int = 10            # distinct formulas kept in the hall of fame
    init_min_height: int = 3      # initial trees: height range (the 4 stages need ≥ 3)
    init_max_height: int = 6
    max_height: int = 10          # static limits against bloat (gp.staticLimit)
    max_size: int = 30
    mode: str = "evolution"       # "evolution" or "random" (random search, same budget)
    cache: bool = True            # skip candidates whose formula or output was already evaluated
    objectives: tuple = ("fitness",)  # ("fitness", "size"): NSGA-II, a Pareto front of fitness against size
    seed: int = 0

    def __post_init__(self):
        if self.mode not in ("evolution", "random"):
            raise ValueError(f"mode must be 'evolution' or 'random', got {self.mode!r}")
        if self.population < 2 or self.generations < 0:
            raise ValueError("population must be ≥ 2 and generations ≥ 0")
        if not (0 <= self.cxpb <= 1 and 0 <= self.mutpb <= 1):
            raise ValueError("cxpb and mutpb are probabilities in [0, 1]")
        if not 0 <= self.elitism < self.population:
            raise ValueError("elitism must be in [0, population)")
        if isinstance(self.objectives, str):  # "fitness,size", as the CLI takes it
            self.objectives = self.objectives.split(",")
        self.objectives = tuple(self.objectives)
        if self.objectives not in OBJECTIVES:
            raise ValueError(f"objectives must be one of {', '.join(','.join(o) for o in OBJECTIVES)}; "
                             f"got {','.join(self.objectives)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
