"""GPU speed of a dense-or-2:4 model (issue 20): each 2:4 linear with torch's semi-structured sparse kernels
(cuSPARSELt, or CUTLASS) against the same weights with dense kernels, per linear shape and token count, and
the end-to-end speed of the whole model (greedy decode and one long prefill) before and after its 2:4
linears move to the sparse kernels.

    dsa prune --allocation RUN --nm 2:4 --sparsity 0.4 --dtype fp16 --save OUT   # the deployable model
    python -m bench.speed_24 OUT [--tokens 128] [--batches 1,16] [--name speed24_h200]

Both sides run the same pruned fp16 weights, so the speed-up is the kernels' alone; the table also gives
the largest logit difference between them and whether greedy decoding picks the same tokens. torch's
semi-structured kernels exist only on CUDA GPUs of compute capability 8.0 or newer: elsewhere the script
says so in one line and exits 2, having loaded and written nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from bench.common import markdown_table, write

from evaluators.models.loading import load_model, model_linears, pruned_linears

from dsa.errors import UserError
from dsa.outputs.exports import read_record

TOKEN_COUNTS = (1, 16, 256, 2048)  # rows of the activation matrix: decode steps up to a long prefill


def check_device() -> None:
    """UserError unless torch's semi-structured sparse kernels can run here."""
    if not torch.cuda.is_available():
        raise UserError("2:4 kernels need a CUDA GPU (torch's semi-structured sparsity runs only there); "
                        "none is visible here")
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        raise UserError(f"2:4 kernels need compute capability >= 8.0; this GPU has {major}.{minor}")


def check_folder(folder: Path) -> dict:
    """The ``dsa prune --nm 2:4`` folder's allocation record; UserError for any other folder."""
    record = read_record(folder)
    if record.get("nm") != "2:4":
        raise UserError(f"{folder}: not a dense-or-2:4 model (its allocation.json has nm "
                        f"{record.get('nm')!r}); make one with dsa prune --nm 2:4 --save")
    return record


def sparse_linears(model, sparsities) -> dict[str, torch.nn.Linear]:
    """The 2:4 linears (those of the blocks the allocation prunes), each checked to hold 2 zeros in every
    group of 4 consecutive input weights: the kernels would silently drop weights otherwise."""
    found = pruned_linears(model, sparsities)
    for name, lin in found.items():
        w = lin.weight.detach()
        if w.shape[1] % 4 or not ((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) >= 2).all():
            raise UserError(f"{name} is not 2:4 in every group of 4 input weights")
    return found


def to_sparse_kernels(linears: dict[str, torch.nn.Linear], convert=None) -> None:
    """Swap each linear's weight for ``convert(weight)`` (default: torch's semi-structured 2:4 tensor)."""
    if convert is None:
        from torch.sparse import to_sparse_semi_structured as convert
    for lin in linears.values():
        lin.weight = torch.nn.Parameter(convert(lin.weight.detach()), requires_grad=False)


