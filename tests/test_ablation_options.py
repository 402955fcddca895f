"""The search's options against overfitting (issue 28's ablation), each doing what it says on the synthetic
task (split into per-layer cases where an option reads cases) or the tiny model: lexicase selection picks by
cases, resampled windows change every generation and survivors are re-scored on them, parsimony prefers the
smaller of equally fit trees, dedup mutates a child whose allocation repeats a scored one, restarts re-seed
after stalled generations; each resumes to the uninterrupted run; the ablation's table and runner."""
from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
import torch
from deap import creator

import gp
from bench import ablation
from dsa.cli import main
from dsa.errors import UserError
from dsa.run.problem import allocation_problem
from gp import checkpoint
from gp.operators import select_lexicase, vary
from gp.problem import rounded_key, tree_text
from primitives import parse_tree
from test_cli_llm import data_args


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


class LayerCases:
    """The synthetic fitness (mean |allocation − optimum| × 100) as one case per layer, recording the cases
    of every call."""

    def __init__(self, target: torch.Tensor):
        self.target = target
        self.calls: list = []

    def all(self, output) -> list[float]:
        return ((torch.as_tensor(output, dtype=torch.float64) - self.target).abs() * 100).tolist()

    def __call__(self, output, windows=None):
        self.calls.append(windows)
        losses = self.all(output)
        return losses if windows is None else [losses[w] for w in windows]


def cases_problem(task, fitness=None) -> gp.Problem:
    """The synthetic task with per-layer cases, uniform as the reference; trees shown as text (no SymPy)."""
    allocator, distance = task
    return dataclasses.replace(allocation_problem(allocator, fitness or distance), display=tree_text,
                               cases=LayerCases(distance.target), n_cases=len(distance.target),
                               reference=allocator.ctx.uniform)


def run(task, run_dir=None, resume=False, **settings):
    return gp.Search(cases_problem(task), gp.SearchConfig(**settings), run_dir=run_dir).run(resume=resume)


def tree(task, text):
    return creator.Individual(parse_tree(text, task[0].pset))


def _hof(result):
    return [(row["tree"], row["fitness"]) for row in result.hall_of_fame]


def _log(result):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.logbook]


# --- lexicase ---------------------------------------------------------------------------------------------

def test_lexicase_picks_the_specialists_not_the_best_mean():
    """Three specialists, each the only good one on one case, and a generalist with the best mean: ε-lexicase
    (each case keeps the candidates within one median absolute deviation of its best) picks every specialist
    and never the generalist; a tournament on the mean would pick the generalist most."""
    class Ind:
        def __init__(self, name, cases):
            self.name, self.cases = name, cases
    people = [Ind("a", [0, 9, 9]), Ind("b", [9, 0, 9]), Ind("c", [9, 9, 0]), Ind("mean", [4, 4, 4]),
              Ind("invalid", None)]
    random.seed(0)
    picked = [ind.name for ind in select_lexicase(people, 300)]
    assert set(picked) == {"a", "b", "c"}


def never(output):
    raise AssertionError("a search that scores from cases does not call the plain fitness")


def test_lexicase_search_selects_on_the_cases_and_keeps_the_mean_as_fitness(task):
    problem = cases_problem(task, never)
    config = gp.SearchConfig(population=10, generations=2, seed=4, selection="lexicase")
    search = gp.Search(problem, config)
    assert search.toolbox.select.func is select_lexicase
    checkpoint.seed_everything(config.seed)
    pop = search.start(0.0)[0]
    for ind in pop:
        if ind.fitness.values[0] != gp.WORST:
            full = problem.cases.all(torch.tensor(ind.output, dtype=torch.float64))
            assert ind.cases == full  # every case, as the fitness has them
            assert ind.fitness.values[0] == pytest.approx(sum(full) / len(full))
            assert ind.fitness.values[0] == pytest.approx(task[1](torch.tensor(ind.output, dtype=torch.float64)))
        else:
            assert ind.cases is None
    assert set(problem.cases.calls) == {None}


# --- resampled windows ------------------------------------------------------------------------------------

