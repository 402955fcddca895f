"""Does a 16-bit fitness rank candidates like the fp32 one? Validation perplexity of the same random
allocations with the model in fp32 and in bf16 (or fp16): Spearman rank correlation, relative gaps,
and whether both pick the same best candidate.

    python -m bench.dtype_agreement [--model M] [--dtype bf16] [--candidates 12] [--seqlen 512] [--val-windows 2]
"""
from __future__ import annotations

import argparse
import statistics

from bench.common import add_model_args, load_inputs, markdown_table, model_name, spearman, write
from bench.speed import DTYPES, sample_allocations

from evaluators.fitness.evaluator import PruningEvaluator

from dsa.run.settings import DEFAULT_MAX_SCORES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "dtype_agreement")
    ap.add_argument("--low-dtype", default="bf16", choices=("bf16", "fp16"), help="compared with fp32")
    ap.add_argument("--candidates", type=int, default=12)
    args = ap.parse_args()

    model, tok, val, calib = load_inputs(args)
    ev = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val, max_scores_per_block=DEFAULT_MAX_SCORES)
    allocations = [a for a, _ in sample_allocations(ev, args.candidates)]
    fp32 = [ev(a) for a in allocations]
    del ev
    model.to(DTYPES[args.low_dtype])  # scores and ranks rebuilt from the 16-bit weights, as a 16-bit search would
    ev = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val, max_scores_per_block=DEFAULT_MAX_SCORES)
    low = [ev(a) for a in allocations]
    gaps = [abs(b - a) / a for a, b in zip(fp32, low)]
    summary = {"candidates": len(allocations), "Spearman ρ (fp32 vs " + args.low_dtype + ")": spearman(fp32, low),
               "median relative gap": statistics.median(gaps), "max relative gap": max(gaps),
               "same best candidate": fp32.index(min(fp32)) == low.index(min(low))}
    rows = [{"candidate": i, "fp32 val ppl": a, f"{args.low_dtype} val ppl": b} for i, (a, b) in enumerate(zip(fp32, low))]
    table = (f"Model {model_name(args)} on {next(model.parameters()).device}; Wanda 70 %, random valid "
             f"allocations; validation {val.shape[0]}×{args.seqlen} tokens; calibration {args.nsamples}×{args.calib_seqlen}.\n\n"
             + markdown_table([summary], list(summary)) + "\n\n"
             + markdown_table(rows, ["candidate", "fp32 val ppl", f"{args.low_dtype} val ppl"]))
    write(args.name, {"args": vars(args), "summary": summary, "rows": rows}, table, f"fp32 vs {args.low_dtype} fitness")
    print(markdown_table([summary], list(summary)))


if __name__ == "__main__":
    main()
