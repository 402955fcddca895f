"""What users pass as ``--allocation``: a baseline (``owl``, ``atp-tuned`` …, optionally with parameters,
``owl:m=7,lam=0.1``), a run folder (its best formula) or a formula in tree syntax.

Whatever its source (a baseline, a formula, a shared run folder's numbers), an allocation is checked
before it is used (:func:`check_sparsities`): one sparsity per block, each finite and within the
allocator's bounds, with parameter-weighted mean the target."""
from __future__ import annotations

import math
import re
from pathlib import Path

from evaluators.baselines import BASELINES, search_baselines
from primitives import FormulaError, LayerAllocator, build_pset, parse_tree

from dsa.errors import UserError
from dsa.run.folder import Run
from dsa.run.schema import carried_settings
from dsa.run.settings import MAX_SPARSITY, EvaluatorSpec

WANDA_METRIC = tuple(name for name, b in BASELINES.items() if b.wanda_metric)  # read it whatever the pruner
SEARCH_BASELINES = search_baselines()  # scored at the start of every search (Baseline.search)
# dsa compare measures every baseline that runs without a parameter chosen by hand (atp needs its β)
COMPARE_BASELINES = tuple(name for name, base in BASELINES.items() if base.compared)
TARGET_TOL = 1e-6  # an allocation's weighted mean this close to the target is the target


def names() -> list[str]:
    return list(BASELINES)


def split_list(text: str, flag: str = "--formulas") -> tuple[str, ...]:
    """A comma-separated list of allocations, split only at commas outside parentheses, so formulas keep
    theirs and a baseline its parameters: ``"owl:m=7,lam=0.1, dsa(r_mean(S), 0.1)"`` →
    ``("owl:m=7,lam=0.1", "dsa(r_mean(S), 0.1)")``; "" → (). An empty item (``"owl,,uniform"``, ``"owl,"``)
    is refused, not dropped: UserError naming ``flag``."""
    if not text.strip():
        return ()
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    merged: list[str] = []
    for item in (item.strip() for item in items):
        if not item:
            raise UserError(f"{flag} {text!r:.100} has an empty item: give comma-separated allocations")
        if merged and ":" in merged[-1] and re.match(r"[A-Za-z_]\w*\s*=", item):
            merged[-1] += "," + item  # a baseline's next parameter: "owl:m=7,lam=0.1" stays one item
        else:
            merged.append(item)
    return tuple(merged)


