"""The run folder: where a search writes its config, checkpoints, hall of fame, logbook and plots, and
the checks that turn a damaged one into a one-line error. Run folders are shared between users, so
what is read from one is untrusted: regular files of bounded size only (a FIFO or a link to
``/dev/zero`` is refused, never read), every hall-of-fame row checked field by field."""
from __future__ import annotations

import csv
import importlib
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

from evaluators.files import path_kind, read_json, read_regular, write_json
from gp.schema import finite_number

from dsa.errors import UserError
from dsa.paths import usable_path
from dsa.run.settings import MAX_SPARSITY, SPACES

RESULTS_DIR = Path("results")
CONFIG_VERSION = 2  # config.json's format
TASKS = ("llm", "synthetic")
ROW_KEYS = {"rank", "fitness", "tree", "formula", "size", "output"}
LOG_KEYS = {"gen", "total_evals", "hit_rate", "min", "median", "best"}


def new_run_dir(task: str, base: Path = RESULTS_DIR) -> Path:
    """A new folder's path under ``base`` (created by the search), named after the time and task."""
    if base.exists() and not base.is_dir():
        raise UserError(f"{base} exists and is not a folder: move it, or give --run-dir")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, i = base / f"{stamp}-{task}", 1
    while path.exists():
        path, i = base / f"{stamp}-{task}-{i}", i + 1
    return path


def read_config(run_dir: Path) -> dict:
    """``run_dir/config.json`` as resuming reads it, its shape checked (UserError when it is missing,
    of another version or damaged)."""
    path = usable_path(run_dir, "--resume") / "config.json"
    if not path.is_file():
        raise UserError(f"cannot resume {run_dir}: no config.json there")
    saved = read_json_file(path, "the run's config")
    if not isinstance(saved, dict) or saved.get("version") != CONFIG_VERSION:
        raise UserError(f"cannot resume {run_dir}: its config.json was written by another version of dsa-gp")
    if saved.get("task") not in TASKS:
        raise UserError(f"cannot resume {run_dir}: unknown task {saved.get('task')!r:.40} in config.json")
    bad = [name for name, ok in _config_checks(saved).items() if not ok]
    if bad:
        raise UserError(f"cannot resume {run_dir}: config.json is damaged (bad {', '.join(bad)})")
    return saved


def _config_checks(saved: dict) -> dict[str, bool]:
    """Per field that resuming reads, whether it has its type (and range)."""
    step, tasks = saved.get("level_step"), saved.get("tasks", [])
    baselines, settings = saved.get("baselines"), saved.get("baseline_settings", {})
    return {
        "search": isinstance(saved.get("search"), dict),
        "space": saved.get("space", "formula") in SPACES,
        "evaluator": isinstance(saved.get("evaluator"), dict),
        "init": saved.get("init") is None or isinstance(saved["init"], str),
        "level_step": step is None or (finite_number(step) and 0 < step <= MAX_SPARSITY),
        # the target as dsa show and --allocation RUN read it (kept as written by a resume)
        "sparsity": finite_number(saved.get("sparsity")) and 0 < saved["sparsity"] <= MAX_SPARSITY,
        "tasks": isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks)
        and (saved["task"] == "llm" or not tasks),  # only the llm task has several
        "baselines": isinstance(baselines, dict) and all(finite_number(v) or v == math.inf for v in baselines.values()),
        "baseline_settings": isinstance(settings, dict) and all(map(_baseline_setting, settings.values())),
    }


def _baseline_setting(setting) -> bool:
    """A baseline's entry in config.json: its parameters, and its allocation (None or numbers)."""
    if not isinstance(setting, dict):
        return False
    allocation = setting.get("allocation")
    return allocation is None or (isinstance(allocation, list) and all(map(finite_number, allocation)))


def write_config(run_dir: Path, config: dict) -> None:
    """config.json, atomically: what the run is (written before the search starts) and, at its end, what it
    chose (:func:`write_choice`)."""
    write_json(run_dir / "config.json", config)


def write_choice(run_dir: Path, rows: list[dict], config: dict) -> None:
    """The choice's record: the hall of fame as the choice annotated it (selection values, flags), then the
    config that names the choice (last: a reader never sees a choice whose rows are not written yet). The
    search engine writes the hall of fame after each generation (:func:`gp.checkpoint.write_tables`); this is
    its one other writer, once per run."""
    write_json(run_dir / "hall_of_fame.json", rows)
    write_config(run_dir, config)