def test_resampling_draws_other_cases_each_generation_and_rescores_the_survivors(task):
    problem = cases_problem(task)
    config = gp.SearchConfig(population=8, generations=3, seed=5, resample_windows=4)
    search = gp.Search(problem, config)
    checkpoint.seed_everything(config.seed)
    state = search.start(0.0)
    reference = problem.cases.all(task[0].ctx.uniform)
    calls = problem.cases.calls
    assert list(search.reference) == reference and calls == [None] + [search.drawn[0]] * (len(calls) - 1)
    for gen in (1, 2, 3):
        state = search.generation(gen, state, 0.0)
        drawn = search.drawn[gen]
        assert len(drawn) == len(set(drawn)) == 4 and drawn == search.draw(gen)
        for ind in state[0]:  # elites and children alike, scored on this generation's cases
            assert ind.windows == drawn
            if ind.fitness.values[0] != gp.WORST:
                full = problem.cases.all(torch.tensor(ind.output, dtype=torch.float64))
                assert ind.cases == [full[w] for w in drawn]
                paired = sum(reference) / len(reference) + sum(full[w] - reference[w] for w in drawn) / len(drawn)
                assert ind.fitness.values[0] == pytest.approx(paired)
    assert len(set(search.drawn)) == 4  # a new draw every generation
    assert problem.cases.calls.count(None) == 1  # the reference, once; every other call on a generation's draw
    assert set(problem.cases.calls) - {None} == set(search.drawn)
    again = gp.Search(cases_problem(task), config)
    assert [again.draw(g) for g in range(4)] == search.drawn  # seeded by (seed, generation) alone
    other = gp.Search(cases_problem(task), dataclasses.replace(config, seed=6))
    assert [other.draw(g) for g in range(4)] != search.drawn


# --- parsimony ------------------------------------------------------------------------------------------

def test_parsimony_prefers_the_smaller_of_equally_fit_trees(task):
    small, big = tree(task, "dsa(r_l1(S), 0.1)"), tree(task, "dsa(mul(r_l1(S), 2.0), 0.1)")
    for ind in (small, big):
        ind.fitness.values = (1.0,)
    picks = {}
    for parsimony in (0.0, 2.0):
        search = gp.Search(cases_problem(task), gp.SearchConfig(population=4, generations=0, parsimony=parsimony))
        random.seed(0)
        picks[parsimony] = [len(ind) for ind in search.toolbox.select([small, big] * 5, 2000)].count(len(small))
    # without parsimony either tree at even odds; with it (size tournament 2), the smaller unless both
    # fitness-tournament winners are the larger: 3 in 4
    assert picks[0.0] / 2000 == pytest.approx(0.5, abs=0.05) and picks[2.0] / 2000 == pytest.approx(0.75, abs=0.05)


# --- dedup ------------------------------------------------------------------------------------------------

def test_dedup_mutates_a_child_whose_allocation_was_scored_and_counts_it_once(task):
    scored, same = "dsa(r_l1(S), 0.1)", "dsa(mul(r_l1(S), 2.0), 0.1)"  # two trees, one allocation
    allocator = task[0]
    assert rounded_key(allocator(parse_tree(scored, allocator.pset)).sparsities) == \
        rounded_key(allocator(parse_tree(same, allocator.pset)).sparsities)
    children = {}
    for dedup in (False, True):
        search = gp.Search(cases_problem(task), gp.SearchConfig(population=4, generations=0, dedup=dedup))
        search.evaluate([tree(task, scored)])
        random.seed(1)
        child, = vary([tree(task, same)], search.toolbox, 0.0, 0.0, search._known)
        children[dedup] = child
        counts = search.evaluate([child])
        if dedup:
            assert str(child) != same and rounded_key(torch.tensor(child.output)) != \
                rounded_key(allocator(parse_tree(scored, allocator.pset)).sparsities)
        else:  # a repeat by allocation, not by text: kept, and answered by the cache (no evaluation)
            assert str(child) == same and counts["output_hits"] == 1 and counts["evals"] == 0
    assert search.evaluations == 1 + (children[True].fitness.values[0] != gp.WORST)


