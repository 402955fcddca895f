"""Which fitness ranks allocations as the test split does: validation perplexity or validation KL from the
dense model (EvoPress's), at equal tokens. Spearman's ρ of each against test perplexity, over random
valid allocations (random trees of the grammar), the baselines and found functions.

    python bench/fitness_agreement.py --val-windows 2 --test-windows 16 --random 30 \
        --formulas bench/results/search_smollm2_wanda70_h100 --name NAME [--exact]

Test perplexity uses the evaluator's masks (pruning from the dense model's scores) on the test windows,
or with ``--exact`` the exact sequential pruner (slower; what the tables report).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deap import gp as dgp  # noqa: E402

from bench.common import add_model_args, agreement, load_inputs, markdown_table, weight_snapshot, write  # noqa: E402
from dsa.allocations import allocate, baseline_candidates, split_list  # noqa: E402
from dsa.problem import has_reduction  # noqa: E402
from evaluators.data.text import load_split, token_windows  # noqa: E402
from evaluators.fitness.evaluator import PruningEvaluator  # noqa: E402
from evaluators.fitness.perplexity import perplexity  # noqa: E402
from evaluators.pruning.pruners import prune  # noqa: E402
from gp import half_and_half  # noqa: E402
from primitives import LayerAllocator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "fitness_agreement", split="test", windows=16)
    ap.add_argument("--val-windows", type=int, default=2)
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--random", type=int, default=30, help="random valid allocations (random trees)")
    ap.add_argument("--baselines", default="uniform,owl,dlp,dsa-code,atp-tuned")
    ap.add_argument("--formulas", default="")
    ap.add_argument("--exact", action="store_true", help="test perplexity after exact sequential pruning")
    args = ap.parse_args()

    model, tok, test, calib = load_inputs(args, split="test")
    val = token_windows(tok, load_split(args.data, "validation", args.data_dir), args.seqlen, args.val_windows)
    ev = PruningEvaluator(model, tok, method=args.method, calib_ids=calib, val_windows=val, selection_windows=test,
                          max_scores_per_block=2**18, seed=args.data_seed)
    allocator = LayerAllocator(ev.blocks.scores, target=args.sparsity, weights=ev.blocks.counts)
    candidates: list[tuple[str, list[float]]] = []
    for name, cands in baseline_candidates(tuple(args.baselines.split(",")), ev.blocks, args.sparsity).items():
        candidates += [(f"{name} {p}" if len(cands) > 1 else name, a) for p, a in cands]
    for spec in split_list(args.formulas):
        candidates.append((f"found: {Path(spec).name}", allocate(spec, allocator)[0]))
    random.seed(args.data_seed)
    while sum(n.startswith("random") for n, _ in candidates) < args.random:
        tree = dgp.PrimitiveTree(half_and_half(allocator.pset, 2, 5))
        result = allocator(tree) if has_reduction(tree) else None
        if result is not None and result.valid and not result.uniform:
            candidates.append((f"random: {tree}", result.tolist()))
    restore = weight_snapshot(model)
    rows = []
    for name, alloc in candidates:
        t0 = time.perf_counter()
        ev.fitness = "ppl"
        row = {"allocation": name, "val ppl": ev(alloc)}
        ev.fitness = "kl"
        row["val KL"] = ev(alloc)
        if args.exact:
            restore()
            prune(model, args.method, alloc, calib)
            row["test ppl"] = perplexity(model, test)
            restore()
        else:
            ev.fitness = "ppl"
            row["test ppl"] = ev(alloc, split="selection")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(row, flush=True)
    summary = agreement(rows, "test ppl", {"Spearman val ppl vs test ppl": "val ppl",
                                             "Spearman val KL vs test ppl": "val KL"})
    print(summary)
    table = (f"Model {args.model or 'SmolLM2-135M'} ({'GPU' if args.device.startswith('cuda') else 'CPU'} protocol), "
             f"{args.method} {args.sparsity:.0%}; validation {val.shape[0]}×{args.seqlen} tokens (both fitnesses), "
             f"test {test.shape[0]}×{args.seqlen} ({'exact sequential pruning' if args.exact else 'evaluator masks'}); "
             f"calibration {args.nsamples}×{args.calib_seqlen}.\n\n"
             + markdown_table([summary], list(summary)) + "\n\n"
             + markdown_table(rows, ["allocation", "val ppl", "val KL", "test ppl", "seconds"]))
    write(args.name, {"args": vars(args), "summary": summary, "rows": rows}, table,
          "Rank agreement of the fitness with test perplexity")


if __name__ == "__main__":
    main()
