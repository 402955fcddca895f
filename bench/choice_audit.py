"""The choice rule against test, on every committed comparison: what would each search (or found function) ship,
and does the shipped allocation lose to the strongest baseline on test?

Per comparison folder (``compare.json``: its settings and every row's per-window test NLLs), the search's
evaluator is rebuilt with its settings and ``--windows`` held-out validation windows (after the search's own):
exactly what :func:`dsa.run.choice.decide` reads. Per search row, the candidate is its run's hall-of-fame best (rank 1
by the search's own fitness) and the strongest baseline is the run's (lowest fitness among the baselines the
search scored); per ``found:`` row (a function applied without a new search) the strongest baseline is the
comparison's on validation. The rule ships the candidate only where the paired 95 % interval on the held-out
windows lies below 0, else the baseline; the test verdict compares the shipped allocation with the strongest
baseline on the comparison's test windows (an allocation without test NLLs in the folder is measured here,
exact sequential pruning as ``dsa compare``, and so is its baseline: a pair's numbers come from one source). Rows are appended to ``bench/results/NAME.jsonl`` as they finish
(``--resume`` skips them); the table is rewritten after each.

    python -m bench.choice_audit --name choice_audit_cpu --folders compare_cpu_smollm2_wanda70_v2,... --resume
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from bench.common import RESULTS, machine, markdown_table

from evaluators.data.text import load_split, token_windows
from evaluators.fitness.intervals import paired_interval, verdict
from evaluators.models.loading import same_model, weight_snapshot

from dsa.experiment.compare import pruned_nlls
from dsa.run.allocations import baseline_spec
from dsa.run.choice import choice
from dsa.run.folder import Run
from dsa.run.llm import build_evaluator, load_inputs
from dsa.run.settings import FITNESSES, SELECTION_WINDOWS, EvaluatorSpec

SEARCH_KINDS = ("gp", "random", "warm", "direct")


def same(a, b, tol: float = 1e-9) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def cases(folder: Path, rows: list[dict]) -> list[dict]:
    """(row, candidate allocation, strongest baseline's name and allocation) per search or found row."""
    base = [r for r in rows if r["kind"] == "baseline"]
    compare_strongest = min(base, key=lambda r: r["val ppl"]) if base else None
    out = []
    for r in rows:
        if r["kind"] in SEARCH_KINDS and r.get("run"):
            run = Run.read(folder / r["run"])
            valid = [h for h in run.hall_of_fame if h["fitness"] != math.inf and h["output"] is not None]
            config = run.config
            scored = {n: s["allocation"] for n, s in config["baseline_settings"].items() if s.get("allocation")}
            name = min(scored, key=lambda n: config["baselines"][n])
            out.append({"row": r["name"], "candidate": valid[0]["output"], "rank": valid[0]["rank"],
                        "strongest": name, "params": config["baseline_settings"][name].get("params") or {},
                        "baseline": scored[name]})
        elif r["kind"] == "found" and compare_strongest is not None:
            out.append({"row": r["name"], "candidate": r["sparsities"], "rank": None,
                        "strongest": compare_strongest["name"], "params": compare_strongest.get("params") or {},
                        "baseline": compare_strongest["sparsities"]})
    return out


class Folder:
    """One comparison folder's model, evaluator (with held-out decision windows) and test windows."""

    def __init__(self, folder: Path, windows: int, fitness: str, models: tuple[str, ...] = ()):
        saved = json.loads((folder / "compare.json").read_text())
        self.rows = saved["rows"]
        spec = EvaluatorSpec.from_dict(saved["settings"]["evaluator"])
        # compare.json names a local model by its label: the one of --model that it names
        model = spec.model.located(tuple(m for m in models if same_model(spec.model.label(), m)), str(folder))
        self.spec = replace(spec, model=model, selection_windows=windows, fitness=fitness)
        inputs = load_inputs(self.spec)
        self.model, self.calib = inputs.model, inputs.calib
        self.test = token_windows(inputs.tokenizer, load_split(self.spec.data.data, "test", self.spec.data.data_dir),
                                  self.spec.data.seqlen, len(self.rows[0]["test nlls"]))
        self.restore = weight_snapshot(self.model)
        self.ev, _ = build_evaluator(self.spec, inputs=inputs)
        self.cache: dict[tuple, list[float]] = {}  # held-out and test NLLs, per allocation

    def held_out(self, alloc) -> list[float]:
        key = tuple(round(float(x), 12) for x in alloc)
        if key not in self.cache:  # a baseline is the strongest of several rows: scored once
            self.cache[key] = self.ev(alloc, split="selection", per_window=True)
        return self.cache[key]

    def row(self, alloc) -> dict | None:
        """The folder's row of ``alloc`` (on the evaluator's N:M pattern), if it has one."""
        alloc = self.ev.on_pattern([float(x) for x in alloc])
        return next((r for r in self.rows if same(r.get("sparsities"), alloc)), None)

    def pair(self, a, b) -> tuple[list[float], list[float], str]:
        """The test NLLs of two allocations from one source: the folder's rows when it has both, else both
        measured here (numbers from another version of the libraries are never paired with today's)."""
        ra, rb = self.row(a), self.row(b)
        if ra is not None and rb is not None:
            return ra["test nlls"], rb["test nlls"], "the comparison's rows"
        return self.measure(a), self.measure(b), "measured here"

    def measure(self, alloc) -> list[float]:
        key = ("test",) + tuple(round(float(x), 12) for x in alloc)
        if key in self.cache:
            return self.cache[key]
        alloc = self.ev.on_pattern([float(x) for x in alloc])
        self.cache[key] = pruned_nlls(self.model, self.spec.prune.method, alloc, self.calib, [self.test],
                                      self.restore, self.spec.prune.nm, self.spec.data.batch_size)[0]
        return self.cache[key]

    def close(self) -> None:
        self.ev.close()


def audit(folder: Path, f: Folder, case: dict, measure_all: bool = False) -> dict:
    t0 = time.perf_counter()
    cand, base = f.held_out(case["candidate"]), f.held_out(case["baseline"])
    made = choice(cand, base)
    ships_found = made["verdict"] == "beats"
    head = {"folder": folder.name, "row": case["row"], "candidate rank": case["rank"], "strongest": case["strongest"],
            "decision Δ": made["delta"], "decision": made["verdict"], "windows": made["windows"],
            "ships": "found" if ships_found else baseline_spec(case["strongest"], case["params"])}
    if not ships_found and not measure_all and (f.row(case["candidate"]) is None or f.row(case["baseline"]) is None):
        nan = [math.nan] * 3  # the baseline ships: it ties itself; the unshipped function's test is not needed
        return {**head, "found on test": nan, "found verdict": "not measured", "shipped on test": [0.0, 0.0, 0.0],
                "shipped verdict": "tie", "test source": "", "seconds": round(time.perf_counter() - t0, 1)}
    cand_test, base_test, source = f.pair(case["candidate"], case["baseline"])
    found_test = paired_interval(cand_test, base_test)
    on_test = found_test if ships_found else paired_interval(base_test, base_test)
    return {**head, "found on test": [found_test.value, found_test.lo, found_test.hi], "found verdict": verdict(found_test),
            "shipped on test": [on_test.value, on_test.lo, on_test.hi], "shipped verdict": verdict(on_test),
            "test source": source, "seconds": round(time.perf_counter() - t0, 1)}


def interval(v) -> str:
    return "—" if math.isnan(v[0]) else f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"


def report(name: str, rows: list[dict], windows: int, fitness: str) -> None:
    table = [{"comparison": r["folder"].removeprefix("compare_cpu_"), "row": r["row"], "strongest": r["strongest"],
              "held-out Δ (decision)": interval(r["decision Δ"]), "rule": r["decision"], "ships": r["ships"],
              "found fn on test": f"{interval(r['found on test'])} {r['found verdict']}",
              "shipped on test": f"{interval(r['shipped on test'])} {r['shipped verdict']}"} for r in rows]
    losses = sum(r["shipped verdict"] == "loses" for r in rows)
    found_losses = sum(r["found verdict"] == "loses" for r in rows)
    wins_kept = sum(r["ships"] == "found" and r["found verdict"] == "beats" for r in rows)
    wins = sum(r["found verdict"] == "beats" for r in rows)
    m = machine()
    text = (f"# The choice rule against test\n\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CUDA: "
            f"{m['cuda']}; {m['date']}\n\nRule: the search's best ships only where the paired 95 % interval of its "
            f"per-window log-perplexity difference ({fitness} fitness's) from the strongest baseline on {windows} "
            f"held-out validation windows lies below 0; else the strongest baseline ships. Test: the comparison's own test windows "
            f"(Δ = log(test ppl / strongest's), paired 95 % interval).\n\n"
            f"**{len(rows)} decisions: {losses} shipped allocations lose to the strongest baseline on test** (without "
            f"the rule, shipping every found function: {found_losses}); of the {wins} found functions that beat it "
            f"on test, {wins_kept} are shipped.\n\n"
            + markdown_table(table, list(table[0]) if table else []) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="choice_audit_cpu")
    ap.add_argument("--folders", required=True, help="comparison folders under bench/results, comma-separated")
    ap.add_argument("--windows", type=int, default=SELECTION_WINDOWS, help="held-out validation windows")
    ap.add_argument("--fitness", default=EvaluatorSpec().fitness, choices=FITNESSES,
                    help="whose per-window log-perplexity the rule pairs (default: the tool's default fitness)")
    ap.add_argument("--measure-all", action="store_true",
                    help="also measure on test a function the rule does not ship when the folder lacks its numbers")
    ap.add_argument("--model", default="", help="the folders' local models (paths, comma-separated): a folder "
                                                "takes the one its compare.json names (by label)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    out = RESULTS / f"{args.name}.jsonl"
    if out.exists() and not args.resume:
        raise SystemExit(f"{out} exists; continue with --resume")
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    seen = {(r["folder"], r["row"]) for r in done}
    for name in args.folders.split(","):
        folder = RESULTS / name
        todo = [c for c in cases(folder, json.loads((folder / "compare.json").read_text())["rows"])
                if (name, c["row"]) not in seen]
        if not todo:
            continue
        f = Folder(folder, args.windows, args.fitness, tuple(filter(None, args.model.split(","))))
        try:
            for case in todo:
                row = audit(folder, f, case, args.measure_all)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                done.append(row)
                print(row, flush=True)
                report(args.name, done, args.windows, args.fitness)
        finally:
            f.close()
    report(args.name, done, args.windows, args.fitness)


if __name__ == "__main__":
    main()
