"""``dsa compare``: the fair comparison at one (model, pruner, sparsity), on the code paths the tool
itself runs, and test numbers with 95 % intervals.

One model load, one evaluator (:func:`dsa.llm.build_evaluator`, the search's), then rows:

- ``dense``, and every baseline as its authors run it, a tuned one tuned on the search's validation
  windows (:func:`dsa.search.score_baselines`, what ``dsa search`` scores at its start);
- found functions (run folders or formulas, :func:`dsa.allocations.allocate`);
- per search seed: ``dsa search`` itself (:func:`dsa.search.run_search` on the loaded evaluator, its
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

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from evaluators.data.text import heldout_docs, load_split, token_windows
from evaluators.errors import escape
from evaluators.files import read_json
from evaluators.fitness.intervals import paired_interval, perplexity_interval, verdict
from evaluators.fitness.perplexity import perplexity_from_nlls, window_nlls
from evaluators.models.loading import weight_snapshot
from evaluators.pruning.blockscores import param_counts
from evaluators.pruning.methods import get_method
from evaluators.pruning.nm import on_pattern, parse_nm
from evaluators.pruning.pruners import prune
from gp import SearchConfig
from gp import checkpoint as checkpoints
from gp.config import EVOLUTION_ONLY
from gp.direct import DirectConfig
from primitives import LayerAllocator

from .allocations import (BASELINES, SEARCH_BASELINES, allocate, baseline_candidates, baseline_spec, best_row,
                          check_allocation, check_fits, check_sparsities, run_folder)
from .distributed import LocalEvaluation
from .errors import UserError
from .llm import allocator_for, build_evaluator, load_inputs, score_source
from .plots import plot_allocations, plot_differences
from .runs import finite_number, machine, write_json
from .search import SearchRun, run_search, score_baselines
from .settings import MAX_SPARSITY, TEST_WINDOWS, VERIFY_TOL, DataSpec, EvaluatorSpec

FILE = "compare.json"
VERSION = 1


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


def identity(settings: dict) -> dict:
    """What ``--resume`` must find unchanged, from recorded :meth:`Comparison.settings`: the evaluator's
    resume identity (its RUNTIME fields left out, as a search's) and the search settings, read back
    through their own records (so settings recorded by an older version compare as they mean)."""
    return {"evaluator": EvaluatorSpec.from_dict(settings["evaluator"]).identity(),
            "gp": SearchConfig.from_dict(settings["gp"]).to_dict(), "direct": settings["direct"],
            **{k: settings[k] for k in ("level_step", "budget", "test_windows")}}


KINDS = ("dense", "baseline", "found", "gp", "random", "direct", "warm")  # what a row may be


def rows_problem(saved: dict, c: Comparison) -> str | None:
    """What is wrong with a saved comparison's rows, in a few words (None: nothing): its version, a list of rows,
    and per row a printable unique name, a known kind, finite non-negative test NLLs as many as every other row's
    (and as the protocol's test windows where those are fixed), a validation value that is a number (not NaN),
    sparsities within [0, MAX_SPARSITY] and a counter below 2**63. Checked on ``--resume`` before any work:
    a resumed folder's rows enter every table and interval."""
    if saved.get("version") != VERSION:
        return f"version {str(saved.get('version'))[:20]!r}, not {VERSION}"
    if not isinstance(saved["rows"], list):
        return "its rows are not a list"
    cuda = c.spec.model.is_cuda()
    fixed = (TEST_WINDOWS["cuda" if cuda else "cpu"] if c.test_windows is None else c.test_windows) or None
    lengths, names = set(), set()
    for i, row in enumerate(saved["rows"]):
        where = f"row {i + 1}"
        if not isinstance(row, dict):
            return f"{where} is not an object"
        name, nlls = row.get("name"), row.get("test nlls")
        if not isinstance(name, str) or not name or len(name) > 400 or not name.isprintable():
            return f"{where} has no printable name"
        if name in names:
            return f"{where} repeats the name {name[:60]!r}"
        names.add(name)
        if row.get("kind") not in KINDS:
            return f"{where} has an unknown kind"
        if not _nlls_ok(nlls):
            return f"{where}'s test nlls are not finite numbers ≥ 0"
        lengths.add(len(nlls))
        if len(lengths) > 1 or (fixed is not None and len(nlls) != fixed):
            return f"{where} holds {len(nlls)} test NLLs, not as many as the others or the protocol's"
        if "c4 nlls" in row and not _nlls_ok(row["c4 nlls"]):
            return f"{where}'s c4 nlls are not finite numbers ≥ 0"
        value = row.get("val ppl")
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and value > 0 and not math.isnan(value)):
            return f"{where}'s val ppl is not a positive number"
        alloc = row.get("sparsities")
        if alloc is not None and not (isinstance(alloc, list) and alloc and all(
                finite_number(v) and 0 <= v <= MAX_SPARSITY for v in alloc)):
            return f"{where}'s sparsities are not numbers in [0, {MAX_SPARSITY}]"
        count = row.get("evaluations")
        if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and 0 <= count < 2**63):
            return f"{where}'s evaluations is not a count"
    return None


