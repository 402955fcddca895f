"""Fuzz: random damaged variants of what the tool reads back — truncations, type swaps, huge / negative / NaN
numbers, wrong lengths, unparsable trees, flipped bytes, a FIFO or a link to /dev/zero:

- real run folders (a GP and a direct search, synthetic task) and a ``dsa prune`` record, through every
  command that reads one (``show``, ``search --resume``, ``--init RUN``, ``prune --allocation RUN``,
  ``export``): each must exit 0 or 2, print one line on failure and write nothing then;
- a comparison folder's ``compare.json`` (issue 29's damaged rows, then random ones), through
  ``dsa compare --resume``: refused in one line with exit 2 and the file as it was, or resumed correctly
  (the rows it held kept as they were, every row asked for there);
- SparseGPT's level database (``meta.json`` and block files truncated, zeroed, swapped, flipped, a FIFO, a
  link to /dev/zero), through :func:`~evaluators.fitness.leveldb.open_levels` and reading every level:
  refused in one line, or rebuilt; never reused with other weights than it was built with.

None may hang. Seeded, so every run tries the same variants; in-process under a wall-clock limit per call, on
the synthetic task and the tiny test model, in about a minute per part."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

import dsa.run.llm
import dsa.run.multitask
import dsa.run.search
from conftest import TINY_VOCAB, make_tiny_llama
from dsa.cli import main
from dsa.outputs.exports import allocation_record, write_record
from evaluators.errors import UserError
from evaluators.fitness.leveldb import open_levels
from test_cli_errors import DEEP, DIRECT, SYN, snapshot, time_limit
from test_cli_llm import data_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")
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


@pytest.fixture
def no_model(monkeypatch):
    """``dsa prune/eval`` past their checks: stop where the model would be loaded (exit 0: accepted).
    No plots either (most of a synthetic run's time; they read nothing from the run folder)."""
    monkeypatch.setattr(dsa.run.llm, "prune_command", lambda *args, **kwargs: None)
    monkeypatch.setattr(dsa.run.search, "plot_fitness", lambda *args, **kwargs: None)
    monkeypatch.setattr(dsa.run.search, "plot_allocations", lambda *args, **kwargs: None)

    def load(*args, **kwargs):
        raise AssertionError("a model would be loaded")
    monkeypatch.setattr(dsa.run.llm, "llm_task", load)
    monkeypatch.setattr(dsa.run.multitask, "build_tasks", load)


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


@pytest.mark.usefixtures("no_model")
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


# --- comparison folders ----------------------------------------------------------------------------------

COMPARE = ["--searches", "none", "--baselines", "uniform,owl", "--test-windows", "3", "--c4-windows", "2",
           "--calib-seqlen", "16", "--val-windows", "2", "--max-scores-per-layer", "5000", "--no-progress"]
ASKED = {"dense", "uniform", "owl"}  # the rows COMPARE asks for
DELETE = object()
# issue 29, item 1: each was once a traceback or accepted silently on --resume
ISSUE_29_ROWS = [(["rows", 1, "test nlls"], "1.0, 2.0"), (["rows", 1, "test nlls"], [1.0, 2.0]),
                 (["rows", 1, "test nlls", 0], float("nan")), (["rows", 1, "name"], DELETE),
                 (["rows", 1, "kind"], DELETE), (["rows", 1, "name"], "dense"), (["version"], 99),
                 (["rows", 1, "val ppl"], float("nan")), (["rows", 1, "name"], "x\x1b[2Jy"),
                 (["rows", 1, "sparsities"], [5.0, 0.7]), (["rows", 1, "evaluations"], 10**400)]


def compare_args(root: Path, out: Path, *extra) -> list[str]:
    return ["compare", *map(str, data_args(root)), *COMPARE, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def comparison(tiny_dir, tmp_path_factory):  # noqa: F811
    """A finished comparison of the tiny model: dense, uniform and OWL, test and held-out C4 NLLs."""
    out = tmp_path_factory.mktemp("comparison") / "cmp"
    assert main(compare_args(tiny_dir, out)) == 0
    return out


def flip(rng: random.Random, data: bytes) -> bytes:
    """``data`` with one byte changed (to any other value), one dropped or one inserted."""
    i = rng.randrange(len(data))
    how = rng.choice(["change", "drop", "insert"])
    if how == "change":
        return data[:i] + bytes([data[i] ^ rng.randrange(1, 256)]) + data[i + 1:]
    return data[:i] + data[i + 1:] if how == "drop" else data[:i] + bytes([rng.randrange(256)]) + data[i:]


def compare_variants(rng: random.Random, text: str):
    """(what was done, the damaged compare.json; None for "a FIFO or a /dev/zero link"): issue 29's rows, then
    random field damage and changed bytes."""
    for path, value in ISSUE_29_ROWS:
        data = json.loads(text)
        if value is DELETE:
            del _at(data, path)[path[-1]]
        else:
            _at(data, path)[path[-1]] = value
        yield f"{path} = {'deleted' if value is DELETE else repr(value)[:30]}", json.dumps(data).encode()
    for _ in range(2 * VARIANTS):
        if rng.random() < 0.25:
            yield "bytes", flip(rng, text.encode())
        else:
            kind, damaged = damage(rng, text)
            yield kind, None if damaged is None else damaged.encode()


def test_damaged_comparison_folders_are_refused_in_one_line_or_resume_correctly(comparison, tiny_dir,  # noqa: F811
                                                                                tmp_path, capsys):
    rng = random.Random(f"{SEED}-compare")
    text = (comparison / "compare.json").read_text()
    refused = 0
    for i, (what, damaged) in enumerate(compare_variants(rng, text)):
        out = tmp_path / f"variant-{i}"
        shutil.copytree(comparison, out)
        path = out / "compare.json"
        path.unlink()
        if damaged is not None:
            path.write_bytes(damaged)
        elif rng.random() < 0.5:
            os.mkfifo(path)
            what = "fifo"
        else:
            os.symlink("/dev/zero", path)
            what = "/dev/zero"
        before = snapshot(tmp_path)
        try:
            with time_limit(LIMIT_S):  # --verify: 0 all match, 1 a number does not, 2 refused; never writes
                code = main(["compare", "--out", str(out), "--verify", "all", "--model", str(tiny_dir / "model"),
                             "--no-progress"])
                err = capsys.readouterr().err
                assert code in (0, 1, 2) and snapshot(tmp_path) == before, f"{what}: --verify exited {code} or wrote"
                assert code != 2 or (len(err.strip().splitlines()) == 1 and err.startswith("dsa: error: ")), err
                code = main(compare_args(tiny_dir, out, "--resume"))
        except BaseException as exc:  # a traceback, or Hung
            raise AssertionError(f"{what}: dsa compare raised {type(exc).__name__}: {exc}") from None
        err = capsys.readouterr().err
        assert code in (0, 2), f"{what}: exited {code}: {err}"
        if code == 2:
            refused += 1
            assert len(err.strip().splitlines()) == 1 and err.startswith("dsa: error: "), f"{what}: {err}"
            assert snapshot(tmp_path) == before, f"{what}: refused but wrote"
        else:  # resumed: the rows it held kept as they were, every row asked for there, once
            kept, rows = json.loads(damaged)["rows"], json.loads(path.read_text())["rows"]
            names = [r["name"] for r in rows]
            assert rows[:len(kept)] == kept and ASKED <= set(names) and len(set(names)) == len(names), what
        shutil.rmtree(out)
    assert refused >= len(ISSUE_29_ROWS)
    # a forged row (every test NLL lowered) is plausible, so --resume takes it as written; --verify finds it
    out = tmp_path / "forged"
    shutil.copytree(comparison, out)
    saved = json.loads(text)
    saved["rows"][1]["test nlls"] = [v - 0.5 for v in saved["rows"][1]["test nlls"]]
    (out / "compare.json").write_text(json.dumps(saved))
    assert main(compare_args(tiny_dir, out, "--resume")) == 0
    capsys.readouterr()
    assert main(["compare", "--out", str(out), "--verify", "all", "--model", str(tiny_dir / "model"),
                 "--no-progress"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(f"mismatched: {saved['rows'][1]['name']} (test nlls)"), last


# --- the level database ----------------------------------------------------------------------------------

LEVEL_KEY = {"model": "tiny-llama", "calib": "random", "seed": 1}
LEVEL_GRID = [0.0, 0.5]


def _calib():
    return torch.randint(0, TINY_VOCAB, (4, 64), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def levels(tmp_path_factory, one_torch_thread):
    """(cache folder, the database's folder name in it, every block's stored level as built) of the tiny model."""
    root = tmp_path_factory.mktemp("levels")
    db = open_levels(make_tiny_llama(), _calib(), "sparsegpt", LEVEL_KEY, grid=LEVEL_GRID, root=root)
    return root, db.path.name, [db.block_level(l, 1) for l in range(db.n_blocks)]


def level_damage(rng: random.Random, folder: Path) -> str:
    """Damage one file of the database in ``folder``; what was done."""
    files = sorted(p.name for p in folder.iterdir())
    name = rng.choice(files)
    file = folder / name
    data = file.read_bytes()
    kind = rng.choice(["truncate", "zero", "bytes", "swap", "append", "fifo", "/dev/zero"]
                      + (["fields"] * 3 if name == "meta.json" else ["zero tensors"] * 2))
    if kind == "fields":
        kind, text = damage(rng, data.decode())
        if text is None:
            kind = rng.choice(["fifo", "/dev/zero"])
        else:
            file.write_text(text)
    if kind == "swap":
        other = folder / rng.choice([f for f in files if f != name])
        theirs = other.read_bytes()
        other.write_bytes(data)
        file.write_bytes(theirs)
        return f"{name} swapped with {other.name}"
    if kind in ("fifo", "/dev/zero"):
        file.unlink()
        os.mkfifo(file) if kind == "fifo" else os.symlink("/dev/zero", file)
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: its length, the JSON header, the tensors
    damaged = {"truncate": lambda: data[:rng.randrange(len(data))], "zero": lambda: bytes(len(data)),
               "bytes": lambda: flip(rng, data), "append": lambda: data + bytes(rng.randrange(1, 64)),
               "zero tensors": lambda: data[:header] + bytes(len(data) - header)}.get(kind)
    if damaged is not None:
        file.write_bytes(damaged())
    return f"{name}: {kind}"


def test_damaged_level_databases_are_refused_or_rebuilt_never_reused(levels, tmp_path):
    """Each damaged database is refused in one line (nothing deleted), or rebuilt, or reused only where every
    level it gives is bit for bit the one built; opening it never hangs."""
    source, name, good = levels
    rng, model = random.Random(f"{SEED}-levels"), make_tiny_llama()
    seen = {"refused": 0, "rebuilt": 0, "reused": 0}
    for i in range(2 * VARIANTS):
        root = tmp_path / f"db-{i}"
        shutil.copytree(source, root)
        what = level_damage(rng, root / name)
        before = snapshot(root)
        try:
            with time_limit(LIMIT_S):
                db = open_levels(model, _calib(), "sparsegpt", LEVEL_KEY, grid=LEVEL_GRID, root=root)
                stored = [db.block_level(l, 1) for l in range(db.n_blocks)]
        except UserError as exc:
            assert "\n" not in str(exc) and "damaged" in str(exc), f"{what}: {exc}"
            assert snapshot(root) == before, f"{what}: refused, but files changed"
            seen["refused"] += 1
        except BaseException as exc:  # a traceback, or Hung
            raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from None
        else:
            assert all(torch.equal(stored[l][n], w) for l, block in enumerate(good) for n, w in block.items()), \
                f"{what}: {'reused' if db.reused else 'rebuilt'} with other weights"
            seen["reused" if db.reused else "rebuilt"] += 1
        shutil.rmtree(root)
    assert seen["refused"] and seen["rebuilt"], seen  # the damage is real: both outcomes happen
