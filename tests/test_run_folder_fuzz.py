"""Fuzz: random damaged variants of real run folders (a GP and a direct search, synthetic task) and of a
``dsa prune`` record — truncations, type swaps, huge / negative / NaN numbers, wrong lengths,
unparsable trees, a FIFO or a link to /dev/zero — through every command that reads one (``show``,
``search --resume``, ``--init RUN``, ``prune --allocation RUN``, ``export``). Each must exit 0 or 2,
print one line on failure, write nothing when it fails, and never hang. Seeded, so every run tries the
same variants; in-process (``dsa.cli.main``) under a wall-clock limit per call, in well under a minute."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

import dsa.llm
import dsa.multitask
import dsa.search
from dsa.cli import main
from dsa.exports import allocation_record, write_record
from test_cli_errors import DEEP, DIRECT, SYN, snapshot, time_limit

SEED = int(os.environ.get("DSA_FUZZ_SEED", 17))  # more variants, other seeds: set these (a longer hunt)
VARIANTS = int(os.environ.get("DSA_FUZZ_VARIANTS", 30))  # per source: GP run, direct run, record
LIMIT_S = 30  # per command
FILES = {"gp": ("checkpoint.json", "config.json", "hall_of_fame.json", "logbook.csv"),
         "direct": ("checkpoint.json", "config.json", "hall_of_fame.json", "logbook.csv"),
         "record": ("allocation.json",)}
VALUES = ["x", "", None, True, [], {}, 0, -1, -5, 1.5, 10**30, -10**30, 1e308, -1e308, 1e-300, float("nan"),
          float("inf"), float("-inf"), [0.7] * 3, [0.7] * 12, ["x"] * 12, {"a": [1]}, "dsa(r_var(S), 0.1",
          "frobnicate(S)", DEEP, "levels(1, 2)", "results", "/dev/zero"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    assert main([*SYN, "--population", "6", "--generations", "1", "--run-dir", str(root / "gp")]) == 0
    assert main([*DIRECT, "--generations", "2", "--run-dir", str(root / "direct")]) == 0
    (root / "record").mkdir()
    write_record(root / "record", allocation_record(
        allocation="dsa(t_atan(r_var(p_abslog(S))), 0.07)", formula="dsa(t_atan(r_var(p_abslog(S))), 0.07)",
        method="wanda", target=0.7, model="tiny", requested=[0.6, 0.7, 0.8, 0.7],
        layers=[f"model.layers.{i}" for i in range(4)]))
    return root


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """``dsa prune/eval`` past their checks: stop where the model would be loaded (exit 0: accepted).
    No plots either (most of a synthetic run's time; they read nothing from the run folder)."""
    monkeypatch.setattr(dsa.llm, "prune_command", lambda *args, **kwargs: None)
    monkeypatch.setattr(dsa.search, "plot_fitness", lambda *args, **kwargs: None)
    monkeypatch.setattr(dsa.search, "plot_allocations", lambda *args, **kwargs: None)

    def load(*args, **kwargs):
        raise AssertionError("a model would be loaded")
    monkeypatch.setattr(dsa.llm, "llm_task", load)
    monkeypatch.setattr(dsa.multitask, "build_tasks", load)


# --- damage --------------------------------------------------------------------------------------------

def _path(rng: random.Random, data) -> list:
    """A random path into ``data``: a top-level key first, then down, stopping at a container now and then."""
    path = []
    while isinstance(data, (dict, list)) and data and (not path or rng.random() > 0.25):
        key = rng.choice(list(data)) if isinstance(data, dict) else rng.randrange(len(data))
        path.append(key)
        data = data[key]
    return path


def _at(data, path: list):
    for key in path[:-1]:
        data = data[key]
    return data


def damage(rng: random.Random, text: str) -> tuple[str, str | None]:
    """(what was done, the damaged text; None for "replace the file by a FIFO or a /dev/zero link")."""
    kind = rng.choice(["truncate", "swap", "swap", "swap", "length", "tree", "special"])
    if kind == "truncate":
        return kind, text[:rng.randrange(len(text))]
    if kind == "special":
        return kind, None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # logbook.csv: a random cell
        lines = text.splitlines()
        i = rng.randrange(len(lines))
        cells = lines[i].split(",")
        cells[rng.randrange(len(cells))] = rng.choice(["x", "", "nan", "-5", "1e30", '"'])
        lines[i] = ",".join(cells)
        return "cell", "\n".join(lines)
    if kind == "tree":
        trees = [p for p in _paths(data) if p and p[-1] == "tree"]
        if trees:
            path = rng.choice(trees)
            _at(data, path)[path[-1]] = rng.choice(["dsa(r_var(S), 0.1", "frobnicate(S)", DEEP, "", "S"])
            return f"tree at {path}", json.dumps(data)
    path = _path(rng, data)
    if kind == "length":
        target = _at(data, path + [None]) if path else data
        if isinstance(target, list) and target:
            if rng.random() < 0.5:
                target.pop(rng.randrange(len(target)))
            else:
                target.append(target[rng.randrange(len(target))])
            return f"length at {path}", json.dumps(data)
    if not path:
        return "swap at the top", json.dumps(rng.choice(VALUES))
    _at(data, path)[path[-1]] = rng.choice(VALUES)
    return f"swap at {path}", json.dumps(data)


def _paths(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield list(prefix) + [key]
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


def variant(rng: random.Random, source: Path, files: tuple[str, ...], dest: Path) -> str:
    shutil.copytree(source, dest)
    name = rng.choice(files)
    kind, text = damage(rng, (dest / name).read_text())
    (dest / name).unlink()
    if text is not None:
        (dest / name).write_text(text)
    elif rng.random() < 0.5:
        os.mkfifo(dest / name)
        kind = "fifo"
    else:
        os.symlink("/dev/zero", dest / name)
        kind = "/dev/zero"
    return f"{name}: {kind}"


# --- commands --------------------------------------------------------------------------------------------

def commands(kind: str, folder: Path, out: Path) -> list[list[str]]:
    """Every command that reads ``folder``; the run folder's own --resume last (it writes when it works)."""
    if kind == "record":
        return [["export", str(folder), "--to", "llmcompressor", "--out", str(out / "recipe.yaml")],
                ["export", str(folder / "allocation.json")]]
    generations = "1" if kind == "gp" else "2"
    return [["show", str(folder)],
            ["prune", "--allocation", str(folder), "--save", str(out / "pruned"), "--no-progress"],
            [*DIRECT, "--generations", "0", "--init", str(folder), "--run-dir", str(out / "init")],
            ["search", "--resume", str(folder), "--generations", generations, "--no-progress"]]


@pytest.mark.parametrize("kind", ["gp", "direct", "record"])
def test_damaged_run_folders_fail_in_one_line_write_nothing_and_never_hang(sources, kind, tmp_path, capsys):
    rng = random.Random(f"{SEED}-{kind}")
    refused = 0
    for i in range(VARIANTS):
        folder, out = tmp_path / f"variant-{i}", tmp_path / f"out-{i}"
        what = variant(rng, sources / kind, FILES[kind], folder)
        out.mkdir()
        for args in commands(kind, folder, out):
            before = snapshot(tmp_path)
            try:
                with time_limit(LIMIT_S):
                    code = main(args)
            except BaseException as exc:  # a traceback, or Hung
                raise AssertionError(f"{what}: dsa {' '.join(args[:2])} raised {type(exc).__name__}: {exc}") from None
            err = capsys.readouterr().err
            assert code in (0, 2), f"{what}: dsa {' '.join(args[:2])} exited {code}: {err}"
            if code == 2:
                refused += 1
                assert len(err.strip().splitlines()) == 1 and err.startswith("dsa: error: "), f"{what}: {err}"
                assert snapshot(tmp_path) == before, f"{what}: dsa {' '.join(args[:2])} failed but wrote"
        shutil.rmtree(folder)  # a FIFO left behind is harmless, but keep tmp small
        shutil.rmtree(out)
    assert refused >= VARIANTS // 2  # the damage is real: most variants are refused somewhere
