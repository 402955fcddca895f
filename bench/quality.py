"""Quality table: test-split perplexity of a model pruned with each allocation × pruner × sparsity.

    python bench/quality.py --allocations uniform,owl,dsa-paper,global,alphapruning,RUN_DIR \
        --methods wanda --sparsities 0.7 --seqlen 512 --test-windows 32 [--model M] [--name NAME]

Pruning is the exact mode (block by block, as the papers). The model is loaded once; its dense
weights are restored between rows. Calibration: C4, ``--nsamples`` × ``--calib-seqlen``. Test:
raw WikiText-2 test split, the first ``--test-windows`` windows of ``--seqlen`` tokens (all if 0).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_model_args, load_inputs, markdown_table, model_name, weight_snapshot, write  # noqa: E402
from dsa.llm import resolve_allocation, score_source  # noqa: E402
from evaluators.baselines import alphapruning, block_alphas  # noqa: E402
from evaluators.fitness.perplexity import perplexity  # noqa: E402
from evaluators.pruning.pruners import measured_sparsity, prune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, "quality", split="test", windows=32)
    ap.add_argument("--allocations", default="uniform,owl,dsa-paper,global,alphapruning")
    ap.add_argument("--methods", default="wanda")
    ap.add_argument("--sparsities", default="0.7")
    ap.add_argument("--max-scores-per-layer", type=int, default=2**18)
    args = ap.parse_args()

    model, _, test, calib = load_inputs(args, split="test")
    restore = weight_snapshot(model)

    t0 = time.perf_counter()
    rows = [{"method": "-", "sparsity": 0.0, "allocation": "dense", "perplexity": perplexity(model, test),
             "seconds": round(time.perf_counter() - t0, 1)}]
    print(rows[-1], flush=True)
    alphas = None
    for method in args.methods.split(","):
        for target in map(float, args.sparsities.split(",")):
            source = score_source(model, method, calib, max_per_block=args.max_scores_per_layer)
            for spec in args.allocations.split(","):
                t0 = time.perf_counter()
                if spec == "alphapruning":  # the ESD of every weight matrix: computed once per model
                    alphas = alphas or block_alphas(model)
                    sparsities, formula = alphapruning(source, target, alphas=alphas), None
                else:
                    sparsities, formula = resolve_allocation(spec, source, target)
                restore()
                prune(model, method, sparsities, calib)
                measured = measured_sparsity(model)
                ppl = perplexity(model, test)
                restore()
                rows.append({"method": method, "sparsity": target, "allocation": Path(spec).name if Path(spec).is_dir() else spec,
                             "formula": formula, "perplexity": ppl,
                             "measured mean sparsity": sum(measured) / len(measured),
                             "sparsities": sparsities, "seconds": round(time.perf_counter() - t0, 1)})
                print({k: v for k, v in rows[-1].items() if k != "sparsities"}, flush=True)
                report(args, rows, int(test.shape[0]))
    report(args, rows, int(test.shape[0]))


def report(args, rows: list[dict], n: int) -> None:
    """Write the table so far (a long sweep leaves its finished rows behind if stopped)."""
    table = (f"Model: {model_name(args)}; raw WikiText-2 test, {n} windows × {args.seqlen} "
             f"tokens; calibration C4 {args.nsamples}×{args.calib_seqlen}; exact (sequential) pruning.\n\n"
             + markdown_table(rows, ["method", "sparsity", "allocation", "perplexity", "measured mean sparsity",
                                     "formula", "seconds"]))
    write(args.name, {"args": vars(args), "rows": rows}, table, "Test perplexity by allocation", quiet=True)


if __name__ == "__main__":
    main()
