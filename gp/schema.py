"""What a checkpoint may hold: every field a search restores from ``checkpoint.json``, checked in full
before anything is restored or written. Run folders are shared between users, so a checkpoint is
untrusted input; one that passes these checks restores without error and continues the run as saved.

Checked: types, ranges and lengths; numbers finite (a fitness may also be the engine's ``WORST``),
counters below 2**63;
trees that parse within the run's limits; direct-search levels within ±max_level that sum to 0 (level
switches keep the target mean); the generation within [0, generations]; a logbook row per generation;
random states that a fresh generator accepts. A failure is a :class:`~gp.checkpoint.CheckpointError`
naming the file and the first bad field.
"""
from __future__ import annotations

import base64
import binascii
import math
import random
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import CheckpointError
from .problem import WORST

MT_WORDS = 624  # words of a Mersenne Twister state (Python's, NumPy's)
TORCH_STATE_BYTES = torch.get_rng_state().numel()
KEY_DEPTH = 3  # cache keys: rounded outputs, (output, windows) pairs, one output per task
MAX_COUNT = 2**63 - 1  # the largest counter (generation, evaluations, cache hits) a checkpoint may hold


def check_search(path, state: dict, config, parse: Callable[[str], Any], n_cases: int = 0) -> None:
    """A GP search's checkpoint (:class:`~gp.search.Search`) against its ``config`` (a
    :class:`~gp.SearchConfig`); ``parse(text)`` gives the tree, ValueError for a text that is not a tree
    of the run's grammar within its limits; ``n_cases``: the problem's cases (0: not known yet)."""
    _named(path, _search, state, config, parse, n_cases)


def check_direct(path, state: dict, config, space=None) -> None:
    """A direct search's checkpoint (:class:`~gp.direct.DirectSearch`) against its ``config``; with
    ``space`` (a :class:`~gp.direct.IntegerSpace`), also the vector length and each coordinate's bounds."""
    _named(path, _direct, state, config, space)


def _named(path, check, *args) -> None:
    try:
        check(*args)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is damaged: {exc}") from None


# --- the two kinds of checkpoint ------------------------------------------------------------------------

def _search(state: dict, config, parse, n_cases: int) -> None:
    gen = _generation(state)
    objectives = len(config.objectives)
    shapes: set = set()  # every output has the same shape (layers; tasks and their layers)
    scored = _cases_scored(state, config, gen, n_cases)
    for i, row in enumerate(_list(state.get("population"), "population", config.population, config.population)):
        _individual(row, f"population[{i}]", objectives, parse, shapes, scored=False)
        if config.selection == "lexicase" or config.resample_windows:
            _losses(row.get("cases"), f"population[{i}].cases", scored, row.get("fitness"))
    for i, row in enumerate(_list(state.get("hof"), "hof", 1, config.hof_size)):
        _individual(row, f"hof[{i}]", objectives, parse, shapes, scored=True)
    front = state.get("front")
    if objectives > 1:
        for i, row in enumerate(_list(front, "front")):
            _individual(row, f"front[{i}]", objectives, parse, shapes, scored=True)
    elif front is not None:
        _fail("front", "must be null in a single-objective run")
    _logbook(state.get("logbook"), gen)
    cache = _dict(state.get("cache"), "cache")
    for key, value in _dict(cache.get("by_text"), "cache.by_text").items():
        _fitness(value, f"cache.by_text[{_short(key)}]")
    for i, pair in enumerate(_list(cache.get("by_output"), "cache.by_output")):
        key, value = _list(pair, f"cache.by_output[{i}]", 2, 2)
        _key(key, f"cache.by_output[{i}][0]", KEY_DEPTH)
        _fitness(value, f"cache.by_output[{i}][1]")
    for i, pair in enumerate(_list(cache.get("cases", []), "cache.cases")):
        key, losses = _list(pair, f"cache.cases[{i}]", 2, 2)
        _key(key, f"cache.cases[{i}][0]", KEY_DEPTH)
        _numbers(losses, f"cache.cases[{i}][1]")
    for i, key in enumerate(_list(cache.get("seen", []), "cache.seen")):
        if not isinstance(key, str):
            _key(key, f"cache.seen[{i}]", KEY_DEPTH)
    for name in ("text_hits", "output_hits", "misses"):
        _integer(cache.get(name), f"cache.{name}")
    _integer(state.get("evaluations"), "evaluations")
    _integer(state.get("partial_evaluations", 0), "partial_evaluations")
    _rng(state.get("rng"))


