"""Evolutionary vs random search on the synthetic task (known optimum), same evaluation budget.

    python -m bench.synthetic_search [--seeds 5] [--population 30] [--generations 25] [--threshold 0.25]

Reports, per mode and seed, the best fitness and the generation / fitness evaluations at which the
best fitness first fell below the threshold ("reached the optimum"; fitness = mean |Δ sparsity| in
percentage points to the hidden optimal allocation).
"""
from __future__ import annotations

import argparse
import statistics

from bench.common import markdown_table, write

from gp import Search, SearchConfig

from dsa.run.problem import allocation_problem
from dsa.run.synthetic import HIDDEN_FORMULA, synthetic_task


def first_below(logbook, threshold):
    for row in logbook:
        if row["best"] < threshold:
            return row["gen"], row["total_evals"]
    return None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--population", type=int, default=30)
    ap.add_argument("--generations", type=int, default=25)
    ap.add_argument("--threshold", type=float, default=0.25)
    args = ap.parse_args()
    allocator, fitness = synthetic_task()
    problem = allocation_problem(allocator, fitness)
    rows = []
    for mode in ("evolution", "random"):
        for seed in range(1, args.seeds + 1):
            cfg = SearchConfig(population=args.population, generations=args.generations, mode=mode, seed=seed)
            result = Search(problem, cfg).run()
            gen, evals = first_below(result.logbook, args.threshold)
            rows.append({"mode": mode, "seed": seed, "best": result.logbook[-1]["best"],
                         "evaluations": result.evaluations, "reached at generation": gen,
                         "reached at evaluation": evals, "hit rate": round(result.cache.hit_rate, 3),
                         "best formula": result.hall_of_fame[0]["formula"]})
    summary = []
    for mode in ("evolution", "random"):
        mine = [r for r in rows if r["mode"] == mode]
        reached = [r for r in mine if r["reached at generation"] is not None]
        summary.append({"mode": mode, "seeds reaching optimum": f"{len(reached)}/{len(mine)}",
                        "median generations to reach": statistics.median([r["reached at generation"] for r in reached]) if reached else None,
                        "median evaluations to reach": statistics.median([r["reached at evaluation"] for r in reached]) if reached else None,
                        "median final best": statistics.median(r["best"] for r in mine),
                        "mean evaluations spent": statistics.mean(r["evaluations"] for r in mine)})
    table = (f"Hidden optimum: `{HIDDEN_FORMULA}`; population {args.population}, {args.generations} generations, "
             f"threshold {args.threshold} pp.\n\n"
             + markdown_table(summary, list(summary[0])) + "\n\n"
             + markdown_table(rows, ["mode", "seed", "best", "evaluations", "reached at generation",
                                     "reached at evaluation", "hit rate", "best formula"]))
    write("synthetic_search", {"args": vars(args), "summary": summary, "runs": rows}, table,
          "Evolutionary vs random search, synthetic task")


if __name__ == "__main__":
    main()
