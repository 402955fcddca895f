"""``dsa show RUN``: the hall of fame as a table (rank, fitness, simplified formula, size, allocation),
and a multi-objective run's Pareto front (fitness against formula size) ranked by size."""
from __future__ import annotations

import textwrap

from .runs import read_run


def format_allocation(values, per_line: int = 15) -> list[str]:
    cells = [f"{v:.3f}" for v in values]
    return [" ".join(cells[i:i + per_line]) for i in range(0, len(cells), per_line)]


def hall_of_fame_table(rows: list[dict], top: int | None = None, notation: str = "formula",
                       width: int = 70) -> str:
    """Plain-text table; ``notation`` is "formula" (SymPy text), "latex" or "tree"."""
    rows = rows[:top] if top else rows
    lines = [f"{'rank':>4}  {'fitness':>10}  {'size':>4}  formula", f"{'-' * 4}  {'-' * 10}  {'-' * 4}  {'-' * width}"]
    for row in rows:
        text = textwrap.wrap(str(row.get(notation, row["tree"])), width) or [""]
        lines.append(f"{row['rank']:>4}  {row['fitness']:>10.4f}  {row['size']:>4}  {text[0]}")
        lines += [f"{'':>24}{t}" for t in text[1:]]
        if row.get("output"):
            alloc = format_allocation(row["output"])
            lines.append(f"{'':>24}per-layer sparsity: {alloc[0]}")
            lines += [f"{'':>44}{a}" for a in alloc[1:]]
    return "\n".join(lines)


def show(run_dir: str, top: int | None = None, notation: str = "formula") -> str:
    run = read_run(run_dir)
    cfg = run["config"]
    head = [f"run: {run['dir']}"]
    if cfg:
        task = cfg.get("task", "?")
        bits = [f"task={task}"] + [f"{k}={cfg[k]}" for k in ("model", "method", "sparsity") if k in cfg]
        head.append("  ".join(bits))
    if run["logbook"]:
        last = run["logbook"][-1]
        head.append(f"generations: {last['gen']}  evaluations: {last['total_evals']}  "
                    f"cache hit rate: {float(last['hit_rate']):.1%}")
    for name, value in cfg.get("baselines", {}).items():
        head.append(f"baseline {name}: fitness {value:.4f}")
    body = ["", hall_of_fame_table(run["hall_of_fame"], top, notation)]
    if run["pareto_front"] is not None:
        body += ["", "Pareto front of fitness and size, ranked by size: each formula is fitter than every smaller one",
                 hall_of_fame_table(run["pareto_front"], notation=notation)]
    return "\n".join(head + body)
