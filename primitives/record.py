"""One record per primitive: its name, types, torch implementation and SymPy form."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Prim:
    """A typed primitive.

    ``torch`` computes it on tensors; ``sympy`` builds its symbolic form from symbolic arguments.
    ``cache``: results may be memoised per subtree (reductions: the expensive pass over all scores).
    ``needs_context``: ``torch`` takes the :class:`~primitives.allocation.AllocationContext` last.
    """

    name: str
    stage: str
    args: tuple[type, ...]
    ret: type
    torch: Callable
    sympy: Callable
    doc: str = ""
    cache: bool = False
    needs_context: bool = False

    @property
    def arity(self) -> int:
        return len(self.args)
