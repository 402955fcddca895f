"""The fair comparison as a benchmark: ``dsa compare`` (:mod:`dsa.experiment.compare`, the code ``dsa search``
runs) with its folder under ``bench/results/NAME``. Every flag is ``dsa compare``'s, checked as the CLI
checks it.

    python -m bench.compare NAME --method wanda --sparsity 0.7 --val-windows 4 --seeds 0,1,2 \
        --searches gp --tune-constants 4 --seed-baselines [--resume]

writes ``bench/results/NAME/`` (compare.md: the table with 95 % intervals; compare.json: every row with
its per-window test NLLs; allocations.png; runs/: the searches' run folders).
"""
from __future__ import annotations

import sys
from pathlib import Path

from dsa.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print(__doc__)
        sys.exit(2)
    sys.exit(main(["compare", "--out", str(RESULTS / sys.argv[1]), *sys.argv[2:]]))
