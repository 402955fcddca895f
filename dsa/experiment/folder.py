"""The comparison folder's record (``compare.json``, beside it ``compare.md``): its one writer
(:func:`write_comparison`, atomic, after every row) and its one reader (:func:`read_saved`), and the checks that
turn a damaged record into a one-line error before any work (:func:`rows_problem`). Comparison folders are
shared like run folders (:mod:`dsa.run.folder`): what is read from one is untrusted."""
from __future__ import annotations

import json
import math
from pathlib import Path

from evaluators.files import read_json, write_atomic, write_json
from gp import SearchConfig

from dsa.errors import UserError
from dsa.run.folder import finite_number
from dsa.run.settings import MAX_SPARSITY, TEST_WINDOWS, EvaluatorSpec

FILE = "compare.json"
VERSION = 1


def identity(settings: dict) -> dict:
    """What ``--resume`` must find unchanged, from recorded :meth:`Comparison.settings`: the evaluator's
    resume identity (its RUNTIME fields left out, as a search's) and the search settings, read back
    through their own records (so settings recorded by an older version compare as they mean)."""
    return {"evaluator": EvaluatorSpec.from_dict(settings["evaluator"]).identity(),
            "gp": SearchConfig.from_dict(settings["gp"]).to_dict(), "direct": settings["direct"],
            **{k: settings[k] for k in ("level_step", "budget", "test_windows")}}


KINDS = ("dense", "baseline", "found", "gp", "random", "direct", "warm")  # what a row may be


def rows_problem(saved: dict, cuda: bool, test_windows: int | None) -> str | None:
    """What is wrong with a saved comparison's rows, in a few words (None: nothing): its version, a list of rows,
    and per row a printable unique name, a known kind, finite non-negative test NLLs as many as every other row's
    (and as the protocol's test windows where those are fixed), a validation value that is a number (not NaN),
    sparsities within [0, MAX_SPARSITY] and a counter below 2**63. Checked on ``--resume`` before any work:
    a resumed folder's rows enter every table and interval. ``test_windows``: the comparison's setting (None:
    the protocol's on ``cuda`` or not)."""
    if saved.get("version") != VERSION:
        return f"version {str(saved.get('version'))[:20]!r}, not {VERSION}"
    if not isinstance(saved["rows"], list):
        return "its rows are not a list"
    fixed = (TEST_WINDOWS["cuda" if cuda else "cpu"] if test_windows is None else test_windows) or None
    lengths, names = set(), set()
    for i, row in enumerate(saved["rows"]):
        where = f"row {i + 1}"
        if not isinstance(row, dict):
            return f"{where} is not an object"
        name, nlls = row.get("name"), row.get("test nlls")
        if not isinstance(name, str) or not name or len(name) > 400 or not name.isprintable():
            return f"{where} has no printable name"
        if name in names:
            return f"{where} repeats the name {name[:60]!r}"
        names.add(name)
        if row.get("kind") not in KINDS:
            return f"{where} has an unknown kind"
        if not _nlls_ok(nlls):
            return f"{where}'s test nlls are not finite numbers ≥ 0"
        lengths.add(len(nlls))
        if len(lengths) > 1 or (fixed is not None and len(nlls) != fixed):
            return f"{where} holds {len(nlls)} test NLLs, not as many as the others or the protocol's"
        if "c4 nlls" in row and not _nlls_ok(row["c4 nlls"]):
            return f"{where}'s c4 nlls are not finite numbers ≥ 0"
        value = row.get("val ppl")
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and value > 0 and not math.isnan(value)):
            return f"{where}'s val ppl is not a positive number"
        alloc = row.get("sparsities")
        if alloc is not None and not (isinstance(alloc, list) and alloc and all(
                finite_number(v) and 0 <= v <= MAX_SPARSITY for v in alloc)):
            return f"{where}'s sparsities are not numbers in [0, {MAX_SPARSITY}]"
        count = row.get("evaluations")
        if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and 0 <= count < 2**63):
            return f"{where}'s evaluations is not a count"
    return None


def _nlls_ok(values) -> bool:
    """Per-window NLLs as a row holds them: a non-empty list of finite numbers ≥ 0."""
    return isinstance(values, list) and bool(values) and all(finite_number(v) and v >= 0 for v in values)


def same(a: dict, b: dict) -> bool:
    """Two records equal as JSON data (a tuple as a list, a path as text)."""
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def read_saved(out: Path, verb: str) -> tuple[dict, EvaluatorSpec]:
    """(data, recorded evaluator settings) of ``out``'s compare.json, a bounded regular file
    (:func:`evaluators.files.read_json`) whose settings read back as records (the caller checks its rows,
    :func:`rows_problem`); UserError in one line ("cannot ``verb`` …") when it is damaged."""
    try:
        saved = read_json(out / FILE)
        list(saved["rows"]), identity(saved["settings"])
        spec = EvaluatorSpec.from_dict(saved["settings"]["evaluator"])
        spec.model.type_problems()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"cannot {verb} {out}: {FILE} is damaged ({type(exc).__name__})") from None
    return saved, spec


def write_comparison(out: Path, settings: dict, info: dict, rows: list[dict], markdown: str) -> None:
    """The record after a row: compare.json (settings, what was measured where, every row), then compare.md,
    each atomically; the folder is created with the first row (a failed start leaves none)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / FILE, {"version": VERSION, "settings": settings, "info": info, "rows": rows})
    write_atomic(out / "compare.md", markdown.encode())
