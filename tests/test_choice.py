"""The choice rule of a search (``dsa.run.choice.choice`` / ``decide``): the hall of fame's best ships only where the
paired 95 % interval of its per-window log-perplexity difference from the strongest baseline, on held-out
windows, lies below 0; otherwise the run ships that baseline, and ``dsa prune --allocation RUN``, ``dsa show``
and ``dsa compare`` follow. Per-window values are chosen by hand, so each verdict is known in advance."""
from __future__ import annotations

import json

import pytest
import torch

from primitives import LayerAllocator

from dsa.outputs.show import show_run
from dsa.run.allocations import allocate, baseline_spec, best_row, check_allocation, read_checked_run
from dsa.run.choice import choice, decide
from dsa.run.folder import write_choice

BASE = [5.0 + 0.1 * (i % 5) for i in range(16)]  # per-window log-ppl of the strongest baseline


def test_a_clear_win_ships():
    made = choice([b - 0.1 for b in BASE], BASE)
    assert made["verdict"] == "beats" and made["windows"] == 16
    assert made["delta"] == pytest.approx([-0.1, -0.1, -0.1])


def test_a_tie_does_not_ship_even_with_a_lower_mean():
    # differences −0.3 and +0.2 alternating: mean −0.05, but sd 0.25 over 16 windows puts 0 inside the interval
    cand = [b + (-0.3 if i % 2 == 0 else 0.2) for i, b in enumerate(BASE)]
    made = choice(cand, BASE)
    assert made["delta"][0] == pytest.approx(-0.05)
    assert made["delta"][1] < 0 < made["delta"][2] and made["verdict"] == "tie"


def test_a_loss():
    made = choice([b + 0.05 for b in BASE], BASE)
    assert made["verdict"] == "loses" and made["delta"][1] == pytest.approx(0.05)


def test_too_few_windows_never_ship():
    made = choice([b - 0.5 for b in BASE[:4]], BASE[:4])
    assert made["verdict"] == "too few windows" and made["delta"][2] == pytest.approx(-0.5)


def test_baseline_spec_fixes_what_tuning_chose():
    assert baseline_spec("atp-tuned", {"beta": 0.008}) == "atp:beta=0.008"
    assert baseline_spec("owl-tuned", {"m": 10.0, "lam": 0.2}) == "owl:m=10,lam=0.2"
    assert baseline_spec("uniform", {}) == "uniform"
    assert baseline_spec("alphapruning", {"epsilon": None, "fix_fingers": "xmin_peak"}) == "alphapruning"


