"""The direct per-layer search (EvoPress-style): level switches keep the target exactly, multi-step
selection reads few windows first, the search improves, is reproducible, resumes to the same result,
and starts from a warm allocation when given one."""
from __future__ import annotations

import json
import random

import pytest
import torch

from dsa.run.synthetic import synthetic_task
from gp import ConfigError
from dsa.run.levels import LevelSpace
from gp.direct import DirectConfig, DirectSearch, switch_levels

TARGET = 0.7


class StagedFitness:
    """The synthetic task's distance to the hidden allocation; ``windows=n`` adds noise that shrinks with
    n (as fewer validation windows would), and every call is recorded."""

    def __init__(self):
        allocator, self.distance = synthetic_task(TARGET)
        self.counts = allocator.ctx.weights
        self.calls: list[int | None] = []

    def __call__(self, sparsities, windows=None):
        self.calls.append(windows)
        noise = 0.0 if windows is None else 0.3 * torch.sin(sparsities.sum() * 1000 + windows).item() / windows
        return self.distance(sparsities) + noise


def space_for(fitness, base=None, step=0.02):
    base = torch.full((len(fitness.counts),), TARGET, dtype=torch.float64) if base is None else base
    return LevelSpace(base, fitness.counts, step=step, max_level=8)


def weighted_mean(s, counts):
    return float((s * counts).sum() / counts.sum())


def test_level_switches_keep_the_weighted_mean_and_the_bounds():
    counts = torch.tensor([100.0, 200.0, 50.0, 400.0, 250.0], dtype=torch.float64)
    base = torch.full((5,), 0.9, dtype=torch.float64)
    base *= TARGET / weighted_mean(base, counts)
    space = LevelSpace(base, counts, step=0.05, max_level=8, hi=0.99)
    random.seed(0)
    levels = [0] * 5
    for _ in range(2000):
        levels = switch_levels(levels, space.low, space.high)
        assert sum(levels) == 0
        assert all(space.low[l] <= v <= space.high[l] for l, v in enumerate(levels))
        s = space.decode(levels)
        assert abs(weighted_mean(s, counts) - TARGET) < 1e-12
        assert float(s.min()) >= 0 and float(s.max()) <= 0.99
    # one level moves the same number of weights in every layer
    assert torch.allclose(space.steps * counts, torch.full((5,), float(space.steps[0] * counts[0]), dtype=torch.float64))


def test_search_improves_is_reproducible_and_reads_few_windows_first():
    runs = []
    for _ in range(2):
        fitness = StagedFitness()
        uniform = fitness.distance(torch.full((len(fitness.counts),), TARGET, dtype=torch.float64))
        config = DirectConfig(generations=15, offspring=8, stages=((1, 3), (None, 1)), seed=4)
        result = DirectSearch(space_for(fitness), fitness, all_windows=4, config=config).run()
        runs.append((result, fitness))
    (a, fa), (b, _) = runs
    assert [r["fitness"] for r in a.hall_of_fame] == [r["fitness"] for r in b.hall_of_fame]
    assert a.hall_of_fame[0]["output"] == b.hall_of_fame[0]["output"]
    assert a.hall_of_fame[0]["fitness"] < uniform - 0.5
    assert abs(weighted_mean(torch.tensor(a.hall_of_fame[0]["output"], dtype=torch.float64), fa.counts) - TARGET) < 1e-9
    # per generation: the children on 1 window, 3 survivors (+ the parent) on all of them
    assert fa.calls.count(1) > fa.calls.count(None) > 0
    log = a.logbook
    assert [row["gen"] for row in log] == list(range(16))
    assert log[-1]["total_evals"] == a.evaluations == len(fa.calls)
    assert log[-1]["windows_used"] == fa.calls.count(1) + 4 * fa.calls.count(None)
    assert all(x["best"] >= y["best"] for x, y in zip(log, log[1:]))  # elitism: never worse


