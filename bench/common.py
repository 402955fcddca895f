"""Shared bits of the benchmark scripts: machine description and result writing."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import deap
        import sympy
        info.update(deap=deap.__version__, sympy=sympy.__version__)
    except ImportError:
        pass
    return info


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write(name: str, payload: dict, table: str, title: str, quiet: bool = False) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    m = payload["machine"]
    head = f"# {title}\n\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CUDA: {m['cuda']}; {m['date']}\n\n"
    (RESULTS / f"{name}.md").write_text(head + table + "\n")
    if not quiet:
        print(table)
