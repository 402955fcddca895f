"""Does the fitness predict test? Every fitness variant against exact test perplexity, over ≥ 40 allocations.

Per allocation, one pass with the search's own masks (:class:`~evaluators.fitness.evaluator.PruningEvaluator`,
the fast path a search scores with) over a pool of WikiText-2 validation windows and of held-out C4
windows (documents calibration never read, :func:`evaluators.data.text.heldout_docs`) keeps every token's
NLL and each window's KL from the dense model; then exact sequential pruning
(:func:`evaluators.pruning.pruners.prune`, what ``dsa compare`` reports) and the per-window NLLs of the raw
WikiText-2 test split. Every fitness variant (:data:`VARIANTS`) is a function of the kept numbers, so all of
them are compared on the same allocations at the cost of one pass.

Allocations: every candidate of the baselines' grids, the rows of a comparison folder (``--reuse``: their test
NLLs were measured with this protocol and are reused, the first one re-measured as a check), the hall of
fame of search runs (``--runs``), random formulas of the grammar and random perturbations of the best
baselines and found functions. Rows are appended to ``OUT/rows.jsonl`` as they finish (``--resume`` skips
them); the report (Spearman ρ of each variant with test perplexity, over all rows and over the better half by
test, and each variant's cost in seconds per evaluation) is rewritten after every row.

    python -m bench.fitness_agreement --name fitness_agreement_cpu_smollm2_wanda70_v2 \\
        --reuse bench/results/compare_cpu_smollm2_wanda70_v2 \\
        --runs bench/results/compare_cpu_smollm2_wanda70_v2/runs/gp-seed0,... --resume
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.common import (RESULTS, add_model_args, load_inputs, machine, markdown_table, model_name, recorded,
                          spearman, weight_snapshot)
from deap import gp as dgp

from evaluators.data.text import heldout_docs, load_split, marker_tokens, token_windows
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.fitness.perplexity import known_nlls, token_scores
from gp import half_and_half

from dsa.experiment.compare import pruned_nlls
from dsa.run.allocations import baseline_candidates, split_list
from dsa.run.llm import allocator_for
from dsa.run.problem import has_reduction
from dsa.run.settings import DEFAULT_MAX_SCORES

MAX_SCORES = DEFAULT_MAX_SCORES  # the search's subsample per block (EvaluatorSpec's default)
BASELINES = ("uniform", "atp-tuned", "owl-tuned", "dlp", "alphapruning", "dsa-code", "owl")


@dataclass(frozen=True)
class Variant:
    """One fitness: its value from a row's kept numbers, the windows it reads, and what it is."""

    name: str
    windows: int
    kl: bool
    value: Callable[[dict, int], float]  # (row, row index) → fitness (lower is better)
    what: str


def _ppl(key: str, a: int, b: int):
    return lambda r, i: math.exp(sum(r[key][a:b]) / (b - a))


def _known(a: int, b: int):
    return lambda r, i: math.exp(sum(r["val known sum"][a:b]) / sum(r["val known count"][a:b]))


def _mean(key: str, a: int, b: int):
    return lambda r, i: sum(r[key][a:b]) / (b - a)


def _resampled(k: int, known: bool):
    """``k`` windows drawn afresh for every allocation from the whole validation pool (as a search that
    resamples its windows every generation sees them): the draw's noise is part of the fitness."""
    def value(r, i):
        picked = random.Random(1000 + i).sample(range(len(r["val nlls"])), k)
        if known:
            return math.exp(sum(r["val known sum"][j] for j in picked) / sum(r["val known count"][j] for j in picked))
        return math.exp(sum(r["val nlls"][j] for j in picked) / k)
    return value


