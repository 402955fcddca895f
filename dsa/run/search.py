"""``dsa search``: build the task, score the baselines, run the GP search, write the run folder (config,
checkpoints, hall of fame, logbook, plots) and print the hall of fame."""
from __future__ import annotations

import contextlib
import functools
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

import gp
from evaluators.fitness.evaluator import FITNESSES as FITNESS_RECORDS
from evaluators.fitness.perplexity import perplexity_from_nlls
from evaluators.pruning.nm import on_pattern
from gp import CheckpointError, ConfigError, Search, SearchConfig, checkpoint as checkpoints, schema
from gp.direct import DirectConfig, DirectSearch
from primitives import build_pset

from dsa.errors import UserError
from dsa.outputs.plots import plot_allocations, plot_fitness
from dsa.outputs.show import show_run
from dsa.run.allocations import SEARCH_BASELINES, read_checked_run
from dsa.run.choice import decide, rescore_on_selection, score_baselines
from dsa.run.distributed import evaluation
from dsa.run.folder import CONFIG_VERSION, Run, new_run_dir, read_config, write_choice, write_config
from dsa.run.levels import LevelSpace, PatternLevels, check_level_step, level_step
from dsa.run.multitask import MultiTaskFitness, first_allocation
from dsa.run.problem import allocation_problem, has_reduction
from dsa.run.settings import EvaluatorSpec



@dataclass(frozen=True)
class Runtime:
    """How a search runs, not what it computes: never part of a run's identity or of its records."""

    resume: bool = False              # continue the run folder's checkpoint
    progress: bool = True             # progress bars
    workers: int | None = None        # Ray actors on a local instance (None: this process)
    ray_address: str | None = None    # an existing Ray cluster


@dataclass
class SearchRun:
    """A search to run: the task, what defines its fitness, the GP settings and where it goes; how it runs
    (resume, progress bars, workers) is its :class:`Runtime`."""

    task: str                     # "llm" or "synthetic"
    spec: EvaluatorSpec           # synthetic: only prune.sparsity and data.seed matter
    config: SearchConfig | DirectConfig  # formulas (GP), or per-layer levels (space "direct")
    run_dir: Path | None = None   # None: results/<time>-<task>
    runtime: Runtime = field(default_factory=Runtime)
    baselines: tuple[str, ...] = SEARCH_BASELINES
    space: str = "formula"        # "formula" (allocation functions) or "direct" (per-layer sparsities)
    init: str | None = None       # direct: start from this run folder's (or formula's) allocation
    level_step: float | None = None  # direct: sparsity per level (None: min(s, 1 − s)/16, EvoPress's default)
    tasks: tuple = ()             # multi-task: every (model, pruner, sparsity) spec, ``spec`` the first

    def identity(self) -> dict:
        """What a checkpoint must share with this run to be resumed by it."""
        space = {"space": self.space, "init": self.init, "level_step": self.level_step}
        if self.task == "synthetic":
            return {"task": "synthetic", "sparsity": self.spec.prune.sparsity, "seed": self.spec.data.seed, **space}
        if self.tasks:
            return {"task": self.task, "tasks": [t.identity() for t in self.tasks], **space}
        return {"task": self.task, **self.spec.identity(), **space}

    def settings(self) -> dict:
        """What config.json records beside the evaluator spec (and reads back on resume)."""
        return {"space": self.space, "search": self.config.to_dict(), "init": self.init, "level_step": self.level_step,
                "tasks": [t.to_dict() for t in self.tasks]}


