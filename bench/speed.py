"""Speed of one fitness evaluation against (a) one plain forward pass over the same validation
tokens — the floor — and (b) the naive approach: re-running Wanda pruning (calibration forward +
pruning) for every candidate. Also the cost of decoding a tree into an allocation, and peak memory.

    python -m bench.speed [--model M] [--seqlen 512] [--val-windows 2] [--repeats 5] [--device auto] \
        [--variants fp32:1:inplace,fp32:all:forward,bf16:all:inplace]

A variant is ``dtype:batch:masking[:chunk]``: evaluation dtype (``tf32`` = fp32 weights, TF32
matmuls on CUDA), validation windows per forward (``all`` = one batch), the evaluator's masking mode
(``inplace`` keeps a dense copy; ``forward`` masks in each linear's forward, no copy; ``block``: uint8
levels, one block's masked weights at a time) and the LM-head
chunk of the perplexity pass (positions per step; 0 = all logits at once; default 512). The first
variant is the baseline; the naive row is measured with it. Host memory: the peak resident set
during each variant's setup and evaluations (Linux: /proc/self/clear_refs resets the peak).
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
from pathlib import Path

import torch
from bench.common import add_model_args, load_inputs, markdown_table, model_name, weight_snapshot, write
from deap import gp as dgp

from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.fitness.masking import MASKING
from evaluators.fitness.perplexity import CHUNK, window_nlls
from evaluators.pruning.pruners import prune
from gp import half_and_half
from primitives import LayerAllocator

from dsa.run.problem import has_reduction
from dsa.run.settings import DEFAULT_MAX_SCORES

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def host_rss(field: str = "VmRSS") -> float | None:
    """Resident set (``VmRSS``) or its peak since the last :func:`reset_host_peak` (``VmHWM``), GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 2**30
    except OSError:
        pass
    return None


def reset_host_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def parse_variants(text: str) -> list[tuple[str, str, str, int | None]]:
    variants = []
    for v in text.split(","):
        parts = v.split(":")
        if len(parts) == 3:
            parts.append(str(CHUNK))
        if len(parts) != 4 or parts[0] not in DTYPES or parts[2] not in MASKING or not parts[3].isdigit():
            raise SystemExit(f"bad variant {v!r}: use dtype:batch:masking[:chunk], e.g. bf16:all:forward:512")
        variants.append((*parts[:3], int(parts[3]) or None))
    if any(DTYPES[a[0]].itemsize < DTYPES[b[0]].itemsize for a, b in zip(variants, variants[1:])):
        raise SystemExit("list fp32 variants before 16-bit ones (the model is cast once, downwards)")
    return variants