def _nlls_ok(values) -> bool:
    """Per-window NLLs as a row holds them: a non-empty list of finite numbers ≥ 0."""
    return isinstance(values, list) and bool(values) and all(finite_number(v) and v >= 0 for v in values)


def _same(a: dict, b: dict) -> bool:
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


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
        problem = rows_problem(saved, c) or next(iter(recorded.type_problems()), None)
        if problem:
            raise UserError(f"cannot resume {c.out}: {FILE} is damaged ({problem})")
        # the recorded model (a label, never a path) found as --model, its recorded name kept
        model = recorded.located((c.spec.model.model,) if c.spec.model.model else (), str(c.out))
        c = replace(c, spec=replace(c.spec, model=replace(c.spec.model, model=model.model, name=model.name)))
        mine = identity(c.settings())
        changed = sorted(k for k in mine if not _same({k: old.get(k)}, {k: mine[k]}))
        if changed:
            raise UserError(f"cannot resume {c.out}: its settings differ ({', '.join(changed)})")
    if "warm" in c.searches and "gp" not in c.searches:  # warm from GP runs the folder already holds
        for seed in c.seeds:
            gp_dir = c.out / "runs" / f"gp-seed{seed}"
            if not gp_dir.is_dir():
                raise UserError(f"--searches warm starts from the GP run {gp_dir}, which is not there: add gp")
            check_allocation(str(gp_dir))
    return Runner(c, rows).run()  # the folder is created with the first row