def resume_run(run_dir: Path, generations: int | None, progress: bool = True, workers: int | None = None,
               ray_address: str | None = None, models: tuple[str, ...] = ()) -> SearchRun:
    """The :class:`SearchRun` saved in ``run_dir/config.json``, to be continued (``generations`` may grow); its
    models found among ``models`` (``--model``: a record names a local model, never its path), or as recorded
    (:meth:`~dsa.run.settings.ModelSpec.located`)."""
    saved = read_config(run_dir)
    try:
        search = dict(saved["search"])
        if generations is not None:
            search["generations"] = generations
        space = saved.get("space", "formula")
        config = DirectConfig(**search) if space == "direct" else SearchConfig.from_dict(search)
        specs = [EvaluatorSpec.from_dict(spec) for spec in (saved["evaluator"], *saved.get("tasks", []))]
        problems = [p for spec in specs for p in spec.problems()]
    except (TypeError, ValueError) as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    if problems:
        raise UserError(f"cannot resume {run_dir}: config.json is damaged ({problems[0]})")
    if saved["task"] == "llm":
        specs = [replace(spec, model=spec.model.located(models, f"{run_dir}")) for spec in specs]
    elif models:
        raise UserError(f"--model does not apply to {run_dir}: a synthetic run has no model")
    return SearchRun(saved["task"], specs[0], config, run_dir, Runtime(True, progress, workers, ray_address),
                     baselines=tuple(saved["baselines"]) or SEARCH_BASELINES, space=space,
                     init=saved.get("init"), level_step=saved.get("level_step"), tasks=tuple(specs[1:]))


def build_task(run: SearchRun, ev):
    """(allocator, fitness, info, baseline candidates) for the run's task; the llm task's evaluator lives
    where ``ev`` (an :class:`~dsa.run.distributed.LocalEvaluation` or Ray workers) keeps it. Multi-task: the
    list of :class:`~dsa.run.multitask.Task` (each with its allocator) and the multi-task fitness (uniform
    scores 0 there)."""
    if run.tasks:
        from dsa.run.multitask import build_tasks
        tasks, infos = build_tasks(list(run.tasks))
        info = {"model": ", ".join(t.name for t in tasks), "fitness": "mean log(fitness / uniform's) over tasks",
                "tasks": infos}
        return tasks, MultiTaskFitness(tasks), info, {}
    if run.task == "synthetic":
        from dsa.run.synthetic import synthetic_task
        allocator, distance = synthetic_task(run.spec.prune.sparsity, seed=run.spec.data.seed)
        uniform = [({}, allocator.ctx.uniform.tolist())]
        return allocator, functools.partial(_on_any_windows, distance), {"fitness": "distance to optimum (pp)"}, \
            {"uniform": uniform}
    return ev.task(run.spec, run.baselines)


def _on_any_windows(fitness, sparsities, windows=None):
    """The synthetic task has no validation windows: every selection stage scores the same distance."""
    return fitness(sparsities)


@contextlib.contextmanager
def started(run_dir: Path):
    """Remove the run folder again, and the folders above it that it created (``results/``), when this
    run created it and fails before its first checkpoint."""
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # run_dir first, then upwards
    try:
        yield
    except BaseException:
        if created and not checkpoints.exists(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            for folder in created[1:]:
                try:
                    folder.rmdir()  # only when empty: another run may have started in it meanwhile
                except OSError:
                    break
        raise


def grammar_problem() -> gp.Problem:
    """The allocation grammar without a task: what the limits and a checkpoint's trees are checked
    against before anything is loaded."""
    return gp.Problem(pset=build_pset(), decode=None, fitness=None, valid=has_reduction)


def run_search(run: SearchRun, ev=None):
    """Run (or resume) ``run``; returns (run folder, :class:`gp.search.SearchResult`). ``ev``: an
    :class:`~dsa.run.distributed.Evaluation` already holding the model (``dsa compare`` runs several searches
    on one loaded model); None: this run's own, built from its spec."""
    if run.space == "formula":
        try:
            gp.check_limits(grammar_problem(), run.config)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        check_cases(run.config, run.spec, run.task, run.tasks)
    else:
        check_level_step(run.spec.prune.sparsity, run.level_step)
        if run.tasks and any(spec.prune.nm for spec in run.tasks):
            raise UserError("--nm with --space direct: one task at a time")
    if run.init is not None:
        from dsa.run.allocations import check_allocation
        check_allocation(run.init)
    run_dir = run.run_dir or new_run_dir(run.task)
    if not run.runtime.resume and (checkpoints.exists(run_dir) or (run_dir / checkpoints.LEGACY_FILE).exists()):
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir}")
    if run.runtime.resume:  # a checkpoint that cannot be resumed fails now, before any loading
        check_resumable(run, run_dir)
    with started(run_dir), (contextlib.nullcontext(ev) if ev is not None
                            else evaluation(run.task, run.spec, run.runtime.workers, run.runtime.ray_address)) as ev:
        return _search(replace(run, run_dir=run_dir), ev)


