"""Trees ↔ SymPy: symbolic form, simplification, printing, and numeric evaluation
of a (simplified) SymPy expression with torch, to check that simplification kept the meaning.

``sympy.simplify`` can take minutes on a short chain of transforms (``sin(cos(tan(asin(…))))``), and
formulas come from users and shared run folders: it runs under a CPU-time limit
(:data:`SIMPLIFY_SECONDS`, a virtual timer that interrupts it in the main thread), and a formula it
does not finish is kept as built, marked so (:attr:`Formula.note`)."""
from __future__ import annotations

import math
import signal
import threading
from dataclasses import dataclass
from typing import Any

import sympy as sp
import torch
from deap import gp

MAX_SIMPLIFY_OPS = 80  # sympy.simplify is slow on large expressions; larger ones are kept as built
SIMPLIFY_SECONDS = 3.0  # CPU seconds that sympy.simplify may take on one formula


def to_sympy(tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped, start: int = 0) -> sp.Expr:
    """The SymPy form of the subtree at ``start`` (automatic canonicalisation only, no simplify)."""
    expr, _ = _to_sympy(tree, start, pset)
    return expr


def _to_sympy(tree, i, pset):
    node = tree[i]
    if not isinstance(node, gp.Primitive):
        if isinstance(node.value, str) and node.value in pset.symbols:
            return pset.symbols[node.value], i + 1
        return sp.Float(float(node.value)), i + 1
    args, j = [], i + 1
    for _ in range(node.arity):
        a, j = _to_sympy(tree, j, pset)
        args.append(a)
    return pset.records[node.name].sympy(*args), j


class _OutOfTime(BaseException):  # not an Exception: SymPy's own ``except Exception`` must not catch it
    pass


def simplify(expr: sp.Expr) -> sp.Expr:
    """``sympy.simplify`` for expressions of moderate size, the expression itself otherwise (also when
    it cannot be simplified in time: :func:`simplify_bounded` says so)."""
    return simplify_bounded(expr)[0]


def simplify_bounded(expr: sp.Expr, seconds: float = SIMPLIFY_SECONDS) -> tuple[sp.Expr, str | None]:
    """(the simpler of ``expr`` and ``sympy.simplify(expr)``, None; or ``expr`` and why it was not
    simplified: its simplification took over ``seconds`` of CPU time, or no timer could bound it (outside
    the main thread, or on a system without virtual timers)). Expressions of over
    :data:`MAX_SIMPLIFY_OPS` operations are kept as built by design, without a note."""
    if sp.count_ops(expr) > MAX_SIMPLIFY_OPS:
        return expr, None
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGVTALRM"):
        return expr, "not simplified: no time limit can be set here; shown as built"
    try:
        simpler = _within(seconds, sp.simplify, expr)
    except _OutOfTime:
        return expr, f"not simplified: SymPy took over {seconds:g} s; shown as built"
    except Exception:  # SymPy can fail on exotic forms; the unsimplified form is still right
        return expr, None
    return (simpler if sp.count_ops(simpler) <= sp.count_ops(expr) else expr), None


def _within(seconds: float, fn, *args):
    """``fn(*args)`` in the main thread, interrupted by _OutOfTime after ``seconds`` of this process's
    CPU time (SIGVTALRM: the wall clock's SIGALRM is left to callers). A virtual timer a caller had set
    is set again after."""
    def out_of_time(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGVTALRM, out_of_time)
    outer, _ = signal.getitimer(signal.ITIMER_VIRTUAL)
    try:
        signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    finally:
        signal.signal(signal.SIGVTALRM, signal.SIG_DFL if previous is None else previous)
        if outer:
            signal.setitimer(signal.ITIMER_VIRTUAL, outer)


@dataclass(frozen=True)
class Formula:
    """A tree's simplified formula in three notations; ``note`` says why it is shown as built where
    simplification could not run to its end (the formula then computes the same, unsimplified)."""

    expr: sp.Expr
    note: str | None = None

    @classmethod
    def of(cls, tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped) -> "Formula":
        return cls(*simplify_bounded(to_sympy(tree, pset)))

    @property
    def simplified(self) -> bool:
        return self.note is None

    @property
    def text(self) -> str:
        return sp.sstr(_rounded(self.expr), full_prec=False)

    @property
    def pretty(self) -> str:
        return sp.pretty(_rounded(self.expr), use_unicode=True)

    @property
    def latex(self) -> str:
        return sp.latex(_rounded(self.expr))


def _rounded(expr: sp.Expr, digits: int = 4) -> sp.Expr:
    """``expr`` with its numbers shown to ``digits`` significant digits (the tree's constants are
    kept at full precision in the expression itself, so that it computes what the tree computes)."""
    expr = sp.N(expr, digits)
    return expr.xreplace({f: sp.Float(f, digits) for f in expr.atoms(sp.Float)})


# --- numeric evaluation of SymPy expressions (mathematical, unprotected semantics) ---------------

_TORCH_FUNCS = {
    sp.exp: torch.exp, sp.log: torch.log, sp.Abs: torch.abs, sp.sin: torch.sin, sp.cos: torch.cos,
    sp.tan: torch.tan, sp.asin: torch.asin, sp.acos: torch.acos, sp.atan: torch.atan,
    sp.tanh: torch.tanh, sp.sign: torch.sign, sp.sinh: torch.sinh, sp.cosh: torch.cosh,
    # simplify may wrap a real value in re()/im(); the values here are real (or nan where they are not)
    sp.re: lambda x: x, sp.im: lambda x: x * 0,
}


class UnsupportedExpression(ValueError):
    """The expression holds a SymPy node this evaluator does not know."""


def evaluate_sympy(expr: sp.Expr, pset: gp.PrimitiveSetTyped, inputs: dict[str, Any], ctx=None):
    """Evaluate ``expr`` with plain torch maths (no domain protection) and the records' named functions.

    Used to check that a simplified formula computes what its tree computes, where the maths is defined.
    """
    symbols = {sym: inputs[name] for name, sym in pset.symbols.items() if name in inputs}
    named = {name: rec for name, rec in ((r.sympy.__name__, r) for r in pset.records.values()
                                         if isinstance(r.sympy, sp.FunctionClass))}
    return _eval(expr, symbols, named, ctx)


def _eval(e, symbols, named, ctx):
    if e in symbols:
        return symbols[e]
    if e.is_Number or e in (sp.pi, sp.E):
        return torch.tensor(float(e), dtype=torch.float64)
    if e.is_number:  # any other constant (I, zoo, log(-1), …): its value, nan where it is not real
        v = complex(e)
        return torch.tensor(v.real if v.imag == 0 else math.nan, dtype=torch.float64)
    args = [_eval(a, symbols, named, ctx) for a in e.args]
    if e.is_Add:
        return _fold(torch.add, args)
    if e.is_Mul:
        return _fold(torch.mul, args)
    if e.is_Pow:
        base, exponent = args
        return torch.pow(torch.as_tensor(base, dtype=_dtype(base)), exponent)
    if e.func in _TORCH_FUNCS:
        return _TORCH_FUNCS[e.func](args[0])
    name = getattr(e.func, "__name__", None)
    if name in named:
        rec = named[name]
        if rec.needs_context:
            return rec.torch(args[0], float(args[1]), ctx)
        return rec.torch(*args)
    raise UnsupportedExpression(f"cannot evaluate {e.func} in {e}")


def _fold(op, args):
    out = args[0]
    for a in args[1:]:
        out = op(out, a)
    return out


def _dtype(x):
    return x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float64