def test_dedup_search_evaluates_no_allocation_twice(task):
    counted = []
    problem = cases_problem(task, lambda out: counted.append(rounded_key(out)) or task[1](out))
    result = gp.Search(problem, gp.SearchConfig(population=12, generations=6, seed=2, dedup=True)).run()
    assert len(counted) == len(set(counted)) == result.evaluations
    plain = run(task, population=12, generations=6, seed=2)
    assert sum(r["output_hits"] for r in result.logbook) < sum(r["output_hits"] for r in plain.logbook)


# --- restarts --------------------------------------------------------------------------------------------

def test_restart_reseeds_all_but_the_elites_after_k_stalled_generations(task):
    problem = cases_problem(task, lambda out: 1.0)  # every candidate equal: the best never improves
    config = gp.SearchConfig(population=8, elitism=2, generations=7, seed=0, restart_after=2)
    search = gp.Search(problem, config)
    fresh = []
    population = search.toolbox.population
    search.toolbox.register("population", lambda n: fresh.append(n) or population(n))
    result = search.run()
    # generation 0 stands; generations 1 and 2 do not improve it: generation 3 re-seeds, then 6
    assert [row["restart"] for row in result.logbook] == [0, 0, 0, 1, 0, 0, 1, 0]
    assert fresh == [8, 6, 6]  # the initial population, then population − elitism random trees per restart


# --- resume -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [dict(selection="lexicase"), dict(resample_windows=4), dict(dedup=True),
                                     dict(restart_after=1),
                                     dict(selection="lexicase", resample_windows=3, dedup=True, restart_after=1)])
def test_resume_continues_to_the_uninterrupted_result(task, tmp_path, options):
    settings = dict(population=10, seed=21, **options)
    run(task, run_dir=tmp_path, generations=3, **settings)
    straight = run(task, generations=6, **settings)  # leaves another random state in this process
    resumed = run(task, run_dir=tmp_path, resume=True, generations=6, **settings)
    assert _hof(resumed) == _hof(straight) and _log(resumed) == _log(straight)
    assert resumed.evaluations == straight.evaluations
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["config"] == gp.SearchConfig(generations=6, **settings).to_dict()
    if options.get("restart_after"):
        assert any(row["restart"] for row in straight.logbook[4:])  # a restart after the resumption
    if options.get("resample_windows"):
        assert [tuple(w) for w in saved["windows"]] == [resumed_search_draw(task, settings, g) for g in range(7)]


def resumed_search_draw(task, settings, gen):
    return gp.Search(cases_problem(task), gp.SearchConfig(**settings)).draw(gen)