def check_resumable(run: SearchRun, run_dir: Path) -> None:
    """The run folder's checkpoint, checked in full as far as it can be before the task is built (the
    llm task's model loaded): settings, identity, every field (:mod:`gp.schema`), trees within the
    run's limits, a direct search's levels within ±max_level."""
    try:
        if run.space == "direct":
            state = gp.resumable(run_dir, run.config, run.identity())
            if state is not None:
                schema.check_direct(run_dir / checkpoints.FILE, state, run.config)
        else:
            Search(grammar_problem(), run.config, run_dir, identity=run.identity()).checkpoint_state()
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def _search(run: SearchRun, ev):
    allocator, fitness, info, candidates = build_task(run, ev)  # multi-task: the task list as "allocator"
    map_fn = ev.map
    search = build_search(run, allocator, fitness, info, map_fn)
    if run.runtime.resume:  # checked again against the task (a direct search's levels within its space), unwritten
        try:
            search.checkpoint_state()
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
    if run.runtime.resume:  # the baselines were scored when the run started; only the generations may have grown
        config = read_config(run.run_dir)
        config.update(run.settings())
        baselines = {name: {"fitness": value, **config.get("baseline_settings", {}).get(name, {})}
                     for name, value in config["baselines"].items()}
    else:
        if run.tasks:  # the multi-task fitness is relative to uniform: uniform scores 0 by definition
            baselines = {"uniform": {"fitness": 0.0, "params": {}, "allocation": None}}
        else:
            baselines = score_baselines(candidates, fitness, map_fn)
        config = {
            "version": CONFIG_VERSION, "task": run.task, "model": info.get("model"), "method": run.spec.prune.method,
            "sparsity": run.spec.prune.sparsity, "evaluator": run.spec.to_dict(), **run.settings(),
            "info": info, "baselines": {name: b["fitness"] for name, b in baselines.items()},
            "baseline_settings": {name: {"params": b["params"], "allocation": b["allocation"]}
                                  for name, b in baselines.items()},
        }
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run.run_dir, config)
    result = search.run(resume=run.runtime.resume)  # the engine writes the hall of fame after each generation
    if run.task == "llm" and run.spec.selection_windows:
        choose = rescore_on_selection if run.tasks else decide
        config["selection"] = choose(result.hall_of_fame, baselines, fitness, map_fn)
        write_choice(run.run_dir, result.hall_of_fame, config)
    plot_fitness(list(result.logbook), run.run_dir / "fitness.png", ylabel=info.get("fitness", "fitness"))
    best = result.hall_of_fame[0]
    shown = {name: baselines[name]["allocation"] for name in ("uniform", "owl") if baselines.get(name, {}).get("allocation")}
    uniform = [run.spec.prune.sparsity] * len(first_allocation(best["output"]) or shown.get("uniform") or [])
    plot_allocations({"best found": first_allocation(best["output"]) or uniform, **shown},
                     run.run_dir / "allocation.png", target=run.spec.prune.sparsity, title=best["formula"][:80])
    held = Run(dir=run.run_dir, config=config, hall_of_fame=result.hall_of_fame, pareto_front=result.pareto_front,
               logbook=list(result.logbook))  # what was written, printed from memory (dsa show reads it back)
    print(show_run(read_checked_run(held), top=5))
    files = ["hall_of_fame.json", *(["pareto_front.json"] if result.pareto_front is not None else []),
             "logbook.csv", "fitness.png", "allocation.png", checkpoints.FILE]
    print(f"\nwrote {run.run_dir}/ ({', '.join(files)})")
    return run.run_dir, result


