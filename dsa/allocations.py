"""What users pass as ``--allocation``: a baseline (``owl``, ``atp-tuned`` …, optionally with parameters,
``owl:m=7,lam=0.1``), a run folder (its best formula) or a formula in tree syntax."""
from __future__ import annotations

from pathlib import Path

from evaluators.baselines import BASELINES
from primitives import FormulaError, LayerAllocator, build_pset, parse_tree

from .errors import UserError
from .runs import read_run
from .settings import carried_settings

WANDA_METRIC = ("owl", "owl-tuned", "dsa-code", "dsa-paper", "dlp")  # read Wanda's metric whatever the pruner
# scored at the start of every search; atp-tuned (its β grid, ~10 evaluations) is the strongest simple yardstick
SEARCH_BASELINES = ("uniform", "owl", "atp-tuned", "dsa-code", "dlp")
# dsa compare measures every baseline that runs without a parameter chosen by hand (atp needs its β)
COMPARE_BASELINES = tuple(name for name in BASELINES if name != "atp")
def names() -> list[str]:
    return list(BASELINES)


def split_spec(spec: str) -> tuple[str, dict]:
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
            raise UserError(f"--allocation {spec!r}: parameters are key=number pairs, e.g. owl:m=7,lam=0.1")
    return name, params


def _baseline(spec: str):
    """(Baseline, params) when ``spec`` names one, else None."""
    name, params = split_spec(spec)
    if name not in BASELINES:
        return None
    base = BASELINES[name]
    unknown = set(params) - set(base.defaults)
    if unknown:
        raise UserError(f"--allocation {spec!r}: {name} takes {', '.join(base.defaults) or 'no parameters'}, "
                        f"not {', '.join(sorted(unknown))}")
    if base.tuned and params:
        raise UserError(f"--allocation {spec!r}: {name} chooses its parameters itself; give them to "
                        f"{name.removesuffix('-tuned')} instead")
    return base, params


def needs_wanda_metric(spec: str) -> bool:
    return split_spec(spec)[0] in WANDA_METRIC


def best_row(run_dir: Path) -> tuple[dict, dict]:
    """A run folder's best valid hall-of-fame row (the one chosen on the selection split, where the run
    re-scored its hall of fame there), and its config."""
    run = read_run(run_dir)
    valid = [r for r in run["hall_of_fame"] if r["fitness"] != float("inf")]
    if not valid:
        raise UserError(f"{run_dir} has no valid candidate in its hall of fame")
    chosen = (run["config"].get("selection") or {}).get("best_rank")
    return next((r for r in valid if r["rank"] == chosen), valid[0]), run["config"]


def best_formula(run_dir: Path) -> str:
    row, config = best_row(run_dir)
    if config.get("space") == "direct":
        raise UserError(f"{run_dir} is a direct search: it holds an allocation, not a formula")
    return row["tree"]


def direct_allocation(run_dir: Path, allocator: LayerAllocator) -> list[float] | None:
    """A direct search's best allocation (None for a formula run): per-layer sparsities for its model and
    target only."""
    row, config = best_row(run_dir)
    if config.get("space") != "direct":
        return None
    values = [float(v) for v in row["output"]]
    if len(values) != allocator.n_layers or abs(config.get("sparsity", -1) - allocator.ctx.target) > 1e-12:
        raise UserError(f"{run_dir} holds a direct search's allocation for {len(values)} layers at sparsity "
                        f"{config.get('sparsity')}: it applies to that model and sparsity only")
    return values


def run_settings(spec: str) -> dict:
    """For a run folder: the settings it was searched with that ``dsa prune/eval`` take unless given
    (argument names → values); {} for anything else."""
    path = Path(spec)
    if not path.is_dir():
        return {}
    evaluator = read_run(path)["config"].get("evaluator")
    if not isinstance(evaluator, dict):
        return {}  # a synthetic run, or one written before run folders recorded their settings
    out = {}
    for arg, (group, key) in carried_settings().items():
        if isinstance(evaluator.get(group), dict) and key in evaluator[group]:
            out[arg] = evaluator[group][key]
    return out


def check_allocation(spec: str) -> None:
    """Fail early (before any model is loaded) on an allocation that cannot be used."""
    if _baseline(spec) is not None:
        return
    path = Path(spec)
    if path.is_dir():
        row, config = best_row(path)
        if config.get("space") == "direct":
            return
        text = row["tree"]
    else:
        text = spec
    _parse(text, spec, build_pset())


def _parse(text: str, spec: str, pset):
    try:
        return parse_tree(text, pset)
    except FormulaError as exc:
        raise UserError(f"--allocation {spec!r} is neither a known name ({', '.join(names())}), "
                        f"a run folder, nor a valid formula: {exc}") from None


def allocate(spec: str, allocator: LayerAllocator, blocks=None, fitness=None) -> tuple[list[float], str | None]:
    """Per-layer sparsities for ``spec`` at the allocator's target; the formula used (None for a baseline).
    Baselines read ``blocks`` (:class:`~evaluators.blockscores.BlockScores`); tuned ones need ``fitness``,
    the validation perplexity of an allocation."""
    found = _baseline(spec)
    if spec == "uniform":  # needs no model
        return [allocator.ctx.target] * allocator.n_layers, None
    if found is not None:
        base, params = found
        if blocks is None:
            raise UserError(f"{spec} needs the model (use it with dsa prune/eval)")
        return base(blocks, allocator.ctx.target, fitness=fitness, **params), None
    path = Path(spec)
    if path.is_dir() and (values := direct_allocation(path, allocator)) is not None:
        return values, None
    text = best_formula(path) if path.is_dir() else spec
    result = allocator(_parse(text, spec, allocator.pset))
    if not result.valid:
        raise UserError(f"formula {text!r} gives non-finite layer importances on this model ({result.error})")
    return result.tolist(), text


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