def read_saved(out: Path, verb: str) -> tuple[dict, EvaluatorSpec]:
    """(data, recorded evaluator settings) of ``out``'s compare.json, a bounded regular file
    (:func:`evaluators.files.read_json`) whose settings read back as records (the caller checks its rows,
    :func:`rows_problem`); UserError in one line ("cannot ``verb`` …") when it is damaged."""
    try:
        saved = read_json(out / FILE)
        list(saved["rows"]), identity(saved["settings"])
        spec = EvaluatorSpec.from_dict(saved["settings"]["evaluator"])
        spec.model.type_problems()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"cannot {verb} {out}: {FILE} is damaged ({type(exc).__name__})") from None
    return saved, spec


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
                nm: str | None = None, batch_size: int = 1, progress: bool = False) -> list[list[float]]:
    """Per-window NLLs on each of ``texts`` of ``model`` pruned exactly (block by block,
    :func:`evaluators.pruning.pruners.prune`) at ``alloc`` (already on the N:M pattern ``nm``, if any), from its
    dense weights and back to them (``restore``): how every reported number is measured (``dsa compare`` and
    the benchmarks)."""
    restore()
    try:
        prune(model, method, alloc, calib, progress=progress, batch_size=batch_size, m=parse_nm(nm)[1] if nm else None)
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
        split's per-window NLLs; the dense weights are back afterwards."""
        t0 = time.perf_counter()
        alloc = [float(s) for s in alloc]
        row = {"name": name, "kind": kind, "val ppl": extra.pop("val ppl", None) or self.evaluator(alloc)}
        if "selection" in self.evaluator.splits:
            row["selection ppl"] = self.evaluator(alloc, split="selection")
        alloc = self.evaluator.on_pattern(alloc)  # what the evaluator scored: on the N:M pattern, if any
        texts = {"test nlls": self.test, **({"c4 nlls": self.second} if self.second is not None else {})}
        spec = self.c.spec
        row.update(zip(texts, pruned_nlls(self.model, spec.prune.method, alloc, self.calib, list(texts.values()),
                                          self.restore, spec.prune.nm, spec.data.batch_size, self.c.progress)))
        self.add({**row, **extra, "sparsities": alloc, "seconds": round(time.perf_counter() - t0, 1)})

    def add(self, row: dict) -> None:
        row["test ppl"] = perplexity_from_nlls(torch.tensor(row["test nlls"], dtype=torch.float64))
        if "c4 nlls" in row:
            row["c4 ppl"] = perplexity_from_nlls(torch.tensor(row["c4 nlls"], dtype=torch.float64))
        self.rows.append(row)
        self.done.add(row["name"])
        print({k: v for k, v in row.items() if k not in ("test nlls", "c4 nlls", "sparsities")}, flush=True)
        self.c.out.mkdir(parents=True, exist_ok=True)  # on the first result: a failed start leaves no folder
        write_json(self.c.out / FILE, {"version": VERSION, "settings": self.c.settings(), "info": self.info,
                                       "rows": self.rows})
        (self.c.out / "compare.md").write_text(report(self.c, self.info, self.rows))
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
            run = SearchRun("llm", c.spec, replace(c.gp, seed=seed), gp_dir, progress=c.progress,
                            baselines=SEARCH_BASELINES)
            evaluations = self.search(f"GP search (seed {seed})", "gp", seed, run)
            budget = evaluations or budget
        if "random" in c.searches:  # dsa search's random mode at the GP run's evaluations (seeded alike)
            config = replace(c.gp, seed=seed, mode="random", **EVOLUTION_ONLY, generations=10_000,
                             max_evaluations=budget)
            run = SearchRun("llm", c.spec, config, c.out / "runs" / f"random-seed{seed}", progress=c.progress,
                            baselines=SEARCH_BASELINES)
            self.search(f"random search (seed {seed})", "random", seed, run)
        starts = [("direct search", "direct", None)] * ("direct" in c.searches) + \
                 [("direct search from GP", "warm", str(gp_dir))] * ("warm" in c.searches)
        for label, kind, init in starts:
            config = replace(c.direct, seed=seed, max_evaluations=budget)
            run = SearchRun("llm", c.spec, config, c.out / "runs" / f"{kind}-seed{seed}", progress=c.progress,
                            baselines=("uniform",), space="direct", init=init, level_step=c.level_step)
            self.search(f"{label} (seed {seed})", kind, seed, run)

    def search(self, name: str, kind: str, seed: int, run: SearchRun) -> int | None:
        """Run ``dsa search``'s code on the loaded evaluator (resuming a killed run), then measure the
        allocation it chose; returns its number of evaluations."""
        if name in self.done:
            return next(r.get("evaluations") for r in self.rows if r["name"] == name)
        t0 = time.perf_counter()
        resume = checkpoints.exists(run.run_dir)
        _, result = run_search(replace(run, resume=resume), self.ev)
        row, _ = best_row(run.run_dir)
        self.measure(name, kind, row["output"], seed=seed, formula=row.get("tree"), evaluations=result.evaluations,
                     run=str(run.run_dir.relative_to(self.c.out)), **{"val ppl": row["fitness"]},
                     search_seconds=round(time.perf_counter() - t0, 1))
        return result.evaluations


