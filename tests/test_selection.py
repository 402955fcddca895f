"""``choose_on_selection``: the rule that decides whether a found formula counts as a win. Each hall-of-fame
row and each baseline is scored on the selection split; a row that does not beat uniform, or the
strongest other baseline, there is flagged; the best row is the lowest unflagged one, else the lowest
flagged one. Fitness here is a table look-up, so every number below is chosen by hand."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import gp
from dsa.run.multitask import MultiTaskFitness, Task
from dsa.run.choice import choose_on_selection

UNIFORM = "loses to uniform on the selection split"


def key(allocation) -> tuple:
    return tuple(round(float(x), 6) for x in allocation)


class TableFitness:
    """``fitness(sparsities, split=...)`` looked up in a table of allocations; records what it was given.
    Only the selection split is in the table: scoring on any other split is a KeyError."""

    def __init__(self, table: dict[tuple, float]):
        self.table = table
        self.calls: list = []

    def __call__(self, sparsities, split="search"):
        self.calls.append(sparsities)
        return self.table[(split, key(sparsities))]


class CountingMap:
    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, fn, items):
        items = list(items)
        self.batches.append(len(items))
        return map(fn, items)


def row(rank, output, fitness=1.0):
    return {"rank": rank, "output": output, "fitness": fitness, "tree": f"tree{rank}"}


def alloc(i):
    """A distinct three-layer allocation per index."""
    return [0.5 + i / 100, 0.6, 0.7 - i / 100]


# uniform 5.0; of the others owl (4.0) is the strongest, listed after alpha (4.5) so that "the first
# other baseline" or "the last" would pick the wrong one
BASELINE_VALUES = {"uniform": 5.0, "alpha": 4.5, "owl": 4.0}
BASELINES = {"uniform": {"fitness": 9.0, "params": {}, "allocation": [0.6, 0.6, 0.6]},
             "alpha": {"fitness": 7.0, "params": {"eps": 0.1}, "allocation": alloc(90)},
             "owl": {"fitness": 8.0, "params": {"M": 5}, "allocation": alloc(91)},
             "tuned-away": {"fitness": 1.0, "params": {}, "allocation": None}}  # no allocation: not scored


def table(row_values: dict[int, float]) -> dict:
    out = {("selection", key(b["allocation"])): BASELINE_VALUES[n] for n, b in BASELINES.items() if b["allocation"]}
    out.update({("selection", key(alloc(i))): v for i, v in row_values.items()})
    return out


def test_flags_choice_and_skipped_rows():
    # selection values by row: the search's order (rank, fitness) is not the selection order
    values = {1: 4.8, 2: 3.9, 3: 3.5, 4: 5.0, 5: 6.0, 6: 4.0, 7: 4.2}
    rows = [row(1, alloc(1), 0.1), row(2, alloc(2), 0.2), row(3, alloc(3), 0.9), row(4, alloc(4), 0.3),
            row(5, alloc(5), 0.4), row(6, alloc(6), 0.5), row(7, alloc(7), 0.6),
            row(8, None, 0.7),                # no output: not scored
            row(9, alloc(9), gp.WORST)]       # invalid: not scored (alloc(9) is not in the table either)
    fitness, counting = TableFitness(table(values)), CountingMap()
    best, base = choose_on_selection(rows, BASELINES, fitness, map_fn=counting)

    assert base == BASELINE_VALUES  # the baseline without an allocation is left out
    assert [r.get("selection") for r in rows] == [4.8, 3.9, 3.5, 5.0, 6.0, 4.0, 4.2, None, None]
    assert [r.get("flag") for r in rows] == [
        "loses to owl on the selection split",   # 4.8: beats uniform, loses to alpha and owl: the strongest is named
        None, None,                              # 3.9, 3.5 beat every baseline
        UNIFORM,                                 # 5.0 ties uniform: a tie is a loss
        UNIFORM,                                 # 6.0 loses to both: the uniform flag is the one written
        "loses to owl on the selection split",   # 4.0 ties owl
        "loses to owl on the selection split",   # 4.2 between owl and alpha
        None, None]                              # not scored
    assert best is rows[2]  # the lowest selection value among the unflagged, though ranked 3rd by search
    assert counting.batches == [7 + 3], "one map over the 7 valid rows and the 3 baselines with an allocation"
    assert len(fitness.calls) == 10
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in fitness.calls)
    assert [r["fitness"] for r in rows][:3] == [0.1, 0.2, 0.9]  # the search fitness is left as it was


def test_when_every_row_is_flagged_the_lowest_is_kept_with_its_flag():
    values = {1: 5.5, 2: 4.2, 3: 4.0}  # all lose; the lowest (4.0, a tie with owl) is ranked 3rd
    rows = [row(i, alloc(i)) for i in (1, 2, 3)]
    best, _ = choose_on_selection(rows, BASELINES, TableFitness(table(values)))
    assert all("flag" in r for r in rows)
    assert best is rows[2] and best["selection"] == 4.0
    assert best["flag"] == "loses to owl on the selection split"


def test_when_uniform_is_the_strongest_baseline():
    # a row between uniform and owl loses to uniform only; one below both is clean and chosen
    baselines = {"uniform": {"allocation": alloc(80)}, "owl": {"allocation": alloc(81)}}
    fitness = TableFitness({("selection", key(alloc(80))): 3.0, ("selection", key(alloc(81))): 4.0,
                            ("selection", key(alloc(1))): 3.5, ("selection", key(alloc(2))): 2.9})
    rows = [row(1, alloc(1)), row(2, alloc(2))]
    best, base = choose_on_selection(rows, baselines, fitness)
    assert base == {"uniform": 3.0, "owl": 4.0}
    assert rows[0]["flag"] == UNIFORM and "flag" not in rows[1]
    assert best is rows[1]


def test_without_uniform_only_the_strongest_other_baseline_flags():
    baselines = {"uniform": {"allocation": None}, "owl": {"allocation": alloc(81)}, "alpha": {"allocation": alloc(82)}}
    fitness = TableFitness({("selection", key(alloc(81))): 4.0, ("selection", key(alloc(82))): 2.0,
                            ("selection", key(alloc(1))): 3.0, ("selection", key(alloc(2))): 1.0})
    rows = [row(1, alloc(1)), row(2, alloc(2))]
    best, base = choose_on_selection(rows, baselines, fitness)
    assert base == {"owl": 4.0, "alpha": 2.0}
    assert rows[0]["flag"] == "loses to alpha on the selection split"
    assert "flag" not in rows[1] and best is rows[1]


def test_without_baselines_nothing_is_flagged():
    fitness = TableFitness({("selection", key(alloc(1))): 2.0, ("selection", key(alloc(2))): 1.0})
    rows = [row(1, alloc(1)), row(2, alloc(2))]
    best, base = choose_on_selection(rows, {}, fitness)
    assert base == {} and best is rows[1]
    assert all("flag" not in r for r in rows) and [r["selection"] for r in rows] == [2.0, 1.0]


def test_no_valid_row_chooses_none_and_still_scores_the_baselines():
    rows = [row(1, None), row(2, alloc(2), gp.WORST)]
    fitness, counting = TableFitness(table({})), CountingMap()
    best, base = choose_on_selection(rows, BASELINES, fitness, map_fn=counting)
    assert best is None and base == BASELINE_VALUES
    assert counting.batches == [3]
    assert all("selection" not in r and "flag" not in r for r in rows)
    assert choose_on_selection([], {}, fitness) == (None, {})


# multi-task ----------------------------------------------------------------------------------------

def multitask_fitness():
    """Two tasks (two layers each); a task's fitness is a table look-up, its uniform scores 10 and 20.
    Each allocation value below is the ratio to uniform times uniform's value."""
    uniforms = {"a": 10.0, "b": 20.0}
    tables = {name: {("selection", (0.6, 0.6)): value} for name, value in uniforms.items()}
    calls = []

    def fitness_of(name):
        def fitness(sparsities, windows=None, split="search"):
            calls.append((name, split))
            return tables[name][(split, key(sparsities))]
        return fitness

    tasks = [Task(name, SimpleNamespace(ctx=SimpleNamespace(uniform=torch.tensor([0.6, 0.6], dtype=torch.float64))),
                  fitness_of(name)) for name in uniforms]
    return MultiTaskFitness(tasks), tables, uniforms, calls