def _cases_scored(state: dict, config, gen: int, n_cases: int) -> int | None:
    """Resampled cases: the reference's losses (one per case of the pool) and each generation's draw
    (``resample_windows`` distinct cases of the pool); how many losses a scored individual holds (None:
    the pool's, not known here)."""
    if not config.resample_windows:
        return n_cases or None
    reference = state.get("reference")
    if reference is not None:
        pool = len(_numbers(reference, "reference"))
        if n_cases and pool != n_cases:
            _fail("reference", f"holds {pool} losses, not one per case ({n_cases})")
    pool = n_cases or (len(reference) if reference is not None else None)
    for i, drawn in enumerate(_list(state.get("windows"), "windows", gen + 1, gen + 1)):
        drawn = _list(drawn, f"windows[{i}]", config.resample_windows, config.resample_windows)
        for w in drawn:
            _integer(w, f"windows[{i}]", 0, None if pool is None else pool - 1)
        if drawn != sorted(set(drawn)):
            _fail(f"windows[{i}]", "must be distinct cases in increasing order")
    return config.resample_windows


def _losses(value, where: str, count: int | None, fitness) -> None:
    """An individual's per-case losses: null (invalid, or not scored), or finite numbers, ``count`` of them."""
    if value is None:
        return
    _list(value, where, count or 1, count)
    _numbers(value, where)
    if fitness is None:
        _fail(where, "belong to an individual without a fitness")


def _direct(state: dict, config, space) -> None:
    gen = _generation(state)
    parent = _levels(state.get("parent"), "parent", config.max_level, space, None)
    for i, pair in enumerate(_list(state.get("hof"), "hof", 1, config.hof_size)):
        levels, value = _list(pair, f"hof[{i}]", 2, 2)
        _levels(levels, f"hof[{i}][0]", config.max_level, space, len(parent))
        _fitness(value, f"hof[{i}][1]")
    _logbook(state.get("logbook"), gen)
    for i, entry in enumerate(_list(state.get("cache"), "cache")):
        key, windows, value = _list(entry, f"cache[{i}]", 3, 3)
        for value_ in _list(key, f"cache[{i}][0]", len(parent), len(parent)):
            _number(value_, f"cache[{i}][0]")
        if windows is not None:
            _integer(windows, f"cache[{i}][1]", 1)
        _fitness(value, f"cache[{i}][2]")
    for name in ("hits", "evaluations", "windows_used"):
        _integer(state.get(name), name)
    _rng(state.get("rng"))


# --- fields ------------------------------------------------------------------------------------------

def _generation(state: dict) -> int:
    """The checkpoint's generation, within [0, the generations its run was set to when it was saved]."""
    generations = _integer(state["config"].get("generations"), "config.generations")
    return _integer(state.get("gen"), "gen", 0, generations)


def _individual(row, where: str, objectives: int, parse, shapes: set, scored: bool) -> None:
    row = _dict(row, where)
    text = row.get("tree")
    if not isinstance(text, str):
        _fail(f"{where}.tree", f"must be a tree as text, got {_short(text)}")
    try:
        parse(text)
    except ValueError as exc:
        _fail(f"{where}.tree", f"is not a tree of this run ({exc})")
    _output(row.get("output"), f"{where}.output", shapes)
    fitness = row.get("fitness")
    if fitness is None and not scored:
        return
    for value in _list(fitness, f"{where}.fitness", objectives, objectives):
        _fitness(value, f"{where}.fitness")


def _output(value, where: str, shapes: set) -> None:
    """null, a list of finite numbers, or (multi-task) an object of such lists; the same shape everywhere."""
    if value is None:
        return
    if isinstance(value, dict):
        shape = tuple((name, len(_numbers(v, f"{where}[{_short(name)}]"))) for name, v in value.items())
    else:
        shape = len(_numbers(value, where))
    shapes.add(shape)
    if len(shapes) > 1:
        _fail(where, "has another shape than the other outputs")


def _levels(value, where: str, max_level: int, space, length: int | None) -> list[int]:
    n = len(space) if space is not None else length
    levels = _list(value, where, n or 1, n)
    for layer, level in enumerate(levels):
        low, high = (space.low[layer], space.high[layer]) if space is not None else (-max_level, max_level)
        _integer(level, f"{where}[{layer}]", low, high)
    if sum(levels) != 0:
        _fail(where, "must sum to 0 (level switches keep the sum of the levels)")
    return levels