# --- re-measuring what a folder claims ------------------------------------------------------------------

def verify_comparison(out: Path, name: str, models: tuple[str, ...] = (), device: str | None = None,
                      progress: bool = True) -> bool:
    """``dsa compare --verify``: re-measure row ``name`` of the comparison in ``out`` ("all": every row) as the
    comparison measured it, and print per stored number whether it matches; writes nothing; True when all do.

    The row's stored sparsities are checked as an allocation of the folder's model and target (one per block,
    the parameter-weighted mean, the N:M pattern) and re-derived from what the row names (:func:`row_source`:
    a baseline with its parameters, a formula, the row's run folder) on this model's scores; they are pruned by :func:`pruned_nlls` with the folder's method, pattern, data and calibration. Compared:
    per-window test and held-out-C4 NLLs within :data:`VERIFY_TOL` each, their perplexities and the validation
    and selection values within a relative :data:`VERIFY_TOL`. The validation values only where the evaluator
    re-measures them cheaply: a mask pruner's (SparseGPT's reads a level database) and not a search's value
    estimated from resampled windows. ``models``: where the recorded model is (``--model``); ``device``:
    another device than the recorded one."""
    import transformers

    if not os.path.lexists(out / FILE):
        raise UserError(f"--out {out} holds no {FILE} to verify")
    saved, spec = read_saved(out, "verify")
    settings, fixed = saved["settings"], saved["settings"].get("test_windows")
    problem = next(iter(spec.problems()), None)
    if problem is None and not (fixed is None or type(fixed) is int and 0 <= fixed < 2**63):
        problem = "its test_windows is not a count"
    if problem is None:
        model = spec.model.located(models, str(out))
        spec = replace(spec, model=replace(model, device=device or model.device))
        problem = rows_problem(saved, Comparison(spec, out, test_windows=fixed))
    if problem:
        raise UserError(f"cannot verify {out}: {FILE} is damaged ({problem})")
    spec = replace(spec, data=spec.data.sized(spec.model.is_cuda()))  # sizes a record leaves unset: the protocol's
    spec.check()
    rows = [r for r in saved["rows"] if name in ("all", r["name"])]
    if not rows:
        names = ", ".join(r["name"] for r in saved["rows"])
        raise UserError(f"{out} holds no row {name!r} (its rows: {names[:300]}; or all)")
    info = saved.get("info")
    recorded = info.get("machine") if isinstance(info, dict) else None
    then = {k: recorded.get(k) if isinstance(recorded, dict) else None for k in ("torch", "transformers")}
    print(f"re-measuring {len(rows)} row{'s' * (len(rows) > 1)} of {out}: recorded with torch "
          f"{escape(then['torch'], 40)}, transformers {escape(then['transformers'] or 'unrecorded', 40)}; "
          f"here torch {torch.__version__}, transformers {transformers.__version__}; tolerance {VERIFY_TOL:g} "
          f"nats per window", flush=True)

    inputs = load_inputs(spec)
    second_windows = max((len(r["c4 nlls"]) for r in rows if "c4 nlls" in r), default=0)
    test, second, _ = comparison_texts(spec.data, inputs.tokenizer, len(rows[0]["test nlls"]), second_windows)
    restore = weight_snapshot(inputs.model)
    cheap = not get_method(spec.prune.method).updates_weights
    evaluator = build_evaluator(spec, inputs=inputs)[0] if cheap and any(
        r.get("val ppl") is not None or "selection ppl" in r for r in rows) else None
    counts = param_counts(inputs.model)
    sources = {r["name"]: row_source(r, out) for r in rows if r["kind"] != "dense"}
    blocks = (evaluator.blocks if evaluator is not None else score_source(
        inputs.model, spec.prune.method, inputs.calib, spec.data.batch_size, spec.prune.max_scores_per_layer,
        spec.data.seed, progress)) if any(s is not None for s in sources.values()) else None
    allocation = LayerAllocator(torch.zeros(len(counts), 1), spec.prune.sparsity, weights=counts)  # bounds, mean
    resampled = SearchConfig.from_dict(settings["gp"]).resample_windows > 0

    def remeasure(row: dict):
        """(field, True/False/None for not re-measured, what was found) per stored number of ``row``."""
        alloc, dense = row.get("sparsities"), row["kind"] == "dense"
        if not dense:
            try:
                alloc = check_sparsities([] if alloc is None else alloc, allocation, "the row")
                if spec.prune.nm and any(abs(a - b) > 1e-12 for a, b in
                                         zip(on_pattern(spec.prune.nm, alloc, counts)[0], alloc)):
                    raise UserError(f"the row's sparsities are not on the N:M pattern {spec.prune.nm}")
            except UserError as exc:
                yield "sparsities", False, str(exc)
                return
            yield "sparsities", True, f"an allocation of the {len(counts)} blocks at mean {spec.prune.sparsity:g}"
            yield "allocation", *_rederive(sources[row["name"]], alloc, blocks, spec)
        if row.get("val ppl") is not None:
            if evaluator is None:
                yield "val ppl", None, f"not re-measured ({spec.prune.method}'s fitness reads a level database)"
            elif row["kind"] in ("gp", "random") and resampled:
                yield "val ppl", None, "not re-measured (the search estimated it from resampled windows)"
            else:
                yield "val ppl", *_close(row["val ppl"], evaluator.dense_perplexity() if dense else evaluator(alloc))
        if "selection ppl" in row and not dense:
            if evaluator is None or "selection" not in evaluator.splits:
                yield "selection ppl", None, "not re-measured"
            else:
                yield "selection ppl", *_close(row["selection ppl"], evaluator(alloc, split="selection"))
        texts = {"test nlls": test, **({"c4 nlls": second} if "c4 nlls" in row and second is not None else {})}
        if dense:
            restore()
            measured = [window_nlls(inputs.model, t, spec.data.batch_size, progress).tolist() for t in texts.values()]
        else:
            measured = pruned_nlls(inputs.model, spec.prune.method, alloc, inputs.calib, list(texts.values()), restore,
                                   spec.prune.nm, spec.data.batch_size, progress)
        for number, nlls in zip(texts, measured):
            yield number, *_close_nlls(row[number], nlls)
            ppl = number.replace("nlls", "ppl")  # test ppl, c4 ppl: the perplexity of those NLLs
            if ppl in row:
                yield ppl, *_close(row[ppl], perplexity_from_nlls(torch.tensor(nlls, dtype=torch.float64)))
        if "c4 nlls" in row and second is None:
            yield "c4 nlls", False, "no held-out calibration documents here to re-measure them on"

    checked, failed = 0, []
    try:
        for row in rows:
            for number, ok, found in remeasure(row):
                print(f"{'skip' if ok is None else 'match' if ok else 'MISMATCH':8} {escape(row['name'])}: {number}: "
                      f"{found}", flush=True)
                checked += ok is not None
                if ok is False:
                    failed.append(f"{escape(row['name'], 60)} ({number})")
    finally:
        if evaluator is not None:
            evaluator.close()
        restore()
    print(f"{checked - len(failed)} of {checked} numbers match" + (f"; mismatched: {', '.join(failed)}" if failed
                                                                      else ""), flush=True)
    return not failed


