"""The ``dsa`` command's flag types, which check every value as it is parsed (ranges by ``type=``, fixed sets
by ``choices=``) so that bad input fails before any work starts, and the flag groups several commands share
(model and data, fitness, the GP search), generated from the run settings' fields (:func:`add_spec_flags`).
:mod:`dsa.cli.parser` puts them together. Nothing here imports
torch, transformers or SymPy: ``--help`` answers at once."""
from __future__ import annotations

import argparse
from dataclasses import fields

from evaluators.errors import UserError
from evaluators.pruning.nm import parse_nm
from gp import ConfigError, SearchConfig
from gp.config import MAX_SEED, DirectConfig

from dsa.run.schema import flag_name, model_settings, nested
from dsa.run.settings import MAX_SPARSITY, METHODS, EvaluatorSpec

DEFAULTS = SearchConfig()
DIRECT = DirectConfig()
EVALUATOR = EvaluatorSpec()
SEARCHES = ("gp", "random", "direct", "warm")  # dsa compare's searches
# what the direct search has no use for: the tree search's settings that the direct search's config lacks
DIRECT_FIELDS = {f.name for f in fields(DirectConfig)}
GP_ONLY = (*(flag_name(f) for f in fields(SearchConfig) if "help" in f.metadata and f.name not in DIRECT_FIELDS),
           "seed_baselines")
DIRECT_ONLY = ("max_level", "level_step", "init")
# what the synthetic task has no use for: every model, data, pruning and fitness setting but the ones it reads
# (derived from the specs' fields), and the baselines
LLM_ONLY = (*model_settings(EvaluatorSpec), "baselines")


