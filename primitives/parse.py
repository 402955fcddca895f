"""Parse the text of a tree (``dsa(t_atan(r_var(p_abslog(S))), 0.07)``) back into a ``PrimitiveTree``.

DEAP's ``PrimitiveTree.from_string`` cannot type numeric constants of custom types (the spread λ of a
post-process); here a number becomes an ephemeral constant of whatever type its slot expects.
"""
from __future__ import annotations

import re

from deap import gp


class FormulaError(ValueError):
    """The text is not a well-typed tree of this primitive set."""


def parse_tree(text: str, pset: gp.PrimitiveSetTyped) -> gp.PrimitiveTree:
    tokens = [t for t in re.split(r"[\s(),]+", text.strip()) if t]
    if not tokens:
        raise FormulaError("empty formula")
    nodes, expected = [], [pset.ret]
    for token in tokens:
        if not expected:
            raise FormulaError(f"unexpected {token!r} after a complete formula")
        type_ = expected.pop()
        node = pset.mapping.get(token)
        if isinstance(node, gp.Primitive):
            if not issubclass(node.ret, type_):
                raise FormulaError(f"{token} returns {node.ret.__name__}, but {type_.__name__} is expected there")
            expected.extend(reversed(node.args))
            nodes.append(node)
        elif node is not None:
            if not issubclass(node.ret, type_):
                raise FormulaError(f"{token} is a {node.ret.__name__}, but {type_.__name__} is expected there")
            nodes.append(node)
        else:
            nodes.append(_constant(token, type_, pset))
    if expected:
        raise FormulaError(f"formula ends early: {len(expected)} argument(s) missing")
    return gp.PrimitiveTree(nodes)


def _constant(token: str, type_: type, pset: gp.PrimitiveSetTyped) -> gp.Terminal:
    try:
        value = float(token)
    except ValueError:
        known = ", ".join(sorted(k for k, v in pset.mapping.items() if not isinstance(v, gp.MetaEphemeral)))
        raise FormulaError(f"unknown name {token!r}; known names: {known}") from None
    for term in pset.terminals.get(type_, []):
        if isinstance(term, gp.MetaEphemeral):
            node = term.__new__(term)  # skip __init__, which would draw a random value
            node.value = value
            return node
    raise FormulaError(f"a number ({token}) cannot stand where a {type_.__name__} is expected")