# --- settings ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, words", [
    (dict(selection="roulette"), "selection must be one of"),
    (dict(parsimony=1.0), "parsimony is a size tournament's size in (1, 2]"),
    (dict(parsimony=1.4, selection="lexicase"), "does not apply to lexicase"),
    (dict(dedup=True, cache=False), "dedup counts a repeated output once through the cache"),
    (dict(dedup=True, mode="random"), "dedup apply to single-objective evolution"),
    (dict(restart_after=2, elitism=0), "restart_after keeps the elites"),
    (dict(resample_windows=2, stages=((1, 4),), offspring=12), "resample_windows does not apply to multi-step"),
    (dict(resample_windows=2, objectives=("fitness", "size")), "resample_windows applies to single-objective"),
])
def test_settings_that_would_be_ignored_are_refused(settings, words):
    with pytest.raises(gp.ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        gp.SearchConfig(**settings)


def test_a_gp_runs_settings_give_dsa_compares_random_search():
    """``dsa compare --searches gp,random`` runs random search with the GP run's settings, the options random
    search has no use for turned off (gp.config.EVOLUTION_ONLY)."""
    options = gp.SearchConfig(selection="lexicase", dedup=True, restart_after=2, resample_windows=2, tune_constants=3)
    random_search = dataclasses.replace(options, mode="random", **gp.config.EVOLUTION_ONLY)
    assert random_search.resample_windows == 2 and random_search.selection == "tournament"
    with pytest.raises(gp.ConfigError):
        dataclasses.replace(options, mode="random")


def test_cases_options_need_a_problem_with_cases(task):
    allocator, distance = task
    plain = allocation_problem(allocator, distance)
    with pytest.raises(gp.ConfigError, match="per-case losses"):
        gp.Search(plain, gp.SearchConfig(selection="lexicase")).run()
    with pytest.raises(gp.ConfigError, match="draws from the problem's 12 cases"):
        gp.Search(cases_problem(task), gp.SearchConfig(resample_windows=12)).run()


@pytest.mark.parametrize("argv, words", [
    (["search", "--task", "synthetic", "--selection", "lexicase"], "a single-task --task llm search has them"),
    (["search", "--resample-windows", "2", "--val-windows", "2"], "it must draw fewer"),
    (["search", "--selection", "lexicase", "--fitness", "kl"], "do not apply to --fitness kl"),
    (["search", "--mode", "random", "--restart-after", "3"], "restart_after apply to single-objective evolution"),
    (["search", "--space", "direct", "--dedup"], "--dedup does not apply to --space direct"),
    (["compare", "--out", "unused", "--resample-windows", "4", "--val-windows", "4"], "it must draw fewer"),
])
def test_cli_refuses_before_any_work(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


# --- the tiny model ------------------------------------------------------------------------------------------

def test_evaluator_scores_the_windows_a_resampling_search_asks_for(tiny_llama, tiny_val):
    """``windows`` as indices: those windows of the split, with their own marker tokens (ppl-known)."""
    from evaluators.fitness.evaluator import PruningEvaluator
    ignore = torch.zeros_like(tiny_val, dtype=torch.bool)
    ignore[2, 5:9] = True  # markers in window 2 only
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, fitness="ppl-known",
                          ignore={"search": ignore})
    sparsities = [0.5] * ev.n_blocks
    every = ev(sparsities, per_window=True)
    assert ev(sparsities, windows=(2, 0), per_window=True) == pytest.approx([every[2], every[0]], rel=1e-9)
    assert ev(sparsities, windows=[3], per_window=True) == pytest.approx([every[3]], rel=1e-9)
    with pytest.raises(UserError, match="not windows of the 'search' split"):
        ev(sparsities, windows=(0, 4), per_window=True)


def test_tiny_model_search_with_lexicase_on_resampled_windows(tiny_dir, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    argv = ["search", *map(str, data_args(tiny_dir)), "--population", "4", "--generations", "2", "--val-windows", "4",
            "--selection-windows", "0", "--max-scores-per-layer", "5000", "--selection", "lexicase",
            "--resample-windows", "2", "--run-dir", str(run_dir), "--no-progress"]
    assert main(argv) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["search"]["selection"] == "lexicase" and config["search"]["resample_windows"] == 2
    saved = json.loads((run_dir / "checkpoint.json").read_text())
    assert len(saved["reference"]) == 4 and len(saved["windows"]) == 3
    assert all(len(w) == 2 and set(w) <= set(range(4)) for w in saved["windows"])
    scored = [row for row in saved["population"] if row["fitness"] is not None and math.isfinite(row["fitness"][0])]
    assert scored and all(len(row["cases"]) == 2 for row in scored)
    for row in scored:  # the pool's perplexity estimated from the generation's two windows, paired with uniform's
        drawn, reference = saved["windows"][-1], saved["reference"]
        mean = sum(reference) / 4 + sum(x - reference[w] for x, w in zip(row["cases"], drawn)) / 2
        assert row["fitness"][0] == pytest.approx(math.exp(mean))


# --- the ablation runner -------------------------------------------------------------------------------------

def _nlls(shift: float, n: int = 8) -> list[float]:
    return [2.0 + 0.1 * (i % 3) + shift + 0.001 * i for i in range(n)]


def fabricated(folder, shifts: dict[int, float], verdicts: dict[int, str]):
    """A comparison folder: uniform, one baseline, and one GP row per seed (its run's config.json holding its
    choice), with per-window test and C4 NLLs whose differences are ``shifts`` (per seed) from the baseline's."""
    rows = [{"name": "uniform", "kind": "baseline", "val ppl": 30.0, "test nlls": _nlls(0.2), "c4 nlls": _nlls(0.2)},
            {"name": "atp-tuned", "kind": "baseline", "val ppl": 20.0, "test nlls": _nlls(0.0), "c4 nlls": _nlls(0.0)}]
    for seed, shift in shifts.items():
        run = folder / "runs" / f"gp-seed{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"selection": {
            "verdict": verdicts[seed], "delta": [-0.05 if verdicts[seed] == "beats" else 0.01, -0.08, 0.02],
            "shipped": "found" if verdicts[seed] == "beats" else "atp:beta=0.01"}}))
        rows.append({"name": f"GP search (seed {seed})", "kind": "gp", "seed": seed, "run": f"runs/gp-seed{seed}",
                     "val ppl": 19.0, "evaluations": 40 + seed, "test nlls": _nlls(shift), "c4 nlls": _nlls(0.0)})
    for row in rows:
        row["test ppl"] = math.exp(sum(row["test nlls"]) / len(row["test nlls"]))
    (folder / "compare.json").write_text(json.dumps({"version": 1, "rows": rows}))