def _number(kind, text: str, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def nm_pattern(text: str) -> str:
    """``M`` (mixed N:M with a fixed M: N per block) or ``N:M`` (dense or N:M per block)."""
    try:
        parse_nm(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def sparsity(text: str) -> float:
    value = _number(float, text, f"a sparsity in (0, {MAX_SPARSITY}]")
    if not 0.0 < value <= MAX_SPARSITY:  # also rejects nan
        raise argparse.ArgumentTypeError(f"sparsity must be in (0, {MAX_SPARSITY}], got {text}")
    return value


def probability(text: str) -> float:
    value = _number(float, text, "a probability in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def real(text: str) -> float:
    return _number(float, text, "a number")


def positive_int(text: str) -> int:
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(int, text, "an integer ≥ 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


def seed(text: str) -> int:
    value = _number(int, text, f"a seed in [0, {MAX_SEED}]")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be in [0, {MAX_SEED}], got {value}")
    return value


def stages(text: str) -> tuple:
    """"1:4,all:1" → ((1, 4), (None, 1)): validation windows (all = every window) and survivors per step."""
    out = []
    for item in text.split(","):
        windows, _, survivors = item.strip().partition(":")
        try:
            out.append((None if windows == "all" else int(windows), int(survivors)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"stages are windows:survivors pairs, e.g. 1:4,all:1; got {text!r}") from None
    try:
        DirectConfig(stages=tuple(out))  # the shape every space needs: growing windows, shrinking survivors
    except ConfigError as exc:
        if "decrease to 1" not in str(exc):  # a formula search's last stage keeps population − elitism
            raise argparse.ArgumentTypeError(str(exc)) from None
    return tuple(out)


def items(text: str, what: str) -> list[str]:
    """The items of a comma-separated flag value, stripped; an empty one ("0,,1", "uniform,") is refused,
    not dropped."""
    out = [t.strip() for t in text.split(",")]
    if not all(out):
        raise argparse.ArgumentTypeError(f"expected {what}, comma-separated without an empty item, got {text!r}")
    return out


def seed_list(text: str) -> tuple[int, ...]:
    values = tuple(seed(t) for t in items(text, "distinct seeds"))
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct seeds, comma-separated, got {text!r}")
    return values


def search_list(text: str) -> tuple[str, ...]:
    names = tuple(items(text, f"{', '.join(SEARCHES)} or none"))
    if names == ("none",):
        return ()
    bad = [n for n in names if n not in SEARCHES] + [n for i, n in enumerate(names) if n in names[:i]]
    if bad:
        raise argparse.ArgumentTypeError(f"expected {', '.join(SEARCHES)} (comma-separated, each once) or none, "
                                         f"got {text!r}")
    return names


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a non-empty value")
    return text


def name_list(text: str) -> str:
    """Comma-separated names (``--model A,B``), none of them empty."""
    if not all(item.strip() for item in text.split(",")):
        raise argparse.ArgumentTypeError(f"expected comma-separated names without an empty one, got {text!r}")
    return text


def baseline_list(text: str) -> str:
    from evaluators.baselines import BASELINES
    names = items(text, "baselines")
    unknown = [n for n in names if n not in BASELINES]
    if unknown or "uniform" not in names:
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(BASELINES)} holding uniform; "
                                         f"got {text!r}")
    return ",".join(names)


def method_list(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(","))
    bad = [m for m in names if m not in METHODS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(METHODS)}, comma-separated)")
    return names


def sparsity_list(text: str) -> tuple[float, ...]:
    return tuple(sparsity(t.strip()) for t in text.split(","))


def count_or_all(text: str) -> int | None:
    """An integer ≥ 1, or 0 for "all" (None)."""
    return nonnegative_int(text) or None


# how the command line reads a setting of each kind (dsa.run.schema.setting's ``kind``, ``many``): argparse
# types that check the value as it is parsed
KINDS = {"text": nonempty, "count": positive_int, "count0": nonnegative_int, "count-or-all": count_or_all,
         "seed": seed, "sparsity": sparsity, "nm": nm_pattern, "probability": probability, "real": real,
         "names": name_list, "methods": method_list, "sparsities": sparsity_list}
MANY = " (comma-separated: one formula searched for every combination at once)"


def add_spec_flags(g, spec: type, sections: tuple[str, ...], lists: bool = False) -> None:
    """One flag per field of ``spec`` (nested specs included) in ``sections`` (:data:`dsa.run.schema.SECTIONS`,
    "search", "seed"), generated from the field: its name, default, help, kind and choices
    (:func:`dsa.run.schema.setting`, :func:`gp.config.flag`).
    ``lists``: the settings a multi-task search takes several of are comma-separated lists."""
    for f in fields(spec):
        meta = f.metadata
        if (sub := nested(f)) is not None:
            add_spec_flags(g, sub, sections, lists)
            continue
        if "help" not in meta or meta["section"] not in sections:
            continue
        default = meta.get("flag_default", f.default)
        many = lists and "many" in meta
        choices = f" (from {', '.join(meta['choices'])})" if many and "choices" in meta else ""
        kwargs = {"help": meta["help"].replace("{default}", str(default)) + choices + (MANY if many else ""),
                  "default": (default,) if many and default is not None else default}
        if meta["kind"] in ("switch", "off-switch"):  # --dedup, --no-cache: given or not
            kwargs = {"help": kwargs["help"], "action": "store_true"}
        elif "choices" in meta and not many:
            kwargs["choices"] = meta["choices"]
        else:
            kwargs["type"] = KINDS[meta["many"] if many else meta["kind"]]
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        g.add_argument("--" + flag_name(f).replace("_", "-"), **kwargs)


def add_model_args(p: argparse.ArgumentParser, *, pruning: bool = True, calibration: bool | None = None,
                   lists: bool = False) -> None:
    """The model and data flags (``dsa search/prune/eval`` and the benchmark scripts), with the calibration
    sample's and the pruner's where ``calibration`` / ``pruning`` (calibration: as pruning unless given);
    ``lists``: --model, --method and --sparsity take comma-separated lists (a multi-task search)."""
    sections = ("data", *(("calibration",) if (pruning if calibration is None else calibration) else ()),
                *(("pruning",) if pruning else ()))
    add_spec_flags(p.add_argument_group("model and data"), EvaluatorSpec, sections, lists)


def add_fitness_args(s: argparse.ArgumentParser) -> None:
    """What defines the search's fitness beyond the model and data (``dsa search`` and ``dsa compare``)."""
    add_spec_flags(s, EvaluatorSpec, ("fitness",))


def add_gp_args(s: argparse.ArgumentParser):
    """The GP search's settings (``dsa search`` and ``dsa compare``), generated from :class:`gp.SearchConfig`'s
    fields, then --seed-baselines; returns the group for more flags."""
    g = s.add_argument_group("search")
    add_spec_flags(g, SearchConfig, ("search",))
    g.add_argument("--seed-baselines", action="store_true",
                   help="start the population with the baselines' formulas (OWL, DSA's graph, DLP's mean, a "
                        "linear depth ramp as ATP) instead of random trees only")
    return g
