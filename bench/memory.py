"""Memory (and time) of the fitness evaluator's masking modes at LLaMA-2-7B layer shapes.

A ``LlamaForCausalLM`` with LLaMA-2-7B's shapes (hidden 4096, MLP 11008, 32 heads, vocabulary 32000,
untied head) and random weights, but only ``--layers`` decoder blocks (default 2, so it runs on a
small CPU; per block, the evaluator's state and time ratios are those of the full model). Magnitude
scores (no calibration), all validation windows in one forward call (``batch_size`` = windows).

For a plain forward and for each masking mode (``inplace``: dense copy + int16 ranks; ``forward``:
int16 ranks, masks in each linear's parametrised forward; ``block``: uint8 rank levels, one block's
masked weights built in a per-block forward pre-hook), it measures

- the peak memory growth over the model's resident weights, during evaluator set-up and during
  ``--repeats`` evaluations (CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``; CPU: the process's peak resident set ``VmHWM``, reset by writing "5" to
  ``/proc/self/clear_refs``, minus the resident set just before — so the Python/torch runtime is left
  out and "weights + growth" compares with a GPU's allocated peak);
- the evaluator's own state (dense copy + ranks/levels, :attr:`PruningEvaluator.state_bytes`);
- the median time of an evaluation against the median plain forward over the same windows in one
  call (× floor), the two interleaved (evaluation, plain forward, evaluation, ...) so that load from
  other processes hits both alike;

and projects each mode to the full 32-block LLaMA-2-7B: weights (embedding and head included) +
32 × the per-block state + the measured transient of the evaluations (activations, LM-head chunks,
masked copies: one block runs at a time, so it does not grow with the number of blocks). The
transient is measured at ``--seqlen × --windows`` tokens; a second projection replaces the plain
forward's part of it by ``--ref-transient-gib`` (default 1.49 GiB: the transient the issue's H100 run
implies at 32k validation tokens, 26.1 − 12.55 − 12.06 GiB of ``masking="forward"``) and adds what
the mode adds on top of a plain forward (for ``block`` at least one block's masked weights, whether or
not they coincided with the measured peak). Set-up peaks are
listed, not projected: on a CPU they are dominated by the host-side ``S_l`` subsample of one block
(fp32 scores, their concatenation and an int64 ``randperm``: ~16 bytes per prunable weight of a
block, :func:`evaluators.pruning.blockscores.layer_scores`), which on a GPU sits in host memory. Run it on a
GPU with the real token count to measure rather than project:

    python -m bench.memory --layers 2 --seqlen 512 --windows 2 --name memory_cpu_llama2_7b_shapes   # CPU
    python -m bench.memory --device cuda --layers 4 --seqlen 2048 --windows 16 --name memory_h100_llama2_7b_shapes
    python -m bench.memory --device cuda --layers 32 --seqlen 2048 --windows 16 --name memory_h100_llama2_7b  # ≥ 40 GB GPU
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from pathlib import Path

import torch
from bench.common import markdown_table, write

from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.fitness.masking import MASKING
from evaluators.fitness.perplexity import CHUNK, window_nlls
from evaluators.models.loading import model_linears

from dsa.run.settings import DEFAULT_MAX_SCORES

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = 2**30
FULL_LAYERS = 32  # LLaMA-2-7B


def llama2_7b_config(layers: int, seqlen: int):
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                       vocab_size=32000, num_hidden_layers=layers, max_position_embeddings=max(4096, seqlen))


def build_model(layers: int, dtype: torch.dtype, device: torch.device, seqlen: int):
    """Random-weight LLaMA with 7B shapes, built directly in ``dtype`` on ``device`` (no fp32 detour)."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(llama2_7b_config(layers, seqlen))
    finally:
        torch.set_default_dtype(previous)
    model.to(dtype).eval().requires_grad_(False)
    return model


# --- memory probes: CUDA allocator or the process's resident set -------------------------------------