def row_source(row: dict, out: Path) -> str | None:
    """What a comparison row's allocation comes from, as an ``--allocation`` spec: a baseline with the
    parameters it was measured with, the row's run folder (what the search ships: a formula, a direct
    allocation or a baseline), or its formula; None when the row names none of them."""
    kind, name = row["kind"], row["name"]
    if kind == "baseline" and name in BASELINES and isinstance(row.get("params"), dict):
        return baseline_spec(name, row["params"])
    run = row.get("run")
    if isinstance(run, str) and run and not Path(run).is_absolute() and ".." not in Path(run).parts \
            and (out / run).is_dir():  # a folder of the comparison's own, never one elsewhere
        return str(out / run)
    formula = row.get("formula")
    return formula if isinstance(formula, str) and formula else None


def _rederive(source: str | None, stored: list[float], blocks, spec: EvaluatorSpec) -> tuple[bool | None, str]:
    """(whether ``source`` gives the stored sparsities on this model's ``blocks``, within VERIFY_TOL each;
    None when it cannot be re-derived here, what was found)."""
    if source is None:
        return None, "not re-derived (the row names no baseline, formula or run folder)"
    what = escape(source if not os.path.isabs(source) else Path(source).name, 60)
    try:
        derived, _ = allocate(source, allocator_for(blocks, spec.prune.sparsity), blocks)
    except UserError as exc:
        return False, f"{what} gives no allocation here ({escape(exc, 200)})"
    if spec.prune.nm:
        derived = on_pattern(spec.prune.nm, derived, blocks.counts)[0]
    worst = max(abs(a - b) for a, b in zip(derived, stored))
    return worst <= VERIFY_TOL, f"re-derived from {what}, max |Δ sparsity| {worst:.2g}"


