"""Checkpoints as JSON, written atomically: a run killed at any moment leaves the previous checkpoint
intact, and loading one cannot execute code (no pickle). Individuals are stored as their text, random
states as plain numbers."""
from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(run_dir: Path, state: dict[str, Any]) -> None:
    write_atomic(Path(run_dir) / FILE, json.dumps({"format": FORMAT, **state}).encode())


def exists(run_dir: Path) -> bool:
    return (Path(run_dir) / FILE).exists()


def load(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint of ``run_dir`` as JSON data (None when there is none); CheckpointError when it is
    unreadable or of an unknown format."""
    path = Path(run_dir) / FILE
    if not path.exists():
        if (Path(run_dir) / LEGACY_FILE).exists():
            raise CheckpointError(f"{run_dir} holds only a {LEGACY_FILE} (pickle, written by an older dsa-gp), "
                                  f"which is never loaded because unpickling can run code; start a new run")
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of format {FORMAT}")
    return state
