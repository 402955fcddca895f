"""Convergence: evolutionary vs random search on the real model at the same budget of fitness
evaluations, several seeds — best validation fitness against the number of evaluations (PNG + table),
and how many evaluations each evolution variant needs to reach random search's final best.

    python -m bench.convergence [--model M] [--seeds 3] [--population 10] [--budget 300] \
        [--variants random,evolution,evolution+tune,evolution+seeds,evolution+tune+seeds]

Variants: ``random`` (a fresh random population per generation), ``evolution`` (the default engine),
``+tune`` (each generation, 4 evaluations nudging the best formula's constants), ``+seeds`` (the
baselines' formulas in the first population). Every run stops at the generation that reaches
``--budget`` evaluations. The model, calibration statistics and score ranks are built once
(:func:`dsa.run.llm.build_evaluator`); each run is a ``dsa search`` run on them (:func:`dsa.run.search.run_search`,
its folder under ``bench/results/NAME/``), so a killed benchmark resumes its runs from their checkpoints
and skips the finished ones.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from bench.common import RESULTS, add_model_args, markdown_table, model_name, write

from evaluators.fitness.evaluator import FITNESSES
from gp import SearchConfig, checkpoint as checkpoints

from dsa.cli.dispatch import data_spec, model_spec
from dsa.cli.flags import items, positive_int, sparsity
from dsa.run.distributed import LocalEvaluation
from dsa.run.llm import build_evaluator
from dsa.run.problem import baseline_seeds
from dsa.run.search import Runtime, SearchRun, run_search
from dsa.run.settings import METHODS, EvaluatorSpec, PruneSpec

VARIANTS = "random,evolution,evolution+tune,evolution+seeds,evolution+tune+seeds"


def config(variant: str, args, seed: int) -> SearchConfig:
    parts = set(variant.split("+"))
    return SearchConfig(population=args.population, generations=10_000, mode="random" if "random" in parts else
                        "evolution", seed=seed, max_evaluations=args.budget,
                        tune_constants=4 if "tune" in parts else 0,
                        seeds=baseline_seeds(args.sparsity) if "seeds" in parts else ())


def variants(text: str) -> str:
    """--variants: known variants, comma-separated, each once (the tool's list type)."""
    names = items(text, "variants")
    known = set(VARIANTS.split(","))
    if set(names) - known or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected variants from {', '.join(sorted(known))}, each once, got {text!r}")
    return ",".join(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "convergence_smollm2_wanda70")
    ap.add_argument("--method", choices=METHODS, default="wanda")
    ap.add_argument("--seeds", type=positive_int, default=3)
    ap.add_argument("--population", type=positive_int, default=10)
    ap.add_argument("--budget", type=positive_int, default=300, help="fitness evaluations per run")
    ap.add_argument("--sparsity", type=sparsity, default=0.7)
    ap.add_argument("--fitness", choices=tuple(FITNESSES), default="ppl")
    ap.add_argument("--variants", type=variants, default=VARIANTS)
    ap.add_argument("--resume", action="store_true", help="keep the finished runs of bench/results/NAME.json")
    args = ap.parse_args()

    mspec = model_spec(args)
    spec = EvaluatorSpec(mspec, data_spec(args).sized(mspec.is_cuda()), PruneSpec(args.method, args.sparsity),
                         args.val_windows, selection_windows=0, fitness=args.fitness)
    args.seqlen, args.nsamples, args.calib_seqlen = spec.data.seqlen, spec.data.nsamples, spec.data.calib_seqlen
    ev = LocalEvaluation(built=build_evaluator(spec))
    folder = RESULTS / args.name
    saved = RESULTS / f"{args.name}.json"
    old = json.loads(saved.read_text()) if args.resume and saved.exists() else {}
    rows, curves = old.get("runs", []), {tuple(k.rsplit("/", 1)): v for k, v in old.get("curves", {}).items()}
    curves = {(v, int(s)): [tuple(p) for p in c] for (v, s), c in curves.items()}
    ran = False
    for seed in range(args.seeds):  # seed-major: a run stopped early still compares every variant
        for variant in args.variants.split(","):
            if (variant, seed) in curves:
                continue
            ran = True
            run_dir = folder / f"{variant}-seed{seed}"
            run = SearchRun("llm", spec, config(variant, args, seed), run_dir,
                            Runtime(resume=checkpoints.exists(run_dir), progress=False), baselines=("uniform",))
            _, result = run_search(run, ev)
            curves[(variant, seed)] = [(r["total_evals"], r["best"]) for r in result.logbook]
            rows.append({"variant": variant, "seed": seed, "evaluations": result.evaluations,
                         "best": result.logbook[-1]["best"], "best formula": result.hall_of_fame[0]["formula"]})
            print(rows[-1], flush=True)
            report(args, rows, curves, spec.model.device, spec.val_windows)
    if rows and not ran:  # --resume found every run done: the report with this version's table
        report(args, rows, curves, spec.model.device, spec.val_windows)


def evaluations_to_reach(curve: list[tuple[int, float]], value: float) -> float:
    """The number of evaluations after which the best so far is ≤ ``value`` (inf if never)."""
    return next((n for n, best in curve if best <= value), math.inf)


def verdict(variant: str, rows: list[dict], curves: dict, random_best: dict) -> str:
    """The claim in words: ``variant`` reaches random search's final best in at most half the evaluations
    random search spent (median over the seeds both finished), and ends lower (on how many seeds)."""
    seeds = sorted(s for s in random_best if (variant, s) in curves)
    if not seeds:
        return ""
    spent = {r["seed"]: r["evaluations"] for r in rows if r["variant"] == "random"}
    ratio = statistics.median(evaluations_to_reach(curves[(variant, s)], random_best[s]) / spent[s] for s in seeds)
    mine = {r["seed"]: r["best"] for r in rows if r["variant"] == variant}
    lower = sum(mine[s] < random_best[s] for s in seeds)
    ok = ratio <= 0.5 and lower == len(seeds)
    return (f"**{variant}**: reaches random search's final best after a median {ratio:.0%} of random search's "
            f"evaluations (claim: ≤ 50 %) and ends lower on {lower} of {len(seeds)} seeds → claim "
            f"{'met' if ok else 'not met'}.")


def seeds_done(rows: list[dict], requested: int) -> str:
    """Which seeds every variant finished, e.g. '0–1 (of 3 requested: the run was stopped)'."""
    done = sorted({r["seed"] for r in rows})
    text = f"0–{done[-1]}" if len(done) > 1 else f"{done[0]}"
    return text if len(done) == requested else f"{text} (of {requested} requested: the run was stopped)"


def report(args, rows: list[dict], curves: dict, device: str, n_val: int) -> None:
    """Write the table and plot so far (a run stopped early leaves its finished seeds behind)."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    random_best = {r["seed"]: r["best"] for r in rows if r["variant"] == "random"}
    summary = []
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        reach = [evaluations_to_reach(curves[(v, r["seed"])], random_best[r["seed"]])
                 for r in mine if r["seed"] in random_best]
        summary.append({"variant": v, "runs": len(mine), "median best": statistics.median(r["best"] for r in mine),
                        "min": min(r["best"] for r in mine), "max": max(r["best"] for r in mine),
                        "mean evaluations": statistics.mean(r["evaluations"] for r in mine),
                        "evaluations to reach random's final best (per seed)":
                            ", ".join("never" if math.isinf(e) else str(e) for e in reach),
                        "median": statistics.median(reach) if reach else None})
    plot(curves, RESULTS / f"{args.name}.png", args.fitness)
    verdicts = "\n".join(verdict(v, rows, curves, random_best) for v in variants if v != "random")
    what = FITNESSES[args.fitness].description
    table = (f"{model_name(args)} on {device}, {args.method}, {args.sparsity:.0%}; "
             f"calibration C4 {args.nsamples}×{args.calib_seqlen}; fitness = {what} on {n_val}×{args.seqlen} "
             f"tokens; population {args.population}, budget {args.budget} evaluations per run, seeds "
             f"{seeds_done(rows, args.seeds)}. 'Reach': evaluations each variant needed to get to the same seed's random-search "
             f"final best (random itself: its budget).\n\n"
             + markdown_table(summary, list(summary[0])) + "\n\n" + (verdicts + "\n\n" if verdicts else "")
             + markdown_table(rows, ["variant", "seed", "evaluations", "best", "best formula"])
             + f"\n\n![convergence]({args.name}.png)")
    write(args.name, {"args": vars(args), "summary": summary, "runs": rows,
                      "curves": {f"{v}/{s}": c for (v, s), c in curves.items()}}, table, "Evolution vs random search",
          quiet=True)


def plot(curves, path: Path, fitness: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.8, 4.0))
    colors = dict(zip(dict.fromkeys(v for v, _ in curves), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (variant, seed), points in curves.items():
        xs, ys = zip(*points)
        ax.step(xs, ys, where="post", color=colors[variant], alpha=0.8, label=variant if seed == 0 else None)
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("best " + FITNESSES[fitness].description)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
