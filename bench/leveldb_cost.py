"""What the level database costs (:mod:`evaluators.fitness.leveldb`): its size on disk against its projection
and against format 1's dense copies, its size projected to LLaMA-2-7B (bf16) at the same grid, its build time,
the time to check every block file's digest, and one candidate's fitness with it against a plain forward on
the same tokens:

- **cold**: the first candidate of the process (block files opened, their digests checked, levels read
  and decoded; the files may sit in the OS page cache when the database was just built: see "reused");
- **warm**: a candidate that differs from the one before in ``--changed`` blocks (the other blocks'
  levels come from the decoded-level cache), median over ``--repeats`` alternations of two such
  candidates, each against the median plain forward measured between them.

The candidates ramp linearly from ``--sparsity − 0.1`` to ``--sparsity + 0.1`` over the blocks (rows mixed
between two levels in most blocks); the second swaps the ramp's ends ``--changed // 2`` times. Fitness:
validation perplexity (``ppl``) on ``--val-windows`` windows; the plain forward is the same perplexity of
the dense model.

    python -m bench.leveldb_cost --model PATH --method sparsegpt --sparsity 0.7 --name NAME [--leveldb-root DIR]

Writes ``bench/results/NAME.{md,json}``. The database is opened or built under ``--leveldb-root`` (default
``$DSA_CACHE_DIR/leveldb`` or ``~/.cache/dsa-gp/leveldb``), the same one ``dsa search`` uses for the same
model and calibration.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.common import LLAMA2_7B_SHAPES, add_model_args, load_inputs, markdown_table, model_name, write

from evaluators.files import file_digest
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.fitness.leveldb import DEFAULT_STEP, level_grid, open_levels
from evaluators.fitness.levelfiles import projected_bytes
from evaluators.fitness.perplexity import perplexity
from evaluators.models.loading import model_linears

from dsa.cli.dispatch import data_spec, model_spec
from dsa.run.llm import level_key

GB = 1e9


def candidates(target: float, n: int, changed: int) -> tuple[list[float], list[float]]:
    """A ramp from ``target − 0.1`` to ``target + 0.1`` over ``n`` blocks (mean ``target`` for blocks of equal
    size), and the same ramp with its ``changed // 2`` outermost pairs of blocks swapped."""
    a = [min(0.99, max(0.0, target + 0.2 * (l / max(1, n - 1) - 0.5))) for l in range(n)]
    b = list(a)
    for k in range(min(changed // 2, n // 2)):
        b[k], b[n - 1 - k] = a[n - 1 - k], a[k]
    return a, b


def timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "leveldb_cost", split="validation", windows=2)
    ap.add_argument("--method", choices=("sparsegpt", "sparsegpt-row"), default="sparsegpt")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--grid-step", type=float, default=DEFAULT_STEP,
                    help=f"level grid: 0, step, … below 0.99, then 0.99 (default {DEFAULT_STEP})")
    ap.add_argument("--leveldb-root",
                    help="database folder (default $DSA_CACHE_DIR/leveldb or ~/.cache/dsa-gp/leveldb)")
    ap.add_argument("--changed", type=int, default=2, help="blocks in which the warm candidate differs (even)")
    ap.add_argument("--repeats", type=int, default=3, help="warm candidates and plain forwards timed (medians)")
    args = ap.parse_args(argv)

    model, _, val, calib = load_inputs(args)
    grid = level_grid(args.grid_step)
    db = open_levels(model, calib, args.method, level_key(model_spec(args), data_spec(args)), grid=grid,
                     root=args.leveldb_root, progress=True, batch_size=args.batch_size)
    print(db.describe(), flush=True)
    shapes = [tuple(lin.weight.shape) for block in model_linears(model) for lin in block.values()]
    element_size = next(lin.weight.element_size() for block in model_linears(model) for lin in block.values())
    levels = len(grid) - 1
    database = {
        "blocks": db.n_blocks, "levels stored": levels, "dtype": db.dtype,
        "linear params": sum(r * c for r, c in shapes),
        "size (GB)": db.size_bytes / GB, "projected size (GB)": projected_bytes(shapes, grid, element_size) / GB,
        "format 1 size (GB)": sum(r * c for r, c in shapes) * levels * element_size / GB,
        "LLaMA-2-7B bf16 projected (GB)": projected_bytes(LLAMA2_7B_SHAPES, grid, 2) / GB,
        "LLaMA-2-7B bf16 format 1 (GB)": sum(r * c for r, c in LLAMA2_7B_SHAPES) * levels * 2 / GB,
        "build seconds": db.meta["build_seconds"], "reused": db.reused,
    }

    ev = PruningEvaluator(model, None, method=args.method, calib_ids=calib, val_windows=val, fitness="ppl",
                          batch_size=args.batch_size, levels=db)
    a, b = candidates(args.sparsity, db.n_blocks, args.changed)
    forward = lambda: perplexity(model, val, args.batch_size)  # noqa: E731
    cold = timed(lambda: ev(a))
    cold_reads = ev.masks.reads
    forwards, warm = [timed(forward)], []
    for k in range(args.repeats):
        warm.append(timed(lambda: ev(b if k % 2 == 0 else a)))
        forwards.append(timed(forward))
    plain = statistics.median(forwards)
    digest_seconds = sum(timed(lambda l=l: file_digest(db.path / f"block_{l:03d}.safetensors", size))
                         for l, size in enumerate(db.meta["sizes"]))
    cost = {"plain forward (s)": plain, "cold candidate (s)": cold, "warm candidate (s)": statistics.median(warm),
            "cold ÷ forward": cold / plain, "warm ÷ forward": statistics.median(warm) / plain,
            "levels decoded cold": cold_reads,
            "levels decoded per warm candidate (mean)": (ev.masks.reads - cold_reads) / max(1, args.repeats),
            "digest check, all blocks (s)": digest_seconds,
            "digest GB/s": db.size_bytes / GB / digest_seconds}
    ev.close()

    title = "Level database: size, build time and one candidate's cost against a plain forward"
    table = (f"Model {model_name(args)}, {args.method}, {levels} levels (step {args.grid_step}), dtype {db.dtype}; "
             f"calibration {args.nsamples}×{args.calib_seqlen}; candidates around {args.sparsity:.0%} on "
             f"{val.shape[0]}×{args.seqlen} validation tokens, batch size {args.batch_size}; warm: {args.changed} "
             f"blocks changed, median of {args.repeats}.\n\n" + markdown_table([database], list(database)) + "\n\n"
             + markdown_table([cost], list(cost)))
    recorded = {k: v for k, v in vars(args).items() if k not in ("leveldb_root", "data_dir")}  # paths stay out
    payload = {"args": recorded, "database": database, "cost": cost}
    write(args.name, payload, table, title)
    return payload


if __name__ == "__main__":
    main()
