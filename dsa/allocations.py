"""Named allocations: the baselines and the formulas users pass as ``--allocation``."""
from __future__ import annotations

import json
from pathlib import Path

from primitives import FormulaError, LayerAllocator, build_pset, parse_tree

from .errors import UserError

# Baselines that are allocation functions of our own primitives (one home for each formula).
FORMULAS = {
    "owl": "dsa(r_outlier(S), 0.08)",                            # OWL: outlier share (M=5), λ=0.08
    "dsa-paper": "dsa(t_asin(t_atan(r_var(p_abslog(S)))), 0.07)",  # DSA paper: W:(ABSLOG)-(VAR)-(ATAN,ASIN)
}
MODEL_BASELINES = ("global", "alphapruning")  # computed from the model itself (evaluators.baselines)


def best_formula(run_dir: Path) -> str:
    rows = json.loads((run_dir / "hall_of_fame.json").read_text())
    valid = [r for r in rows if r["fitness"] != float("inf")]
    if not valid:
        raise UserError(f"{run_dir} has no valid formula in its hall of fame")
    return valid[0]["tree"]


def formula_for(spec: str) -> str | None:
    """The tree text behind ``spec`` (a name, a run folder or a formula), or None for model baselines."""
    if spec in FORMULAS:
        return FORMULAS[spec]
    if spec == "uniform" or spec in MODEL_BASELINES:
        return None
    path = Path(spec)
    if path.is_dir():
        return best_formula(path)
    return spec


def check_allocation(spec: str) -> None:
    """Fail early (before any model is loaded) on an allocation that cannot be used."""
    if spec in MODEL_BASELINES or spec == "uniform":
        return
    _parse(formula_for(spec), spec, build_pset())


def _parse(text: str, spec: str, pset):
    try:
        return parse_tree(text, pset)
    except FormulaError as exc:
        raise UserError(f"--allocation {spec!r} is neither a known name ({', '.join(names())}), "
                        f"a run folder, nor a valid formula: {exc}") from None


def allocate(spec: str, allocator: LayerAllocator) -> tuple[list[float], str | None]:
    """Per-layer sparsities for ``spec`` on the allocator's scores and target; the formula used.

    Model baselines (global, alphapruning) are not handled here (they need the model's weights).
    """
    if spec == "uniform":
        return [allocator.ctx.target] * allocator.n_layers, None
    text = formula_for(spec)
    if text is None:
        raise UserError(f"{spec} needs the model (use it with dsa prune/eval)")
    result = allocator(_parse(text, spec, allocator.pset))
    if not result.valid:
        raise UserError(f"formula {text!r} gives non-finite layer importances on this model ({result.error})")
    return result.tolist(), text


def names() -> list[str]:
    return ["uniform", *MODEL_BASELINES, *FORMULAS]