VARIANTS = (
    Variant("ppl@2", 2, False, _ppl("val nlls", 0, 2), "validation perplexity, first 2 windows (the CLI default)"),
    Variant("ppl@4", 4, False, _ppl("val nlls", 0, 4), "validation perplexity, first 4 windows (the comparisons')"),
    Variant("sel ppl@4", 4, False, _ppl("val nlls", 4, 8), "validation windows 5–8 (the comparisons' selection split)"),
    Variant("ppl@8", 8, False, _ppl("val nlls", 0, 8), "validation perplexity, 8 windows"),
    Variant("ppl@16", 16, False, _ppl("val nlls", 0, 16), "validation perplexity, 16 windows"),
    Variant("known@2", 2, False, _known(0, 2), "validation perplexity, <unk> targets left out, 2 windows"),
    Variant("known@4", 4, False, _known(0, 4), "the same, 4 windows"),
    Variant("known@8", 8, False, _known(0, 8), "the same, 8 windows"),
    Variant("known@16", 16, False, _known(0, 16), "the same, 16 windows"),
    Variant("kl@4", 4, True, _mean("val kls", 0, 4), "KL from the dense model on validation text, 4 windows"),
    Variant("kl@16", 16, True, _mean("val kls", 0, 16), "the same, 16 windows"),
    Variant("c4 ppl@2", 2, False, _ppl("c4 nlls", 0, 2), "perplexity on held-out C4 documents, 2 windows"),
    Variant("c4 ppl@4", 4, False, _ppl("c4 nlls", 0, 4), "the same, 4 windows"),
    Variant("c4 ppl@8", 8, False, _ppl("c4 nlls", 0, 8), "the same, 8 windows"),
    Variant("c4 kl@2", 2, True, _mean("c4 kls", 0, 2), "KL from the dense model on held-out C4, 2 windows"),
    Variant("c4 kl@4", 4, True, _mean("c4 kls", 0, 4), "the same, 4 windows"),
    Variant("c4 kl@8", 8, True, _mean("c4 kls", 0, 8), "the same, 8 windows"),
    Variant("resampled ppl@4", 4, False, _resampled(4, False), "4 validation windows drawn from the 16-window pool"),
    Variant("resampled known@4", 4, False, _resampled(4, True), "the same, <unk> targets left out"),
)


