"""The ``dsa`` command: search, compare, show, prune, eval, export.

Every flag is checked before any work starts: ranges and fixed sets as it is parsed (:mod:`dsa.cli.flags`),
files and output paths by :mod:`dsa.run.settings`, search settings by their typed configs. Bad input prints
one line on stderr and exits with code 2, having written nothing. Below this module, commands take
typed settings, never the parsed arguments. What runs a command (torch, transformers, SymPy) is imported
inside it, so that ``dsa <command> --help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from evaluators.pruning.nm import TOL as NM_TOL
from gp import ConfigError, SearchConfig
from gp.config import DirectConfig

from dsa.cli.flags import DEFAULTS, DIRECT, DIRECT_ONLY, GP_ONLY, LLM_ONLY
from dsa.cli.parser import build_parser, given_flags
from dsa.errors import UserError
from dsa.paths import check_output_dir, check_output_file
from dsa.run.schema import flag_values
from dsa.run.settings import MAX_SPARSITY, DataSpec, EvaluatorSpec, ModelSpec, PruneSpec


def model_spec(args) -> ModelSpec:
    return ModelSpec.from_flags(vars(args))


def data_spec(args) -> DataSpec:
    return DataSpec.from_flags(vars(args))


def prune_spec(args) -> PruneSpec:
    """The pruning settings; what a dense-or-N:M pattern reaches is arithmetic on the flags, checked here
    (before any model is loaded): every block N:M is mean sparsity N/M."""
    spec = PruneSpec.from_flags(vars(args))
    n, m = spec.pattern or (None, None)
    if n is not None and spec.sparsity * m / n > 1 + NM_TOL:
        raise UserError(f"--nm {spec.nm}: dense or {n}:{m} reaches at most mean sparsity {n / m:g}, asked for "
                        f"--sparsity {spec.sparsity:g}")
    return spec


def evaluator_spec(args, given: set[str] = frozenset()) -> EvaluatorSpec:
    """The search's fitness settings, checked, with window and calibration sizes filled in for the device."""
    data = data_spec(args)
    if args.masking == "block" and "batch_size" not in given:  # masks built once per evaluation
        data = replace(data, batch_size=args.val_windows)
    spec = EvaluatorSpec.from_flags(vars(args), data=data, prune=prune_spec(args))
    spec.check()
    return replace(spec, data=spec.data.sized(spec.model.is_cuda()))


def search_config(args, given: set[str], generations: int | None = None) -> SearchConfig:
    from dsa.run.problem import baseline_seeds
    # the default elitism (2) shrinks for a population of 2; an --elitism given explicitly is checked as is
    elitism = args.elitism if "elitism" in given else min(args.elitism, args.population - 1)
    tournament = args.tournament if "tournament" in given else min(args.tournament, args.population)
    staged, offspring = (), 0
    if args.offspring and not args.stages:
        raise UserError("--offspring sets the children of multi-step selection: give --stages too (e.g. "
                        "--offspring 30 --stages 1:8,all:8)")
    if args.stages:  # multi-step selection: the last, full stage's survivors fill the population
        *staged, (_, last) = args.stages
        if last != args.population - elitism:
            raise UserError(f"--stages: the last step keeps population − elitism = {args.population - elitism} "
                            f"formulas, got {last}")
        offspring = args.offspring or 3 * args.population
    settings = flag_values(SearchConfig, vars(args))
    try:
        return SearchConfig(**{**settings, "generations": DEFAULTS.generations if generations is None else generations,
                               "tournament": tournament, "elitism": elitism, "offspring": offspring,
                               "stages": tuple(staged),
                               "seeds": baseline_seeds(args.sparsity) if args.seed_baselines else ()})
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


# what --resume takes: --model too, since a run folder names a local model but never holds its path
RESUMABLE = {"command", "resume", "generations", "no_progress", "workers", "ray_address", "model"}


def flag_names(dests) -> str:
    return ", ".join("--" + d.replace("_", "-") for d in sorted(dests))


def check_room(targets) -> None:
    """A search needs room to move: at the most a layer may be pruned (MAX_SPARSITY) as the mean, every
    layer is at it, and only uniform reaches the target."""
    if max(targets) >= MAX_SPARSITY:
        raise UserError(f"--sparsity {MAX_SPARSITY:g} is the most any layer may be pruned: only uniform reaches "
                        f"that mean, so a search has nothing to choose (search below it, or prune with "
                        f"--allocation uniform)")