def read_json_file(path: Path, what: str):
    """JSON data of a run folder's file; UserError when it cannot be read (not a regular file, too
    large, not JSON)."""
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UserError(f"{path} is damaged: {what} is not readable JSON ({reason})") from None


def _rows(path: Path) -> list[dict]:
    rows = read_json_file(path, "the hall of fame")
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{path} is damaged: expected a non-empty list of formulas")
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            raise UserError(f"{path} is damaged: entry {i + 1} {problem}")
    return rows


def _row_problem(row) -> str | None:
    """What is wrong with a hall-of-fame row (None when nothing): the fields that ``dsa show``, ``dsa
    prune/eval --allocation RUN`` and ``--init RUN`` read, each of its type."""
    if not isinstance(row, dict) or not ROW_KEYS <= set(row):
        return f"lacks one of {', '.join(sorted(ROW_KEYS))}"
    if not finite_number(row["fitness"]) and row["fitness"] != math.inf:
        return f"has a fitness that is not a number: {row['fitness']!r:.40}"
    for name in ("rank", "size"):
        if not isinstance(row[name], int) or isinstance(row[name], bool) or row[name] < 0:
            return f"has a {name} that is not an integer ≥ 0: {row[name]!r:.40}"
    for name in ("tree", "formula", "latex", "flag", "note"):
        if name in row and not isinstance(row[name], str) and not (name != "tree" and row[name] is None):
            return f"has a {name} that is not text"
    if row.get("selection") is not None and not finite_number(row["selection"]):
        return f"has a selection value that is not a finite number: {row['selection']!r:.40}"
    output = row["output"]
    lists = output.values() if isinstance(output, dict) else [] if output is None else [output]
    if not all(isinstance(v, list) and v and all(finite_number(x) for x in v) for v in lists):
        return "has an output that is not a list of finite numbers (nor one per task)"
    return None


def _logbook(path: Path) -> list[dict]:
    try:
        with io.StringIO(read_regular(path).decode(), newline="") as f:
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


@dataclass(frozen=True)
class Run:
    """A run folder as read once (:meth:`read`): its config, hall of fame, Pareto front and logbook, every file
    checked. What reads a run folder (``dsa show``, ``--allocation RUN``, ``dsa compare``'s search rows, the
    exports) reads it through this, once, and asks the object: no file is read twice, so one answer never
    mixes two versions of a folder that is being rewritten."""

    dir: Path
    config: dict
    hall_of_fame: list[dict]
    pareto_front: list[dict] | None
    logbook: list[dict]

    @classmethod
    def read(cls, run_dir: str | Path) -> Run:
        """UserError when ``run_dir`` is not a run folder, or when one of its files is damaged."""
        run_dir = usable_path(run_dir, "run folder")
        hof_path = run_dir / "hall_of_fame.json"
        kind = path_kind(hof_path)
        if kind == "missing":
            raise UserError(f"{run_dir} is not a run folder (no hall_of_fame.json)")
        if kind != "a file":
            raise UserError(f"{hof_path} is damaged: it is {kind}, not a regular file")
        config_path, logbook_path, front_path = (run_dir / n for n in ("config.json", "logbook.csv",
                                                                        "pareto_front.json"))
        config = read_json_file(config_path, "the run's config") if config_path.exists() else {}
        if not isinstance(config, dict):
            raise UserError(f"{config_path} is damaged: expected a JSON object")
        return cls(dir=run_dir, config=config, hall_of_fame=_rows(hof_path),
                   pareto_front=_rows(front_path) if front_path.exists() else None,
                   logbook=_logbook(logbook_path) if logbook_path.exists() else [])

    @classmethod
    def of(cls, run: Run | str | Path) -> Run:
        """``run`` itself, or the run folder it names, read."""
        return run if isinstance(run, Run) else cls.read(run)


def machine() -> dict:
    """Where a number was measured (benchmark tables and ``dsa compare`` record it)."""
    import os
    import platform

    import torch
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name in ("transformers", "deap", "sympy"):  # transformers: per-window NLLs move across its versions
        try:
            info[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return info