def candidates(args, blocks, target: float, reused: list[dict]) -> list[tuple[str, str, list[float]]]:
    """(name, kind, allocation) of every allocation to measure: reused comparison rows first, then the
    baselines' grids, found functions, random formulas and perturbations of good allocations; an
    allocation already in the list is skipped."""
    out: list[tuple[str, str, list[float]]] = [(r["name"], "reused", r["sparsities"]) for r in reused]

    def add(name: str, kind: str, alloc) -> None:
        alloc = [float(x) for x in alloc]
        if all(max(abs(a - b) for a, b in zip(alloc, other)) > 1e-6 for _, _, other in out):
            out.append((name, kind, alloc))

    for name, cands in baseline_candidates(BASELINES, blocks, target).items():
        step = max(1, len(cands) // args.grid)  # at most ~--grid settings of each tuned baseline
        for params, alloc in cands[::step]:
            add(f"{name} {params}" if len(cands) > 1 else name, "baseline", alloc)
    for run in split_list(args.runs):
        rows = json.loads((Path(run) / "hall_of_fame.json").read_text())
        for row in rows[:args.hof]:
            if row.get("output") is not None:
                add(f"found: {Path(run).name} #{row['rank']} {row['tree']}", "found", row["output"])
    allocator = allocator_for(blocks, target)
    rng = random.Random(args.seed)
    random.seed(args.seed)  # the grammar's generator draws from the module's stream
    made = 0
    while made < args.random:
        tree = dgp.PrimitiveTree(half_and_half(allocator.pset, 2, 5))
        result = allocator(tree) if has_reduction(tree) else None
        if result is not None and result.valid and not result.uniform:
            add(f"random: {tree}", "random", result.tolist())
            made += 1
    good = [a for n, k, a in out if k in ("reused", "found") or n.startswith("atp-tuned")]
    weights = [float(c) for c in blocks.counts]
    for j in range(args.perturb):
        base = good[rng.randrange(len(good))]
        sigma = (0.01, 0.02, 0.04)[j % 3]
        add(f"perturbed #{j} (σ {sigma})", "perturbed", perturb(base, weights, target, sigma, rng))
    return out


def perturb(alloc: list[float], weights: list[float], target: float, sigma: float, rng: random.Random,
            lo: float = 0.0, hi: float = 0.95) -> list[float]:
    """``alloc`` plus Gaussian noise of ``sigma``, within [lo, hi] and back at the weighted mean ``target``."""
    x = [min(hi, max(lo, a + rng.gauss(0.0, sigma))) for a in alloc]
    total = sum(weights)
    for _ in range(100):
        gap = target - sum(w * v for w, v in zip(weights, x)) / total
        free = [i for i, v in enumerate(x) if (gap > 0 and v < hi) or (gap < 0 and v > lo)]
        if abs(gap) < 1e-12 or not free:
            break
        share = gap * total / sum(weights[i] for i in free)
        for i in free:
            x[i] = min(hi, max(lo, x[i] + share))
    return x


def summary(rows: list[dict]) -> tuple[list[dict], dict]:
    """Per variant: Spearman ρ with test perplexity over all rows and over the better half by test."""
    ordered = sorted(range(len(rows)), key=lambda i: rows[i]["test ppl"])
    half = ordered[:max(3, len(rows) // 2)]
    test = [r["test ppl"] for r in rows]
    table = []
    for v in VARIANTS:
        values = [v.value(r, i) for i, r in enumerate(rows)]
        table.append({"fitness": v.name, "ρ all": spearman(values, test),
                      "ρ better half": spearman([values[i] for i in half], [test[i] for i in half]),
                      "windows": v.windows, "what": v.what})
    return table, {"allocations": len(rows), "better half": len(half)}


def report(out: Path, args, rows: list[dict], info: dict) -> None:
    table, counts = summary(rows) if len(rows) >= 4 else ([], {"allocations": len(rows)})
    per_window = info.get("seconds per window", {})
    for t in table:
        key = "kl" if VARIANTS[[v.name for v in VARIANTS].index(t["fitness"])].kl else "ppl"
        t["s / evaluation"] = round(t["windows"] * per_window.get(key, math.nan), 2)
    m = info["machine"]
    text = (f"# Does the fitness predict test?\n\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
            f"CUDA: {m['cuda']}; {m['date']}\n\nModel {model_name(args)}, {args.method} at "
            f"{args.sparsity:.0%}; calibration C4 {args.nsamples} × {args.calib_seqlen} (data seed {args.data_seed}); "
            f"test: raw WikiText-2, {info.get('test windows')} windows × {args.seqlen}, exact sequential pruning; "
            f"fitness pool: {args.pool} WikiText-2 validation windows and {args.c4_windows} windows of held-out C4 "
            f"documents, scored with the search's masks. {counts['allocations']} allocations "
            f"({', '.join(f'{k} {n}' for k, n in kinds(rows).items())}); better half: the "
            f"{counts.get('better half', 0)} lowest test perplexities. Cost: windows × seconds per window of one "
            f"evaluation through the search's evaluator (ppl {per_window.get('ppl', math.nan):.2f} s, "
            f"KL {per_window.get('kl', math.nan):.2f} s per window, measured here). {info.get('reuse check', '')}\n\n"
            + (markdown_table(table, ["fitness", "ρ all", "ρ better half", "windows", "s / evaluation", "what"])
               if table else "(too few rows yet)")
            + "\n\n" + markdown_table([{"allocation": r["name"], "kind": r["kind"],
                                        **{v.name: v.value(r, i) for i, v in enumerate(VARIANTS) if v.name in SHOWN},
                                        "test ppl": r["test ppl"], "seconds": r["seconds"]}
                                       for i, r in enumerate(rows)],
                                      ["allocation", "kind", *SHOWN, "test ppl", "seconds"]) + "\n")
    (out.parent / f"{out.name}.md").write_text(text)
    (out.parent / f"{out.name}.json").write_text(json.dumps(
        {"machine": m, "args": recorded(vars(args)), "model": model_name(args), "info": info, "summary": table},
        indent=1) + "\n")


SHOWN = ("ppl@4", "known@4", "kl@4", "c4 ppl@4", "c4 kl@4")


def kinds(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["kind"]] = out.get(r["kind"], 0) + 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "fitness_agreement", split="test", windows=128)
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--pool", type=int, default=16, help="WikiText-2 validation windows every allocation is scored on")
    ap.add_argument("--c4-windows", type=int, default=8, help="windows of held-out C4 documents")
    ap.add_argument("--reuse", default="", help="a comparison folder with this protocol: its rows' test NLLs are reused")
    ap.add_argument("--runs", default="", help="run folders (comma-separated) whose hall of fame is measured")
    ap.add_argument("--hof", type=int, default=4, help="hall-of-fame entries per run")
    ap.add_argument("--grid", type=int, default=5, help="settings of each tuned baseline's grid")
    ap.add_argument("--random", type=int, default=8, help="random formulas of the grammar")
    ap.add_argument("--perturb", type=int, default=8, help="random perturbations of good allocations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="measure at most this many new rows, then stop")
    ap.add_argument("--report", action="store_true", help="only rewrite the report from the rows measured so far")
    args = ap.parse_args()
    if args.pool < 16 or args.c4_windows < 8:
        ap.error("the variants read 16 validation windows and 8 held-out C4 windows: --pool ≥ 16, --c4-windows ≥ 8")

    out = RESULTS / args.name
    rows_file = out / "rows.jsonl"
    if args.report:
        info = json.loads((out / "info.json").read_text())
        sizes = info.get("sizes", {"seqlen": 512, "nsamples": 64, "calib_seqlen": 512})  # the CPU protocol's
        args.seqlen, args.nsamples, args.calib_seqlen = sizes["seqlen"], sizes["nsamples"], sizes["calib_seqlen"]
        report(out, args, [json.loads(line) for line in rows_file.read_text().splitlines()], info)
        return
    if rows_file.exists() and not args.resume:
        raise SystemExit(f"{out} holds rows already; continue with --resume")
    model, tok, test, calib = load_inputs(args, split="test")
    docs = load_split(args.data, "validation", args.data_dir)
    pool = token_windows(tok, docs, args.seqlen, args.pool)
    unk = marker_tokens(tok, docs, args.seqlen, args.pool)
    c4 = token_windows(tok, heldout_docs(tok, load_split(args.calib, "train", args.data_dir), args.nsamples,
                                         args.calib_seqlen, args.data_seed), args.seqlen, args.c4_windows)
    ev = PruningEvaluator(model, tok, method=args.method, calib_ids=calib, val_windows=pool, selection_windows=c4,
                          max_scores_per_block=MAX_SCORES, seed=args.data_seed)
    restore = weight_snapshot(model)
    reused: list[dict] = []
    if args.reuse:
        saved = json.loads((Path(args.reuse) / "compare.json").read_text())
        reused = [r for r in saved["rows"] if r.get("sparsities") and len(r["test nlls"]) == test.shape[0]]
    todo = candidates(args, ev.blocks, args.sparsity, reused)
    stored = {r["name"]: r for r in reused}
    done = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    names = {r["name"] for r in done}
    info = {"machine": machine(), "test windows": int(test.shape[0]),
            "sizes": {"seqlen": args.seqlen, "nsamples": args.nsamples, "calib_seqlen": args.calib_seqlen},
            "unk share of validation targets": round(float(unk[:, 1:].float().mean()), 4)}
    info_file = out / "info.json"
    if info_file.exists():
        info = {**json.loads(info_file.read_text()), "machine": machine()}
    refs = {"val": ev.reference("search"), "c4": ev.reference("selection")}  # the dense model's, computed once
    if "seconds per window" not in info:  # one evaluation of each kind, as a search makes it
        ev.fitness = "ppl"
        t0 = time.perf_counter()
        ev([args.sparsity] * ev.n_blocks, windows=4)
        ppl_s = (time.perf_counter() - t0) / 4
        ev.fitness = "kl"
        ev.reference("search")
        t0 = time.perf_counter()
        ev([args.sparsity] * ev.n_blocks, windows=4)
        info["seconds per window"] = {"ppl": round(ppl_s, 3), "kl": round((time.perf_counter() - t0) / 4, 3)}
        ev.fitness = "ppl"
    out.mkdir(parents=True, exist_ok=True)
    info_file.write_text(json.dumps(info, indent=1) + "\n")
    print(f"{len(todo)} allocations, {len(names)} done; unk share {info['unk share of validation targets']}", flush=True)
    new = 0
    for name, kind, alloc in todo:
        if name in names or (args.limit is not None and new >= args.limit):
            continue
        t0 = time.perf_counter()
        ev.apply(alloc)
        try:
            val_tok, val_kls = token_scores(model, pool, refs["val"])
            c4_tok, c4_kls = token_scores(model, c4, refs["c4"])
        finally:
            ev.restore()
        known_sum, known_count = known_nlls(val_tok, unk)
        row = {"name": name, "kind": stored[name]["kind"] if name in stored else kind, "sparsities": alloc,
               "val nlls": val_tok.mean(dim=1).tolist(), "val known sum": known_sum.tolist(),
               "val known count": known_count.tolist(), "val kls": val_kls.tolist(),
               "c4 nlls": c4_tok.mean(dim=1).tolist(), "c4 kls": c4_kls.tolist()}
        check = name in stored and "reuse check" not in info
        if name in stored and not check:
            row["test nlls"] = stored[name]["test nlls"]
        else:
            row["test nlls"] = pruned_nlls(model, args.method, alloc, calib, [test], restore)[0]
            if check:
                diff = max(abs(a - b) for a, b in zip(row["test nlls"], stored[name]["test nlls"]))
                info["reuse check"] = (f"Reused test NLLs checked: {name} re-measured here, largest per-window "
                                       f"difference from the comparison's {diff:.2e}.")
                info_file.write_text(json.dumps(info, indent=1) + "\n")
        row["test ppl"] = math.exp(sum(row["test nlls"]) / len(row["test nlls"]))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        with rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        new += 1
        print(f"[{len(done)}/{len(todo)}] {name}: ppl@4 {VARIANTS[1].value(row, 0):.1f} test {row['test ppl']:.1f} "
              f"({row['seconds']} s)", flush=True)
        report(out, args, done, info)
    report(out, args, done, info)


if __name__ == "__main__":
    main()