def build_search(run: SearchRun, allocator, fitness, info: dict, map_fn) -> Search | DirectSearch:
    """The run's search, built (nothing written yet): per-layer levels, a multi-task or a plain GP search."""
    if run.space == "direct":
        return direct_search(run, allocator, fitness, info, map_fn)
    if run.tasks:
        from dsa.run.multitask import multitask_problem
        return Search(multitask_problem(allocator), run.config, run.run_dir, map_fn=map_fn,
                      progress=run.runtime.progress, identity=run.identity())
    problem = allocation_problem(allocator, fitness)
    if run.task == "llm":  # per-window losses (lexicase selection, resampled windows), paired with uniform's
        problem = replace(problem, cases=functools.partial(fitness, per_window=True), n_cases=info["val_windows"],
                          link=perplexity_of_mean, reference=allocator.ctx.uniform)
    return Search(problem, run.config, run.run_dir, map_fn=map_fn, progress=run.runtime.progress, identity=run.identity())


def perplexity_of_mean(mean_nll: float) -> float:
    """A fitness from per-window losses: exp(mean window log-perplexity), as the ppl fitness computes it."""
    return perplexity_from_nlls(torch.tensor([mean_nll], dtype=torch.float64))


def check_cases(config: SearchConfig, spec: EvaluatorSpec, task: str = "llm", tasks: tuple = ()) -> None:
    """UserError where lexicase selection or resampled windows would have no per-window losses to read (the
    synthetic task, a multi-task search), where those are not the fitness (KL: its per-window values are
    log-perplexities), or where resampling would draw the whole --val-windows pool."""
    if config.selection != "lexicase" and not config.resample_windows:
        return
    if task != "llm" or tasks:
        raise UserError("--selection lexicase and --resample-windows read per-window losses: a single-task --task "
                        "llm search has them, the synthetic task and a multi-task search do not")
    record = FITNESS_RECORDS[spec.fitness]
    if record.reference or record.windows is None:
        raise UserError(f"--selection lexicase and --resample-windows score per-window log-perplexities: they do "
                        f"not apply to --fitness {spec.fitness}")
    if config.resample_windows >= spec.val_windows and config.resample_windows:
        raise UserError(f"--resample-windows {config.resample_windows} draws from the --val-windows pool "
                        f"({spec.val_windows} windows): it must draw fewer")


def direct_search(run: SearchRun, allocator, fitness, info: dict, map_fn) -> DirectSearch:
    """The EvoPress-style search over per-layer levels, around the uniform allocation or ``run.init``'s."""
    target = run.spec.prune.sparsity
    base = allocator.ctx.uniform
    if run.init is not None:
        from dsa.run.allocations import allocate
        base = torch.as_tensor(allocate(run.init, allocator)[0], dtype=torch.float64)
    nm = run.spec.prune.pattern
    if nm:  # levels on the pattern, around the base allocation put on it
        counts = [float(c) for c in torch.as_tensor(allocator.ctx.weights).tolist()]
        if len(set(counts)) > 1:
            raise UserError("--nm with --space direct: N:M levels keep the mean only on blocks of equal size")
        n, m = nm
        unit, top = (1 / m, m) if n is None else (n / m, 1)
        pattern = on_pattern(nm, [float(v) for v in base], counts, target)[0]
        space = PatternLevels([round(s / unit) for s in pattern], unit, top, run.config.max_level)
    else:
        step = level_step(target, run.level_step)
        space = LevelSpace(base, allocator.ctx.weights, step, run.config.max_level, allocator.ctx.lo, allocator.ctx.hi)
    windows = info.get("val_windows", 1)
    return DirectSearch(space, fitness, windows, run.config, run.run_dir, map_fn=map_fn, progress=run.runtime.progress,
                        identity=run.identity(),
                        describe=f"direct (EvoPress levels{', from ' + run.init if run.init else ''})")
