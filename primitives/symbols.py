"""SymPy building blocks: named functions with real-valued assumptions, so that automatic
canonicalisation can simplify e.g. ``log(exp(var(x)))`` to ``var(x)`` and ``Abs(std(x))`` to ``std(x)``."""
from __future__ import annotations

import functools

import sympy as sp


@functools.cache
def real_function(name: str, **assumptions) -> sp.FunctionClass:
    """An undefined SymPy function whose values are real (plus any extra assumptions)."""
    return sp.Function(name, real=True, **assumptions)
