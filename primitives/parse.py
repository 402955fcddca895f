"""Parse the text of a tree (``dsa(t_atan(r_var(p_abslog(S))), 0.07)``) back into a ``PrimitiveTree``.

The grammar is the one DEAP prints: ``name(arg, arg, …)`` for a primitive, a bare name for a terminal,
a number for a constant. DEAP's ``PrimitiveTree.from_string`` ignores parentheses and commas and cannot
type numeric constants of custom types (the spread λ of a post-process); here a number becomes an
ephemeral constant of whatever type its slot expects, and must be finite and inside that type's bounds.

The text is untrusted (a user's ``--allocation``, a shared run folder): its height and size are checked
on the tokens, before the recursive descent, so that no nesting can exhaust Python's stack.
"""
from __future__ import annotations

import math
import re

from deap import gp

from .bounds import MAX_HEIGHT, MAX_SIZE
from .pset import CONSTANT_BOUNDS

TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
                   r"|(?P<punct>[(),]))")


MAX_CHARS_PER_NODE = 100  # a longer text is refused before it is tokenised


class FormulaError(ValueError):
    """The text is not a well-typed tree of this primitive set."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FormulaError(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse_tree(text: str, pset: gp.PrimitiveSetTyped, max_height: int = MAX_HEIGHT,
               max_size: int = MAX_SIZE) -> gp.PrimitiveTree:
    """The tree written in ``text``; FormulaError when it is not a well-typed tree of ``pset`` of at most
    ``max_height`` levels below the root and ``max_size`` nodes."""
    if len(text) > MAX_CHARS_PER_NODE * max_size:
        raise FormulaError(f"the formula is {len(text)} characters long; at most {MAX_CHARS_PER_NODE * max_size} "
                           f"are allowed")
    tokens = _tokens(text)
    if not tokens:
        raise FormulaError("empty formula")
    _check_shape(tokens, max_height, max_size)
    nodes: list = []
    end = _node(tokens, 0, pset.ret, pset, nodes)
    if end != len(tokens):
        raise FormulaError(f"unexpected {tokens[end][1]!r} after a complete formula")
    return gp.PrimitiveTree(nodes)


def _check_shape(tokens, max_height: int, max_size: int) -> None:
    """Height (the deepest nesting of parentheses) and size (names and numbers) of the tree ``tokens``
    write, checked before anything recurses."""
    depth = height = 0
    for _, token in tokens:
        depth += (token == "(") - (token == ")")
        height = max(height, depth)
    if height > max_height:
        raise FormulaError(f"the formula is nested {height} levels deep; at most {max_height} are allowed")
    size = sum(kind != "punct" for kind, _ in tokens)
    if size > max_size:
        raise FormulaError(f"the formula has {size} nodes; at most {max_size} are allowed")


def _expect(tokens, i: int, value: str, context: str) -> int:
    if i >= len(tokens):
        raise FormulaError(f"formula ends early: {value!r} missing {context}")
    if tokens[i][1] != value:
        raise FormulaError(f"expected {value!r} {context}, found {tokens[i][1]!r}")
    return i + 1


def _node(tokens, i: int, type_: type, pset, nodes: list) -> int:
    """Parse the subtree starting at token ``i`` (of type ``type_``) into ``nodes``; the next token index."""
    if i >= len(tokens):
        raise FormulaError(f"formula ends early: an argument of type {type_.__name__} is missing")
    kind, token = tokens[i]
    if kind == "number":
        nodes.append(_constant(token, type_, pset))
        return i + 1
    if kind != "name":
        raise FormulaError(f"unexpected {token!r} where a {type_.__name__} is expected")
    if token.lower() in ("nan", "inf", "infinity"):
        raise FormulaError(f"constant {token} is not a finite number")
    node = pset.mapping.get(token)
    if node is None or isinstance(node, gp.MetaEphemeral):
        known = ", ".join(sorted(k for k, v in pset.mapping.items() if not isinstance(v, gp.MetaEphemeral)))
        raise FormulaError(f"unknown name {token!r}; known names: {known}")
    if not issubclass(node.ret, type_):
        what = "returns" if isinstance(node, gp.Primitive) else "is a"
        raise FormulaError(f"{token} {what} {node.ret.__name__}, but {type_.__name__} is expected there")
    nodes.append(node)
    if not isinstance(node, gp.Primitive):
        return i + 1
    i = _expect(tokens, i + 1, "(", f"after {token}")
    for n, arg in enumerate(node.args):
        if n:
            if i < len(tokens) and tokens[i][1] == ")":
                raise FormulaError(f"{token} takes {node.arity} arguments: {node.arity - n} missing")
            i = _expect(tokens, i, ",", f"between the arguments of {token}")
        i = _node(tokens, i, arg, pset, nodes)
    if i < len(tokens) and tokens[i][1] == ",":
        raise FormulaError(f"unexpected extra argument to {token} (it takes {node.arity})")
    return _expect(tokens, i, ")", f"to close {token}(")


def _constant(token: str, type_: type, pset: gp.PrimitiveSetTyped) -> gp.Terminal:
    value = float(token)
    lo, hi = CONSTANT_BOUNDS.get(type_, (-math.inf, math.inf))
    if not (math.isfinite(value) and lo <= value <= hi):
        raise FormulaError(f"constant {token} is outside [{lo:g}, {hi:g}], the range of a {type_.__name__}")
    for term in pset.terminals.get(type_, []):
        if isinstance(term, gp.MetaEphemeral):
            node = term.__new__(term)  # skip __init__, which would draw a random value
            node.value = value
            return node
    raise FormulaError(f"a number ({token}) cannot stand where a {type_.__name__} is expected")
