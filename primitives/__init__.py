"""Typed primitive sets for allocation functions (and other GP tasks), each primitive one record:
name, types, torch implementation, SymPy form.

The names below load their module on first use (PEP 562), so that a light module of this package
(:mod:`primitives.bounds`) imports without torch, SymPy or DEAP: the command line's parser reads it.
"""
import importlib

# exported name → the module of this package that defines it
_HOMES = {
    "AllocationResult": "allocation", "LayerAllocator": "allocation", "relative_depth": "allocation",
    "stack_scores": "allocation",
    "AllocationContext": "postprocess", "project_to_target": "postprocess",
    "FormulaError": "parse", "parse_tree": "parse",
    "run": "program",
    "ALLOCATION_GROUPS": "pset", "GROUPS": "pset", "build_pset": "pset", "primitives": "pset", "stage_counts": "pset",
    "Prim": "record",
    "Formula": "symbolic", "evaluate_sympy": "symbolic", "simplify": "symbolic", "to_sympy": "symbolic",
    "Allocation": "types", "Scores": "types", "Spread": "types", "Temperature": "types", "Value": "types",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    try:  # a module of this package not imported yet
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
