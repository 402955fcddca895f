"""The allocation record that ``dsa prune`` leaves in its folder (``allocation.json``), and its exports:
JSON, and a one-shot pruning recipe for llm-compressor (``dsa export SOURCE --to json|llmcompressor``).

llm-compressor's ``SparseGPTModifier`` and ``WandaPruningModifier`` (both ``SparsityModifierBase``)
take ``sparsity`` as a float or a list of floats; a list gives one sparsity per layer matched by
``targets``, in model order, and must have one entry per matched layer. The recipe therefore
targets the decoder blocks by name (``model.layers.0`` …), the same blocks as our allocation.

The recipe is written by PyYAML from data, never pasted together as text: a record's strings (a
tampered ``allocation.json`` may hold newlines) can only ever be string values. What was applied goes
under the top-level key ``dsa_gp``, which llm-compressor skips (it reads ``*_stage`` keys).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from evaluators.files import path_kind, read_json, write_json
from evaluators.pruning.methods import METHODS
from primitives import Formula, build_pset, parse_tree
from primitives.bounds import MAX_SPARSITY

from dsa.errors import UserError
from dsa.paths import usable_path

ALLOCATION_FILE = "allocation.json"
FORMATS = ("json", "llmcompressor")
DECODER_LAYERS = r"re:model.layers.\d+$"  # targets for a record without block names (LLaMA-style models)


def sympy_formula(tree_text: str | None) -> Formula | None:
    """The simplified SymPy formula of a tree in tree syntax (None for allocations without a formula)."""
    if tree_text is None:
        return None
    pset = build_pset()
    return Formula.of(parse_tree(tree_text, pset), pset)


def sympy_text(tree_text: str | None) -> str | None:
    formula = sympy_formula(tree_text)
    return None if formula is None else formula.text


def allocation_record(*, allocation: str, formula: str | None, method: str, target: float, model: str,
                      requested: list[float], measured: list[float] | None = None,
                      layers: list[str] | None = None) -> dict:
    """Everything needed to reproduce a pruning: per-layer sparsities (``requested``; ``measured`` after
    pruning), the formula (tree syntax and simplified SymPy text, with ``sympy_note`` where it could not
    be simplified in time), model, method and target mean."""
    sympy = sympy_formula(formula)
    return {"allocation": allocation, "formula": formula, "sympy": None if sympy is None else sympy.text,
            **({"sympy_note": sympy.note} if sympy is not None and sympy.note else {}), "method": method,
            "target": target, "model": model, "layers": layers, "requested": [float(v) for v in requested],
            "measured": measured}


def write_record(folder: Path, record: dict) -> Path:
    path = Path(folder) / ALLOCATION_FILE
    write_json(path, record)
    return path


def read_record(source: str | Path) -> dict:
    """The record in ``source``: an ``allocation.json`` or a ``dsa prune`` folder holding one."""
    path = usable_path(source, "export")
    if path.is_dir():
        path = path / ALLOCATION_FILE
    kind = path_kind(path)
    if kind == "missing":
        raise UserError(f"{source}: no such file; give an {ALLOCATION_FILE} or a dsa prune --save folder")
    if kind != "a file":
        raise UserError(f"{path} is {kind}, not an {ALLOCATION_FILE}")
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    sparsities = record.get("requested") if isinstance(record, dict) else None
    if not isinstance(sparsities, list) or not sparsities or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= MAX_SPARSITY for v in sparsities):
        raise UserError(f"{path} is not an allocation record: 'requested' must be a list of sparsities in "
                        f"[0, {MAX_SPARSITY}]")
    if not isinstance(record.get("method"), str):
        raise UserError(f"{path} is not an allocation record: no 'method'")
    layers = record.get("layers")
    if layers is not None and not (isinstance(layers, list) and all(isinstance(n, str) for n in layers)):
        raise UserError(f"{path} is not an allocation record: 'layers' must be a list of block names")
    target = record.get("target")
    if target is not None and not (isinstance(target, (int, float)) and not isinstance(target, bool)
                                   and math.isfinite(target)):
        raise UserError(f"{path} is not an allocation record: 'target' must be a number")
    return record


def llmcompressor_recipe(record: dict) -> str:
    """A YAML recipe for llm-compressor's ``oneshot`` that prunes each decoder layer to its sparsity."""
    method = record["method"]
    if record.get("nm"):
        raise UserError(f"this allocation is in N:M patterns ({record['nm']}); N:M recipes for llm-compressor are "
                        f"not written yet: use --to json")
    modifier_name = METHODS[method].modifier if method in METHODS else None
    if modifier_name is None:
        have = ", ".join(name for name, m in METHODS.items() if m.modifier)
        raise UserError(f"llm-compressor has no one-shot {method} pruner with per-layer sparsities (its "
                        f"MagnitudePruningModifier takes one init/final sparsity on a training schedule); "
                        f"use --to json, or one of: {have}")
    sparsities = [float(v) for v in record["requested"]]
    layers = record.get("layers")
    if layers and len(layers) != len(sparsities):
        raise UserError(f"the record names {len(layers)} layers but holds {len(sparsities)} sparsities")
    modifier = {"sparsity": sparsities, "mask_structure": "0:0", "targets": list(layers or [DECODER_LAYERS])}
    applied = {"method": method, "target": record.get("target"), "model": _text(record.get("model")),
               "allocation": _text(record.get("sympy") or record.get("formula") or record.get("allocation"))}
    recipe = {"dsa_gp": applied,
              "sparsity_stage": {"sparsity_modifiers": {modifier_name: modifier}}}
    return RECIPE_HEADER + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=100)


RECIPE_HEADER = ("# llm-compressor recipe from dsa-gp: sparsity[i] prunes the i-th decoder layer in targets;\n"
                 "# dsa_gp: what was applied (llm-compressor reads only the *_stage keys). Apply with\n"
                 "#   from llmcompressor import oneshot; oneshot(model=..., dataset=..., recipe=\"this.yaml\")\n")


def _text(value) -> str | None:
    return None if value is None else str(value)


def export(record: dict, to: str) -> str:
    """The record as text in format ``to`` (one of :data:`FORMATS`)."""
    if to == "json":
        return json.dumps(record, indent=1)
    if to == "llmcompressor":
        return llmcompressor_recipe(record)
    raise UserError(f"unknown export format {to!r}; choose from {', '.join(FORMATS)}")


def export_command(source: str, to: str, out: Path | None = None) -> None:
    """``dsa export``: print the record in format ``to``, or write it to ``out`` (checked writable by the CLI)."""
    text = export(read_record(source), to)
    if out is None:
        print(text.rstrip("\n"))
        return
    try:
        out.write_text(text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        raise UserError(f"--out {out} could not be written ({exc.strerror})") from None
    print(f"wrote {out}")