def _close(stored, measured: float) -> tuple[bool, str]:
    """(whether a stored value matches the measured one within a relative VERIFY_TOL, both)."""
    try:
        if isinstance(stored, bool) or not isinstance(stored, (int, float)):
            raise TypeError
        return math.isclose(stored, measured, rel_tol=VERIFY_TOL), f"stored {stored:.6g}, measured {measured:.6g}"
    except (TypeError, OverflowError):
        return False, f"stored {str(stored)[:40]!r}, not a number; measured {measured:.6g}"


def _close_nlls(stored: list, measured: list[float]) -> tuple[bool, str]:
    """(whether stored per-window NLLs match the measured ones, each within VERIFY_TOL, what differs)."""
    if len(stored) != len(measured):
        return False, f"{len(stored)} windows stored, {len(measured)} measured here"
    diffs = [abs(float(a) - b) for a, b in zip(stored, measured)]
    worst = max(range(len(diffs)), key=lambda i: (math.isnan(diffs[i]), diffs[i]))
    mean = (sum(measured) - sum(map(float, stored))) / len(diffs)
    return all(d <= VERIFY_TOL for d in diffs), (f"{len(diffs)} windows, max |Δ| {diffs[worst]:.2g} (window "
                                                 f"{worst + 1}), mean Δ {mean:+.2g}")


# --- the report -------------------------------------------------------------------------------------

def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.{digits}g}"
    return str(x)


def strongest_baseline(rows: list[dict]) -> dict | None:
    """The baseline with the lowest *validation* perplexity other than uniform (chosen without test)."""
    base = [r for r in rows if r["kind"] == "baseline" and r["name"] != "uniform"]
    return min(base, key=lambda r: r["val ppl"]) if base else None


def comparisons(rows: list[dict]) -> dict[str, dict]:
    """Per row: its test perplexity interval, and its paired log-ppl difference from uniform and from the
    strongest baseline on validation (intervals and verdicts)."""
    uniform = next((r for r in rows if r["name"] == "uniform"), None)
    strongest = strongest_baseline(rows)
    out = {}
    for r in rows:
        item = {"test": perplexity_interval(r["test nlls"])}
        for label, ref in (("uniform", uniform), ("strongest", strongest)):
            if ref is not None and ref is not r and r["kind"] != "dense":
                iv = paired_interval(r["test nlls"], ref["test nlls"])
                item[label] = (iv, verdict(iv))
        if strongest is not None and strongest is not r and r["kind"] != "dense" and "c4 nlls" in r \
                and len(strongest.get("c4 nlls") or ()) == len(r["c4 nlls"]):
            iv = paired_interval(r["c4 nlls"], strongest["c4 nlls"])
            item["strongest c4"] = (iv, verdict(iv))
        out[r["name"]] = item
    return out