def sample_allocations(ev: PruningEvaluator, n: int) -> list[tuple[list[float], float]]:
    """``n`` valid non-uniform allocations from random trees, with the seconds each took to decode."""
    allocator = LayerAllocator(ev.blocks.scores, target=0.7, weights=ev.blocks.counts)
    random.seed(0)
    out = []
    while len(out) < n:
        tree = dgp.PrimitiveTree(half_and_half(allocator.pset, 3, 6))
        if not has_reduction(tree):
            continue
        start = time.perf_counter()
        result = allocator(tree)
        seconds = time.perf_counter() - start
        if result.valid and not result.uniform:
            out.append((result.tolist(), seconds))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "speed")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="fp32:1:inplace")
    args = ap.parse_args()
    variants = parse_variants(args.variants)

    model, tok, val, calib = load_inputs(args)
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    med = statistics.median
    rows, memory, host, allocations, naive_s = [], [], [], None, None
    for dtype, batch, masking, chunk in variants:
        model.to(DTYPES[dtype])
        torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
        bs = val.shape[0] if batch == "all" else int(batch)
        label = f"{dtype}, batch {bs}, {masking}, head chunk {chunk or 'off'}"
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        window_nlls(model, val[:1], 1, chunk=chunk)  # warm-up (and the one-time LM-head split check)
        floor = [timed(lambda: window_nlls(model, val, bs, chunk=chunk), device) for _ in range(args.repeats)]
        host_before = host_rss()
        reset_host_peak()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        ev = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val, batch_size=bs,
                              max_scores_per_block=DEFAULT_MAX_SCORES, masking=masking, head_chunk=chunk)
        setup = time.perf_counter() - t0
        held = torch.cuda.memory_allocated() - before if cuda else None
        if allocations is None:
            allocations = sample_allocations(ev, args.repeats)
        evals = [timed(lambda: ev(a), device) for a, _ in allocations]
        applies, restores = [], []
        for a, _ in allocations:
            applies.append(timed(lambda: ev.apply(a), device))
            restores.append(timed(ev.restore, device))
        host_peak = host_rss("VmHWM")
        host.append({"variant": label, "model weights GiB": weight_bytes / 2**30, "RSS before setup GiB": host_before,
                     "peak RSS setup + evaluations GiB": host_peak,
                     "peak × weights": host_peak * 2**30 / weight_bytes if host_peak else None})
        if cuda:
            torch.cuda.synchronize()
            memory.append({"variant": label, "model weights GiB": weight_bytes / 2**30,
                           "evaluator state GiB": held / 2**30,
                           "peak GPU GiB (setup + evaluations)": torch.cuda.max_memory_allocated() / 2**30,
                           "peak × weights": torch.cuda.max_memory_allocated() / weight_bytes})
        ev.close()
        del ev
        rows += [
            {"variant": label, "what": "plain forward over the validation windows (floor)", "seconds": med(floor)},
            {"variant": label, "what": "fitness evaluation (apply masks + forward + restore)", "seconds": med(evals),
             "× floor": med(evals) / med(floor)},
            {"variant": label, "what": "  of which: apply masks", "seconds": med(applies)},
            {"variant": label, "what": "  of which: restore", "seconds": med(restores)},
            {"variant": label, "what": "one-time evaluator setup (calibration, scores, ranks)", "seconds": setup},
        ]
        if naive_s is None:  # the naive approach, in the baseline variant
            restore = weight_snapshot(model, "cpu")

            def naive():
                prune(model, "wanda", allocations[0][0], calib, batch_size=bs)
                window_nlls(model, val, bs, chunk=chunk)
            naive_s = timed(naive, device)
            restore()
            del restore
            rows.append({"variant": label, "what": "naive: Wanda prune (calibration + pruning) + forward",
                         "seconds": naive_s, "× floor": naive_s / med(floor), "× evaluation": naive_s / med(evals)})
        print(markdown_table(rows[-6:], ["variant", "what", "seconds", "× floor", "× evaluation"]), flush=True)
    decode = med([t for _, t in allocations])
    rows.append({"variant": "-", "what": "decode tree → allocation (2^18 scores/layer, first use of each reduction)",
                 "seconds": decode})
    for row in rows:
        if row["what"].startswith("fitness") and naive_s:
            row["× evaluation"] = naive_s / row["seconds"]  # naive (baseline variant) ÷ this evaluation
    whole = {"peak host RSS GiB (whole run, model loading included)":
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30}
    table = (f"Model {model_name(args)} on {device}; validation {val.shape[0]}×{args.seqlen} tokens; "
             f"Wanda calibration {args.nsamples}×{args.calib_seqlen}; medians of {args.repeats}. "
             "'× evaluation' = the naive approach's seconds ÷ this row's.\n\n"
             + markdown_table(rows, ["variant", "what", "seconds", "× floor", "× evaluation"]) + "\n\n"
             + (markdown_table(memory, list(memory[0])) + "\n\n" if memory else "")
             + markdown_table(host, list(host[0])) + "\n\n" + markdown_table([whole], list(whole)))
    write(args.name, {"args": vars(args), "rows": rows, "gpu_memory": memory, "host_memory": host, "host": whole}, table,
          "Fitness evaluation speed")


if __name__ == "__main__":
    main()
