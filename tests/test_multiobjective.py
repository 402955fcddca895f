"""NSGA-II on (fitness, tree size), on the synthetic allocation task: a non-dominated front ranked by
size, written to the run folder and shown by ``dsa show``, cached, and resumable to the same front."""
from __future__ import annotations

import json
import math

import pytest
from deap import creator
from test_search import HOF_KEYS, CountingFitness, _hof, _log, _run

import gp
from primitives import parse_tree

from dsa.cli import dispatch as cli
from dsa.outputs.show import show_run
from dsa.run.allocations import read_checked_run
from dsa.run.problem import allocation_problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

MULTI = ("fitness", "size")


def dominates(a: dict, b: dict) -> bool:
    return (a["fitness"] <= b["fitness"] and a["size"] <= b["size"]
            and (a["fitness"] < b["fitness"] or a["size"] < b["size"]))


def _front(result):
    return [(row["tree"], row["fitness"], row["size"]) for row in result.pareto_front]


@pytest.fixture(scope="module")
def run(task, tmp_path_factory):  # noqa: F811
    run_dir = tmp_path_factory.mktemp("multi")
    return run_dir, _run(task, run_dir=run_dir, population=30, generations=25, seed=1, objectives=MULTI)


def test_front_is_non_dominated_ranked_by_size_and_holds_the_best(run, task):  # noqa: F811
    run_dir, result = run
    front, hof = result.pareto_front, result.hall_of_fame
    assert len(front) >= 2
    assert [r["rank"] for r in front] == list(range(1, len(front) + 1))
    assert [r["size"] for r in front] == sorted(r["size"] for r in front)
    assert all(not dominates(a, b) for a in front for b in front)
    assert all(not dominates(h, f) for h in hof for f in front), "a hall-of-fame formula beats a front member"
    assert all(r["size"] == len(parse_tree(r["tree"], task[0].pset)) and math.isfinite(r["fitness"]) for r in front)
    assert min(r["fitness"] for r in front) == hof[0]["fitness"]  # the fittest formula seen is on the front
    assert front[0]["size"] <= 5  # and a small one: post(reduce(S), λ) has 4 nodes
    # mu + lambda survival keeps the rank-0 extremes: the fittest formula ever seen stays in the population
    assert all(row["min"] == row["best"] for row in result.logbook)
    assert json.loads((run_dir / "pareto_front.json").read_text()) == front
    assert all(set(r) == HOF_KEYS for r in front)


# The statistical claim (every NSGA-II front beats uniform, and reaches the hidden formula's basin on some
# seeds) is measured by bench/synthetic_search.py; this suite keeps seeded, structural checks.


def test_fitness_is_cached_fitness_and_computed_size(task):  # noqa: F811
    allocator, fitness = task
    search = gp.Search(allocation_problem(allocator, fitness), gp.SearchConfig(population=4, generations=0,
                                                                               objectives=MULTI))
    texts = ["dsa(r_mean(p_square(p_exp(p_exp(S)))), 0.1)",  # invalid: worst in both objectives
             "dsa(t_sqrt(r_kurt(p_abslog(S))), 0.12)",       # the hidden formula: fitness 0, size 6
             "rank(r_var(S), 0.1)"]
    for attempt in range(2):
        inds = [creator.IndividualMulti(parse_tree(t, allocator.pset)) for t in texts]
        counts = search.evaluate(inds)
        assert inds[0].fitness.values == (math.inf, math.inf)
        assert inds[1].fitness.values == pytest.approx((0.0, 6))
        assert inds[2].fitness.values == (fitness(allocator(inds[2]).sparsities), 4)
        assert counts["text_hits"] == (0 if attempt == 0 else 3)
    assert search.evaluations == 2


def test_cache_skips_repeats_in_multiobjective_mode(task):  # noqa: F811
    allocator, fitness = task
    counting = CountingFitness(fitness)
    result = gp.Search(allocation_problem(allocator, counting),
                       gp.SearchConfig(population=24, generations=8, seed=5, objectives=MULTI)).run()
    assert len(counting.calls) == result.evaluations < 24 * 9
    keys = [gp.rounded_key(out) for out in counting.calls]
    assert len(set(keys)) == len(keys), "the same rounded allocation was evaluated twice"
    assert result.logbook[-1]["hit_rate"] > 0


def test_resume_continues_to_the_uninterrupted_front(task, tmp_path):  # noqa: F811
    settings = dict(population=16, seed=21, objectives=MULTI)
    _run(task, run_dir=tmp_path, generations=3, **settings)
    straight = _run(task, generations=6, **settings)
    resumed = _run(task, run_dir=tmp_path, resume=True, generations=6, **settings)
    assert _front(resumed) == _front(straight)
    assert _hof(resumed) == _hof(straight) and _log(resumed) == _log(straight)
    assert resumed.evaluations == straight.evaluations
    with pytest.raises(ValueError, match="objectives"):  # a single-objective resume of it is refused
        _run(task, run_dir=tmp_path, resume=True, generations=7, population=16, seed=21)


def test_single_objective_has_no_front(task, tmp_path):  # noqa: F811
    result = _run(task, run_dir=tmp_path, population=8, generations=1, seed=0)
    assert result.pareto_front is None and not (tmp_path / "pareto_front.json").exists()
    assert "Pareto" not in show_run(read_checked_run(tmp_path))
    with pytest.raises(ValueError, match="objectives"):
        gp.SearchConfig(objectives=("size",))


def test_show_prints_the_front_by_size(run):
    run_dir, result = run
    text = show_run(read_checked_run(run_dir)).split("Pareto front")[1]
    positions = [text.index(row["formula"][:40]) for row in result.pareto_front]
    assert positions == sorted(positions)


def test_cli_objectives_flag_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["search", "--task", "synthetic", "--population", "12", "--seed", "2", "--no-progress"]
    assert cli.main([*base, "--generations", "2", "--objectives", "fitness,size", "--run-dir", str(run_dir)]) == 0
    assert json.loads((run_dir / "config.json").read_text())["search"]["objectives"] == list(MULTI)
    assert "Pareto front" in capsys.readouterr().out
    assert cli.main(["search", "--resume", str(run_dir), "--generations", "3", "--no-progress"]) == 0
    front = json.loads((run_dir / "pareto_front.json").read_text())
    assert front and all(not dominates(a, b) for a in front for b in front)
    assert cli.main([*base, "--objectives", "size", "--run-dir", str(tmp_path / "bad")]) == 2
    assert "invalid choice" in capsys.readouterr().err and not (tmp_path / "bad").exists()