def cuda_ms(fn, repeats: int = 20) -> float:
    """Median milliseconds of ``fn()`` on the GPU (after two warm-up calls)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@torch.no_grad()
def layer_rows(linears: dict[str, torch.nn.Linear], repeats: int) -> list[dict]:
    """Per distinct weight shape and token count: dense and 2:4 kernel time of ``x @ W.T``."""
    from torch.sparse import to_sparse_semi_structured
    rows = []
    for shape in sorted({tuple(lin.weight.shape) for lin in linears.values()}):
        w = next(lin.weight.detach() for lin in linears.values() if tuple(lin.weight.shape) == shape)
        ws = to_sparse_semi_structured(w)
        for tokens in TOKEN_COUNTS:
            x = torch.randn(tokens, shape[1], dtype=w.dtype, device=w.device)
            dense, sparse = cuda_ms(lambda: F.linear(x, w), repeats), cuda_ms(lambda: F.linear(x, ws), repeats)
            rows.append({"weight (out × in)": f"{shape[0]} × {shape[1]}", "tokens": tokens, "dense ms": dense,
                         "2:4 ms": sparse, "speed-up": dense / sparse})
    return rows


@torch.no_grad()
def model_rows(model, prompt: torch.Tensor, tokens: int, batches: list[int], repeats: int) -> tuple[list, dict]:
    """Decode ``tokens`` greedy tokens per batch size and one prefill of ``prompt`` (ms): one row per
    workload; and the outputs to compare across kernels."""
    rows, outputs = [], {}
    outputs["logits"] = model(prompt).logits.float()
    rows.append({"workload": f"prefill 1 × {prompt.shape[1]} tokens",
                 "ms": cuda_ms(lambda: model(prompt), max(3, repeats // 4))})
    for batch in batches:
        start = prompt[:, :32].expand(batch, -1).contiguous()

        def decode():
            return model.generate(start, attention_mask=torch.ones_like(start), max_new_tokens=tokens,
                                  min_new_tokens=tokens, do_sample=False, pad_token_id=0)
        outputs[f"tokens{batch}"] = decode()
        ms = cuda_ms(decode, max(3, repeats // 4))
        rows.append({"workload": f"decode {tokens} tokens, batch {batch}", "ms": ms,
                     "tokens/s": batch * tokens / ms * 1000})
    return rows, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a dsa prune --nm 2:4 --save folder")
    ap.add_argument("--tokens", type=int, default=128, help="greedy tokens decoded per timing (default 128)")
    ap.add_argument("--batches", default="1,16", help="decode batch sizes, comma-separated (default 1,16)")
    ap.add_argument("--repeats", type=int, default=20, help="timings per layer measurement (median; default 20)")
    ap.add_argument("--name", default="speed24", help="bench/results/NAME.md and .json")
    args = ap.parse_args()
    try:
        record = check_folder(args.folder)
        check_device()
        batches = [int(b) for b in args.batches.split(",")]
    except (UserError, ValueError) as exc:
        print(f"speed_24: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    model, tok = load_model(str(args.folder), "fp16", "cuda")
    linears = sparse_linears(model, record["requested"])
    layers = layer_rows(linears, args.repeats)
    from evaluators.data.text import load_split, token_windows
    prompt = token_windows(tok, load_split("wikitext2", "test"), 2048, 1).to("cuda")
    dense_rows, dense_out = model_rows(model, prompt, args.tokens, batches, args.repeats)
    to_sparse_kernels(linears)
    sparse_rows, sparse_out = model_rows(model, prompt, args.tokens, batches, args.repeats)
    rows = [{"workload": d["workload"], "dense ms": d["ms"], "2:4 ms": s["ms"], "speed-up": d["ms"] / s["ms"],
             "dense tokens/s": d.get("tokens/s"), "2:4 tokens/s": s.get("tokens/s")}
            for d, s in zip(dense_rows, sparse_rows)]
    agree = {"max |logit difference|": float((dense_out["logits"] - sparse_out["logits"]).abs().max()),
             **{f"greedy tokens equal, batch {b}": float((dense_out[f"tokens{b}"] == sparse_out[f"tokens{b}"])
                                                         .float().mean()) for b in batches}}
    share = sum(lin.weight.numel() for lin in linears.values()) / sum(
        lin.weight.numel() for block in model_linears(model) for lin in block.values())
    table = (f"Model {record.get('model')} from {args.folder}, fp16, {len(linears)} linears in 2:4 "
             f"({share:.0%} of the decoder's linear weights), the rest dense; GPU "
             f"{torch.cuda.get_device_name()}, torch {torch.__version__}.\n\n"
             + markdown_table(rows, ["workload", "dense ms", "2:4 ms", "speed-up", "dense tokens/s",
                                     "2:4 tokens/s"])
             + "\n\nSame weights on both sides: " + ", ".join(f"{k} {v:.4g}" for k, v in agree.items())
             + "\n\nPer linear shape (x @ W.T, median of " + str(args.repeats) + " timings):\n\n"
             + markdown_table(layers, ["weight (out × in)", "tokens", "dense ms", "2:4 ms", "speed-up"]))
    write(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, "model": rows, "layers": layers,
                      "agreement": agree, "record": record}, table, "Dense-or-2:4: semi-structured kernels vs dense")


if __name__ == "__main__":
    main()
