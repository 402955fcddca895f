"""The run folder: where a search writes its config, checkpoints, hall of fame, logbook and plots, and
the checks that turn a damaged one into a one-line error."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from .errors import UserError

RESULTS_DIR = Path("results")
ROW_KEYS = {"rank", "fitness", "tree", "formula", "size", "output"}
LOG_KEYS = {"gen", "total_evals", "hit_rate", "min", "median", "best"}


def new_run_dir(task: str, base: Path = RESULTS_DIR) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, i = base / f"{stamp}-{task}", 1
    while path.exists():
        path, i = base / f"{stamp}-{task}-{i}", i + 1
    return path


def write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)


def _json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is damaged: {what} is not readable JSON ({type(exc).__name__})") from None


def _rows(path: Path) -> list[dict]:
    rows = _json(path, "the hall of fame")
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{path} is damaged: expected a non-empty list of formulas")
    for row in rows:
        if not isinstance(row, dict) or not ROW_KEYS <= set(row) or not isinstance(row["fitness"], (int, float)) \
                or not isinstance(row["tree"], str):
            raise UserError(f"{path} is damaged: every entry needs {', '.join(sorted(ROW_KEYS))}")
        if math.isnan(row["fitness"]):
            raise UserError(f"{path} is damaged: a fitness is NaN")
    return rows


def _logbook(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = set(reader.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__})") from None
    if rows and not LOG_KEYS <= columns:
        raise UserError(f"{path} is damaged: it lacks the columns {', '.join(sorted(LOG_KEYS - columns))}")
    for row in rows:
        try:
            int(row["gen"]), int(row["total_evals"]), float(row["hit_rate"]), float(row["best"])
        except (TypeError, ValueError):
            raise UserError(f"{path} is damaged: a row is not numbers") from None
    return rows


def read_run(run_dir: str | Path) -> dict:
    """Config, hall of fame, Pareto front and logbook of a run folder (UserError when it is not one, or
    when one of its files is damaged)."""
    run_dir = Path(run_dir)
    hof_path = run_dir / "hall_of_fame.json"
    if not hof_path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no hall_of_fame.json)")
    config_path, logbook_path, front_path = (run_dir / n for n in ("config.json", "logbook.csv", "pareto_front.json"))
    config = _json(config_path, "the run's config") if config_path.exists() else {}
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is damaged: expected a JSON object")
    return {
        "dir": run_dir,
        "config": config,
        "hall_of_fame": _rows(hof_path),
        "pareto_front": _rows(front_path) if front_path.exists() else None,
        "logbook": _logbook(logbook_path) if logbook_path.exists() else [],
    }


def machine() -> dict:
    """Where a number was measured (benchmark tables and ``dsa compare`` record it)."""
    import os
    import platform

    import torch
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import deap
        import sympy
        info.update(deap=deap.__version__, sympy=sympy.__version__)
    except ImportError:
        pass
    return info