def check_stage_windows(stages, val_windows: int, flag: str = "--stages") -> None:
    """A selection step cannot read more validation windows than the fitness has (--val-windows)."""
    most = max((w for w, _ in stages or () if w is not None), default=0)
    if most > val_windows:
        raise UserError(f"{flag} reads {most} validation windows in a step, but --val-windows is {val_windows}")


def search_specs(args, given: set[str] = frozenset()) -> list[EvaluatorSpec]:
    """One spec per (model, method, sparsity) of ``dsa search``'s (comma-separated) flags, checked."""
    specs = []
    for model in args.model.split(",") if args.model else [None]:
        for method in args.method:
            for target in args.sparsity:
                one = argparse.Namespace(**{**vars(args), "model": model, "method": method, "sparsity": target})
                specs.append(evaluator_spec(one, given) if args.task == "llm" else EvaluatorSpec(
                    prune=prune_spec(one), data=DataSpec(seed=args.data_seed), selection_windows=0))
    return specs


def search_command(args, given: set[str]) -> None:
    from dsa.run.distributed import import_ray
    from dsa.run.search import Runtime, SearchRun, resume_run, run_search
    if args.workers or args.ray_address:  # a missing extra is named before anything else is checked
        import_ray(local=args.ray_address is None)
    if args.resume:
        fixed = sorted(given - RESUMABLE)
        if fixed:
            raise UserError(f"cannot change {', '.join('--' + f.replace('_', '-') for f in fixed)} on resume: "
                            f"a resumed run keeps its settings (only --generations may grow)")
        run = resume_run(Path(args.resume), args.generations, progress=not args.no_progress,
                         workers=args.workers, ray_address=args.ray_address,
                         models=tuple(args.model.split(",")) if args.model else ())
    else:
        unused = set(LLM_ONLY) & given if args.task == "synthetic" else set()
        if unused:
            raise UserError(f"{flag_names(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --task "
                            f"synthetic (it has no model, data, pruner or validation windows)")
        if args.task == "llm":
            check_stage_windows(args.stages, args.val_windows)
        check_room(args.sparsity)
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
        if args.task == "synthetic" and any((w or 1) > 1 for w, _ in args.stages or ()):
            raise UserError("--stages: --task synthetic has no validation windows (every step scores the same "
                            "distance to the optimum), so a step's window count does nothing: write 1 (e.g. "
                            "1:8,all:4)")
        run = SearchRun(args.task, spec, config, run_dir, Runtime(False, not args.no_progress, args.workers,
                                                                  args.ray_address), baselines=tuple(args.baselines.split(",")), space=args.space,
                        init=args.init, level_step=args.level_step, tasks=tasks)
        if args.task == "synthetic" and (args.workers or args.ray_address):
            raise UserError("--workers/--ray-address distribute the llm task's evaluations; --task synthetic "
                            "runs in this process")
    run_search(run)


# what --verify takes: it re-measures with the folder's settings, so nothing that would change them
VERIFYING = {"command", "verify", "out", "model", "device", "no_progress"}


def compare_command(args, given: set[str]) -> int:
    """``dsa compare``: the search's settings through the same builders as ``dsa search``; with ``--verify``,
    a re-measurement of the folder's rows (exit code 1 where a number does not match)."""
    from dsa.experiment.compare import Comparison, run_comparison
    from dsa.experiment.verify import verify_comparison
    if args.verify is not None:
        other = given - VERIFYING
        if other:
            raise UserError(f"--verify re-measures with the folder's own settings: {flag_names(other)} cannot go with "
                            f"it (only --out, --model, --device and --no-progress)")
        return 0 if verify_comparison(Path(args.out), args.verify, (args.model,) if args.model else (),
                                      args.device if "device" in given else None, not args.no_progress) else 1
    from dsa.run.levels import check_level_step
    from dsa.run.search import check_cases
    args.seed = args.seeds[0]  # each search's seed is set per seed; the builders check the first
    spec = evaluator_spec(args, given)
    check_stage_windows(args.stages, args.val_windows)
    check_stage_windows(args.direct_stages, args.val_windows, "--direct-stages")
    if args.searches:
        check_room((args.sparsity,))
    if set(args.searches) & {"direct", "warm"}:
        check_level_step(args.sparsity, args.level_step)
    gp_config = search_config(args, given, args.generations)
    check_cases(gp_config, spec)
    direct = direct_config(argparse.Namespace(**{**vars(args), "offspring": args.direct_offspring,
                                                 "stages": args.direct_stages, "generations": 10_000}))
    from dsa.run.allocations import check_allocation, split_list
    formulas = split_list(args.formulas)
    for f in formulas:
        check_allocation(f, "--formulas item")
    out = check_output_dir(args.out, "--out")
    run_comparison(Comparison(spec, out, gp_config, direct, args.level_step, tuple(args.baselines.split(",")),
                              formulas, args.searches, args.seeds, args.budget, args.test_windows,
                              not args.no_progress, args.c4_windows), resume=args.resume)
    return 0