def split_spec(spec: str, flag: str = "--allocation") -> tuple[str, dict]:
    """``"owl:m=7,lam=0.1"`` → ``("owl", {"m": 7.0, "lam": 0.1})``; a plain name → ``(name, {})``."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            eq = ""
        if not eq:
            raise UserError(f"{flag} {spec!r}: parameters are key=number pairs, e.g. owl:m=7,lam=0.1")
    for key, value in params.items():  # spreads, β, α, ε are ≥ 0; OWL's M·mean threshold needs M > 0
        if not math.isfinite(value) or value < 0 or (key == "m" and value == 0):
            raise UserError(f"{flag} {spec!r}: {key} must be a finite number "
                            f"{'> 0' if key == 'm' else '≥ 0'}, got {value:g}")
    return name, params


def _baseline(spec: str, flag: str = "--allocation"):
    """(Baseline, params) when ``spec`` names one, else None; errors name ``flag``."""
    name, params = split_spec(spec, flag)
    if name not in BASELINES:
        return None
    base = BASELINES[name]
    unknown = set(params) - set(base.defaults)
    if unknown:
        raise UserError(f"{flag} {spec!r}: {name} takes {', '.join(base.defaults) or 'no parameters'}, "
                        f"not {', '.join(sorted(unknown))}")
    if base.tuned and params:
        raise UserError(f"{flag} {spec!r}: {name} chooses its parameters itself; give them to "
                        f"{name.removesuffix('-tuned')} instead")
    return base, params


def needs_wanda_metric(spec: str) -> bool:
    return split_spec(spec)[0] in WANDA_METRIC


def run_folder(spec: str) -> Path | None:
    """``spec`` as a folder when it names an existing one, else None (then it is a name or a formula: a
    formula longer than a file name may be, or one holding odd characters, is never a folder)."""
    try:
        path = Path(spec)
        return path if path.is_dir() else None
    except (OSError, ValueError):  # too long a name, a NUL byte
        return None


def baseline_spec(name: str, params: dict) -> str:
    """The ``--allocation`` spec that gives a baseline's allocation with these parameters: a tuned baseline
    as its plain form with the values its tuning chose (``atp-tuned`` β 0.008 → ``atp:beta=0.008``)."""
    base = BASELINES[name]
    plain = name.removesuffix("-tuned") if base.tuned else name
    numbers = {k: v for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and v != base.defaults.get(k)}
    return plain + (":" + ",".join(f"{k}={v:g}" for k, v in numbers.items()) if numbers else "")


def shipped_baseline(run: Run | Path) -> str | None:
    """The baseline spec a run folder ships instead of a found function (its choice rule found none that
    beats the strongest baseline on the selection split, :func:`dsa.run.choice.decide`), else None."""
    run = Run.of(run)
    run_dir, config = run.dir, run.config
    selection = config.get("selection")
    shipped = selection.get("shipped") if isinstance(selection, dict) else None
    if shipped is None or shipped == "found":
        return None
    if not isinstance(shipped, str) or split_spec(shipped, "the run's choice")[0] not in BASELINES:
        raise UserError(f"{run_dir}/config.json is damaged: it ships {str(shipped)!r:.60}, not a baseline")
    return shipped


def best_row(run: Run | Path) -> tuple[dict, dict]:
    """A run folder's choice and its config: the valid hall-of-fame row its choice rule shipped (the one
    chosen on the selection split where the run re-scored it there), or, where it ships the strongest
    baseline instead, that baseline as a row (``tree`` its spec, ``output`` its allocation, ``baseline``
    its name)."""
    run = Run.of(run)
    run_dir, config = run.dir, run.config
    shipped = shipped_baseline(run)
    if shipped is not None:
        name = config["selection"].get("strongest")
        setting = (config.get("baseline_settings") or {}).get(name) or {}
        return {"rank": None, "tree": shipped, "formula": shipped, "output": setting.get("allocation"),
                "fitness": (config.get("baselines") or {}).get(name), "baseline": name}, config
    valid = [r for r in run.hall_of_fame if r["fitness"] != float("inf")]
    if not valid:
        raise UserError(f"{run_dir} has no valid candidate in its hall of fame")
    selection = config.get("selection")
    chosen = selection.get("best_rank") if isinstance(selection, dict) else None
    return next((r for r in valid if r["rank"] == chosen), valid[0]), config


def best_formula(run: Run) -> str:
    """The formula a run folder ships, or the spec of the baseline it ships instead."""
    row, config = best_row(run)
    if config.get("space") == "direct" and "baseline" not in row:
        raise UserError(f"{run.dir} is a direct search: it holds an allocation, not a formula")
    return row["tree"]


def _direct_row(run: Run) -> tuple[list, float] | None:
    """A direct search's best allocation as stored and its target (None for a formula run), checked as
    far as it can be without the model: numbers within [0, MAX_SPARSITY], as many as the other rows of
    its hall of fame hold, a target in (0, MAX_SPARSITY]."""
    row, config = best_row(run)
    run_dir = run.dir
    if config.get("space") != "direct":
        return None
    values, target = row["output"], config.get("sparsity")
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= MAX_SPARSITY:
        raise UserError(f"{run_dir}/config.json is damaged: its sparsity is not in (0, {MAX_SPARSITY}]: {target!r:.40}")
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and 0 <= v <= MAX_SPARSITY for v in values):
        raise UserError(f"{run_dir}/hall_of_fame.json is damaged: its best allocation is not a list of sparsities "
                        f"in [0, {MAX_SPARSITY}]")
    others = {len(r["output"]) for r in run.hall_of_fame if isinstance(r["output"], list)}
    if others - {len(values)}:
        raise UserError(f"{run_dir}/hall_of_fame.json is damaged: its best allocation has {len(values)} sparsities, "
                        f"its other rows {', '.join(map(str, sorted(others - {len(values)})))}")
    return values, target


def direct_allocation(run: Run, allocator: LayerAllocator) -> list[float] | None:
    """A direct search's best allocation (None for a formula run): per-layer sparsities for its model and
    target only, checked (:func:`check_sparsities`)."""
    stored, run_dir = _direct_row(run), run.dir
    if stored is None:
        return None
    values, target = stored
    if len(values) != allocator.n_layers or abs(target - allocator.ctx.target) > 1e-12:
        raise UserError(f"{run_dir} holds a direct search's allocation for {len(values)} layers at sparsity "
                        f"{target}: it applies to that model and sparsity only")
    return check_sparsities(values, allocator, f"{run_dir}'s allocation")


def check_sparsities(values, allocator: LayerAllocator, what: str) -> list[float]:
    """``values`` as floats, when they are an allocation for ``allocator``: one per block, finite, within
    its bounds, with parameter-weighted mean its target (within :data:`TARGET_TOL`); else UserError."""
    ctx = allocator.ctx
    values = list(values)
    if len(values) != allocator.n_layers:
        raise UserError(f"{what} has {len(values)} sparsities for {allocator.n_layers} blocks")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and ctx.lo <= v <= ctx.hi for v in values):
        raise UserError(f"{what} holds sparsities that are not numbers in [{ctx.lo:g}, {ctx.hi:g}]")
    weights = ctx.weights.tolist()
    mean = sum(float(v) * w for v, w in zip(values, weights)) / sum(weights)
    if not abs(mean - ctx.target) <= TARGET_TOL:
        raise UserError(f"{what} has mean sparsity {mean:.6g}, not the target {ctx.target:g}")
    return [float(v) for v in values]


def run_settings(spec: str) -> dict:
    """For a run folder: the settings it was searched with that ``dsa prune/eval`` take unless given
    (argument names → values), checked; {} for anything else."""
    path = run_folder(spec)
    if path is None:
        return {}
    evaluator = Run.read(path).config.get("evaluator")
    if not isinstance(evaluator, dict):
        return {}  # a synthetic run, or one written before run folders recorded their settings
    try:
        checked = EvaluatorSpec.from_dict(evaluator)
        problems = checked.problems()
    except (TypeError, ValueError) as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    if problems:
        raise UserError(f"{path}/config.json is damaged: {problems[0]}")
    out = {}
    for arg, (group, key) in carried_settings(EvaluatorSpec).items():
        if isinstance(evaluator.get(group), dict) and key in evaluator[group]:
            out[arg] = getattr(getattr(checked, group), key)
    return out


def check_allocation(spec: str, flag: str = "--allocation") -> None:
    """Fail early (before any model is loaded) on an allocation that cannot be used; errors name ``flag``."""
    if _baseline(spec, flag) is not None:
        return
    path = run_folder(spec)
    if path is not None:
        return check_run(path)
    _parse(spec, build_pset(), flag)


def read_checked_run(run: Run | Path | str) -> Run:
    """A run folder (:class:`dsa.run.folder.Run`, or its path, read), its choice checked as ``--allocation RUN``
    checks it (a run that found nothing valid is taken as it is): what ``dsa show`` and ``dsa search`` display."""
    run = Run.of(run)
    if any(r["fitness"] != math.inf for r in run.hall_of_fame):
        check_run(run)
    return run


def check_run(run: Run | Path) -> None:
    """A run folder's choice, checked as far as it can be without the model (what ``--allocation RUN``
    and ``dsa show`` check): the baseline it ships, a direct search's stored allocation, or its best
    tree (a formula of the grammar)."""
    run = Run.of(run)
    if (shipped := shipped_baseline(run)) is not None:
        return check_allocation(shipped, f"{run.dir}/config.json's choice")
    if _direct_row(run) is None:
        _run_tree(run, build_pset())


def _run_tree(run: Run, pset):
    """A formula run's best tree, parsed; a tree that does not parse is a damaged hall of fame."""
    text = best_formula(run)
    try:
        return text, parse_tree(text, pset)
    except FormulaError as exc:
        raise UserError(f"{run.dir}/hall_of_fame.json is damaged: its best tree is not a formula ({exc})") from None