def test_ablation_table_from_compare_folders(tmp_path):
    fabricated(tmp_path / "baseline", {0: -0.1, 1: 0.1, 2: 0.0}, {0: "beats", 1: "tie", 2: "loses"})
    fabricated(tmp_path / "lexicase", {0: -0.1, 1: -0.1}, {0: "beats", 1: "beats"})
    text = ablation.table([(ablation.BY_NAME["baseline"], tmp_path / "baseline"),
                           (ablation.BY_NAME["lexicase"], tmp_path / "lexicase"),
                           (ablation.BY_NAME["dedup"], tmp_path / "dedup")])  # not run yet: no row
    lines = text.splitlines()
    assert lines[0] == "| " + " | ".join(ablation.COLUMNS) + " |" and len(lines) == 4
    base, lex = (dict(zip(ablation.COLUMNS, (c.strip() for c in line.strip("|").split(" | ")))) for line in lines[2:])
    assert base["strongest"] == "atp-tuned" and base["seeds"] == "3" and base["ships found"] == "1/3"
    assert base["selection split (per seed)"] == "s0 beats -0.050; s1 tie +0.010; s2 loses +0.010"
    assert base["test vs strongest"] == "1 beats / 1 tie / 1 loses"
    assert base["test Δ (per seed)"] == "s0 beats -0.100; s1 loses +0.100; s2 tie +0.000"
    assert base["held-out C4 vs strongest"] == "3 tie" and base["evaluations mean"] == "41"
    assert lex["options"] == "--selection lexicase" and lex["test vs strongest"] == "2 beats"


def test_ablation_runs_each_variant_through_dsa_compare(tiny_dir, tmp_path):  # noqa: F811
    argv = ["--model", str(tiny_dir / "model"), "--name", "tiny", "--seeds", "0", "--variants", "baseline,resample",
            *map(str, data_args(tiny_dir)[2:]), "--population", "4", "--generations", "1", "--test-windows", "3",
            "--baselines", "uniform,owl", "--selection-windows", "0", "--c4-windows", "0",
            "--max-scores-per-layer", "5000", "--no-progress"]
    assert ablation.main(argv, root=tmp_path) == 0
    report = (tmp_path / "tiny.md").read_text()
    assert "| baseline |" in report and "| resample |" in report and str(tmp_path) not in report
    resample = json.loads((tmp_path / "tiny" / "resample" / "compare.json").read_text())
    assert resample["settings"]["gp"]["resample_windows"] == 2 and resample["settings"]["evaluator"]["val_windows"] == 8
    baseline = json.loads((tmp_path / "tiny" / "baseline" / "compare.json").read_text())
    assert baseline["settings"]["gp"] == gp.SearchConfig(population=4, generations=1, elitism=2).to_dict()
    # the resampling search's row dropped: --resume resumes its finished run (checkpoint, draws, reference)
    # and measures the same choice again; every other row is kept as it was
    gp_row = resample["rows"].pop()
    assert gp_row["kind"] == "gp"
    (tmp_path / "tiny" / "resample" / "compare.json").write_text(json.dumps(resample))
    assert ablation.main([*argv, "--resume"], root=tmp_path) == 0
    assert json.loads((tmp_path / "tiny" / "baseline" / "compare.json").read_text())["rows"] == baseline["rows"]
    again = json.loads((tmp_path / "tiny" / "resample" / "compare.json").read_text())["rows"][-1]
    assert (again["formula"], again["val ppl"], again["evaluations"]) == \
        (gp_row["formula"], gp_row["val ppl"], gp_row["evaluations"])