def _status(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the next phase's growth is seen
    except (OSError, AttributeError):
        pass


class Probe:
    """Peak memory growth of a phase over the memory in use when it started (bytes)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def current(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else (_status("VmRSS") or 0)

    def start(self) -> None:
        _trim()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            except OSError:
                pass
        self.base = self.current()

    def growth(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return (_status("VmHWM") or 0) - self.base


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def allocations(n_blocks: int, repeats: int, mean: float) -> list[list[float]]:
    """Uniform 50 % first (= 128/256: "block" prunes exactly as the exact ranks when cols is a multiple
    of 256, so its perplexity must equal the other modes'), then seeded random ones around ``mean``."""
    gen = torch.Generator().manual_seed(0)
    out = [[0.5] * n_blocks]
    while len(out) < repeats:
        out.append((mean + (torch.rand(n_blocks, generator=gen, dtype=torch.float64) - 0.5) * 0.2).tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2, help="decoder blocks (LLaMA-2-7B has 32)")
    ap.add_argument("--dtype", choices=("bf16", "fp32", "fp16"), default="bf16")
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--windows", type=int, default=2, help="validation windows, all in one forward call")
    ap.add_argument("--repeats", type=int, default=3, help="evaluations (and plain forwards) per mode")
    ap.add_argument("--modes", default=",".join(MASKING))
    ap.add_argument("--sparsity", type=float, default=0.7, help="mean of the random allocations")
    ap.add_argument("--head-chunk", type=int, default=CHUNK, help="LM-head positions per step (0: all logits)")
    ap.add_argument("--ref-transient-gib", type=float, default=1.49,
                    help="a plain forward's transient at the target token count for the second projection "
                         "(default: the issue's H100 run, 32k tokens; 0: leave that projection out)")
    ap.add_argument("--budget-gib", type=float, default=22.0,
                    help="what a 24 GB card can give the allocator (24 GiB total, minus the CUDA context "
                         "and fragmentation)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--name", default="memory")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if bad := [m for m in modes if m not in MASKING]:
        raise SystemExit(f"unknown masking mode(s) {bad}: choose from {', '.join(MASKING)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dtype = DTYPES[args.dtype]
    chunk = args.head_chunk or None

    process_rss = _status("VmRSS")
    t0 = time.perf_counter()
    model = build_model(args.layers, dtype, device, args.seqlen)
    build_s = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    block_weights = sum(lin.weight.numel() * lin.weight.element_size()
                        for block in model_linears(model) for lin in block.values())
    per_block_params = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    full_weights = weights + (FULL_LAYERS - args.layers) * per_block_params
    val = torch.randint(0, 32000, (args.windows, args.seqlen), generator=torch.Generator().manual_seed(2)).to(device)
    tokens = args.windows * args.seqlen
    print(f"model: {args.layers} LLaMA-2-7B blocks, {args.dtype} on {device}, {weights / GIB:.3f} GiB of weights "
          f"({block_weights / GIB:.3f} GiB prunable); built in {build_s:.1f}s; validation {args.windows}×{args.seqlen}",
          flush=True)

    window_nlls(model, val[:1], 1, chunk=chunk)  # warm-up and the one-time LM-head split check
    probe = Probe(device)
    probe.start()
    floor = [timed(lambda: window_nlls(model, val, args.windows, chunk=chunk), device)[0] for _ in range(args.repeats)]
    plain_growth = probe.growth()
    floor_s = statistics.median(floor)
    columns = ["mode", "weights GiB", "evaluator state GiB", "state × weights", "peak setup GiB", "peak setup × weights",
               "peak evaluations GiB", "peak eval × weights", "transient GiB", "seconds", "floor seconds", "× floor"]
    rows = [{"mode": "plain forward", "weights GiB": weights / GIB, "evaluator state GiB": 0.0, "state × weights": 0.0,
             "peak setup GiB": None, "peak evaluations GiB": (weights + plain_growth) / GIB,
             "peak eval × weights": (weights + plain_growth) / weights, "transient GiB": plain_growth / GIB,
             "seconds": floor_s, "floor seconds": floor_s, "× floor": 1.0}]
    print(markdown_table(rows, columns), flush=True)

    allocs = allocations(args.layers, args.repeats, args.sparsity)
    measured = {}
    for mode in modes:
        probe.start()
        setup_s, ev = timed(lambda: PruningEvaluator(model, None, method="magnitude", val_windows=val,
                                                     batch_size=args.windows, max_scores_per_block=DEFAULT_MAX_SCORES,
                                                     masking=mode, head_chunk=chunk), device)
        setup_growth = probe.growth()
        state = ev.state_bytes
        probe.start()
        evals, ppls, floors = [], [], []
        for a in allocs:  # evaluations interleaved with plain forwards (the evaluator restored: dense), so that
            seconds, value = timed(lambda: ev(a), device)  # load from other processes hits both alike
            evals.append(seconds)
            ppls.append(value)
            floors.append(timed(lambda: window_nlls(model, val, args.windows, chunk=chunk), device)[0])
        eval_growth = probe.growth()
        ev.close()
        del ev
        _trim()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # setup: the state is created during it, so growth = state + transients; evaluations: growth over weights + state
        setup_peak = weights + setup_growth
        eval_peak = weights + state + eval_growth
        measured[mode] = {"state": state, "setup_transient": setup_growth - state, "eval_transient": eval_growth,
                          "setup_s": setup_s, "evals": evals, "floors": floors, "ppl": ppls}
        rows.append({"mode": mode, "weights GiB": weights / GIB, "evaluator state GiB": state / GIB,
                     "state × weights": state / weights, "peak setup GiB": setup_peak / GIB,
                     "peak evaluations GiB": eval_peak / GIB, "peak eval × weights": eval_peak / weights,
                     "peak setup × weights": setup_peak / weights,
                     "transient GiB": eval_growth / GIB, "seconds": statistics.median(evals),
                     "floor seconds": statistics.median(floors),
                     "× floor": statistics.median(evals) / statistics.median(floors)})
        print(markdown_table(rows[-1:], columns), f"setup {setup_s:.1f}s, perplexities {ppls}", flush=True)
    same = {m: measured[m]["ppl"][0] for m in measured}
    if len(set(same.values())) > 1:
        print(f"WARNING: perplexity at uniform 50 % differs between modes: {same}")

    # projection to the full 32-block model
    ref = args.ref_transient_gib * GIB
    projection = []
    plain_act = max(plain_growth, 0)
    for mode in ["plain forward", *measured]:
        m = measured.get(mode)
        state_blk = m["state"] / args.layers if m else 0
        state_full = FULL_LAYERS * state_blk
        transient = m["eval_transient"] if m else plain_act  # the search's steady state (set-up: measured table)
        extra = transient - plain_act  # what the mode adds to a plain forward's transient (masked copies, ...)
        at_measured = full_weights + state_full + transient
        row = {"mode": mode, "weights GiB": full_weights / GIB, "state GiB (32 blocks)": state_full / GIB,
               "state × weights": state_full / full_weights, f"transient GiB ({tokens} tokens)": transient / GIB,
               f"peak GiB ({tokens} tokens)": at_measured / GIB, "peak × weights": at_measured / full_weights,
               f"fits {args.budget_gib:g} GiB": "yes" if at_measured <= args.budget_gib * GIB else "no"}
        if ref:
            # conservative: "block"'s masked copy of one block (prunable weights ÷ blocks) may coexist with the
            # peak activation at the target token count, even where it did not at the measured one
            copy = block_weights / args.layers if mode == "block" else 0
            at_ref = full_weights + state_full + ref + max(extra, copy)
            row.update({f"peak GiB (ref. transient {args.ref_transient_gib:g} GiB)": at_ref / GIB,
                        "peak × weights (ref.)": at_ref / full_weights,
                        f"fits {args.budget_gib:g} GiB (ref.)": "yes" if at_ref <= args.budget_gib * GIB else "no"})
        projection.append(row)
    text = (f"LlamaForCausalLM with LLaMA-2-7B layer shapes (hidden 4096, MLP 11008, 32 heads, vocabulary 32000), "
            f"random weights, {args.layers} decoder blocks, {args.dtype} on {device}; magnitude scores; validation "
            f"{args.windows}×{args.seqlen} tokens in one forward call; LM head in chunks of {chunk or 'all'} positions; "
            f"medians of {args.repeats}; 'floor seconds': plain forwards interleaved with that mode's evaluations. "
            "Peaks are the model's weights + the peak growth during the phase "
            + ("(CUDA allocator)" if device.type == "cuda" else
               "(CPU: VmHWM − VmRSS at the phase's start; the Python/torch runtime, "
               f"{(process_rss or 0) / GIB:.2f} GiB before the model, is left out)")
            + "; transient = peak during evaluations − weights − state. Set-up peaks on a CPU include the host-side "
              "S_l subsample (see the script's doc), which a GPU keeps in host memory.\n\n"
            + markdown_table(rows, columns)
            + "\n\nPerplexity at uniform 50 % (block's levels are exact there: 4096 and 11008 are multiples of 256): "
            + ", ".join(f"{m} {v!r}" for m, v in same.items())
            + f".\n\nProjection to the full 32-block LLaMA-2-7B ({args.dtype}): weights {full_weights / GIB:.2f} GiB "
            f"(embedding and head included) + 32 × the measured per-block state + the measured transient of the "
            f"evaluations (not scaled with blocks: one block runs at a time)"
            + (f"; '(ref.)': the plain forward's transient replaced by {args.ref_transient_gib:g} GiB (the issue's "
               "H100 run at 32k tokens), plus what the mode adds on top of a plain forward (block: at least one "
               "block's masked weights)" if ref else "")
            + f". Budget: {args.budget_gib:g} GiB allocatable on a 24 GB card.\n\n"
            + markdown_table(projection, list(projection[0])))
    write(args.name, {"args": vars(args), "device": str(device), "weights_bytes": weights,
                      "prunable_bytes": block_weights, "full_model_weights_bytes": full_weights,
                      "process_rss_before_model_bytes": process_rss, "plain_growth_bytes": plain_growth,
                      "plain_seconds": floor, "modes": measured, "rows": rows, "projection": projection},
          text, "Evaluator memory at LLaMA-2-7B shapes")


if __name__ == "__main__":
    main()
