"""``dsa search``: build the task, run the GP search, write the run folder (config, checkpoints,
hall of fame, logbook, plots) and print the hall of fame."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gp import Search, SearchConfig

from .allocations import FORMULAS, allocate
from .distributed import worker_pool
from .errors import UserError
from .plots import plot_allocations, plot_fitness
from .problem import allocation_problem
from .runs import new_run_dir, write_json
from .show import show

DEFAULT_GENERATIONS = 4
NOT_SAVED = {"resume", "no_progress", "run_dir", "command", "workers", "ray_address"}  # where, not what


def search_config(args: argparse.Namespace) -> SearchConfig:
    try:
        return SearchConfig(
            population=args.population, generations=args.generations, cxpb=args.cxpb, mutpb=args.mutpb,
            tournament=args.tournament, elitism=args.elitism, hof_size=args.hof_size,
            max_height=args.max_height, max_size=args.max_size, mode=args.mode,
            cache=not args.no_cache, objectives=args.objectives, seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _resume_args(args: argparse.Namespace) -> tuple[argparse.Namespace, Path]:
    run_dir = Path(args.resume)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise UserError(f"cannot resume {run_dir}: no config.json there")
    saved = json.loads(config_path.read_text())["args"]
    generations = args.generations if args.generations is not None else saved["generations"]
    merged = argparse.Namespace(**{**vars(args), **saved})
    merged.generations, merged.no_progress = generations, args.no_progress
    return merged, run_dir


def build_task(args: argparse.Namespace, map_fn=map):
    """(allocator, fitness, description) for ``--task``; with a Ray pool as ``map_fn`` the evaluator
    lives on the workers (:mod:`dsa.distributed`)."""
    if args.task == "synthetic":
        from .synthetic import synthetic_task
        allocator, fitness = synthetic_task(args.sparsity, seed=args.seed)
        return allocator, fitness, {"fitness": "distance to optimum (pp)"}
    if map_fn is not map:
        return map_fn.llm_task(args)
    from .llm import llm_task
    return llm_task(args)


def run_search(args: argparse.Namespace) -> Path:
    resume = bool(args.resume)
    if resume:
        args, run_dir = _resume_args(args)
    else:
        args.generations = DEFAULT_GENERATIONS if args.generations is None else args.generations
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(args.task)
        if (run_dir / "checkpoint.pkl").exists():
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir}")
    config = search_config(args)
    with worker_pool(args) as map_fn:  # the builtin map, or Ray workers (--workers / --ray-address)
        return _search(args, config, run_dir, resume, map_fn)


def _search(args: argparse.Namespace, config: SearchConfig, run_dir: Path, resume: bool, map_fn=map) -> Path:
    allocator, fitness, info = build_task(args, map_fn)
    run_dir.mkdir(parents=True, exist_ok=True)
    baselines = {name: allocate(name, allocator)[0] for name in ("uniform", *FORMULAS)}
    values = map_fn(fitness, [torch.as_tensor(a, dtype=torch.float64) for a in baselines.values()])
    baseline_fitness = {name: float(v) for name, v in zip(baselines, values)}
    saved_args = {k: v for k, v in vars(args).items() if k not in NOT_SAVED}
    write_json(run_dir / "config.json", {
        "task": args.task, "model": info.get("model"), "method": args.method, "sparsity": args.sparsity,
        "args": saved_args, "search": config.to_dict(), "info": info, "baselines": baseline_fitness,
    })
    problem = allocation_problem(allocator, fitness)
    try:
        search = Search(problem, config, run_dir, map_fn=map_fn, progress=not args.no_progress)
        result = search.run(resume=resume)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    plot_fitness(list(result.logbook), run_dir / "fitness.png", ylabel=info.get("fitness", "fitness"))
    best = result.hall_of_fame[0]
    plot_allocations({"best found": best["output"] or baselines["uniform"], **{k: baselines[k] for k in ("uniform", "owl")}},
                     run_dir / "allocation.png", target=args.sparsity, title=best["formula"][:80])
    print(show(str(run_dir), top=5))
    files = ["hall_of_fame.json", *(["pareto_front.json"] if result.pareto_front is not None else []),
             "logbook.csv", "fitness.png", "allocation.png", "checkpoint.pkl"]
    print(f"\nwrote {run_dir}/ ({', '.join(files)})")
    return run_dir