def _difference(item) -> str:
    """A table cell: Δ with its interval and verdict (bold where it decides), or empty."""
    if item is None:
        return ""
    iv, word = item
    return f"{iv.value:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}] {'**' + word + '**' if word != 'tie' else 'tie'}"


def report(c: Comparison, info: dict, rows: list[dict]) -> str:
    spec = c.spec
    strongest = strongest_baseline(rows)
    stats = comparisons(rows)
    m = info.get("machine", {})
    head = (f"Machine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}, CUDA: {m.get('cuda')}; "
            f"{m.get('date')}\n\nModel {info.get('model')}, {spec.prune.method} at {spec.prune.sparsity:.0%} "
            f"({'GPU' if spec.model.is_cuda() else 'CPU'} protocol). Test: raw WikiText-2, {info.get('test_windows')} "
            f"windows × {spec.data.seqlen} tokens; validation (fitness, tuning): {spec.val_windows} windows, selection "
            f"split: the next {spec.selection_windows}; calibration {spec.data.calib} {spec.data.nsamples} × "
            f"{spec.data.calib_seqlen} (data seed {spec.data.seed}); exact sequential pruning. Second test text: "
            f"{info.get('c4_windows') or 'no'} windows of calibration-domain documents calibration never read. Test ppl with its 95 % "
            f"bootstrap interval over windows; Δ = log(ppl / ppl of the reference) on the same windows with its paired "
            f"95 % interval: *beats* / *loses* where the interval excludes 0. Strongest baseline on validation: "
            f"{strongest['name'] if strongest else '—'}. Searches: GP population {c.gp.population}, {c.gp.generations} "
            f"generations; direct searches with the GP run's evaluations; search seeds {', '.join(map(str, c.seeds))}.\n")
    cols = ["allocation", "val ppl", "selection ppl", "test ppl [95 % CI]", "Δ vs uniform [95 % CI]",
            "Δ vs strongest [95 % CI]", "held-out C4 ppl", "Δ vs strongest on C4 [95 % CI]", "evaluations",
            "formula / params"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        s = stats[r["name"]]
        cells = [r["name"], _fmt(r.get("val ppl")), _fmt(r.get("selection ppl")), s["test"].text()]
        cells += [_difference(s.get("uniform")), _difference(s.get("strongest")), _fmt(r.get("c4 ppl")),
                  _difference(s.get("strongest c4")), _fmt(r.get("evaluations")),
                  str(r.get("formula") or r.get("params") or "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(lines) + "\n" + seeds_summary(rows, stats) + "\n"


def seeds_summary(rows: list[dict], stats: dict) -> str:
    """Per search kind over its seeds: test perplexity mean and spread, and how many seeds beat uniform and
    the strongest baseline (every seed is in the table above)."""
    kinds = {}
    for r in rows:
        if r.get("seed") is not None:
            kinds.setdefault(r["kind"], []).append(r)
    if not kinds:
        return ""
    lines = ["", "| search | seeds | test ppl mean ± sd | beats uniform | beats strongest | beats strongest on "
             "held-out C4 |", "|---|---|---|---|---|---|"]
    for kind, group in kinds.items():
        ppl = [r["test ppl"] for r in group]
        sd = statistics.stdev(ppl) if len(ppl) > 1 else 0.0
        count = {label: sum(stats[r["name"]].get(label, (None, ""))[1] == "beats" for r in group)
                 for label in ("uniform", "strongest", "strongest c4")}
        lines.append(f"| {kind} | {len(group)} | {statistics.mean(ppl):.4g} ± {sd:.2g} | "
                     f"{count['uniform']}/{len(group)} | {count['strongest']}/{len(group)} | "
                     f"{count['strongest c4']}/{len(group)} |")
    return "\n".join(lines) + "\n"