def test_resume_gives_the_uninterrupted_result(tmp_path):
    config = dict(offspring=6, stages=((2, 2), (None, 1)), seed=9)
    fitness = StagedFitness()
    DirectSearch(space_for(fitness), fitness, 4, DirectConfig(generations=4, **config), run_dir=tmp_path).run()
    straight = DirectSearch(space_for(StagedFitness()), StagedFitness(), 4, DirectConfig(generations=9, **config)).run()
    resumed = DirectSearch(space_for(fitness), fitness, 4, DirectConfig(generations=9, **config),
                           run_dir=tmp_path).run(resume=True)
    assert resumed.hall_of_fame == straight.hall_of_fame
    assert [r["best"] for r in resumed.logbook] == [r["best"] for r in straight.logbook]
    assert resumed.evaluations == straight.evaluations


def test_warm_start_begins_at_the_given_allocation():
    fitness = StagedFitness()
    hidden = fitness.distance.target  # the optimum itself: nothing to improve
    result = DirectSearch(space_for(fitness, base=hidden), fitness, 4,
                          DirectConfig(generations=3, offspring=4, seed=1)).run()
    assert result.hall_of_fame[0]["fitness"] == pytest.approx(0.0, abs=1e-9)
    assert result.hall_of_fame[0]["output"] == pytest.approx(hidden.tolist(), abs=1e-12)


@pytest.mark.parametrize("settings, needle", [
    (dict(stages=((1, 2), (2, 1))), "last selection stage"),
    (dict(stages=((4, 2), (2, 3), (None, 1))), "decrease to 1"),
    (dict(stages=((4, 2), (2, 1), (None, 1))), "grow"),
    (dict(offspring=0), "offspring"),
    (dict(max_level=0), "max_level"),
])
def test_config_checks(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        DirectConfig(**settings)


def test_cli_direct_search_resumes_to_the_uninterrupted_run(tmp_path, capsys):
    from dsa.cli import main
    base = ["search", "--task", "synthetic", "--space", "direct", "--seed", "3", "--offspring", "6", "--no-progress"]
    assert main([*base, "--generations", "6", "--run-dir", str(tmp_path / "straight")]) == 0
    assert main([*base, "--generations", "3", "--run-dir", str(tmp_path / "resumed")]) == 0
    assert main(["search", "--resume", str(tmp_path / "resumed"), "--generations", "6", "--no-progress"]) == 0
    rows = [json.loads((tmp_path / run / "hall_of_fame.json").read_text()) for run in ("straight", "resumed")]
    assert rows[0] == rows[1] and rows[0][0]["formula"].startswith("direct")
    shown = capsys.readouterr().out
    assert "per-layer sparsity" in shown
    # a direct run's best is an allocation for its model and sparsity: prune/eval take it as is
    from dsa.run.allocations import allocate
    from dsa.run.synthetic import synthetic_task
    allocator, _ = synthetic_task(0.7)
    assert allocate(str(tmp_path / "straight"), allocator)[0] == rows[0][0]["output"]
    with pytest.raises(Exception, match="sparsity"):
        allocate(str(tmp_path / "straight"), synthetic_task(0.5)[0])


def test_resume_reads_saved_settings_through_each_config_class(tmp_path):
    """gp.checkpoint.resumable has no rules of its own: the saved settings go through the config's from_dict
    (settings added since get their defaults; SearchConfig's old "no cap" 0 reads as None)."""
    from gp import SearchConfig, checkpoint
    for config in (SearchConfig(population=4, generations=2), DirectConfig(generations=3)):
        old = config.to_dict()
        old["max_evaluations"] = 0 if isinstance(config, SearchConfig) else None
        del old["hof_size"]  # a setting the checkpoint predates
        checkpoint.save(tmp_path, {"config": old, "identity": {}})
        assert checkpoint.resumable(tmp_path, config, {}) is not None
        checkpoint.save(tmp_path, {"config": {**old, "hof_size": 3}, "identity": {}})
        with pytest.raises(checkpoint.CheckpointError, match="settings differ.*hof_size"):
            checkpoint.resumable(tmp_path, config, {})
        checkpoint.save(tmp_path, {"config": {**old, "generations": "many"}, "identity": {}})
        with pytest.raises(checkpoint.CheckpointError, match="damaged"):
            checkpoint.resumable(tmp_path, config, {})
