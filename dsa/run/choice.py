"""What a search ships, decided on data the search never optimised: the baselines scored as their authors
tuned them (:func:`score_baselines`), and the choice rule (:func:`decide`, named :data:`RULE` in
``config.json``): the best found function against the strongest baseline on the selection split, shipped
only where the paired 95 % interval of their log-perplexity difference says it wins; otherwise the run
ships the baseline."""
from __future__ import annotations

import functools
import math

import torch

import gp
from evaluators.fitness.intervals import paired_interval, verdict

from dsa.run.allocations import baseline_spec
from dsa.run.multitask import MultiTaskFitness
from dsa.run.settings import MIN_DECISION_WINDOWS

RULE = "paired-95"  # the choice rule's name in config.json


def decide(rows: list[dict], baselines: dict, fitness, map_fn=map) -> dict:
    """The run's choice, a statistical decision on the selection split (validation windows the search
    never read): the hall of fame's best (by the search's own fitness) ships only where the paired 95 %
    interval of its log-perplexity difference from the strongest baseline (the lowest fitness among the
    baselines scored at the start, uniform included) lies below 0 (:func:`choice`); otherwise the run
    ships that baseline. The candidate's row gets its selection perplexity and, where it does not ship,
    a ``flag`` (the run folder's writer, :func:`dsa.run.folder.write_choice`, writes them); returns what
    config.json records."""
    scored = [r for r in rows if r["output"] is not None and r["fitness"] != gp.WORST]
    named = {n: b for n, b in baselines.items() if b.get("allocation") is not None}
    if not scored or not named:
        return {"rule": RULE, "best_rank": scored[0]["rank"] if scored else None, "shipped": "found"}
    strongest = min(named, key=lambda n: named[n]["fitness"])
    candidate = scored[0]
    per_window = functools.partial(fitness, split="selection", per_window=True)
    cand, base = map_fn(per_window, [torch.as_tensor(a, dtype=torch.float64)
                                     for a in (candidate["output"], named[strongest]["allocation"])])
    made = choice(cand, base)
    candidate["selection"] = math.exp(sum(cand) / len(cand))
    shipped = "found" if made["verdict"] == "beats" else baseline_spec(strongest, named[strongest].get("params") or {})
    if shipped != "found":
        candidate["flag"] = (f"does not beat {strongest} on {len(cand)} held-out windows "
                             f"(Δ {made['delta'][0]:+.3f} [{made['delta'][1]:+.3f}, {made['delta'][2]:+.3f}]): "
                             f"the run ships {shipped}")
    return {"rule": RULE, **made, "candidate_rank": candidate["rank"], "strongest": strongest, "shipped": shipped,
            "best_rank": candidate["rank"] if shipped == "found" else None,
            "baselines": {strongest: math.exp(sum(base) / len(base))}}


def choice(candidate: list[float], baseline: list[float], min_windows: int = MIN_DECISION_WINDOWS) -> dict:
    """The choice rule on per-window log-perplexities of the same windows: the candidate *beats* the
    baseline only where the paired 95 % bootstrap interval of their mean difference lies below 0
    (:func:`evaluators.fitness.intervals.paired_interval`); with fewer than ``min_windows`` windows it
    never does (too few to resolve a difference). Returns the verdict, the interval and the windows."""
    interval = paired_interval(candidate, baseline)
    verdict_ = verdict(interval) if len(candidate) >= min_windows else "too few windows"
    return {"verdict": verdict_, "delta": [interval.value, interval.lo, interval.hi], "windows": len(candidate)}


def rescore_on_selection(rows: list[dict], baselines: dict, fitness, map_fn) -> dict:
    """:func:`choose_on_selection` (the rows annotated in place); returns what config.json records: the
    baselines' selection values and the rank of the row chosen as best (and its flag)."""
    best, base = choose_on_selection(rows, baselines, fitness, map_fn)
    return {"baselines": base, "best_rank": best["rank"] if best else None,
            "best_flag": best.get("flag") if best else None}


def choose_on_selection(rows: list[dict], baselines: dict, fitness, map_fn=map) -> tuple[dict | None, dict]:
    """Score the hall of fame and the baselines on the selection split (validation windows the search
    never read), write each row's ``selection`` value and, where it loses there, a ``flag``; returns the
    row chosen as best (lowest selection value among the rows that beat every baseline there, else the
    lowest overall, flagged; None without a valid row) and the baselines' selection values."""
    scored = [r for r in rows if r["output"] is not None and r["fitness"] != gp.WORST]
    names = [n for n in baselines if baselines[n].get("allocation") is not None]
    multi = isinstance(fitness, MultiTaskFitness)  # its outputs: one allocation per task; uniform scores 0
    allocations = [list(r["output"].values()) if multi else r["output"] for r in scored] + \
        [baselines[n]["allocation"] for n in names]
    tensors = [[torch.as_tensor(x, dtype=torch.float64) for x in a] if multi else torch.as_tensor(a, dtype=torch.float64)
               for a in allocations]
    values = [float(v) for v in map_fn(functools.partial(fitness, split="selection"), tensors)]
    base = {"uniform": 0.0} if multi else dict(zip(names, values[len(scored):]))
    others = {n: v for n, v in base.items() if n != "uniform"}
    strongest = min(others, key=others.get) if others else None
    for row, value in zip(scored, values):
        row["selection"] = value
        if "uniform" in base and value >= base["uniform"]:
            row["flag"] = "loses to uniform on the selection split"
        elif strongest is not None and value >= others[strongest]:
            row["flag"] = f"loses to {strongest} on the selection split"
    clean = [r for r in scored if "flag" not in r]
    return (min(clean or scored, key=lambda r: r["selection"]) if scored else None), base


def score_baselines(candidates: dict[str, list[tuple[dict, list[float]]]], fitness, map_fn=map) -> dict[str, dict]:
    """Each baseline's fitness; a tuned baseline's candidates (its grid) are all scored and the best is kept,
    as its authors tuned it, here on the validation windows."""
    flat = [(name, params, alloc) for name, cands in candidates.items() for params, alloc in cands]
    values = [float(v) for v in map_fn(fitness, [torch.as_tensor(a, dtype=torch.float64) for _, _, a in flat])]
    out: dict[str, dict] = {}
    for (name, params, alloc), value in zip(flat, values):
        if name not in out or value < out[name]["fitness"]:
            out[name] = {"fitness": value, "params": params, "allocation": list(alloc)}
    return out