def test_multitask_outputs_are_per_task_and_uniform_scores_zero():
    fitness, tables, uniforms, calls = multitask_fitness()
    ratios = {1: (0.5, 0.8), 2: (1.0, 1.0), 3: (0.9, 1.2), 4: (0.6, 0.6)}
    rows = []
    for i, (ra, rb) in ratios.items():
        output = {"a": [0.1 * i, 0.2], "b": [0.3, 0.1 * i]}  # task a's and task b's allocations differ
        tables["a"][("selection", key(output["a"]))] = ra * uniforms["a"]
        tables["b"][("selection", key(output["b"]))] = rb * uniforms["b"]
        rows.append(row(i, output, fitness=-0.1 * i))
    rows.append(row(5, None))
    counting = CountingMap()
    # the multi-task search's only baseline is uniform, without an allocation: it is 0 by definition
    best, base = choose_on_selection(rows, {"uniform": {"fitness": 0.0, "params": {}, "allocation": None}},
                                     fitness, map_fn=counting)
    assert base == {"uniform": 0.0}
    expected = [(math.log(ra) + math.log(rb)) / 2 for ra, rb in ratios.values()]  # -0.458, 0, +0.038, -0.511
    assert [r["selection"] for r in rows[:4]] == pytest.approx(expected)
    assert [r.get("flag") for r in rows] == [None, UNIFORM, UNIFORM, None, None]  # 0 ties uniform: a loss
    assert best is rows[3]
    assert counting.batches == [4]
    assert all(split == "selection" for _, split in calls)
