"""The run folder: where a search writes its config, checkpoints, hall of fame, logbook and plots."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from .errors import UserError

RESULTS_DIR = Path("results")


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


def read_run(run_dir: str | Path) -> dict:
    """Config, hall of fame and logbook of a run folder (UserError when it is not one)."""
    run_dir = Path(run_dir)
    hof_path = run_dir / "hall_of_fame.json"
    if not hof_path.exists():
        raise UserError(f"{run_dir} is not a run folder (no hall_of_fame.json)")
    config_path = run_dir / "config.json"
    logbook_path = run_dir / "logbook.csv"
    front_path = run_dir / "pareto_front.json"
    logbook = []
    if logbook_path.exists():
        with open(logbook_path, newline="") as f:
            logbook = list(csv.DictReader(f))
    return {
        "dir": run_dir,
        "config": json.loads(config_path.read_text()) if config_path.exists() else {},
        "hall_of_fame": json.loads(hof_path.read_text()),
        "pareto_front": json.loads(front_path.read_text()) if front_path.exists() else None,
        "logbook": logbook,
    }
