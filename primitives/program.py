"""Evaluate a DEAP ``PrimitiveTree`` built from primitive records on tensors.

A small recursive interpreter rather than DEAP's ``compile`` (which ``eval``s a lambda string): it
memoises cacheable subtrees (reductions) across candidates and passes the allocation context to
post-processes.
"""
from __future__ import annotations

from typing import Any

import torch
from deap import gp

from .types import Value


def _terminal(node: gp.Terminal, inputs: dict[str, Any]):
    if isinstance(node.value, str) and node.value in inputs:
        return inputs[node.value]
    if node.ret is Value:
        return torch.tensor(float(node.value), dtype=torch.float64)
    return float(node.value)


def run(tree: gp.PrimitiveTree, pset: gp.PrimitiveSetTyped, inputs: dict[str, Any], ctx=None,
        cache: dict | None = None, start: int = 0):
    """Value of the subtree of ``tree`` rooted at ``start``.

    ``inputs`` maps argument names to tensors; ``cache`` (a dict kept across calls with the same
    inputs) memoises cacheable subtrees by their text.
    """
    value, _ = _run(tree, start, pset.records, inputs, ctx, cache)
    return value


def _run(tree, i, records, inputs, ctx, cache):
    node = tree[i]
    if not isinstance(node, gp.Primitive):
        return _terminal(node, inputs), i + 1
    rec = records[node.name]
    key = None
    if rec.cache and cache is not None:
        end = tree.searchSubtree(i).stop
        key = str(gp.PrimitiveTree(tree[i:end]))
        if key in cache:
            return cache[key], end
    args, j = [], i + 1
    for _ in range(node.arity):
        value, j = _run(tree, j, records, inputs, ctx, cache)
        args.append(value)
    out = rec.torch(*args, ctx) if rec.needs_context else rec.torch(*args)
    if key is not None:
        cache[key] = out
    return out, j
