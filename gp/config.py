"""Search settings: one typed record per search (the tree search's :class:`SearchConfig`, the direct
search's :class:`DirectConfig`), their defaults, and the checks that reject a bad value before any work
starts (:class:`ConfigError`, a ``ValueError``). Imports no torch or SymPy: the CLI's parser reads the defaults."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from primitives.bounds import MAX_HEIGHT, MAX_SIZE

OBJECTIVES = (("fitness",), ("fitness", "size"))  # single-objective, or NSGA-II on fitness and tree size
MODES = ("evolution", "random")
SELECTIONS = ("tournament", "lexicase")  # how parents are picked (elites are always the best by fitness)
# the settings random search has no use for, at their off values (``dsa compare``'s random row takes a GP
# run's settings with these)
EVOLUTION_ONLY = {"tune_constants": 0, "selection": "tournament", "parsimony": 0.0, "dedup": False,
                  "restart_after": 0}
MAX_SEED = 2**32 - 1  # numpy's seed range; torch and random accept it too


class ConfigError(ValueError):
    """A search setting out of its range (the CLI reports it as bad input)."""


def flag(help: str, kind: str = "count", **more) -> dict:
    """A setting's command-line description, kept with the field (``dataclasses.field`` metadata): its help
    (``{default}`` filled in), its ``kind`` (how a command line reads it: count, count0, probability, real,
    switch, off-switch, seed) and, in ``more``, ``choices``, ``metavar``, ``flag`` (its name where it differs)
    and ``flag_default`` (a command line's default where it differs from the field's). The ``dsa`` command
    generates its search flags from these (:func:`dsa.cli.flags.add_spec_flags`); a field without one has
    no flag."""
    return {"help": help, "kind": kind, "section": "search", **more}


@dataclass
class SearchConfig:
    population: int = field(default=10, metadata=flag("individuals per generation (default {default})"))
    generations: int = field(default=4, metadata=flag(
        "generations after the first (default {default}; with --resume: keep the run's)", "count0",
        flag_default=None))
    cxpb: float = field(default=0.7, metadata=flag("probability that a pair of offspring is crossed over "
                                                   "(default {default})", "probability"))
    mutpb: float = field(default=0.3, metadata=flag("probability that an offspring is mutated (default {default})",
                                                    "probability"))
    # 2: mild pressure; 3 collapsed onto one formula in tests
    tournament: int = field(default=2, metadata=flag("tournament size (default {default})"))
    elitism: int = field(default=2, metadata=flag(
        "best individuals copied unchanged to the next generation (default {default}; NSGA-II: mu + lambda)",
        "count0"))
    hof_size: int = field(default=10, metadata=flag("distinct candidates kept in the hall of fame (default {default})"))
    init_min_height: int = 3      # initial trees: height range (the 4 stages need ≥ 3)
    init_max_height: int = 6
    # static limits against bloat (gp.staticLimit)
    max_height: int = field(default=10, metadata=flag("the deepest tree variation may make (default {default})"))
    max_size: int = field(default=30, metadata=flag("the largest tree variation may make, in nodes (default {default})"))
    mode: str = field(default="evolution", metadata=flag(
        "evolution (default), or random: random search with the same budget", choices=MODES))
    cache: bool = field(default=True, metadata=flag("evaluate every candidate, even repeats", "off-switch",
                                                    flag="no_cache"))
    objectives: tuple = field(default=("fitness",), metadata=flag(
        "fitness (default), or fitness,size: NSGA-II, writes a Pareto front of fitness against formula size "
        "(pareto_front.json)", choices=tuple(map(",".join, OBJECTIVES)), flag_default="fitness"))
    seed: int = field(default=0, metadata=flag(
        "the search's randomness (initial population, variation, selection; default {default}); repeat a search "
        "over seeds on fixed data by changing --seed alone", "seed", section="seed"))
    # multi-step selection (EvoPress's, for trees): `offspring` children per generation, scored on the first
    # `windows` validation windows of each stage, the best `survivors` going on; the last stage scores on all
    # windows and its survivors (population − elitism) join the elites. Empty: plain generations.
    offspring: int = 0
    stages: tuple = ()            # ((windows, survivors), …) before the last, full stage
    tune_constants: int = field(default=0, metadata=flag(
        "each generation, up to N evaluations nudging the best formula's constants (λ, τ …) by factors 0.5–2, as "
        "PySR optimises constants (default 0: off)", "count0", metavar="N"))
    seeds: tuple = ()             # trees (text) placed in the initial population, e.g. the baselines' formulas
    max_evaluations: int | None = None  # stop after the generation reaching this many full evaluations (None: no cap)
    # against overfitting (issue 28's ablation), each off by default:
    selection: str = field(default="tournament", metadata=flag(
        "how parents are picked: tournament (default), or lexicase: DEAP's automatic ε-lexicase selection with the "
        "validation windows as cases (per-window log-perplexities; the fitness stays their mean)", choices=SELECTIONS))
    resample_windows: int = field(default=0, metadata=flag(
        "each generation scores on K windows drawn afresh (seeded) from the --val-windows pool, the survivors "
        "re-scored on them; a fitness is the pool's perplexity estimated from them, paired with uniform's "
        "per-window values (default 0: the same windows throughout)", "count0", metavar="K"))
    parsimony: float = field(default=0.0, metadata=flag(
        "DEAP's double tournament: of two tournament winners the smaller formula with probability D/2, D in (1, 2] "
        "(default 0: off)", "real", metavar="D"))
    dedup: bool = field(default=False, metadata=flag(
        "a child whose allocation repeats one already scored (or a sibling's) is mutated again, as a repeated "
        "formula is", "switch"))
    restart_after: int = field(default=0, metadata=flag(
        "after K generations without a better best, all but the elites are replaced by random formulas "
        "(default 0: never)", "count0", metavar="K"))

    def __post_init__(self):
        if isinstance(self.objectives, str):  # "fitness,size", as the CLI takes it
            self.objectives = self.objectives.split(",")
        self.objectives = tuple(self.objectives)
        self.stages = tuple((int(w), int(k)) for w, k in self.stages)
        self.seeds = tuple(self.seeds)
        for problem in self.problems():
            raise ConfigError(problem)

    def problems(self) -> list[str]:
        """Every setting out of range, as one message each (empty when all are fine)."""
        out = []

        def need(ok: bool, text: str) -> None:
            if not ok:
                out.append(text)
        ints = ("population", "generations", "tournament", "elitism", "hof_size", "init_min_height",
                "init_max_height", "max_height", "max_size", "seed", "offspring", "tune_constants",
                "resample_windows", "restart_after")
        for name in ints:
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")
        need(self.max_evaluations is None or (isinstance(self.max_evaluations, int)
                                              and not isinstance(self.max_evaluations, bool)),
             f"max_evaluations must be an integer or None, got {self.max_evaluations!r}")
        need(isinstance(self.cache, bool), f"cache must be true or false, got {self.cache!r}")
        need(isinstance(self.dedup, bool), f"dedup must be true or false, got {self.dedup!r}")
        need(isinstance(self.parsimony, (int, float)) and not isinstance(self.parsimony, bool),
             f"parsimony must be a number, got {self.parsimony!r}")
        need(all(isinstance(t, str) for t in self.seeds), "seeds must be trees as text")
        if out:
            return out
        need(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        need(self.population >= 2, f"population must be ≥ 2, got {self.population}")
        need(self.generations >= 0, f"generations must be ≥ 0, got {self.generations}")
        for name in ("cxpb", "mutpb"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and 0 <= value <= 1, f"{name} is a probability in [0, 1], got {value}")
        need(1 <= self.tournament <= self.population,
             f"tournament must be in [1, population={self.population}], got {self.tournament}")
        need(0 <= self.elitism < self.population, f"elitism must be in [0, population={self.population}), "
                                                  f"got {self.elitism}")
        need(self.hof_size >= 1, f"hof_size must be ≥ 1, got {self.hof_size}")
        need(1 <= self.init_min_height <= self.init_max_height,
             f"need 1 ≤ init_min_height ≤ init_max_height, got {self.init_min_height} and {self.init_max_height}")
        # a tree must parse back from its text (checkpoints, hall of fame): within the parser's limits
        need(1 <= self.max_height <= MAX_HEIGHT, f"max_height must be in [1, {MAX_HEIGHT}], got {self.max_height}")
        need(1 <= self.max_size <= MAX_SIZE, f"max_size must be in [1, {MAX_SIZE}], got {self.max_size}")
        need(0 <= self.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        need(self.objectives in OBJECTIVES, f"objectives must be one of "
                                            f"{', '.join(','.join(o) for o in OBJECTIVES)}; got {','.join(self.objectives)}")
        need(self.tune_constants >= 0, f"tune_constants must be ≥ 0, got {self.tune_constants}")
        need(self.tune_constants == 0 or (self.mode == "evolution" and len(self.objectives) == 1),
             "tune_constants applies to single-objective evolution (not to random search or NSGA-II)")
        need(self.max_evaluations is None or self.max_evaluations >= 1,
             f"max_evaluations must be ≥ 1 (None: no cap), got {self.max_evaluations}")
        out += self._against_overfitting()
        if self.stages:
            survivors = [k for _, k in self.stages] + [self.population - self.elitism]
            windows = [w for w, _ in self.stages]
            need(self.offspring >= survivors[0], f"offspring ({self.offspring}) must be at least the first stage's "
                                                 f"survivors ({survivors[0]})")
            scored = [self.offspring] + survivors[:-2]  # how many candidates each step before the last scores
            idle = [i + 1 for i, (k, n) in enumerate(zip(survivors[:-1], scored)) if k >= n]
            need(not idle, f"selection step {', '.join(map(str, idle))} keeps every candidate it scores, so it "
                           f"selects nothing (e.g. 30 children on 1 window, the best 8 on all: --offspring 30 "
                           f"--stages 1:8,all:8)")
            need(survivors == sorted(survivors, reverse=True) and all(k >= 1 for k in survivors),
                 f"survivors per stage must shrink to population − elitism = {survivors[-1]}, got {survivors}")
            need(all(w >= 1 for w in windows) and windows == sorted(windows),
                 f"stage windows must be positive and grow, got {windows}")
            need(self.mode == "evolution" and len(self.objectives) == 1,
                 "multi-step selection applies to single-objective evolution")
        else:
            need(self.offspring == 0, "offspring is set by multi-step selection (stages)")
        return out

    def _against_overfitting(self) -> list[str]:
        """The checks of the ablation's options: ranges, and combinations where one would be ignored."""
        out = []

        def need(ok: bool, text: str) -> None:
            if not ok:
                out.append(text)
        need(self.selection in SELECTIONS, f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        need(self.resample_windows >= 0, f"resample_windows must be ≥ 0, got {self.resample_windows}")
        need(self.restart_after >= 0, f"restart_after must be ≥ 0, got {self.restart_after}")
        need(self.parsimony == 0 or 1 < self.parsimony <= 2,
             f"parsimony is a size tournament's size in (1, 2] (0: off), got {self.parsimony}")
        evolution = self.mode == "evolution" and len(self.objectives) == 1
        used = [name for name, on in (("selection lexicase", self.selection == "lexicase"),
                                      ("parsimony", self.parsimony), ("dedup", self.dedup),
                                      ("restart_after", self.restart_after)) if on]
        need(evolution or not used, f"{', '.join(used)} apply to single-objective evolution (not to random search "
                                    f"or NSGA-II)")
        need(not (self.parsimony and self.selection == "lexicase"),
             "parsimony is a tournament's size stage: it does not apply to lexicase selection")
        need(not self.resample_windows or len(self.objectives) == 1,
             "resample_windows applies to single-objective searches (NSGA-II compares parents and children)")
        need(not (self.resample_windows and self.stages),
             "resample_windows does not apply to multi-step selection (its steps read the first windows)")
        need(not self.dedup or self.cache, "dedup counts a repeated output once through the cache: not with cache off")
        need(not self.restart_after or self.elitism >= 1,
             "restart_after keeps the elites and re-seeds the rest: it needs elitism ≥ 1")
        return out

    def to_dict(self) -> dict:
        data = asdict(self)
        data["objectives"] = list(self.objectives)
        data["stages"] = [list(s) for s in self.stages]
        data["seeds"] = list(self.seeds)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        if data.get("max_evaluations") == 0 and not isinstance(data["max_evaluations"], bool):
            data["max_evaluations"] = None  # checkpoints written before "no cap" was None, as DirectConfig's
        return cls(**data)


@dataclass
class DirectConfig:
    """The direct search's settings (:class:`gp.direct.DirectSearch`, EvoPress-style)."""

    generations: int = 20
    offspring: int = 16                 # children per generation (EvoPress: 64)
    stages: tuple = ((1, 4), (None, 1))  # (validation windows, None = all; survivors) per selection step
    max_level: int = 16                 # |level| ≤ max_level (EvoPress's 8 each way, twice: the whole feasible range)
    hof_size: int = 10
    cache: bool = True
    seed: int = 0
    max_evaluations: int | None = None  # stop after the generation that reaches this many evaluations

    def __post_init__(self):
        self.stages = tuple((None if w is None else int(w), int(k)) for w, k in self.stages)
        for problem in self.problems():
            raise ConfigError(problem)

    def problems(self) -> list[str]:
        ints = ("generations", "offspring", "max_level", "hof_size", "seed")
        out = [f"{name} must be an integer, got {getattr(self, name)!r}" for name in ints
               if not _integer(getattr(self, name))]
        if not (self.max_evaluations is None or _integer(self.max_evaluations)):
            out.append(f"max_evaluations must be an integer or None, got {self.max_evaluations!r}")
        if not isinstance(self.cache, bool):
            out.append(f"cache must be true or false, got {self.cache!r}")
        if out:
            return out
        if self.generations < 0:
            out.append(f"generations must be ≥ 0, got {self.generations}")
        if self.offspring < 1:
            out.append(f"offspring must be ≥ 1, got {self.offspring}")
        if not self.stages or self.stages[-1][0] is not None:
            out.append("the last selection stage must use all validation windows")
        survivors = [k for _, k in self.stages]
        if any(k < 1 for k in survivors) or survivors != sorted(survivors, reverse=True) or survivors[-1] != 1:
            out.append(f"survivors per stage must decrease to 1, got {survivors}")
        windows = [w for w, _ in self.stages[:-1]]
        if any(w < 1 for w in windows) or windows != sorted(windows):
            out.append(f"stage windows must be positive and grow, got {windows}")
        if self.max_level < 1:
            out.append(f"max_level must be ≥ 1, got {self.max_level}")
        if self.hof_size < 1:
            out.append(f"hof_size must be ≥ 1, got {self.hof_size}")
        if self.max_evaluations is not None and self.max_evaluations < 1:
            out.append(f"max_evaluations must be ≥ 1, got {self.max_evaluations}")
        if not 0 <= self.seed <= MAX_SEED:
            out.append(f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        return out

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stages"] = [list(s) for s in self.stages]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DirectConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
