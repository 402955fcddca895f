"""Typed primitive sets for allocation functions (and other GP tasks), each primitive one record:
name, types, torch implementation, SymPy form."""
from .allocation import AllocationResult, LayerAllocator, relative_depth, stack_scores
from .postprocess import AllocationContext, project_to_target
from .parse import FormulaError, parse_tree
from .program import run
from .pset import ALLOCATION_GROUPS, GROUPS, build_pset, primitives, stage_counts
from .record import Prim
from .symbolic import Formula, evaluate_sympy, simplify, to_sympy
from .types import Allocation, Scores, Spread, Temperature, Value

__all__ = [
    "ALLOCATION_GROUPS", "GROUPS", "FormulaError", "parse_tree", "Allocation", "AllocationContext", "AllocationResult", "Formula",
    "LayerAllocator", "Prim", "Scores", "Spread", "Temperature", "Value", "build_pset",
    "evaluate_sympy", "primitives", "project_to_target", "relative_depth", "run", "simplify",
    "stack_scores", "stage_counts", "to_sympy",
]