class PerWindow:
    """``fitness(sparsities, split=, per_window=)`` from a table: allocation → per-window values."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, sparsities, split="search", per_window=False):
        assert split == "selection" and per_window
        self.calls.append([round(float(x), 6) for x in sparsities])
        return self.table[tuple(round(float(x), 6) for x in sparsities)]


CAND, SECOND, ATP, UNIFORM = [0.6, 0.7, 0.8], [0.65, 0.7, 0.75], [0.62, 0.7, 0.78], [0.7, 0.7, 0.7]
BASELINES = {"uniform": {"fitness": 9.0, "params": {}, "allocation": UNIFORM},
             "atp-tuned": {"fitness": 6.0, "params": {"beta": 0.01}, "allocation": ATP},
             "dlp": {"fitness": 7.0, "params": {"alpha": 0.15}, "allocation": [0.7, 0.69, 0.71]}}


def rows():
    return [{"rank": 1, "fitness": 5.0, "tree": "dsa(t_reciprocal(r_mean(S)), 0.2)", "output": CAND,
             "formula": "f1", "size": 6},
            {"rank": 2, "fitness": 5.5, "tree": "dsa(r_mean(S), 0.1)", "output": SECOND, "formula": "f2", "size": 4}]


def write_run(folder, hof, selection):
    folder.mkdir()
    (folder / "hall_of_fame.json").write_text(json.dumps(hof))
    config = {"version": 2, "task": "llm", "sparsity": 0.7, "space": "formula",
              "baselines": {n: b["fitness"] for n, b in BASELINES.items()},
              "baseline_settings": {n: {"params": b["params"], "allocation": b["allocation"]} for n, b in BASELINES.items()},
              "selection": selection}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("shift, ships", [(-0.1, "found"), (0.0, "atp:beta=0.01"), (+0.1, "atp:beta=0.01")])
def test_decide_tests_the_best_row_against_the_strongest_baseline(tmp_path, shift, ships):
    fitness = PerWindow({tuple(CAND): [b + shift for b in BASE], tuple(ATP): BASE})
    hof = rows()
    made = decide(hof, BASELINES, fitness)
    # only the candidate (rank 1, the search's own best) and the strongest baseline on the search's fitness
    # (atp-tuned, 6.0; not uniform, not the second row) are scored
    assert fitness.calls == [CAND, ATP]
    assert made["strongest"] == "atp-tuned" and made["candidate_rank"] == 1 and made["shipped"] == ships
    assert made["best_rank"] == (1 if ships == "found" else None)
    write_choice(tmp_path, hof, {"selection": made})  # the run folder's writer of the choice
    written = json.loads((tmp_path / "hall_of_fame.json").read_text())
    assert ("flag" in written[0]) == (ships != "found") and "flag" not in written[1]
    assert json.loads((tmp_path / "config.json").read_text())["selection"]["shipped"] == ships


def test_a_run_that_ships_the_baseline_gives_it_to_prune_show_and_compare(tmp_path):
    run = tmp_path / "run"
    hof = rows()
    hof[0]["flag"] = "does not beat atp-tuned"
    made = {"rule": "paired-95", "verdict": "tie", "delta": [-0.01, -0.04, 0.02], "windows": 32,
            "candidate_rank": 1, "strongest": "atp-tuned", "shipped": "atp:beta=0.01", "best_rank": None}
    write_run(run, hof, made)
    row, _ = best_row(run)  # what dsa compare measures for the search
    assert row["output"] == ATP and row["baseline"] == "atp-tuned" and row["tree"] == "atp:beta=0.01"
    check_allocation(str(run))
    scores = [torch.rand(64) for _ in range(3)]
    allocator = LayerAllocator(scores, target=0.7, weights=[1.0, 1.0, 1.0])

    class Blocks:  # what ATP reads: the number of blocks and their sizes
        counts = [1.0, 1.0, 1.0]

        def __len__(self):
            return 3
    want, _ = allocate("atp:beta=0.01", allocator, Blocks())
    got, formula = allocate(str(run), allocator, Blocks())
    assert got == pytest.approx(want) and formula is None
    text = show_run(read_checked_run(run))
    assert "no found function beats atp-tuned: the run ships atp:beta=0.01" in text
    assert "[-0.0400, +0.0200], tie" in text


def test_a_run_that_ships_its_formula(tmp_path):
    run = tmp_path / "run"
    made = {"rule": "paired-95", "verdict": "beats", "delta": [-0.2, -0.25, -0.15], "windows": 32,
            "candidate_rank": 1, "strongest": "atp-tuned", "shipped": "found", "best_rank": 1}
    write_run(run, rows(), made)
    row, _ = best_row(run)
    assert row["tree"] == rows()[0]["tree"] and "baseline" not in row
    assert "→ ships rank 1" in show_run(read_checked_run(run))


def test_a_forged_choice_is_refused_in_one_line(tmp_path):
    from dsa.errors import UserError
    run = tmp_path / "run"
    write_run(run, rows(), {"rule": "paired-95", "shipped": "rm -rf /", "strongest": "atp-tuned",
                            "delta": [0, 0, 0], "verdict": "tie"})
    with pytest.raises(UserError, match="damaged"):
        check_allocation(str(run))


@pytest.mark.parametrize("shipped", ["found", "atp:beta=0.01"])
def test_check_fits_reads_a_run_folder_once(tmp_path, monkeypatch, shipped):
    """dsa compare's check of a --formulas run folder (before any measurement) asks one reading of the folder
    both whether it ships a baseline and what its allocation is."""
    from dsa.run import allocations
    from dsa.run.folder import Run
    run = tmp_path / "run"
    made = {"rule": "paired-95", "verdict": "beats" if shipped == "found" else "tie", "delta": [-0.2, -0.25, -0.15],
            "windows": 32, "candidate_rank": 1, "strongest": "atp-tuned", "shipped": shipped,
            "best_rank": 1 if shipped == "found" else None}
    write_run(run, rows(), made)
    reads = []
    real = Run.read.__func__
    monkeypatch.setattr(Run, "read", classmethod(lambda cls, d: reads.append(d) or real(cls, d)))
    allocator = LayerAllocator([torch.rand(64) for _ in range(3)], target=0.7, weights=[1.0, 1.0, 1.0])
    allocations.check_fits(str(run), allocator)
    assert len(reads) == 1
