"""Bad input, as a new user (or an adversary) types it: every case prints one line on stderr, exits with
code 2 and writes nothing. In-process (``dsa.cli.dispatch.main``), so the table runs in seconds; the subprocess
tests in test_cli.py check that no traceback reaches a real terminal."""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

import dsa.run.llm
import dsa.run.multitask
from dsa.cli import main
from test_cli_llm import data_args

SYN = ["search", "--task", "synthetic", "--no-progress"]
DIRECT = [*SYN, "--space", "direct", "--offspring", "6"]


class Hung(Exception):
    """A command ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hung in the main thread after ``seconds`` of wall time (SIGALRM interrupts a blocking open too)."""
    def hung(signum, frame):
        raise Hung(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """Bad input must fail before any model is loaded: loading one here fails the test."""
    def load(*args, **kwargs):
        raise AssertionError("a model would be loaded")
    for name in ("prune_command", "eval_command", "llm_task"):
        monkeypatch.setattr(dsa.run.llm, name, load)
    monkeypatch.setattr(dsa.run.multitask, "build_tasks", load)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished synthetic run (population 6, 1 generation)."""
    root = tmp_path_factory.mktemp("run")
    assert main([*SYN, "--population", "6", "--generations", "1", "--run-dir", str(root / "run")]) == 0
    return root / "run"


def damaged(run: Path, tmp: Path, name: str, text: str) -> Path:
    copy = tmp / f"damaged-{name}-{len(list(tmp.glob('damaged-*')))}"
    shutil.copytree(run, copy)
    (copy / name).write_text(text)
    return copy


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def expect_bad(args, needle, capsys, root: Path):
    before = snapshot(root)
    with time_limit(60):
        code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(root) == before, "a bad command wrote something"
    return err


SEARCH_CASES = [
    (["--sparsity", "0.995"], "sparsity must be in (0, 0.99]"),
    (["--sparsity", "0"], "sparsity must be in (0, 0.99]"),
    (["--sparsity", "nan"], "sparsity must be in"),
    (["--method", "foo"], "invalid choice"),
    (["--hof-size", "0"], "positive integer"),
    (["--hof-size", "-1"], "positive integer"),
    (["--max-size", "0"], "positive integer"),
    (["--max-size", "3"], "no tree within"),
    (["--max-height", "1"], "no tree within"),
    (["--max-height", "0"], "positive integer"),
    (["--seed", "99999999999999999999999"], "seed must be in"),
    (["--seed", "-1"], "seed must be in"),
    (["--tournament", "0"], "positive integer"),
    (["--tournament", "50"], "tournament must be in"),
    (["--elitism", "50"], "elitism"),
    (["--cxpb", "1.5"], "probability"),
    (["--generations", "-1"], "integer ≥ 0"),
    (["--max-scores-per-layer", "-5"], "integer ≥ 0"),
    (["--objectives", "size"], "invalid choice"),
    (["--population", "abc"], "positive integer"),
    (["--baselines", "owl"], "holding uniform"),
    (["--workers", "2"], "distribute the llm task"),
    (["--run-dir", "/proc/x"], "cannot be written"),
    (["--run-dir", ""], "non-empty"),
]


@pytest.mark.parametrize("extra, needle", SEARCH_CASES)
def test_search_bad_input(extra, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expect_bad([*SYN, *extra], needle, capsys, tmp_path)


def test_search_output_paths_that_are_files(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    expect_bad([*SYN, "--run-dir", tmp_path / "FILE"], "exists and is not a folder", capsys, tmp_path)
    expect_bad([*SYN, "--run-dir", tmp_path / "FILE" / "sub"], "is not a folder", capsys, tmp_path)


LLM_CASES = [  # fail on the flags, before any model is loaded
    (["--data", "/nope/text.txt"], "data file not found"),
    (["--calib", "typo.parquet"], "data file not found"),
    (["--data", "notes.docx"], "data file not found"),
    (["--data-dir", "/nope"], "--data-dir folder not found"),
    (["--model", "/nope/model"], "model folder not found"),
    (["--model", "missing.gguf"], "model file not found"),
    (["--ray-address", "127.0.0.1:1"], "nothing answers there"),
    (["--ray-address", "nonsense"], "not host:port"),
]


@pytest.mark.parametrize("extra, needle", LLM_CASES)
def test_llm_search_bad_input_fails_before_loading(extra, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--ray-address" in extra:
        pytest.importorskip("ray")
    expect_bad(["search", "--no-progress", *extra], needle, capsys, tmp_path)


def test_resume_of_nothing(capsys, tmp_path):
    expect_bad(["search", "--resume", "/nonexistent/run"], "no config.json", capsys, tmp_path)


def test_resume_refuses_flags_that_cannot_change(run, capsys):
    expect_bad(["search", "--resume", run, "--population", "20"], "cannot change --population on resume",
               capsys, run)
    expect_bad(["search", "--resume", run, "--sparsity", "0.5", "--task", "synthetic"],
               "cannot change --sparsity, --task on resume", capsys, run)


@pytest.mark.parametrize("name, text, needle", [
    ("hall_of_fame.json", '[{"rank": 1, "fitn', "damaged"),       # truncated
    ("hall_of_fame.json", "", "damaged"),                          # empty
    ("hall_of_fame.json", '{"rank": 1}', "damaged"),               # not a list
    ("hall_of_fame.json", "[]", "damaged"),                        # no formula
    ("hall_of_fame.json", '[{"rank": 1, "fitness": "x", "tree": "t", "formula": "f", "size": 1, "output": []}]',
     "damaged"),                                                   # a fitness that is no number
    ("config.json", '{"task": "synth', "damaged"),                 # truncated config
    ("logbook.csv", "a,b\n1,2\n", "damaged"),                      # without the expected columns
])
def test_damaged_run_folders(run, tmp_path, capsys, name, text, needle):
    copy = damaged(run, tmp_path, name, text)
    expect_bad(["show", copy], needle, capsys, tmp_path)
    expect_bad(["prune", "--allocation", copy, "--save", tmp_path / "out", "--no-progress"], needle, capsys, tmp_path)
    if name == "config.json":  # resume reads config.json and the checkpoint, not the tables it rewrites
        expect_bad(["search", "--resume", copy, "--no-progress"], "damaged", capsys, tmp_path)


def test_damaged_checkpoint_is_refused(run, tmp_path, capsys):
    copy = damaged(run, tmp_path, "checkpoint.json", '{"format": 1, "gen": ')
    expect_bad(["search", "--resume", copy, "--no-progress"], "not a readable checkpoint", capsys, tmp_path)
    copy = damaged(run, tmp_path, "checkpoint.json", '{"format": 1, "gen": 0}')
    expect_bad(["search", "--resume", copy, "--no-progress"], "damaged", capsys, tmp_path)


def test_a_checkpoint_of_another_run_is_refused(run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main([*SYN, "--sparsity", "0.5", "--population", "6", "--generations", "1", "--run-dir", str(other)]) == 0
    capsys.readouterr()
    shutil.copy(run / "checkpoint.json", other / "checkpoint.json")
    expect_bad(["search", "--resume", other, "--no-progress"], "another run: sparsity 0.7 (checkpoint) vs 0.5",
               capsys, tmp_path)


class Payload:
    """Unpickling this runs ``open(marker, "w")``: what a crafted checkpoint.pkl could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_checkpoint_never_runs(run, tmp_path, capsys):
    copy = tmp_path / "shared-run"
    shutil.copytree(run, copy)
    (copy / "checkpoint.json").unlink()
    marker = tmp_path / "payload-ran"
    (copy / "checkpoint.pkl").write_bytes(pickle.dumps(Payload(marker)))
    expect_bad(["search", "--resume", copy, "--no-progress"], "never loaded", capsys, tmp_path)
    assert not marker.exists()


def test_prune_and_eval_bad_input(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "results").mkdir()
    save = ["--save", tmp_path / "out", "--no-progress"]
    for args, needle in [
        (["prune", "--allocation", "results", *save], "not a run folder"),
        (["prune", "--allocation", "", *save], "non-empty"),
        (["prune", "--allocation", "dsa(r_var(S, 0.1))", *save], "neither a known name"),
        (["prune", "--allocation", "dsa r_var S 0.1", *save], "neither a known name"),
        (["prune", "--allocation", "dsa(r_var(S), nan)", *save], "not a finite number"),
        (["prune", "--allocation", "dsa(r_var(S), -0.1)", *save], "outside [0, 1]"),
        (["prune", "--allocation", "dsa(r_var(S), inf)", *save], "not a finite number"),
        (["prune", "--allocation", "owl:m=abc", *save], "key=number"),
        (["prune", "--allocation", "owl:beta=1", *save], "owl takes"),
        (["prune", "--allocation", "atp-tuned:beta=0.01", *save], "chooses its parameters itself"),
        (["prune", "--allocation", "owl", "--sparsity", "1.5", *save], "sparsity must be in"),
        (["prune", "--allocation", "owl", "--method", "bogus", *save], "invalid choice"),
        (["prune", "--allocation", "owl", "--save", tmp_path / "FILE"], "exists and is not a folder"),
        (["prune", "--allocation", "owl", "--save", "/proc/x"], "cannot be written"),
        (["eval", "--json", "/proc/x.json"], "cannot be written"),
        (["eval", "--json", tmp_path], "is a folder"),
        (["eval", "--no-perplexity"], "nothing to evaluate"),
        (["export", tmp_path / "nothing"], "no such file"),
    ]:
        expect_bad(args, needle, capsys, tmp_path)


def test_export_out_unwritable(tmp_path, capsys):
    record = tmp_path / "allocation.json"
    record.write_text(json.dumps({"method": "wanda", "requested": [0.6, 0.8], "target": 0.7}))
    expect_bad(["export", record, "--out", "/proc/x.yaml"], "cannot be written", capsys, tmp_path)


def test_a_failed_start_leaves_no_run_folder(tmp_path, monkeypatch):
    import dsa.run.search

    def broken(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(dsa.run.search, "build_task", broken)
    assert main([*SYN, "--run-dir", str(tmp_path / "run")]) == 130
    assert not (tmp_path / "run").exists()
    assert os.listdir(tmp_path) == []


# --- run folders you can trust (issue 17): their contents are untrusted input ------------------------

@pytest.fixture(scope="module")
def direct_run(tmp_path_factory):
    """A finished synthetic direct search (2 generations)."""
    root = tmp_path_factory.mktemp("direct")
    assert main([*DIRECT, "--generations", "2", "--run-dir", str(root / "run")]) == 0
    return root / "run"


def crafted(run: Path, tmp: Path, name: str, change) -> Path:
    """A copy of ``run`` whose JSON file ``name`` went through ``change(data)`` (which edits it in place)."""
    data = json.loads((run / name).read_text())
    change(data)
    return damaged(run, tmp, name, json.dumps(data))


def put(path: str, value):
    """``change`` for :func:`crafted`: set the value at ``path`` ("population.0.tree") to ``value``."""
    def change(data):
        *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys:
            data = data[key]
        data[last] = value
    return change


DEEP = "dsa(" + "t_atan(" * 3000 + "r_var(S)" + ")" * 3000 + ", 0.1)"

# 1. a damaged or crafted checkpoint: each once a traceback (after config.json was rewritten)
GP_CHECKPOINTS = [
    ("population.0.tree", "dsa(r_var(S), 0.1"),            # does not parse
    ("population.0.tree", "frobnicate(S)"),                # unknown name
    ("hof.0.tree", DEEP),                                  # RecursionError in the parser
    ("hof.0.tree", 42),
    ("population.0.fitness", ["x"]),
    ("hof.0.fitness", None),
    ("hof.0.output", ["a", None]),
    ("population", []),
    ("population", "x"),
    ("gen", "1"),
    ("rng.random", [3, [1, 2], None]),
    ("rng.numpy.2", 10**30),                              # OverflowError
    ("rng.torch", "AAAA"),                                # RuntimeError in torch
    ("cache.by_text", []),
    ("cache.by_output", [[["a"], 1.0]]),
    ("cache.misses", -1),
    ("logbook", [{"gen": 0, "best": "x"}]),
    ("evaluations", None),
    ("evaluations", 10**400),                             # a counter of 400 digits: a traceback after config.json
    ("cache.misses", 2**63),
    ("logbook.0.total_evals", 10**400),                   # too large for a float
    ("hof.0.output.0", 10**400),
]


@pytest.mark.parametrize("path, value", GP_CHECKPOINTS, ids=[p for p, _ in GP_CHECKPOINTS])
def test_crafted_gp_checkpoint_is_refused_before_anything_is_written(run, tmp_path, capsys, path, value):
    copy = crafted(run, tmp_path, "checkpoint.json", put(path, value))
    expect_bad(["search", "--resume", copy, "--no-progress"], "checkpoint.json is damaged", capsys, tmp_path)


DIRECT_CHECKPOINTS = [
    ("parent", [0, 0, 0]),                                # wrong length
    ("parent", "x"),
    ("parent.0", 1.5),
    ("hof.0.1", "x"),
    ("hof", [[[0] * 12]]),
    ("cache.0.0", ["a"]),
    ("cache.0.1", -3),
    ("hits", -1),
    ("hits", 10**400),
    ("rng", None),
]


@pytest.mark.parametrize("path, value", DIRECT_CHECKPOINTS, ids=[p for p, _ in DIRECT_CHECKPOINTS])
def test_crafted_direct_checkpoint_is_refused_before_anything_is_written(direct_run, tmp_path, capsys, path, value):
    copy = crafted(direct_run, tmp_path, "checkpoint.json", put(path, value))
    expect_bad(["search", "--resume", copy, "--no-progress"], "checkpoint.json is damaged", capsys, tmp_path)


# 2. values that were accepted and corrupted a run
@pytest.mark.parametrize("which, path, value", [
    ("gp", "gen", -5),                                    # corrupted the logbook
    ("gp", "gen", 1e30),                                  # ran nothing, exit 0
    ("gp", "hof.0.fitness", [math.nan]),                  # ran to the end, left an unreadable run folder
    ("gp", "population.1.fitness", [-math.inf]),
    ("direct", "parent", [100, -100] + [0] * 10),         # hall of fame rows at mean 0.495, target 0.7
    ("direct", "hof.0.0", [-100, 100] + [0] * 10),
    ("direct", "parent", [1] + [0] * 11),                 # levels that move the mean off the target
    ("direct", "gen", 99),                                # beyond the run's generations
])
def test_checkpoint_values_that_corrupt_a_run_are_refused(run, direct_run, tmp_path, capsys, which, path, value):
    copy = crafted(run if which == "gp" else direct_run, tmp_path, "checkpoint.json", put(path, value))
    expect_bad(["search", "--resume", copy, "--no-progress"], "checkpoint.json is damaged", capsys, tmp_path)


def test_damaged_config_is_refused_on_resume(run, direct_run, tmp_path, capsys):
    for source, path, value in [(run, "evaluator.prune.sparsity", "x"), (run, "baselines", None),
                                (run, "tasks", [{}]), (run, "level_step", -1), (direct_run, "search.generations", 1e30),
                                (direct_run, "level_step", 1e-300), (run, "evaluator.data.seed", -1)]:
        copy = crafted(source, tmp_path, "config.json", put(path, value))
        expect_bad(["search", "--resume", copy, "--no-progress"], "", capsys, tmp_path)


# 3. a direct run's allocation, read by --init RUN and --allocation RUN
@pytest.mark.parametrize("output", [[5.0] * 12, [-1.0] * 12, ["x"] * 12, None, [math.nan] * 12, "x"])
def test_a_direct_runs_allocation_is_checked_before_use(direct_run, tmp_path, capsys, output):
    copy = crafted(direct_run, tmp_path, "hall_of_fame.json", put("0.output", output))
    expect_bad([*DIRECT, "--init", copy, "--run-dir", tmp_path / "new"], "", capsys, tmp_path)
    expect_bad(["show", copy], "hall_of_fame.json is damaged", capsys, tmp_path)  # the same check, not displayed
    for command in ("prune", "eval"):  # before the model is loaded
        save = ["--save", tmp_path / "out"] if command == "prune" else []
        expect_bad([command, "--allocation", copy, *save, "--no-progress"], "", capsys, tmp_path)


@pytest.mark.parametrize("output, needle", [([0.5] * 12, "not the target"),
                                            ([0.7] * 5, "has 5 sparsities, its other rows 12")])
def test_an_allocation_off_its_target_or_length_is_refused(direct_run, tmp_path, capsys, output, needle):
    # where the blocks are known: --init here; dsa prune/eval once the model is loaded (before pruning)
    copy = crafted(direct_run, tmp_path, "hall_of_fame.json", put("0.output", output))
    expect_bad([*DIRECT, "--init", copy, "--run-dir", tmp_path / "new"], needle, capsys, tmp_path)
    if len(output) != 12:  # without the model: against the run's other allocations (a mean needs the model)
        expect_bad(["show", copy], needle, capsys, tmp_path)


# 4. dsa show on wrongly typed hall-of-fame rows
@pytest.mark.parametrize("path, value", [("0.output", "abc"), ("0.output", [1, "a"]), ("0.size", [1]),
                                         ("0.rank", {"a": 1}), ("0.output", {"task": "x"}), ("0.tree", None)])
def test_show_refuses_wrongly_typed_rows(run, tmp_path, capsys, path, value):
    copy = crafted(run, tmp_path, "hall_of_fame.json", put(path, value))
    expect_bad(["show", copy], "hall_of_fame.json is damaged", capsys, tmp_path)


# 5. a FIFO or a link to /dev/zero where a file should be: refused, never read
@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("name", ["config.json", "checkpoint.json"])
def test_special_files_in_a_run_folder_never_hang(run, tmp_path, capsys, kind, name):
    copy = tmp_path / "special"
    shutil.copytree(run, copy)
    (copy / name).unlink()
    os.mkfifo(copy / name) if kind == "fifo" else os.symlink("/dev/zero", copy / name)
    with time_limit(30):
        if name == "config.json":
            expect_bad(["show", copy], "not readable", capsys, tmp_path)
        expect_bad(["search", "--resume", copy, "--no-progress"], name, capsys, tmp_path)


# 6. the llm-compressor recipe is YAML written by PyYAML: no text in the record can add keys
def test_recipe_text_cannot_inject_yaml_keys(tmp_path, capsys):
    evil = "x\nevil_stage:\n  evil_modifiers:\n    ConstantPruningModifier: {targets: all}\n# "
    record = {"method": "wanda", "requested": [0.6, 0.8], "target": 0.7, "model": "m\nargs: {a: 1}",
              "formula": evil, "sympy": evil, "allocation": evil, "layers": ["model.layers.0", "model.layers.1"]}
    (tmp_path / "allocation.json").write_text(json.dumps(record))
    assert main(["export", str(tmp_path / "allocation.json"), "--to", "llmcompressor", "--out",
                 str(tmp_path / "r.yaml")]) == 0
    recipe = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert set(recipe) == {"dsa_gp", "sparsity_stage"}
    assert recipe["dsa_gp"]["allocation"] == evil and recipe["dsa_gp"]["model"] == record["model"]
    assert recipe["sparsity_stage"]["sparsity_modifiers"]["WandaPruningModifier"]["sparsity"] == [0.6, 0.8]


# 7. --allocation / --init text: longer than a file name, or nested past the tree limits
LONG = ("dsa(add(add(t_atan(r_var(p_abslog(S))), mul(t_sigmoid(r_kurt(p_zscore(S))), t_tanh(r_entropy(p_minmax(S))))), "
        "sub(t_softplus(r_std(p_sqrt(S))), mul(t_sin(r_mean(p_log(S))), t_cos(r_median(p_square(S)))))), "
        "0.0700000000000000000000000000000000000000000000000000000000000000000000000000000000000000000)")


def test_a_formula_longer_than_a_file_name_is_used(tmp_path, capsys):
    assert len(LONG.encode()) > 255
    with time_limit(60):
        assert main([*DIRECT, "--generations", "1", "--init", LONG, "--run-dir", str(tmp_path / "run")]) == 0
    assert "from dsa(add" in json.loads((tmp_path / "run" / "hall_of_fame.json").read_text())[0]["formula"]


def test_deeply_nested_formulas_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expect_bad(["prune", "--allocation", DEEP, "--save", tmp_path / "out"], "nested 3002 levels deep", capsys, tmp_path)
    expect_bad([*DIRECT, "--init", DEEP], "at most 50", capsys, tmp_path)
    expect_bad([*DIRECT, "--init", "t_atan(" * 40000], "characters long", capsys, tmp_path)


# 8. --stages with --task synthetic: runs, and resumes
def test_stages_with_the_synthetic_task_run_and_resume(tmp_path, capsys):
    args = [*SYN, "--population", "6", "--stages", "1:8,all:4", "--run-dir", str(tmp_path / "run")]
    assert main([*args, "--generations", "1"]) == 0
    assert main(["search", "--resume", str(tmp_path / "run"), "--generations", "2", "--no-progress"]) == 0
    logbook = (tmp_path / "run" / "logbook.csv").read_text().splitlines()
    assert len(logbook) == 4  # header + generations 0, 1, 2


# 9. nothing lost or half-written
def test_prune_refuses_to_save_into_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expect_bad(["prune", "--allocation", "uniform", "--save", ".", "--no-progress"], "current folder", capsys, tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    expect_bad(["prune", "--save", tmp_path / "full", "--no-progress"], "not empty", capsys, tmp_path)


def test_a_failed_init_leaves_no_results_folder(direct_run, tmp_path, capsys, monkeypatch):
    other = tmp_path.parent / f"{tmp_path.name}-other"
    assert main([*DIRECT, "--sparsity", "0.5", "--generations", "0", "--run-dir", str(other)]) == 0
    capsys.readouterr()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    expect_bad([*DIRECT, "--init", other], "applies to that model and sparsity only", capsys, work)
    assert os.listdir(work) == []


def test_results_as_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").write_text("not a folder")
    expect_bad([*SYN, "--generations", "0"], "results exists and is not a folder", capsys, tmp_path)


def test_ctrl_c_in_prune_does_not_mention_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(dsa.run.llm, "prune_command", interrupted)
    assert main(["prune", "--allocation", "uniform", "--save", str(tmp_path / "out"), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "dsa: interrupted"


# 10. flags that were accepted and ignored, refused before any work
@pytest.mark.parametrize("args, needle", [
    ([*SYN, "--selection-windows", "2"], "--selection-windows does not apply to --task synthetic"),
    ([*SYN, "--masking", "block"], "--masking does not apply to --task synthetic"),
    ([*SYN, "--fitness", "kl"], "--fitness does not apply to --task synthetic"),
    (["search", "--no-progress", "--population", "6", "--stages", "4:8,all:4", "--val-windows", "2"],
     "reads 4 validation windows in a step, but --val-windows is 2"),
    (["search", "--no-progress", "--space", "direct", "--stages", "3:4,all:1"], "--val-windows is 2"),
    (["prune", "--allocation", "owl:m=-1", "--save", "out"], "m must be a finite number > 0"),
    (["prune", "--allocation", "owl:m=nan", "--save", "out"], "m must be a finite number > 0"),
    (["eval", "--allocation", "dsa-code:lam=inf"], "lam must be a finite number ≥ 0"),
    ([*DIRECT, "--level-step", "1e-300"], "the direct search cannot move"),
    ([*DIRECT, "--level-step", "0.5"], "the direct search cannot move"),
    (["search", "--no-progress", "--model", "A,"], "without an empty one"),
    (["search", "--no-progress", "--method", "wanda,"], "invalid choice"),
    # a selection step that keeps every candidate it scores (the former README example) selects nothing
    ([*SYN, "--population", "10", "--offspring", "30", "--stages", "1:30,all:8"], "selects nothing"),
    ([*SYN, "--population", "10", "--offspring", "30", "--stages", "1:12,2:12,all:8"], "step 2 keeps every"),
    # issue 29: each of these ran, the flag doing nothing
    ([*SYN, "--nm", "2:4", "--sparsity", "0.4"], "--nm does not apply to --task synthetic"),
    ([*DIRECT, "--stages", "4:4,all:1"], "--task synthetic has no validation windows"),
    ([*SYN, "--population", "6", "--offspring", "12", "--stages", "3:8,all:4"], "window count does nothing"),
    ([*SYN, "--offspring", "30"], "--offspring sets the children of multi-step selection: give --stages"),
    (["compare", "--offspring", "30", "--out", "cmp"], "give --stages"),
    (["compare", "--seeds", "0,,1", "--out", "cmp"], "without an empty item, got '0,,1'"),
    (["compare", "--baselines", "uniform,", "--out", "cmp"], "without an empty item, got 'uniform,'"),
    (["compare", "--searches", "gp,", "--out", "cmp"], "without an empty item"),
    (["search", "--no-progress", "--baselines", "uniform,,owl"], "without an empty item"),
    (["compare", "--formulas", "owl,,uniform", "--out", "cmp"], "--formulas 'owl,,uniform' has an empty item"),
    (["compare", "--formulas", "owl,", "--out", "cmp"], "has an empty item"),
    # at the most a layer may be pruned, only uniform reaches the mean: a search ended with a hall of fame of inf
    ([*SYN, "--sparsity", "0.99"], "only uniform reaches that mean, so a search has nothing to choose"),
    ([*DIRECT, "--sparsity", "0.99"], "nothing to choose"),
    (["compare", "--sparsity", "0.99", "--out", "cmp"], "nothing to choose"),
    # arithmetic on the flags, once found only after the model had loaded
    (["prune", "--nm", "2:4", "--sparsity", "0.7", "--save", "out"], "reaches at most mean sparsity 0.5"),
    (["eval", "--allocation", "uniform", "--nm", "2:4", "--sparsity", "0.7"], "reaches at most mean sparsity 0.5"),
    (["search", "--no-progress", "--nm", "4:8", "--sparsity", "0.6"], "reaches at most mean sparsity 0.5"),
])
def test_ignored_flags_are_refused(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expect_bad(args, needle, capsys, tmp_path)


# 11. SymPy's simplification is bounded in time: the formula is then shown as built, and said so
def test_simplification_is_bounded_in_time():
    from primitives import Formula, build_pset, parse_tree
    pset = build_pset()
    transforms = ["sin", "cos", "tan", "asin", "acos", "atan", "sigmoid", "tanh", "softplus", "sin", "cos", "tan"]
    chain = "dsa(" + "".join(f"t_{t}(" for t in transforms) + "r_var(S)" + ")" * len(transforms) + ", 0.1)"
    tree = parse_tree(chain, pset)
    start = time.process_time()
    with time_limit(60):
        formula = Formula.of(tree, pset)  # sympy.simplify alone: minutes
    assert time.process_time() - start < 10
    assert not formula.simplified and formula.text.startswith("dsa(sin(cos(")
    from dsa.run.problem import formula_display
    from dsa.outputs.show import hall_of_fame_table
    shown = formula_display(tree, pset)  # what the hall of fame records, and dsa show prints
    assert shown["note"].startswith("not simplified: SymPy took over")
    row = {"rank": 1, "fitness": 1.0, "tree": chain, "size": len(tree), "output": None, **shown}
    assert "(not simplified: SymPy took over" in hall_of_fame_table([row])


def test_top_level_help_loads_nothing_heavy_and_is_the_full_parsers_help():
    """``dsa --help`` answers from :mod:`dsa.cli.commands` without torch, transformers, SymPy or DEAP, and
    says exactly what the full parser (every command's flags added) says at the top level."""
    import subprocess
    import sys as _sys

    code = ("import sys, contextlib, io; from dsa.cli import main; out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out): rc = main(['--help'])\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'sympy', 'deap') if m in sys.modules)\n"
            "print(rc, heavy); print(out.getvalue(), end='')")
    done = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, _, text = done.stdout.partition("\n")
    assert first == "0 []"
    from dsa.cli.parser import build_parser
    assert text == build_parser().format_help()


def test_compare_formulas_split_only_outside_parentheses(tmp_path, capsys):
    """``--formulas`` is comma-separated, and formulas have commas of their own: the list splits only at
    top-level commas, so a formula reaches the check whole and only the bad item is named."""
    from dsa.run.allocations import split_list
    assert split_list(" owl, dsa(r_mean(S), 0.1),rank(t_log(r_var(S)), 0.2) ") == (
        "owl", "dsa(r_mean(S), 0.1)", "rank(t_log(r_var(S)), 0.2)")
    assert split_list("owl:m=7,lam=0.1, uniform,atp:beta=0.05") == ("owl:m=7,lam=0.1", "uniform", "atp:beta=0.05")
    expect_bad(["compare", "--formulas", "dsa(r_mean(S), 0.1), nope(S)", "--out", tmp_path / "cmp", "--no-progress"],
               "--formulas item 'nope(S)'", capsys, tmp_path)
    expect_bad(["compare", "--formulas", "owl:m=7,lam=0.1,beta=2", "--out", tmp_path / "cmp", "--no-progress"],
               "--formulas item 'owl:m=7,lam=0.1,beta=2': owl takes", capsys, tmp_path)


# 12. issue 29: the work after the checks, messages that say what is there, text from records escaped
@pytest.mark.parametrize("kind, words", [("fifo", "a FIFO"), ("zero", "a character device")])
def test_special_files_are_named_for_what_they_are(run, tmp_path, capsys, monkeypatch, kind, words):
    """A FIFO or a link to /dev/zero where a file is expected is refused as what it is, never as missing."""
    monkeypatch.chdir(tmp_path)

    def special(path: Path) -> Path:
        os.mkfifo(path) if kind == "fifo" else os.symlink("/dev/zero", path)
        return path
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "hall_of_fame.json").unlink()
    special(copy / "hall_of_fame.json")
    for args in (["eval", "--data", special(tmp_path / "text.txt")], ["eval", "--model", special(tmp_path / "m.gguf")],
                 ["export", special(tmp_path / "allocation.json")], ["show", copy],
                 ["prune", "--allocation", copy, "--save", tmp_path / "out"]):
        err = expect_bad(args, words, capsys, tmp_path)
        assert not any(w in err for w in ("not found", "missing", "no such", "not a run folder")), err


def test_a_run_with_an_invalid_best_tree_is_a_damaged_run_folder(run, tmp_path, capsys):
    copy = crafted(run, tmp_path, "hall_of_fame.json", put("0.tree", "frobnicate(S)"))
    for args in (["show", copy], ["prune", "--allocation", copy, "--save", tmp_path / "out"],
                 [*DIRECT, "--init", copy, "--run-dir", tmp_path / "new"]):
        expect_bad(args, "hall_of_fame.json is damaged: its best tree is not a formula", capsys, tmp_path)


def test_text_from_records_is_shown_escaped(run, tmp_path, capsys):
    """A newline or a terminal escape in a record reaches neither dsa show's table nor an error line raw."""
    def change(data):
        data["method"], data["model"] = "wanda\nFAKE LINE", "m\x1b[31m"
    config = crafted(run, tmp_path, "config.json", change)
    copy = crafted(config, tmp_path, "hall_of_fame.json", put("0.formula", "x\x1b[2Jy\nz"))
    assert main(["show", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "method=wanda\\nFAKE LINE" in out and "x\\x1b[2Jy\\nz" in out
    # an error quoting a record: the run ships "owl" with a parameter owl does not take
    shipped = crafted(run, tmp_path, "config.json", put("selection", {"shipped": "owl:x\ny\x1b[2J=1"}))
    expect_bad(["show", shipped], "owl takes", capsys, tmp_path)
    expect_bad(["prune", "--allocation", shipped, "--save", tmp_path / "out"], "x\\ny\\x1b[2J", capsys, tmp_path)


def test_flag_errors_quote_what_was_typed_escaped(tmp_path, capsys):
    """argparse quotes unknown arguments and commands as typed: the one error line escapes them too."""
    from dsa.cli import main as front

    for args, needle in ((["search", "--seeds", "1,\x1b[31m"], "--seeds 1,\\x1b[31m"),
                         (["search", "--frob\nFAKE"], "--frob\\nFAKE"),
                         (["compare", "--out", "o", "x\ry"], "x\\ry")):
        err = expect_bad(args, needle, capsys, tmp_path)
        assert "\x1b" not in err and "\r" not in err
    assert front(["\x1b[2J"]) == 2
    err = capsys.readouterr().err
    assert "\\x1b[2J" in err and "\x1b" not in err and len(err.splitlines()) == 1


def test_compare_creates_out_only_with_its_first_row(tmp_path, capsys):
    """A model that does not load leaves no --out folder behind."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    expect_bad(["compare", "--model", tmp_path / "model", "--out", tmp_path / "cmp", "--no-progress"],
               "cannot load --model", capsys, tmp_path)
    assert not (tmp_path / "cmp").exists()


def test_compare_refuses_a_formula_that_does_not_fit_the_model(tiny_dir, direct_run, tmp_path, capsys):  # noqa: F811
    """A --formulas item whose length does not fit the model (a 12-layer run on a 4-layer model) is refused
    once the model's shape is known, before any row is measured: no compare.json, no folder."""
    expect_bad(["compare", *data_args(tiny_dir), "--out", tmp_path / "cmp", "--searches", "none", "--baselines",
                "uniform", "--formulas", direct_run, "--test-windows", "3", "--c4-windows", "0", "--no-progress"],
               "allocation for 12 layers", capsys, tmp_path)
