"""The allocation record that ``dsa prune`` leaves in its folder (``allocation.json``), and its exports:
JSON, and a one-shot pruning recipe for llm-compressor (``dsa export SOURCE --to json|llmcompressor``).

llm-compressor's ``SparseGPTModifier`` and ``WandaPruningModifier`` (both ``SparsityModifierBase``)
take ``sparsity`` as a float or a list of floats; a list gives one sparsity per layer matched by
``targets``, in model order, and must have one entry per matched layer. The recipe therefore
targets the decoder blocks by name (``model.layers.0`` …), the same blocks as our allocation.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from primitives import Formula, build_pset, parse_tree

from .errors import UserError
from .runs import write_json

ALLOCATION_FILE = "allocation.json"
FORMATS = ("json", "llmcompressor")
LLMCOMPRESSOR_MODIFIERS = {"wanda": "WandaPruningModifier", "sparsegpt": "SparseGPTModifier"}
DECODER_LAYERS = r"re:model.layers.\d+$"  # targets for a record without block names (LLaMA-style models)


def sympy_text(tree_text: str | None) -> str | None:
    """The simplified SymPy formula of a tree in tree syntax (None for allocations without a formula)."""
    if tree_text is None:
        return None
    pset = build_pset()
    return Formula.of(parse_tree(tree_text, pset), pset).text


def allocation_record(*, allocation: str, formula: str | None, method: str, target: float, model: str,
                      requested: list[float], measured: list[float] | None = None,
                      layers: list[str] | None = None) -> dict:
    """Everything needed to reproduce a pruning: per-layer sparsities (``requested``; ``measured`` after
    pruning), the formula (tree syntax and simplified SymPy text), model, method and target mean."""
    return {"allocation": allocation, "formula": formula, "sympy": sympy_text(formula), "method": method,
            "target": target, "model": model, "layers": layers, "requested": [float(v) for v in requested],
            "measured": measured}


def write_record(folder: Path, record: dict) -> Path:
    path = Path(folder) / ALLOCATION_FILE
    write_json(path, record)
    return path


def read_record(source: str | Path) -> dict:
    """The record in ``source``: an ``allocation.json`` or a ``dsa prune`` folder holding one."""
    path = Path(source)
    if path.is_dir():
        path = path / ALLOCATION_FILE
    if not path.is_file():
        raise UserError(f"{source}: no such file; give an {ALLOCATION_FILE} or a dsa prune --save folder")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not JSON ({exc})") from None
    sparsities = record.get("requested") if isinstance(record, dict) else None
    if not isinstance(sparsities, list) or not sparsities or not all(
            isinstance(v, (int, float)) and 0.0 <= v < 1.0 for v in sparsities):
        raise UserError(f"{path} is not an allocation record: 'requested' must be a list of sparsities in [0, 1)")
    if not isinstance(record.get("method"), str):
        raise UserError(f"{path} is not an allocation record: no 'method'")
    return record


def llmcompressor_recipe(record: dict) -> str:
    """A YAML recipe for llm-compressor's ``oneshot`` that prunes each decoder layer to its sparsity."""
    method = record["method"]
    if method not in LLMCOMPRESSOR_MODIFIERS:
        raise UserError(f"llm-compressor has no one-shot {method} pruner with per-layer sparsities (its "
                        f"MagnitudePruningModifier takes one init/final sparsity on a training schedule); "
                        f"use --to json, or one of: {', '.join(LLMCOMPRESSOR_MODIFIERS)}")
    sparsities = [float(v) for v in record["requested"]]
    layers = record.get("layers")
    if layers and len(layers) != len(sparsities):
        raise UserError(f"the record names {len(layers)} layers but holds {len(sparsities)} sparsities")
    modifier = {"sparsity": sparsities, "mask_structure": "0:0", "targets": layers or [DECODER_LAYERS]}
    recipe = {"sparsity_stage": {"sparsity_modifiers": {LLMCOMPRESSOR_MODIFIERS[method]: modifier}}}
    formula = record.get("sympy") or record.get("formula") or record.get("allocation")
    header = [
        f"# llm-compressor recipe from dsa-gp: {method}, target mean sparsity {record.get('target')}, "
        f"model {record.get('model')}",
        f"# allocation: {formula}",
        "# sparsity[i] prunes the i-th decoder layer in targets; apply with",
        "#   from llmcompressor import oneshot; oneshot(model=..., dataset=..., recipe=\"this.yaml\")",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=100)


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
