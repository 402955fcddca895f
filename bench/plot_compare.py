"""Per-layer sparsities of chosen rows of a ``bench/compare.py`` result, beside their test perplexity:
what the winners do differently (PNG next to the result file); and how well the search's fitness
(validation perplexity, through the evaluator's masks) ranks all the result's allocations as their exact
test perplexity does (Spearman ρ, printed).

    python -m bench.plot_compare compare_cpu_smollm2_wanda70 [--rows uniform,atp-tuned,dlp,"GP search"]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import spearman

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = "uniform,owl-tuned,atp-tuned,dlp,GP search,direct search from GP best"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="a compare result under bench/results (without .json)")
    ap.add_argument("--rows", default=ROWS, help="allocations to draw, comma-separated (a name also picks its variants: 'GP search')")
    args = ap.parse_args()
    source = RESULTS / f"{args.name}.json"
    if not source.is_file():
        raise SystemExit(f"plot_compare: no result {source}")
    rows = {r["allocation"]: r for r in json.loads(source.read_text())["rows"] if r.get("sparsities")}
    scored = [r for r in rows.values() if r.get("val ppl") is not None]
    rho = spearman([r["val ppl"] for r in scored], [r["test ppl"] for r in scored])
    print(f"Spearman ρ(val ppl, test ppl) over the {len(scored)} allocations of {source.name}: {rho:.3f}")
    # a requested name picks the rows it names, or that start with it ("GP search" → "GP search (tune 4, seeds)")
    wanted = list(dict.fromkeys(row for name in args.rows.split(",") for row in rows
                                if row == name or row.startswith(name + " (")))
    if not wanted:
        raise SystemExit(f"plot_compare: none of {args.rows!r} in {source.name} (it has: {', '.join(rows)})")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    for name in wanted:
        row = rows[name]
        ax.plot(range(len(row["sparsities"])), row["sparsities"], marker=".", linewidth=1.2,
                label=f"{name}: test {row['test ppl']:.0f}, val {row['val ppl']:.0f}")
    ax.set_xlabel("decoder block")
    ax.set_ylabel("sparsity")
    first = rows[wanted[0]]
    ax.set_title(f"{first['method']} {first['sparsity']:.0%}: per-block sparsity (test / val perplexity)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = RESULTS / f"{args.name}.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
