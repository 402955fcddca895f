"""Convergence: evolutionary vs random search on the real model, same evaluation budget, several
seeds — best validation perplexity against the number of fitness evaluations (PNG + table).

    python bench/convergence.py [--model M] [--seeds 3] [--population 10] [--generations 6]

The model, calibration statistics and score ranks are built once and shared by all runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, add_model_args, load_inputs, markdown_table, write  # noqa: E402
from dsa.problem import allocation_problem  # noqa: E402
from evaluators.fitness import PruningEvaluator  # noqa: E402
from gp import Search, SearchConfig  # noqa: E402
from primitives import LayerAllocator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "convergence_smollm2_wanda70")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--sparsity", type=float, default=0.7)
    args = ap.parse_args()

    model, tok, val, calib = load_inputs(args)
    fitness = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val,
                               batch_size=args.batch_size, max_scores_per_block=2**18)
    allocator = LayerAllocator(fitness.blocks.scores, target=args.sparsity, weights=fitness.blocks.counts)
    problem = allocation_problem(allocator, fitness)

    curves, rows = {}, []
    for seed in range(args.seeds):  # seed-major: a run stopped early still compares both modes
        for mode in ("evolution", "random"):
            cfg = SearchConfig(population=args.population, generations=args.generations, mode=mode, seed=seed)
            result = Search(problem, cfg).run()
            curves[(mode, seed)] = [(r["total_evals"], r["best"]) for r in result.logbook]
            rows.append({"mode": mode, "seed": seed, "evaluations": result.evaluations,
                         "best val ppl": result.logbook[-1]["best"], "best formula": result.hall_of_fame[0]["formula"]})
            print(rows[-1], flush=True)
            report(args, rows, curves, f"{next(model.parameters()).device}", int(val.shape[0]))


def report(args, rows: list[dict], curves: dict, device: str, n_val: int) -> None:
    """Write the table and plot so far (a run stopped early leaves its finished seeds behind)."""
    modes = [m for m in ("evolution", "random") if any(r["mode"] == m for r in rows)]
    summary = [{"mode": m, "runs": sum(r["mode"] == m for r in rows),
                "median best val ppl": statistics.median(r["best val ppl"] for r in rows if r["mode"] == m),
                "min": min(r["best val ppl"] for r in rows if r["mode"] == m),
                "max": max(r["best val ppl"] for r in rows if r["mode"] == m),
                "mean evaluations": statistics.mean(r["evaluations"] for r in rows if r["mode"] == m)}
               for m in modes]
    plot(curves, RESULTS / f"{args.name}.png")
    table = (f"{args.model or 'SmolLM2-135M'} on {device}, Wanda, {args.sparsity:.0%}; "
             f"calibration C4 {args.nsamples}×{args.calib_seqlen}; "
             f"fitness = validation perplexity on {n_val}×{args.seqlen} tokens; population {args.population}, "
             f"{args.generations} generations, seeds 0–{args.seeds - 1}.\n\n"
             + markdown_table(summary, list(summary[0])) + "\n\n"
             + markdown_table(rows, ["mode", "seed", "evaluations", "best val ppl", "best formula"])
             + f"\n\n![convergence]({args.name}.png)")
    write(args.name, {"args": vars(args), "summary": summary, "runs": rows,
                      "curves": {f"{m}/{s}": c for (m, s), c in curves.items()}}, table, "Evolution vs random search",
          quiet=True)


def plot(curves, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colors = {"evolution": "tab:blue", "random": "tab:orange"}
    for (mode, seed), points in curves.items():
        xs, ys = zip(*points)
        ax.step(xs, ys, where="post", color=colors[mode], alpha=0.8, label=mode if seed == 0 else None)
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("best validation perplexity")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