def _logbook(rows, gen: int) -> None:
    """One row per generation 0 … gen, each of numbers, all with the first row's columns."""
    columns = None
    for i, row in enumerate(_list(rows, "logbook", gen + 1, gen + 1)):
        row = _dict(row, f"logbook[{i}]")
        if columns is None:
            columns = list(row)
        elif list(row) != columns:
            _fail(f"logbook[{i}]", "has other columns than logbook[0]")
        for name, value in row.items():
            _number(value, f"logbook[{i}].{_short(name)}", worst=True)
        if row.get("gen") != i:
            _fail(f"logbook[{i}].gen", f"must be {i}, got {_short(row.get('gen'))}")


def _key(value, where: str, depth: int) -> None:
    """A cache key: a list of finite numbers and (``depth`` − 1 levels deep) such lists."""
    for item in _list(value, where):
        if isinstance(item, list) and depth > 1:
            _key(item, where, depth - 1)
        else:
            _number(item, where)


def _rng(value) -> None:
    """Python's, NumPy's and torch's states (:func:`gp.checkpoint.rng_state`), each set on a fresh
    generator here, so that restoring the global ones cannot fail."""
    state = _dict(value, "rng")
    version, internal, gauss = _list(state.get("random"), "rng.random", 3, 3)
    words = _list(internal, "rng.random[1]", MT_WORDS + 1, MT_WORDS + 1)
    for word in words[:-1]:
        _integer(word, "rng.random[1]", 0, 2**32 - 1)
    _integer(words[-1], "rng.random[1] (position)", 0, MT_WORDS)
    if gauss is not None:
        _number(gauss, "rng.random[2]")
    name, keys, pos, has_gauss, cached = _list(state.get("numpy"), "rng.numpy", 5, 5)
    for word in _list(keys, "rng.numpy[1]", MT_WORDS, MT_WORDS):
        _integer(word, "rng.numpy[1]", 0, 2**32 - 1)
    _integer(pos, "rng.numpy[2]", 0, MT_WORDS)
    _integer(has_gauss, "rng.numpy[3]", 0, 1)
    _number(cached, "rng.numpy[4]")
    text = state.get("torch")
    if not isinstance(text, str) or len(text) > 2 * TORCH_STATE_BYTES:
        _fail("rng.torch", "must be a torch random state in base64")
    try:
        raw = base64.b64decode(text, validate=True)
        if len(raw) != TORCH_STATE_BYTES:
            raise ValueError(f"{len(raw)} bytes instead of {TORCH_STATE_BYTES}")
        random.Random().setstate((version, tuple(words), gauss))
        np.random.RandomState().set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.Generator().set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    except (binascii.Error, TypeError, ValueError, OverflowError, RuntimeError) as exc:
        _fail("rng", f"is not a random state that can be restored ({type(exc).__name__}: {_short(str(exc))})")


# --- values ------------------------------------------------------------------------------------------

def _fail(where: str, what: str):
    raise CheckpointError(f"{where} {what}")


def _short(value, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _dict(value, where: str) -> dict:
    if not isinstance(value, dict):
        _fail(where, f"must be an object, got {_short(value)}")
    return value


def _list(value, where: str, lo: int = 0, hi: int | None = None) -> list:
    if not isinstance(value, list) or len(value) < lo or (hi is not None and len(value) > hi):
        size = f"{lo}" if lo == hi else f"{lo} to {'any number' if hi is None else hi}"
        got = f"{len(value)} items" if isinstance(value, list) else _short(value)
        _fail(where, f"must be a list of {size} items, got {got}")
    return value


def _integer(value, where: str, lo: int = 0, hi: int | None = None) -> int:
    """An integer in [lo, hi]; ``hi`` None: a counter, below 2**63."""
    hi = MAX_COUNT if hi is None else hi
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _fail(where, f"must be an integer in [{lo}, {'2**63 − 1' if hi == MAX_COUNT else hi}], got {_short(value)}")
    return value


def finite_number(value) -> bool:
    """A JSON number (not a boolean) that is finite; an integer too large for a float is not (JSON
    allows any number of digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(value, where: str, worst: bool = False) -> float:
    """A finite number; with ``worst``, +∞ too (the engine's WORST)."""
    ok = finite_number(value) or (worst and isinstance(value, float) and value == WORST)
    if not ok:
        _fail(where, f"must be a finite number{' or the worst fitness (Infinity)' if worst else ''}, "
                     f"got {_short(value)}")
    return value


def _fitness(value, where: str) -> float:
    return _number(value, where, worst=True)


def _numbers(value, where: str) -> list:
    values = _list(value, where)
    for v in values:
        _number(v, where)
    return values
