"""Speed of one fitness evaluation against (a) one plain forward pass over the same validation
tokens — the floor — and (b) the naive approach: re-running Wanda pruning (calibration forward +
pruning) for every candidate. Also the cost of decoding a tree into an allocation, and peak memory.

    python bench/speed.py [--model M] [--seqlen 512] [--val-windows 2] [--repeats 5] [--device auto]
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import markdown_table, write  # noqa: E402
from evaluators.data import calibration_batch, load_split, token_windows  # noqa: E402
from evaluators.fitness import PruningEvaluator  # noqa: E402
from evaluators.models import load_model, model_linears  # noqa: E402
from evaluators.perplexity import perplexity  # noqa: E402
from evaluators.pruners import prune  # noqa: E402
from gp import half_and_half  # noqa: E402
from dsa.problem import has_reduction  # noqa: E402
from deap import gp as dgp  # noqa: E402
from primitives import LayerAllocator  # noqa: E402


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--name", default="speed")
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--val-windows", type=int, default=2)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--calib-seqlen", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    model, tok = load_model(args.model, "fp32", args.device)
    device = next(model.parameters()).device
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    val = token_windows(tok, load_split("wikitext2", "validation"), args.seqlen, args.val_windows)
    calib = calibration_batch(tok, load_split("c4", "train"), args.nsamples, args.calib_seqlen, seed=0)

    floor = [timed(lambda: perplexity(model, val), device) for _ in range(args.repeats)]
    t0 = time.perf_counter()
    ev = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val, max_scores_per_block=2**18)
    setup = time.perf_counter() - t0
    allocator = LayerAllocator(ev.block_scores(), target=0.7, weights=ev.param_counts())

    random.seed(0)
    allocations = []
    while len(allocations) < args.repeats:
        tree = dgp.PrimitiveTree(half_and_half(allocator.pset, 3, 6))
        if not has_reduction(tree):
            continue
        start = time.perf_counter()
        result = allocator(tree)
        seconds = time.perf_counter() - start
        if result.valid and not result.uniform:
            allocations.append((result.tolist(), seconds))
    decode = [t for _, t in allocations]
    evals = [timed(lambda: ev(a), device) for a, _ in allocations]
    applies, restores = [], []
    for a, _ in allocations:
        applies.append(timed(lambda: ev.apply(a), device))
        restores.append(timed(ev.restore, device))

    dense = [{n: lin.weight.detach().clone() for n, lin in b.items()} for b in model_linears(model)]

    def naive():
        prune(model, "wanda", allocations[0][0], calib)
        perplexity(model, val)
    naive_s = timed(naive, device)
    with torch.no_grad():
        for b, saved in zip(model_linears(model), dense):
            for n, lin in b.items():
                lin.weight.copy_(saved[n])

    med = statistics.median
    rows = [
        {"what": "plain forward over the validation windows (floor)", "seconds": med(floor)},
        {"what": "fitness evaluation (apply masks + forward + restore)", "seconds": med(evals),
         "× floor": med(evals) / med(floor)},
        {"what": "  of which: apply masks", "seconds": med(applies)},
        {"what": "  of which: restore dense weights", "seconds": med(restores)},
        {"what": "decode tree → allocation (2^18 scores/layer, first use of each reduction)", "seconds": med(decode)},
        {"what": "naive: Wanda prune (calibration + pruning) + forward", "seconds": naive_s,
         "× floor": naive_s / med(floor), "× evaluation": naive_s / med(evals)},
        {"what": "one-time evaluator setup (calibration, scores, ranks)", "seconds": setup},
    ]
    peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    memory = {"model weights GiB": weight_bytes / 2**30, "peak host RSS GiB": peak_host / 2**30,
              "peak GPU GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    table = (f"Model {args.model or 'SmolLM2-135M'} on {device}; validation {val.shape[0]}×{args.seqlen} tokens; "
             f"Wanda calibration {args.nsamples}×{args.calib_seqlen}; medians of {args.repeats}.\n\n"
             + markdown_table(rows, ["what", "seconds", "× floor", "× evaluation"]) + "\n\n"
             + markdown_table([memory], list(memory)))
    write(args.name, {"args": vars(args), "rows": rows, "memory": memory}, table, "Fitness evaluation speed")


if __name__ == "__main__":
    main()
