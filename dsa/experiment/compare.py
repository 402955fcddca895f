"""``dsa compare``: the fair comparison at one (model, pruner, sparsity), on the code paths the tool
itself runs, and test numbers with 95 % intervals.

One model load, one evaluator (:func:`dsa.run.llm.build_evaluator`, the search's), then rows:

- ``dense``, and every baseline as its authors run it, a tuned one tuned on the search's validation
  windows (:func:`dsa.run.choice.score_baselines`, what ``dsa search`` scores at its start);
- found functions (run folders or formulas, :func:`dsa.run.allocations.allocate`);
- per search seed: ``dsa search`` itself (:func:`dsa.run.search.run_search` on the loaded evaluator, its
  own run folder under ``OUT/runs``; its row is what the run ships by its choice rule), random search
  (the same seed formulas, then fresh random trees) and the direct search with the same number of
  evaluations, and the direct search started from the GP's choice (``--init``: the hybrid).

Every allocation is pruned exactly (block by block, :func:`evaluators.pruning.pruners.prune`, the calibration
batch of the search) and its per-window test NLLs are kept in ``compare.json``; the table reports each
test perplexity with its bootstrap interval and, paired on the same windows, its log-perplexity
difference from uniform and from the strongest baseline *on validation* (chosen without the test
split), with the verdict (:mod:`evaluators.fitness.intervals`). The table and JSON are rewritten after every
row; ``--resume`` keeps finished rows and resumes a killed search from its checkpoint.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from evaluators.data.text import heldout_docs, load_split, token_windows
from evaluators.fitness.perplexity import perplexity_from_nlls, window_nlls
from evaluators.models.loading import weight_snapshot
from evaluators.pruning.nm import Pattern, parse_nm
from evaluators.pruning.pruners import prune
from gp import SearchConfig, checkpoint as checkpoints
from gp.config import EVOLUTION_ONLY
from gp.direct import DirectConfig

from dsa.errors import UserError
from dsa.experiment.folder import FILE, identity, read_saved, rows_problem, same, write_comparison
from dsa.experiment.report import comparisons, report
from dsa.outputs.plots import plot_allocations, plot_differences
from dsa.run.allocations import (SEARCH_BASELINES, allocate, baseline_candidates, best_row, check_allocation,
                                 check_fits, run_folder)
from dsa.run.choice import score_baselines
from dsa.run.distributed import LocalEvaluation
from dsa.run.folder import machine
from dsa.run.llm import allocator_for, build_evaluator, load_inputs
from dsa.run.search import Runtime, SearchRun, run_search
from dsa.run.settings import TEST_WINDOWS, DataSpec, EvaluatorSpec



@dataclass(frozen=True)
class Comparison:
    """Everything a comparison runs, declared once (the CLI builds it from its flags)."""

    spec: EvaluatorSpec                  # model, data (incl. the data seed), pruner, target, fitness windows
    out: Path
    gp: SearchConfig = field(default_factory=SearchConfig)      # its seed is replaced by each of ``seeds``
    direct: DirectConfig = field(default_factory=DirectConfig)
    level_step: float | None = None
    baselines: tuple[str, ...] = ("uniform",)
    formulas: tuple[str, ...] = ()
    searches: tuple[str, ...] = ("gp",)
    seeds: tuple[int, ...] = (0,)
    budget: int = 40                     # direct search evaluations when no GP search runs
    test_windows: int | None = None      # None: the protocol's (128 on CPU, all on CUDA); 0: all
    progress: bool = True
    c4_windows: int = 32                 # a second test text: held-out calibration-domain documents; 0: off

    def settings(self) -> dict:
        """What compare.json records: the settings every row's numbers depend on, and which rows were asked
        for (those may grow or shrink on ``--resume``: finished rows are kept, new ones added)."""
        return {"evaluator": self.spec.to_dict(), "gp": self.gp.to_dict(), "direct": self.direct.to_dict(),
                "level_step": self.level_step, "budget": self.budget, "test_windows": self.test_windows,
                "baselines": list(self.baselines), "formulas": list(self.formulas),
                "searches": list(self.searches), "seeds": list(self.seeds), "c4_windows": self.c4_windows}


def run_comparison(c: Comparison, resume: bool = False) -> Path:
    """Run (or, with ``resume``, continue) the comparison; returns its folder. Resuming a folder with no
    comparison yet starts one (so a script can always pass ``--resume``)."""
    path = c.out / FILE
    rows: list[dict] = []
    if path.exists():
        if not resume:
            raise UserError(f"{c.out} already holds a comparison; continue it with --resume")
        saved, spec = read_saved(c.out, "resume")
        rows, old, recorded = list(saved["rows"]), identity(saved["settings"]), spec.model
        problem = (rows_problem(saved, c.spec.model.is_cuda(), c.test_windows)
                   or next(iter(recorded.type_problems()), None))
        if problem:
            raise UserError(f"cannot resume {c.out}: {FILE} is damaged ({problem})")
        # the recorded model (a label, never a path) found as --model, its recorded name kept
        model = recorded.located((c.spec.model.model,) if c.spec.model.model else (), str(c.out))
        c = replace(c, spec=replace(c.spec, model=replace(c.spec.model, model=model.model, name=model.name)))
        mine = identity(c.settings())
        changed = sorted(k for k in mine if not same({k: old.get(k)}, {k: mine[k]}))
        if changed:
            raise UserError(f"cannot resume {c.out}: its settings differ ({', '.join(changed)})")
    if "warm" in c.searches and "gp" not in c.searches:  # warm from GP runs the folder already holds
        for seed in c.seeds:
            gp_dir = c.out / "runs" / f"gp-seed{seed}"
            if not gp_dir.is_dir():
                raise UserError(f"--searches warm starts from the GP run {gp_dir}, which is not there: add gp")
            check_allocation(str(gp_dir))
    return Runner(c, rows).run()  # the folder is created with the first row


def comparison_texts(data: DataSpec, tokenizer, n_test: int | None,
                     n_second: int) -> tuple[torch.Tensor, torch.Tensor | None, str | None]:
    """(test windows, second test text's windows, the test text's source) of a comparison: the first ``n_test``
    windows of the test split (None: all), and the first ``n_second`` of the calibration text's documents that
    calibration never read (held-out C4; None when 0 or when none is held out)."""
    texts = load_split(data.data, "test", data.data_dir)
    test, second = token_windows(tokenizer, texts, data.seqlen, n_test), None
    if n_second:
        try:
            held = heldout_docs(tokenizer, load_split(data.calib, "train", data.data_dir), data.nsamples,
                                data.calib_seqlen, data.seed)
            second = token_windows(tokenizer, held, data.seqlen, n_second)
        except UserError as exc:  # a calibration text that calibration reads whole has none held out
            print(f"no second test text: {exc}", flush=True)
    return test, second, getattr(texts, "source", None)


def pruned_nlls(model, method: str, alloc: list[float], calib, texts: list[torch.Tensor], restore,
                nm: str | Pattern | None = None, batch_size: int = 1, progress: bool = False) -> list[list[float]]:
    """Per-window NLLs on each of ``texts`` of ``model`` pruned exactly (block by block,
    :func:`evaluators.pruning.pruners.prune`) at ``alloc`` (already on the N:M pattern ``nm``, if any), from its
    dense weights and back to them (``restore``): how every reported number is measured (``dsa compare`` and
    the benchmarks)."""
    restore()
    try:
        prune(model, method, alloc, calib, progress=progress, batch_size=batch_size, m=parse_nm(nm).m if nm else None)
        return [window_nlls(model, windows, batch_size, progress).tolist() for windows in texts]
    finally:
        restore()


class Runner:
    def __init__(self, c: Comparison, rows: list[dict]):
        self.c, self.rows = c, rows
        self.done = {r["name"] for r in rows}

    def run(self) -> Path:
        c = self.c
        inputs = load_inputs(c.spec)
        self.model, self.calib = inputs.model, inputs.calib
        cuda = c.spec.model.is_cuda()
        n_test = TEST_WINDOWS["cuda" if cuda else "cpu"] if c.test_windows is None else (c.test_windows or None)
        self.test, self.second, source = comparison_texts(c.spec.data, inputs.tokenizer, n_test, c.c4_windows)
        self.restore = weight_snapshot(self.model)
        self.evaluator, info = build_evaluator(c.spec, inputs=inputs)
        self.info = {**info, "test_windows": int(self.test.shape[0]), "test_source": source,
                     "c4_windows": int(self.second.shape[0]) if self.second is not None else 0, "machine": machine()}
        self.ev = LocalEvaluation(built=(self.evaluator, info))
        blocks, target = self.evaluator.blocks, c.spec.prune.sparsity
        try:
            allocator = allocator_for(blocks, target)
            for spec in c.formulas:  # what needs only the model's shape, before any row is measured
                check_fits(spec, allocator)
            if "dense" not in self.done:
                t0 = time.perf_counter()
                self.add({"name": "dense", "kind": "dense", "val ppl": self.evaluator.dense_perplexity(),
                          "test nlls": self.nlls(), **self.second_nlls(), "seconds": round(time.perf_counter() - t0, 1)})
            todo = [n for n in c.baselines if n not in self.done]
            if todo:
                tuned = score_baselines(baseline_candidates(tuple(todo), blocks, target), self.evaluator)
                for name in todo:
                    b = tuned[name]
                    self.measure(name, "baseline", b["allocation"], params=b["params"], **{"val ppl": b["fitness"]})
            for spec in c.formulas:
                folder = run_folder(spec)
                name = f"found: {folder.name if folder is not None else spec}"
                if name not in self.done:
                    alloc, formula = allocate(spec, allocator, blocks, self.evaluator)
                    self.measure(name, "found", alloc, formula=formula)
            for seed in c.seeds:
                self.searches(seed)
        finally:
            self.evaluator.close()
        return c.out

    # --- rows -------------------------------------------------------------------------------------

    def nlls(self) -> list[float]:
        return window_nlls(self.model, self.test, self.c.spec.data.batch_size, self.c.progress).tolist()

    def second_nlls(self) -> dict:
        """The model's per-window NLLs on the second test text, as a row holds them ({} when off)."""
        if self.second is None:
            return {}
        return {"c4 nlls": window_nlls(self.model, self.second, self.c.spec.data.batch_size).tolist()}

    def measure(self, name: str, kind: str, alloc, **extra) -> None:
        """Validation (and selection) fitness by the search's evaluator, then exact pruning and the test
        split's per-window NLLs; the dense weights are back afterwards. An allocation some row already pruned
        (a search that ships the strongest baseline) is not pruned again: exact pruning is deterministic, so
        its NLLs are that row's, and the row says whose (``nlls of``; ``--verify`` re-measures it)."""
        t0 = time.perf_counter()
        alloc = [float(s) for s in alloc]
        row = {"name": name, "kind": kind, "val ppl": extra.pop("val ppl", None) or self.evaluator(alloc)}
        if "selection" in self.evaluator.splits:
            row["selection ppl"] = self.evaluator(alloc, split="selection")
        alloc = self.evaluator.on_pattern(alloc)  # what the evaluator scored: on the N:M pattern, if any
        texts = {"test nlls": self.test, **({"c4 nlls": self.second} if self.second is not None else {})}
        spec = self.c.spec
        same = next((r for r in self.rows if r.get("sparsities") == alloc and all(k in r for k in texts)), None)
        if same is not None:
            row.update({k: same[k] for k in texts}, **{"nlls of": same["name"]})
        else:
            row.update(zip(texts, pruned_nlls(self.model, spec.prune.method, alloc, self.calib, list(texts.values()),
                                              self.restore, spec.prune.pattern, spec.data.batch_size,
                                              self.c.progress)))
        self.add({**row, **extra, "sparsities": alloc, "seconds": round(time.perf_counter() - t0, 1)})

    def add(self, row: dict) -> None:
        row["test ppl"] = perplexity_from_nlls(torch.tensor(row["test nlls"], dtype=torch.float64))
        if "c4 nlls" in row:
            row["c4 ppl"] = perplexity_from_nlls(torch.tensor(row["c4 nlls"], dtype=torch.float64))
        self.rows.append(row)
        self.done.add(row["name"])
        print({k: v for k, v in row.items() if k not in ("test nlls", "c4 nlls", "sparsities")}, flush=True)
        self.c.out.mkdir(parents=True, exist_ok=True)  # on the first result: a failed start leaves no folder
        write_comparison(self.c.out, self.c.settings(), self.info, self.rows, report(self.c, self.info, self.rows))
        drawn = {r["name"]: r["sparsities"] for r in self.rows if "sparsities" in r
                 and (r["kind"] != "baseline" or r["name"] in ("uniform", "owl-tuned", "atp-tuned", "alphapruning"))}
        if drawn:
            plot_allocations(drawn, self.c.out / "allocations.png", self.c.spec.prune.sparsity, "allocations compared")
        diffs = [(name, iv.value, iv.lo, iv.hi) for name, item in comparisons(self.rows).items()
                 if "uniform" in item for iv in [item["uniform"][0]] if math.isfinite(iv.value)]
        if diffs:
            plot_differences(diffs, self.c.out / "intervals.png", "uniform")

    # --- searches ---------------------------------------------------------------------------------

    def searches(self, seed: int) -> None:
        c = self.c
        budget, gp_dir = c.budget, c.out / "runs" / f"gp-seed{seed}"
        if "gp" in c.searches:
            run = SearchRun("llm", c.spec, replace(c.gp, seed=seed), gp_dir, Runtime(progress=c.progress),
                            baselines=SEARCH_BASELINES)
            evaluations = self.search(f"GP search (seed {seed})", "gp", seed, run)
            budget = evaluations or budget
        if "random" in c.searches:  # dsa search's random mode at the GP run's evaluations (seeded alike)
            config = replace(c.gp, seed=seed, mode="random", **EVOLUTION_ONLY, generations=10_000,
                             max_evaluations=budget)
            run = SearchRun("llm", c.spec, config, c.out / "runs" / f"random-seed{seed}",
                            Runtime(progress=c.progress), baselines=SEARCH_BASELINES)
            self.search(f"random search (seed {seed})", "random", seed, run)
        starts = [("direct search", "direct", None)] * ("direct" in c.searches) + \
                 [("direct search from GP", "warm", str(gp_dir))] * ("warm" in c.searches)
        for label, kind, init in starts:
            config = replace(c.direct, seed=seed, max_evaluations=budget)
            run = SearchRun("llm", c.spec, config, c.out / "runs" / f"{kind}-seed{seed}",
                            Runtime(progress=c.progress), baselines=("uniform",), space="direct", init=init, level_step=c.level_step)
            self.search(f"{label} (seed {seed})", kind, seed, run)

    def search(self, name: str, kind: str, seed: int, run: SearchRun) -> int | None:
        """Run ``dsa search``'s code on the loaded evaluator (resuming a killed run), then measure the
        allocation it chose; returns its number of evaluations."""
        if name in self.done:
            return next(r.get("evaluations") for r in self.rows if r["name"] == name)
        t0 = time.perf_counter()
        resume = checkpoints.exists(run.run_dir)
        _, result = run_search(replace(run, runtime=replace(run.runtime, resume=resume)), self.ev)
        row, _ = best_row(run.run_dir)
        self.measure(name, kind, row["output"], seed=seed, formula=row.get("tree"), evaluations=result.evaluations,
                     run=str(run.run_dir.relative_to(self.c.out)), **{"val ppl": row["fitness"]},
                     search_seconds=round(time.perf_counter() - t0, 1))
        return result.evaluations
