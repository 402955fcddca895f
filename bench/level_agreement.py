"""Does the level database (EvoPress's per-layer SparseGPT levels, :mod:`evaluators.fitness.leveldb`) rank
allocations as exact SparseGPT does? Spearman's ρ against exact sequential SparseGPT's test perplexity of
(A) the mask fitness (masks from dense-model SparseGPT scores, no OBS update) and (B) the level-database
fitness, both on the same validation windows, over random valid allocations (random trees of the grammar)
and the baselines (every point of a tuned baseline's grid). Also: the database's build time and size, and
its size projected to LLaMA-2-7B.

    python -m bench.level_agreement --val-windows 2 --test-windows 16 --nsamples 16 --random 30 \\
        --name level_agreement_cpu_smollm2_sparsegpt70 [--resume]

``--exact-from NAME`` takes each allocation's exact test perplexity from ``bench/results/NAME.json`` (a run of
the same settings at another ``--grid-step`` or database format) instead of pruning sequentially again: the
database's agreement at another grid on the same allocations and the same exact numbers, in minutes::

    python -m bench.level_agreement --val-windows 2 --test-windows 16 --nsamples 16 --random 30 --grid-step 0.1 \\
        --exact-from level_agreement_cpu_smollm2_sparsegpt70 --name level_agreement_cpu_smollm2_sparsegpt70_step01

Rows are written as they finish (``bench/results/NAME.json``); ``--resume`` reads them back and skips the
allocations already done (same settings required). The database is opened or built under
``--leveldb-root`` (default ``$DSA_CACHE_DIR/leveldb`` or ``~/.cache/dsa-gp/leveldb``) and reused by a
later run with the same model, calibration and grid.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time

from bench.common import (LLAMA2_7B_SHAPES, RESULTS, add_model_args, agreement, load_inputs, markdown_table,
                          model_name, recorded, weight_snapshot, write)
from deap import gp as dgp

from evaluators.data.text import load_split, token_windows
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.fitness.leveldb import DEFAULT_STEP, level_grid, open_levels
from evaluators.fitness.levelfiles import projected_bytes
from evaluators.fitness.perplexity import perplexity
from evaluators.models.loading import model_linears
from evaluators.pruning.pruners import prune
from gp import half_and_half
from primitives import LayerAllocator

from dsa.cli.dispatch import data_spec, model_spec
from dsa.run.allocations import baseline_candidates
from dsa.run.llm import level_key
from dsa.run.problem import has_reduction
from dsa.run.settings import DEFAULT_MAX_SCORES

# what --resume requires to be unchanged
SAME_FOR_RESUME = ("model", "dtype", "method", "sparsity", "val_windows", "test_windows", "nsamples", "calib_seqlen",
                   "seqlen", "data", "calib", "data_seed", "grid_step", "baselines")


def projection(grid: list[float]) -> dict:
    """The database's size for LLaMA-2-7B at the same grid, in the stored format (kept values and a bitmask per
    level: :func:`evaluators.fitness.levelfiles.projected_bytes`)."""
    return {f"LLaMA-2-7B database {name} (GB)": round(projected_bytes(LLAMA2_7B_SHAPES, grid, size) / 1e9, 1)
            for name, size in (("bf16", 2), ("fp32", 4))}


def candidates(args, blocks, target: float) -> list[tuple[str, list[float]]]:
    """The baselines (each point of a tuned one's grid), then ``--random`` random valid allocations, seeded."""
    out: list[tuple[str, list[float]]] = []
    for name, cands in baseline_candidates(tuple(filter(None, args.baselines.split(","))), blocks, target).items():
        out += [(f"{name} {p}" if len(cands) > 1 else name, a) for p, a in cands]
    allocator = LayerAllocator(blocks.scores, target=target, weights=blocks.counts)
    random.seed(args.data_seed)
    names = {n for n, _ in out}
    while sum(n.startswith("random") for n, _ in out) < args.random:
        tree = dgp.PrimitiveTree(half_and_half(allocator.pset, 2, 5))
        result = allocator(tree) if has_reduction(tree) else None
        if result is not None and result.valid and not result.uniform and f"random: {tree}" not in names:
            out.append((f"random: {tree}", result.tolist()))
            names.add(out[-1][0])
    return out


def previous_rows(args) -> list[dict]:
    """The rows of a partial run of the same settings (``--resume``), else []."""
    path = RESULTS / f"{args.name}.json"
    if not args.resume or not path.is_file():
        return []
    old = json.loads(path.read_text())
    changed = [k for k in SAME_FOR_RESUME if old["args"].get(k) != recorded(vars(args))[k]]
    if changed:
        sys.exit(f"--resume: {path} was run with other settings ({', '.join(changed)}); use another --name")
    return old["rows"]


def exact_numbers(args) -> dict[str, float]:
    """Each allocation's exact test perplexity from ``bench/results/{args.exact_from}.json``, which must have been
    run with the same settings but the grid; {} without ``--exact-from``. One line and exit 2 otherwise."""
    if not args.exact_from:
        return {}
    path = RESULTS / f"{args.exact_from}.json"
    if not path.is_file():
        sys.exit(f"--exact-from: no such result: {path.relative_to(RESULTS.parent.parent)}")
    old = json.loads(path.read_text())
    changed = [k for k in SAME_FOR_RESUME if k != "grid_step" and old["args"].get(k) != recorded(vars(args))[k]]
    if changed:
        sys.exit(f"--exact-from: {args.exact_from} was run with other settings ({', '.join(changed)})")
    return {r["allocation"]: r["exact test ppl"] for r in old["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "level_agreement", split="test", windows=16)
    ap.add_argument("--val-windows", type=int, default=2)
    ap.add_argument("--method", choices=("sparsegpt", "sparsegpt-row"), default="sparsegpt")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--random", type=int, default=30, help="random valid allocations (random trees)")
    ap.add_argument("--baselines", default="uniform,owl,dlp,dsa-code,atp-tuned")
    ap.add_argument("--grid-step", type=float, default=DEFAULT_STEP,
                    help=f"level grid: 0, step, … below 0.99, then 0.99 (default {DEFAULT_STEP})")
    ap.add_argument("--leveldb-root",
                    help="database folder (default $DSA_CACHE_DIR/leveldb or ~/.cache/dsa-gp/leveldb)")
    ap.add_argument("--resume", action="store_true", help="skip the allocations already in bench/results/NAME.json")
    ap.add_argument("--exact-from", metavar="NAME",
                    help="take the exact test perplexities from bench/results/NAME.json (same settings, another grid)")
    args = ap.parse_args()
    if args.exact_from and not (RESULTS / f"{args.exact_from}.json").is_file():  # before the model loads
        sys.exit(f"--exact-from: no such result: bench/results/{args.exact_from}.json")

    model, tok, test, calib = load_inputs(args, split="test")
    val = token_windows(tok, load_split(args.data, "validation", args.data_dir), args.seqlen, args.val_windows)
    rows = previous_rows(args)
    exact = exact_numbers(args)

    grid = level_grid(args.grid_step)
    key = level_key(model_spec(args), data_spec(args))  # the same database as dsa search's
    t0 = time.perf_counter()
    db = open_levels(model, calib, args.method, key, grid=grid, root=args.leveldb_root, progress=True,
                     batch_size=args.batch_size)
    opened = time.perf_counter() - t0
    print(db.describe(), flush=True)
    params = sum(lin.weight.numel() for block in model_linears(model) for lin in block.values())
    database = {"levels stored": len(grid) - 1, "database": db.path.name, "size (GB)": round(db.size_bytes / 1e9, 2),
                "build seconds": db.meta["build_seconds"], "reused": db.reused, "open seconds": round(opened, 1),
                "linear params": params, **projection(grid)}

    common = dict(calib_ids=calib, val_windows=val, max_scores_per_block=DEFAULT_MAX_SCORES, seed=args.data_seed,
                  batch_size=args.batch_size)
    masks = PruningEvaluator(model, tok, method="sparsegpt", **common)  # fitness A: masks, no weight update
    levels = PruningEvaluator(model, tok, method="sparsegpt", levels=db, **common)  # fitness B
    restore = weight_snapshot(model)
    done = {r["allocation"] for r in rows}
    todo = [(n, a) for n, a in candidates(args, masks.blocks, args.sparsity) if n not in done]
    if exact and (missing := [n for n, _ in todo if n not in exact]):
        sys.exit(f"--exact-from: {args.exact_from} has no row for {len(missing)} allocations (first: {missing[0]})")
    print(f"{len(rows)} allocations done before, {len(todo)} to go", flush=True)

    def save(final: bool) -> None:
        summary = {**agreement(rows, "exact test ppl", {"ρ A masks vs exact": "A masks val ppl",
                                                              "ρ B levels vs exact": "B levels val ppl"}),
                   **database} if len(rows) >= 3 else dict(database)
        table = (f"Model {model_name(args)} ({'GPU' if args.device.startswith('cuda') else 'CPU'} "
                 f"protocol), {args.method} {args.sparsity:.0%}; fitness A (masks from dense SparseGPT scores) and B "
                 f"(level database, {len(grid) - 1} levels, step {args.grid_step}) on validation "
                 f"{val.shape[0]}×{args.seqlen} tokens; exact: sequential {args.method} pruning, test "
                 f"{test.shape[0]}×{args.seqlen}{f' (the numbers of {args.exact_from})' if exact else ''}; calibration {args.nsamples}×{args.calib_seqlen}.\n\n"
                 + markdown_table([summary], list(summary)) + "\n\n"
                 + markdown_table(rows, ["allocation", "A masks val ppl", "B levels val ppl", "exact test ppl",
                                         "seconds"]))
        write(args.name, {"args": vars(args), "summary": summary, "database": database, "rows": rows}, table,
              "Rank agreement with exact SparseGPT: mask fitness vs level-database fitness", quiet=not final)

    for name, alloc in todo:
        t0 = time.perf_counter()
        row = {"allocation": name, "A masks val ppl": masks(alloc), "B levels val ppl": levels(alloc)}
        restore()
        if exact:
            row["exact test ppl"] = exact[name]
        else:
            prune(model, args.method, alloc, calib, batch_size=args.batch_size)
            row["exact test ppl"] = perplexity(model, test, args.batch_size)
            restore()
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(row, flush=True)
        save(final=False)
    save(final=True)


if __name__ == "__main__":
    main()
