"""The fair comparison at (model, pruner, sparsity): every baseline as its authors run it (the tuned ones
tuned on the *validation* windows), the found functions, a GP search, a direct search (EvoPress-style)
with the GP run's number of evaluations, and a direct search warm-started from the GP's best
allocation. Each allocation is pruned exactly (block by block) and measured on the test split; its
validation perplexity (the search's fitness) is reported beside, so a win on validation that turns
into a loss on test shows.

    python bench/compare.py --methods wanda --sparsities 0.7 --val-windows 4 --test-windows 16 \
        --formulas bench/results/search_smollm2_wanda70_h100 --population 10 --generations 4 --name NAME

The model is loaded once; its dense weights are restored between rows; the table is rewritten after
every row (a stopped run leaves its finished rows).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_model_args, load_inputs, markdown_table, weight_snapshot, write  # noqa: E402
from dsa.allocations import allocate, baseline_candidates  # noqa: E402
from dsa.problem import allocation_problem, baseline_seeds  # noqa: E402
from dsa.search import choose_on_selection  # noqa: E402
from evaluators.data import load_split, token_windows  # noqa: E402
from evaluators.fitness import PruningEvaluator  # noqa: E402
from evaluators.perplexity import perplexity  # noqa: E402
from evaluators.pruners import prune  # noqa: E402
from gp import Search, SearchConfig  # noqa: E402
from gp.direct import DirectConfig, DirectSearch, LevelSpace  # noqa: E402
from primitives import LayerAllocator  # noqa: E402

BASELINES = "uniform,global,owl,owl-tuned,alphapruning,atp-tuned,dlp,dsa-code,dsa-paper"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "compare", split="test", windows=16)
    ap.add_argument("--val-windows", type=int, default=4, help="validation windows: fitness and tuning (and as many "
                                                                   "more: the searches' selection split)")
    ap.add_argument("--methods", default="wanda")
    ap.add_argument("--sparsities", default="0.7")
    ap.add_argument("--baselines", default=BASELINES)
    ap.add_argument("--formulas", default="", help="found functions: run folders or formulas, comma-separated")
    ap.add_argument("--searches", default="gp,direct,warm",
                    help="gp: a GP search; direct: a direct search (the GP run's evaluations, else --budget); warm: "
                         "a direct search from the GP's best (needs gp); comma-separated, or none")
    ap.add_argument("--budget", type=int, default=40, help="direct search evaluations when no GP search runs")
    ap.add_argument("--population", type=int, default=10, help="GP search")
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--tune-constants", type=int, default=0, help="GP search: per generation, N evaluations "
                                                                   "nudging the best formula's constants")
    ap.add_argument("--seed-baselines", action="store_true", help="GP search: start from the baselines' formulas")
    ap.add_argument("--offspring", type=int, default=8, help="direct search children per generation")
    ap.add_argument("--stages", default="1:3,all:1", help="direct search selection steps (windows:survivors)")
    ap.add_argument("--max-scores-per-layer", type=int, default=2**18)
    args = ap.parse_args()

    model, tok, test, calib = load_inputs(args, split="test")
    both = token_windows(tok, load_split(args.data, "validation", args.data_dir), args.seqlen, 2 * args.val_windows)
    val, selection = both[:args.val_windows], both[args.val_windows:]  # the search's windows, and the next ones
    restore = weight_snapshot(model)
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        print({k: v for k, v in row.items() if k != "sparsities"}, flush=True)
        report(args, rows, int(test.shape[0]), int(val.shape[0]))

    t0 = time.perf_counter()
    add({"method": "-", "sparsity": 0.0, "allocation": "dense", "test ppl": perplexity(model, test),
         "val ppl": perplexity(model, val), "seconds": round(time.perf_counter() - t0, 1)})
    for method in args.methods.split(","):
        for target in map(float, args.sparsities.split(",")):
            evaluator = PruningEvaluator(model, tok, method=method, calib_ids=calib, val_windows=val,
                                         selection_windows=selection, max_scores_per_block=args.max_scores_per_layer,
                                         seed=args.seed)
            blocks = evaluator.blocks
            allocator = LayerAllocator(blocks.scores, target=target, weights=blocks.counts)

            def measure(name: str, sparsities, started: float, **extra) -> None:
                val_ppl = evaluator(sparsities)
                restore()
                prune(model, method, list(map(float, sparsities)), calib)
                test_ppl = perplexity(model, test)
                restore()
                add({"method": method, "sparsity": target, "allocation": name, "val ppl": val_ppl,
                     "test ppl": test_ppl, **extra, "sparsities": [float(s) for s in sparsities],
                     "seconds": round(time.perf_counter() - started, 1)})

            for name in args.baselines.split(","):
                t0 = time.perf_counter()
                cands = baseline_candidates((name,), blocks, target)[name]
                scored = [(evaluator(alloc), params, alloc) for params, alloc in cands]  # tuned: the whole grid
                _, params, alloc = min(scored, key=lambda x: x[0])
                measure(name, alloc, t0, params=params, evaluations=len(cands) if len(cands) > 1 else None)
            for spec in filter(None, args.formulas.split(",")):
                t0 = time.perf_counter()
                alloc, formula = allocate(spec, allocator)
                measure(f"found: {Path(spec).name if Path(spec).is_dir() else spec}", alloc, t0, formula=formula)
            if args.searches != "none":
                searches(args, evaluator, allocator, val, measure, target)
            evaluator.close()
            del evaluator


def searches(args, evaluator, allocator, val, measure, target: float) -> None:
    """GP search, then direct searches with its number of evaluations: from uniform, and from its best."""
    wanted = set(args.searches.split(","))
    budget, starts = args.budget, []
    if "gp" in wanted:
        t0 = time.perf_counter()
        config = SearchConfig(population=args.population, generations=args.generations, seed=args.seed,
                              tune_constants=args.tune_constants,
                              seeds=baseline_seeds(target) if args.seed_baselines else ())
        result = Search(allocation_problem(allocator, evaluator), config).run()
        budget = result.evaluations
        best = chosen(result.hall_of_fame, evaluator)
        extras = [f"tune {args.tune_constants}"] * bool(args.tune_constants) + ["seeds"] * args.seed_baselines
        name = "GP search" + (f" ({', '.join(extras)})" if extras else "")
        measure(name, best["output"], t0, formula=best["tree"], evaluations=budget,
                windows_used=budget * int(val.shape[0]), **{"selection ppl": best["selection"]})
        if "warm" in wanted:
            starts.append(("direct search from GP best", torch.tensor(best["output"], dtype=torch.float64)))
    if "direct" in wanted:
        starts.insert(0, ("direct search", allocator.ctx.uniform))
    stages = tuple((None if w == "all" else int(w), int(k)) for w, k in (s.split(":") for s in args.stages.split(",")))
    step = min(target, 1 - target) / 16
    for name, base in starts:
        t0 = time.perf_counter()
        space = LevelSpace(base, allocator.ctx.weights, step, 16, allocator.ctx.lo, allocator.ctx.hi)
        config = DirectConfig(generations=10_000, offspring=args.offspring, stages=stages, max_level=16,
                              seed=args.seed, max_evaluations=budget)
        direct = DirectSearch(space, evaluator, int(val.shape[0]), config).run()
        best = chosen(direct.hall_of_fame, evaluator)
        measure(name, best["output"], t0, evaluations=direct.evaluations, **{"selection ppl": best["selection"]},
                windows_used=direct.logbook[-1]["windows_used"])


def chosen(rows: list[dict], evaluator) -> dict:
    """A search's best, as ``dsa search`` chooses it: the hall-of-fame entry best on the selection split
    (validation windows the search never read; no baselines there)."""
    return choose_on_selection(rows, {}, evaluator)[0]


def report(args, rows: list[dict], n_test: int, n_val: int) -> None:
    """Write the table so far (a long sweep leaves its finished rows behind if stopped)."""
    device = "GPU" if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    table = (f"Model: {args.model or 'SmolLM2-135M (default)'} ({device} protocol); raw WikiText-2 test: {n_test} "
             f"windows × {args.seqlen} tokens; validation (fitness, tuning): {n_val} windows × {args.seqlen}; "
             f"calibration C4 {args.nsamples}×{args.calib_seqlen}; exact (sequential) pruning. Searches: GP "
             f"population {args.population}, {args.generations} generations; direct searches stop at the GP run's "
             f"number of evaluations (children on fewer windows: `windows_used` counts the windows read); each search's "
             f"best is its hall-of-fame entry best on the selection split (the next {n_val} validation windows).\n\n"
             + markdown_table(rows, ["method", "sparsity", "allocation", "val ppl", "test ppl", "params",
                                     "selection ppl", "evaluations", "windows_used", "formula", "seconds"]))
    write(args.name, {"args": vars(args), "rows": rows}, table, "Fair comparison: baselines, found functions, "
          "searches", quiet=True)


if __name__ == "__main__":
    main()
