"""``dsa compare --out DIR --verify ROW``: re-measure what a comparison folder claims, row by row, with the
folder's own settings and the comparison's own measurement (:func:`dsa.experiment.compare.pruned_nlls`), and
say per stored number whether it matches. Writes nothing."""
from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import torch

from evaluators.errors import escape
from evaluators.fitness.perplexity import perplexity_from_nlls, window_nlls
from evaluators.models.loading import weight_snapshot
from evaluators.pruning.blockscores import param_counts
from evaluators.pruning.nm import on_pattern
from gp import SearchConfig
from primitives import LayerAllocator

from dsa.errors import UserError
from dsa.experiment.compare import comparison_texts, pruned_nlls
from dsa.experiment.folder import FILE, read_saved, rows_problem
from dsa.run.allocations import BASELINES, allocate, baseline_spec, check_sparsities
from dsa.run.llm import allocator_for, build_evaluator, load_inputs, score_source
from dsa.run.settings import VERIFY_TOL, EvaluatorSpec


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
        problem = rows_problem(saved, spec.model.is_cuda(), fixed)
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
    cheap = not spec.prune.record.updates_weights
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


