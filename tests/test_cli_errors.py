"""Bad input, as a new user (or an adversary) types it: every case prints one line on stderr, exits with
code 2 and writes nothing. In-process (``dsa.cli.main``), so the table runs in seconds; the subprocess
tests in test_cli.py check that no traceback reaches a real terminal."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from dsa.cli import main

SYN = ["search", "--task", "synthetic", "--no-progress"]


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
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(root) == before, "a bad command wrote something"


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
    import dsa.search

    def broken(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(dsa.search, "build_task", broken)
    assert main([*SYN, "--run-dir", str(tmp_path / "run")]) == 130
    assert not (tmp_path / "run").exists()
    assert os.listdir(tmp_path) == []
