"""Checkpoints as JSON, written atomically: a run killed at any moment leaves the previous checkpoint
intact, and loading one cannot execute code (no pickle). Individuals are stored as their text, random
states as plain numbers. Run folders are shared between users, so whatever is read from one is read
as untrusted input: regular files only, of bounded size (:func:`read_json`), and a checkpoint's
contents are checked in full (:mod:`gp.schema`) before a search is restored from it."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluators.files import read_json, write_atomic, write_json


FILE = "checkpoint.json"
LEGACY_FILE = "checkpoint.pkl"  # written by dsa-gp ≤ 0.1 with pickle; never loaded
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: corrupt, of another format, or of another problem."""


def rng_state() -> dict:
    """The states of Python's, NumPy's and torch's generators as JSON data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"random": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save(run_dir: Path, state: dict[str, Any]) -> None:
    write_atomic(Path(run_dir) / FILE, json.dumps({"format": FORMAT, **state}).encode())


def exists(run_dir: Path) -> bool:
    return os.path.lexists(Path(run_dir) / FILE)  # a dangling link counts: it is not a missing checkpoint


def load(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint of ``run_dir`` as JSON data (None when there is none); CheckpointError when it is
    unreadable or of an unknown format."""
    path = Path(run_dir) / FILE
    if not os.path.lexists(path):
        if os.path.lexists(Path(run_dir) / LEGACY_FILE):
            raise CheckpointError(f"{run_dir} holds only a {LEGACY_FILE} (pickle, written by an older dsa-gp), "
                                  f"which is never loaded because unpickling can run code; start a new run")
        return None
    try:
        state = read_json(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of format {FORMAT}")
    return state


def resumable(run_dir: Path, config, identity: dict) -> dict | None:
    """The checkpoint in ``run_dir`` as JSON data, after checking that a search with ``config`` and
    ``identity`` can resume it (same settings but ``generations``, same identity); None when there is
    none. Reads only (call it before any expensive set-up). ``config``: a :class:`~gp.SearchConfig` or
    :class:`~gp.direct.DirectConfig` (anything with defaults, ``to_dict`` and ``from_dict``)."""
    state = load(run_dir)
    if state is None:
        return None
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("identity", {}), dict):
        raise CheckpointError(f"{run_dir}/{FILE} is damaged (no settings)")
    try:  # read back through the config class (settings added since: their defaults; its legacy rules)
        saved = type(config).from_dict({**type(config)().to_dict(), **state["config"]}).to_dict()
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise CheckpointError(f"{run_dir}/{FILE} is damaged (its settings: {exc})") from None
    now = config.to_dict()
    diff = {k: (saved.get(k), now[k]) for k in now if k != "generations" and saved.get(k) != now[k]}
    if diff:
        raise CheckpointError("cannot resume: settings differ from the checkpoint's: " + ", ".join(
            f"{k} {a!r} (checkpoint) vs {b!r}" for k, (a, b) in diff.items()))
    theirs = state.get("identity", {})
    diff = {k: (theirs.get(k), identity.get(k)) for k in {**theirs, **identity} if theirs.get(k) != identity.get(k)}
    if diff:
        raise CheckpointError("cannot resume: the checkpoint is of another run: " + ", ".join(
            f"{k} {a!r} (checkpoint) vs {b!r}" for k, (a, b) in sorted(diff.items())))
    return state


def write_tables(run_dir: Path, rows: list[dict], logbook: list[dict], front: list[dict] | None = None) -> None:
    """The run folder's readable tables, atomically: hall_of_fame.json (and pareto_front.json), logbook.csv."""
    write_json(Path(run_dir) / "hall_of_fame.json", rows)
    if front is not None:
        write_json(Path(run_dir) / "pareto_front.json", front)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(logbook[0].keys()))
    writer.writeheader()
    writer.writerows(logbook)
    write_atomic(Path(run_dir) / "logbook.csv", text.getvalue().encode())