def _parse(spec: str, pset, flag: str = "--allocation"):
    try:
        return parse_tree(spec, pset)
    except FormulaError as exc:
        raise UserError(f"{flag} {spec!r:.100} is neither a known name ({', '.join(names())}), "
                        f"a run folder, nor a valid formula: {exc}") from None


def allocate(spec: str, allocator: LayerAllocator, blocks=None, fitness=None,
             run: Run | None = None) -> tuple[list[float], str | None]:
    """Per-layer sparsities for ``spec`` at the allocator's target; the formula used (None for a baseline).
    Baselines read ``blocks`` (:class:`~evaluators.pruning.blockscores.BlockScores`); tuned ones need ``fitness``,
    the validation perplexity of an allocation. ``run``: the run folder ``spec`` names, already read."""
    found = _baseline(spec)
    if spec == "uniform":  # needs no model
        return [allocator.ctx.target] * allocator.n_layers, None
    if found is not None:
        base, params = found
        if blocks is None:
            raise UserError(f"{spec} needs the model (use it with dsa prune/eval)")
        return check_sparsities(base(blocks, allocator.ctx.target, fitness=fitness, **params), allocator, spec), None
    path = run_folder(spec)
    if run is None and path is not None:  # read once: every answer below is from one reading
        run = Run.read(path)
    if run is not None and (shipped := shipped_baseline(run)) is not None:  # the run's choice: a baseline
        if blocks is None and shipped != "uniform":  # no model here: the allocation the run stored for it
            stored = best_row(run)[0]["output"]
            if not isinstance(stored, list):
                raise UserError(f"{path}/config.json is damaged: no allocation stored for {shipped}")
            return check_sparsities(stored, allocator, f"{path}'s {shipped}"), None
        return allocate(shipped, allocator, blocks, fitness)
    if run is not None and (values := direct_allocation(run, allocator)) is not None:
        return values, None
    text, tree = _run_tree(run, allocator.pset) if run is not None else (spec, _parse(spec, allocator.pset))
    result = allocator(tree)
    if not result.valid:
        raise UserError(f"formula {text!r:.200} gives non-finite layer importances on this model ({result.error})")
    return check_sparsities(result.tolist(), allocator, f"formula {text!r:.200}"), text


def check_fits(spec: str, allocator: LayerAllocator, flag: str = "--formulas item") -> None:
    """The checks of an allocation that need the model's shape (its blocks) but no measurement, to run
    before any is made: a run folder's stored allocation (its length and target) and a formula's
    allocation on this model. A baseline (or a run that ships one) needs the model's scores: it is
    checked when it is computed."""
    if _baseline(spec, flag) is not None:
        return
    run = Run.read(path) if (path := run_folder(spec)) is not None else None  # read once, for both questions
    if run is None or shipped_baseline(run) is None:
        allocate(spec, allocator, run=run)


def baseline_candidates(names: tuple[str, ...], blocks, target: float) -> dict[str, list[tuple[dict, list[float]]]]:
    """Per baseline, its candidate allocations with their parameters: one for a fixed baseline, its whole
    grid for a tuned one (the search scores them all on its fitness and keeps the best, as the authors
    tuned on validation)."""
    out = {}
    for name in names:
        base, params = _baseline(name) or (None, None)
        if base is None:
            raise UserError(f"unknown baseline {name!r}: choose from {', '.join(BASELINES)}")
        out[name] = base.candidates(blocks, target) if base.tuned else [
            (dict({**base.defaults, **params}), base(blocks, target, **params))]
    return out
