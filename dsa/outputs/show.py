"""``dsa show RUN``: the hall of fame as a table (rank, fitness, selection-split fitness, simplified
formula, size, allocation, flags), and a multi-objective run's Pareto front ranked by size. A run
folder is shared input: it is read and its choice checked as ``--allocation RUN`` checks it
(:func:`dsa.run.allocations.read_checked_run`), and every text read from it is shown escaped (:func:`evaluators.errors.escape`, also what the CLI's error line goes through)."""
from __future__ import annotations

import textwrap

from evaluators.errors import escape



def format_allocation(values, per_line: int = 15) -> list[str]:
    cells = [f"{v:.3f}" for v in values]
    return [" ".join(cells[i:i + per_line]) for i in range(0, len(cells), per_line)]


def hall_of_fame_table(rows: list[dict], top: int | None = None, notation: str = "formula",
                       width: int = 70) -> str:
    """Plain-text table; ``notation`` is "formula" (SymPy text), "latex" or "tree"."""
    rows = rows[:top] if top else rows
    selection = any(isinstance(r.get("selection"), (int, float)) for r in rows)
    sel_head, sel_rule = (f"  {'selection':>10}", f"  {'-' * 10}") if selection else ("", "")
    lines = [f"{'rank':>4}  {'fitness':>10}{sel_head}  {'size':>4}  formula",
             f"{'-' * 4}  {'-' * 10}{sel_rule}  {'-' * 4}  {'-' * width}"]
    pad = " " * (24 + len(sel_head))
    for row in rows:
        text = textwrap.wrap(escape(row.get(notation) or row["tree"], None), width) or [""]
        sel = row.get("selection")
        sel_cell = (f"  {sel:>10.4f}" if isinstance(sel, (int, float)) else f"  {'':>10}") if selection else ""
        lines.append(f"{row['rank']:>4}  {row['fitness']:>10.4f}{sel_cell}  {row['size']:>4}  {text[0]}")
        lines += [f"{pad}{t}" for t in text[1:]]
        if row.get("flag"):
            lines.append(f"{pad}!! {escape(row['flag'], None)}")
        if row.get("note") and notation != "tree":
            lines.append(f"{pad}({escape(row['note'], None)})")
        output = row.get("output")
        for label, values in (output.items() if isinstance(output, dict) else [("", output)] if output else []):
            alloc = format_allocation(values)  # a multi-task row: one allocation per task
            lines.append(f"{pad}per-layer sparsity{' (' + escape(label) + ')' if label else ''}: {alloc[0]}")
            lines += [f"{pad}{'':>20}{a}" for a in alloc[1:]]
    return "\n".join(lines)


def choice_line(selection: dict) -> str:
    """The run's choice rule in words: the candidate against the strongest baseline on the held-out windows,
    and what the run ships."""
    value, lo, hi = (float(x) for x in selection["delta"])
    strongest, shipped = escape(selection.get("strongest")), escape(selection.get("shipped"))
    rank = escape(selection.get("candidate_rank"))
    head = (f"choice: rank {rank} against the strongest baseline, {strongest}, on {escape(selection.get('windows'))} "
            f"held-out validation windows: Δ log-ppl {value:+.4f} [{lo:+.4f}, {hi:+.4f}], "
            f"{escape(selection.get('verdict'))}")
    if selection.get("shipped") == "found":
        return head + f" → ships rank {rank}"
    return head + f" → no found function beats {strongest}: the run ships {shipped}"


def show_run(run, top: int | None = None, notation: str = "formula") -> str:
    """A run folder as :func:`dsa.run.allocations.read_checked_run` reads it, as text: its settings, baselines,
    choice, hall of fame (the ``top`` rows) and Pareto front."""
    cfg = run.config
    head = [f"run: {escape(run.dir, None)}"]
    if cfg:
        bits = [f"task={escape(cfg.get('task', '?'))}"]
        head.append("  ".join(bits + [f"{k}={escape(cfg[k])}" for k in ("model", "method", "sparsity") if k in cfg]))
    if run.logbook:
        last = run.logbook[-1]
        head.append(f"generations: {escape(last['gen'])}  evaluations: {escape(last['total_evals'])}  "
                    f"cache hit rate: {float(last['hit_rate']):.1%}")
    baselines = cfg.get("baselines")
    selection = cfg.get("selection") if isinstance(cfg.get("selection"), dict) else {}
    on_selection = selection.get("baselines") if isinstance(selection.get("baselines"), dict) else {}
    for name, value in (baselines.items() if isinstance(baselines, dict) else ()):
        if isinstance(value, (int, float)):
            extra = on_selection.get(name)
            extra = f", selection split {extra:.4f}" if isinstance(extra, (int, float)) else ""
            head.append(f"baseline {escape(name)}: fitness {value:.4f}{extra}")
    if selection.get("rule") == "paired-95" and isinstance(selection.get("delta"), list):
        head.append(choice_line(selection))
    elif selection.get("best_rank") is not None:
        verdict = f" — {escape(selection['best_flag'])}: not a win" if selection.get("best_flag") else \
            " (beats every baseline there)"
        head.append(f"best, chosen on the selection split (windows the search never read): rank "
                    f"{escape(selection['best_rank'])}{verdict}")
    body = ["", hall_of_fame_table(run.hall_of_fame, top, notation)]
    if run.pareto_front is not None:
        body += ["", "Pareto front of fitness and size, ranked by size: each formula is fitter than every smaller one",
                 hall_of_fame_table(run.pareto_front, notation=notation)]
    return "\n".join(head + body)
