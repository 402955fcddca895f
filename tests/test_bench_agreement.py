"""The agreement benchmarks' arithmetic: bench/fitness_agreement.py's perturbations keep an allocation's weighted
mean and bounds, and each variant reads the windows it names; bench/level_agreement.py's --exact-from."""
import math
import random

import pytest

from bench.fitness_agreement import VARIANTS, perturb, summary


def test_perturbations_keep_the_target_and_the_bounds():
    rng = random.Random(0)
    weights = [1.0, 2.0, 1.0, 3.0, 1.0]
    base = [0.6, 0.72, 0.8, 0.68, 0.7]
    target = sum(w * a for w, a in zip(weights, base)) / sum(weights)
    for sigma in (0.01, 0.04, 0.3):
        x = perturb(base, weights, target, sigma, rng)
        assert sum(w * v for w, v in zip(weights, x)) / sum(weights) == pytest.approx(target, abs=1e-9)
        assert all(0.0 <= v <= 0.95 for v in x) and x != base


def row(nll: float) -> dict:
    """A row whose window i has NLL nll + i/100 (so a variant's windows show in its value)."""
    nlls = [nll + i / 100 for i in range(16)]
    return {"val nlls": nlls, "val known sum": [10 * v for v in nlls], "val known count": [10.0] * 16,
            "val kls": nlls, "c4 nlls": nlls[:8], "c4 kls": nlls[:8], "test ppl": math.exp(nll)}


def test_variants_read_the_windows_they_name_and_rank_like_test():
    r = row(3.0)
    values = {v.name: v.value(r, 0) for v in VARIANTS}
    assert values["ppl@2"] == pytest.approx(math.exp(3.005))
    assert values["sel ppl@4"] == pytest.approx(math.exp(3.055))  # windows 5-8
    assert values["known@16"] == pytest.approx(math.exp(3.075))
    assert values["c4 kl@8"] == pytest.approx(3.035)
    table, counts = summary([row(n) for n in (3.0, 2.0, 5.0, 4.0, 1.0, 6.0)])
    assert counts == {"allocations": 6, "better half": 3}
    assert all(t["ρ all"] == pytest.approx(1.0) for t in table if not t["fitness"].startswith("resampled"))


def test_level_agreement_takes_exact_numbers_only_from_a_run_of_the_same_settings(tmp_path, monkeypatch):
    """--exact-from reads each allocation's exact test perplexity from a committed run whose settings match
    but for the grid; another setting (here the calibration size) is refused in one line."""
    import argparse
    import json

    from bench import level_agreement
    monkeypatch.setattr(level_agreement, "RESULTS", tmp_path)
    settings = {k: None for k in level_agreement.SAME_FOR_RESUME} | {"nsamples": 16, "grid_step": 0.05}
    rows = [{"allocation": "uniform", "exact test ppl": 586.3}, {"allocation": "owl", "exact test ppl": 590.8}]
    (tmp_path / "old.json").write_text(json.dumps({"args": settings, "rows": rows}))
    args = argparse.Namespace(**{**settings, "grid_step": 0.1, "exact_from": "old"})
    assert level_agreement.exact_numbers(args) == {"uniform": 586.3, "owl": 590.8}
    with pytest.raises(SystemExit, match="other settings \\(nsamples\\)"):
        level_agreement.exact_numbers(argparse.Namespace(**{**vars(args), "nsamples": 64}))
    assert level_agreement.exact_numbers(argparse.Namespace(**{**vars(args), "exact_from": None})) == {}