def prune_or_eval(args, given: set[str]):
    """The specs of ``dsa prune/eval``: with ``--allocation RUN``, the run's model, method, sparsity,
    seed and calibration settings unless given here (so that the formula gives the run's allocation)."""
    from dsa.run.allocations import check_allocation, run_settings
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
    from gp.checkpoint import CheckpointError  # a command runs: what it needs loads from here on
    from evaluators.errors import escape
    try:
        if getattr(args, "no_progress", False):
            quiet()
        if args.command == "show":
            from dsa.outputs.show import show_run
            from dsa.run.allocations import read_checked_run
            print(show_run(read_checked_run(args.run), args.top, args.notation))
        elif args.command == "export":
            from dsa.outputs.exports import export_command
            export_command(args.source, args.to, check_output_file(args.out, "--out") if args.out else None)
        elif args.command == "search":
            search_command(args, given_flags(argv))
        elif args.command == "compare":
            return compare_command(args, given_flags(argv))
        elif args.command == "prune":
            from dsa.run.llm import prune_command
            save = check_new_dir(args.save, "--save")
            model, data, prune = prune_or_eval(args, given_flags(argv))
            if args.format == "compressed-tensors":
                from evaluators.models.compressed import check_available
                check_available(prune.nm)
            prune_command(model, data, prune, args.allocation, save, args.val_windows, not args.no_progress,
                          args.format)
        elif args.command == "eval":
            eval_main(args, given_flags(argv))
    except (UserError, CheckpointError) as exc:  # its text may quote a shared folder's records: escaped
        print(f"dsa: error: {escape(exc, width=None)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumes = {"search": " (a search resumes with --resume RUN_DIR)",
                   "compare": " (the comparison continues with --resume)"}
        print(f"dsa: interrupted{resumes.get(args.command, '')}", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from dsa.run.distributed import WorkerError
        if not isinstance(exc, WorkerError):
            raise
        print(f"dsa: error: {escape(exc, width=None)} (the search resumes with --resume RUN_DIR)",
              file=sys.stderr)
        return 1
    return 0


def check_new_dir(path: str, flag: str) -> Path:
    """A folder this command writes whole (``dsa prune --save``): it does not exist yet, or it is an
    empty folder other than the current one (which the write would replace); checked before any work."""
    folder = check_output_dir(path, flag)
    if folder.exists():
        if folder.resolve() == Path.cwd().resolve():
            raise UserError(f"{flag} {path} is the current folder, which the saved model would replace; "
                            f"give a new folder")
        if any(folder.iterdir()):
            raise UserError(f"{flag} {folder} exists and is not empty; choose another folder")
    return folder


def eval_main(args, given: set[str]) -> None:
    from dsa.run.llm import eval_command
    if args.no_perplexity and not args.tasks:
        raise UserError("--no-perplexity leaves nothing to evaluate: add --tasks")
    out = check_output_file(args.json, "--json") if args.json else None
    tasks = None
    if args.tasks:
        from dsa.outputs.zeroshot import parse_tasks
        tasks = parse_tasks(args.tasks)
    model, data, prune = prune_or_eval(args, given)
    if prune.nm and not args.allocation:
        raise UserError("--nm prunes in N:M patterns: give an --allocation (e.g. uniform)")
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

