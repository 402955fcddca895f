"""The LLM side of the tool: the search's fitness evaluator, ``dsa prune`` and ``dsa eval``. Every
function here takes typed settings (:mod:`dsa.run.settings`), never command-line arguments."""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from evaluators.data.calibration import collect_stats
from evaluators.data.text import calibration_batch, load_split, marker_tokens, token_windows
from evaluators.fitness.evaluator import FITNESSES, PruningEvaluator
from evaluators.fitness.intervals import perplexity_interval
from evaluators.fitness.perplexity import window_nlls
from evaluators.models.compressed import sparsity_compressor
from evaluators.models.loading import block_names, default_model, load_model
from evaluators.models.saving import save_pruned
from evaluators.pruning.blockscores import BlockScores, block_scores
from evaluators.pruning.methods import get_method
from evaluators.pruning.nm import on_pattern
from evaluators.pruning.pruners import measured_sparsity, prune
from primitives import LayerAllocator

from dsa.errors import UserError
from dsa.outputs.exports import allocation_record, write_record
from dsa.run.allocations import allocate, baseline_candidates, needs_wanda_metric
from dsa.run.schema import flag_name
from dsa.run.settings import DEFAULT_VAL_WINDOWS, DataSpec, EvaluatorSpec, ModelSpec, PruneSpec


def model_name(model: ModelSpec) -> str:
    """The model as records and tables name it (its label: never a path)."""
    return model.label() or "SmolLM2-135M (default)"


def source_of(texts) -> str | None:
    """Where :func:`evaluators.data.text.load_split` found a text (hub, a data folder, the bundled copy)."""
    return getattr(texts, "source", None)


def calibration(data: DataSpec, tokenizer, needed: bool = True) -> tuple[torch.Tensor | None, str | None]:
    """Calibration token windows (C4 by default) and where their text came from, when ``needed``."""
    if not needed:
        return None, None
    docs = load_split(data.calib, "train", data.data_dir)
    return calibration_batch(tokenizer, docs, data.nsamples, data.calib_seqlen, seed=data.seed), source_of(docs)


@dataclass
class Inputs:
    """What a run reads besides the allocation: the model, its validation windows (the search's, then the
    selection split's), the calibration batch, and where the texts came from."""

    model: object
    tokenizer: object
    val: torch.Tensor
    selection: torch.Tensor | None
    calib: torch.Tensor | None
    data_source: str | None
    calib_source: str | None
    ignore: dict | None = None  # per split, the marker (<unk>) tokens, for a fitness that leaves them out


def load_inputs(spec: EvaluatorSpec, loaded: tuple | None = None) -> Inputs:
    """Load the model (unless ``loaded`` = (model, tokenizer)), the validation windows and the calibration
    batch of ``spec``: the one recipe behind the search's evaluator and the comparison's exact pruning."""
    model, tokenizer = loaded or load_model(spec.model.model, spec.model.dtype, spec.model.device)
    texts = load_split(spec.data.data, "validation", spec.data.data_dir)
    windows = token_windows(tokenizer, texts, spec.data.seqlen, spec.val_windows + spec.selection_windows)
    if windows.shape[0] < spec.val_windows + spec.selection_windows:
        raise UserError(f"the validation text has {windows.shape[0]} windows of {spec.data.seqlen} tokens: fewer than "
                        f"--val-windows {spec.val_windows} + --selection-windows {spec.selection_windows}")
    val, selection = windows[:spec.val_windows], windows[spec.val_windows:] if spec.selection_windows else None
    ignore = None
    if FITNESSES[spec.fitness].markers:
        marks = marker_tokens(tokenizer, texts, spec.data.seqlen, windows.shape[0])
        ignore = {"search": marks[:spec.val_windows], "selection": marks[spec.val_windows:]}
    # Wanda's metric (OWL, DSA's code, DLP baselines) needs calibration inputs even for magnitude pruning
    calib, calib_source = calibration(spec.data, tokenizer)
    return Inputs(model, tokenizer, val, selection, calib, source_of(texts), calib_source, ignore)


def build_evaluator(spec: EvaluatorSpec, loaded: tuple | None = None,
                    inputs: Inputs | None = None) -> tuple[PruningEvaluator, dict]:
    """(evaluator, info) for the search: load the model, the validation windows and the calibration
    set (:func:`load_inputs`, unless ``inputs`` holds them), and build the :class:`PruningEvaluator`
    (scores and ranks, once). The one home of this recipe: the single-process search, every Ray worker
    (:mod:`dsa.run.distributed`) and the comparison (:mod:`dsa.experiment.compare`) call it. ``loaded``: the
    (model, tokenizer) already in memory (a multi-task search shares one model between evaluators)."""
    x = inputs or load_inputs(spec, loaded)
    start = time.perf_counter()
    evaluator = PruningEvaluator(x.model, x.tokenizer, method=spec.prune.method, calib_ids=x.calib, val_windows=x.val,
                                 selection_windows=x.selection, fitness=spec.fitness, batch_size=spec.data.batch_size,
                                 max_scores_per_block=spec.prune.max_scores_per_layer, seed=spec.data.seed,
                                 masking=spec.masking, nm=spec.prune.nm, ignore=x.ignore, **level_database(spec, x))
    setup = time.perf_counter() - start
    info = {
        "model": model_name(spec.model),
        "fitness": FITNESSES[spec.fitness].description,
        "layers": len(evaluator.blocks), "val_windows": int(x.val.shape[0]), "seqlen": spec.data.seqlen,
        "selection_windows": spec.selection_windows,
        "dense_val_ppl": evaluator.dense_perplexity(), "setup_seconds": round(setup, 2),
        "data_source": x.data_source, "calib_source": x.calib_source,
    }
    return evaluator, info


def level_key(model: ModelSpec, data: DataSpec) -> dict:
    """What names a level database besides its content digests (calibration tokens, weights, grid, pruner
    settings: :func:`evaluators.fitness.leveldb.open_levels` adds those); ``dsa search``, ``dsa compare`` and the
    benchmarks share a database through it. Its fields are the settings whose record declares the LEVELS role
    (:mod:`dsa.run.settings`), by flag name; a model left unset is the default model."""
    key = {flag_name(f): getattr(spec, f.name)
           for spec in (model, data) for f in fields(spec) if f.metadata.get("levels")}
    return {**key, "model": key["model"] or default_model()}


def level_database(spec: EvaluatorSpec, x: Inputs) -> dict:
    """For a pruner that updates the weights it keeps (SparseGPT), the evaluator's exact fitness: the
    per-layer level database (:mod:`evaluators.fitness.leveldb`), opened or built once; {} for mask pruners."""
    if not spec.prune.record.updates_weights:
        return {}
    from transformers.utils.logging import is_progress_bar_enabled

    from evaluators.fitness.leveldb import open_levels
    key = level_key(spec.model, spec.data)
    grid, m = None, None
    if spec.prune.pattern:  # the pattern's levels: n/M for every n (mixed), or 0 and N/M (dense or N:M)
        n, m = spec.prune.pattern
        grid = [k / m for k in range(m)] if n is None else [0.0, n / m]
    # --no-progress turns transformers' bars off (dsa.cli.dispatch.quiet); the build's bar follows the same switch
    levels = open_levels(x.model, x.calib, spec.prune.method, key, grid=grid, progress=is_progress_bar_enabled(),
                         batch_size=spec.data.batch_size, m=m)
    print(levels.describe())
    return {"levels": levels}


def allocator_for(blocks: BlockScores, target: float) -> LayerAllocator:
    """The allocator of a run (one home): formulas read ``blocks``' scores, means weigh by its counts."""
    return LayerAllocator(blocks.scores, target=target, weights=blocks.counts)


def allocation_task(spec: EvaluatorSpec, blocks: BlockScores, fitness, info: dict, candidates: dict):
    """(allocator, fitness, info, baseline candidates): the allocator reads ``blocks``' scores and counts."""
    allocator = allocator_for(blocks, spec.prune.sparsity)
    print(f"{info['layers']} layers, {info['val_windows']}×{spec.data.seqlen} validation tokens, "
          f"dense validation perplexity {info['dense_val_ppl']:.3f}, scores ready in {info['setup_seconds']:.1f}s")
    return allocator, fitness, info, candidates


def llm_task(spec: EvaluatorSpec, baselines: tuple[str, ...], built: tuple | None = None):
    """(allocator, fitness, info, baseline candidates) for ``dsa search``: the fitness of an allocation is
    the validation perplexity of the model pruned with it (fast path: masks from cached score ranks).
    ``built``: the (evaluator, info) to use instead of building one."""
    evaluator, info = built or build_evaluator(spec)
    candidates = baseline_candidates(baselines, evaluator.blocks, spec.prune.sparsity)
    return allocation_task(spec, evaluator.blocks, evaluator, info, candidates)


def score_source(model, method: str, calib: torch.Tensor | None, batch_size: int = 1,
                 max_per_block: int | None = None, seed: int = 0, progress: bool = False) -> BlockScores:
    """The model's :class:`~evaluators.pruning.blockscores.BlockScores` for ``method``, subsampled exactly as
    the search evaluator does (same seed); with calibration data, Wanda's metric is available too."""
    stats = (collect_stats(model, calib, get_method(method).needs_hessian, batch_size, progress)
             if calib is not None else None)
    return block_scores(model, method, stats, max_per_block, seed, calib.shape[0] if calib is not None else None)


def resolve_allocation(spec: str, source: BlockScores, target: float, fitness=None) -> tuple[list[float], str | None]:
    """Per-block sparsities for ``--allocation`` (a baseline, a run folder or a formula) and its formula.
    ``fitness`` (validation perplexity of an allocation) is what tuned baselines are tuned on."""
    allocator = allocator_for(source, target)
    return allocate(spec, allocator, source, fitness)


def prune_model(model_spec: ModelSpec, data: DataSpec, prune_spec: PruneSpec, allocation: str,
                val_windows: int = DEFAULT_VAL_WINDOWS, progress: bool = True):
    """Load, allocate (tuned baselines: on the validation split), put the allocation on the N:M pattern
    ``prune_spec.nm`` if there is one (:func:`evaluators.pruning.nm.on_pattern`) and prune (exact
    sequential mode) → (model, tokenizer, record)."""
    model, tokenizer = load_model(model_spec.model, model_spec.dtype, model_spec.device)
    method = prune_spec.method
    need_calib = prune_spec.record.needs_calibration or needs_wanda_metric(allocation)
    calib, calib_source = calibration(data, tokenizer, need_calib)
    tuner = None
    if allocation.endswith("-tuned"):  # the tuner's scores are the allocation's too: the model is scored once
        val = token_windows(tokenizer, load_split(data.data, "validation", data.data_dir), data.seqlen, val_windows)
        tuner = PruningEvaluator(model, tokenizer, method=method, calib_ids=calib, val_windows=val,
                                 batch_size=data.batch_size, max_scores_per_block=prune_spec.max_scores_per_layer,
                                 seed=data.seed, nm=prune_spec.nm)
        source = tuner.blocks
    else:
        source = score_source(model, method, calib, data.batch_size, prune_spec.max_scores_per_layer, data.seed,
                              progress)
    try:
        sparsities, formula = resolve_allocation(allocation, source, prune_spec.sparsity, tuner)
    finally:
        if tuner is not None:
            tuner.close()
    m = None
    if prune_spec.nm:
        sparsities, m = on_pattern(prune_spec.nm, sparsities, source.counts, prune_spec.sparsity)
    del source, tuner
    prune(model, method, sparsities, calib, progress=progress, batch_size=data.batch_size, m=m)
    record = allocation_record(allocation=allocation, formula=formula, method=method, target=prune_spec.sparsity,
                               model=model_name(model_spec), layers=block_names(model),
                               requested=sparsities, measured=measured_sparsity(model))
    if prune_spec.nm:
        record["nm"] = prune_spec.nm
    record["calibration"] = {"source": calib_source, "nsamples": data.nsamples, "seqlen": data.calib_seqlen,
                             "seed": data.seed} if calib is not None else None
    return model, tokenizer, record


def prune_command(model_spec: ModelSpec, data: DataSpec, prune_spec: PruneSpec, allocation: str, save: Path,
                  val_windows: int = DEFAULT_VAL_WINDOWS, progress: bool = True, fmt: str = "safetensors") -> None:
    """Prune and save to ``save`` (``fmt``: plain safetensors, or compressed-tensors' 2:4 bitmask)."""
    model, tokenizer, record = prune_model(model_spec, data, prune_spec, allocation, val_windows, progress)
    compressor = (sparsity_compressor(model, prune_spec.nm, record["requested"], prune_spec.sparsity)
                  if fmt == "compressed-tensors" else None)
    save_pruned(model, tokenizer, save, compressor)
    write_record(save, record)
    mean = sum(record["measured"]) / len(record["measured"])
    print(f"saved {save}/ ({len(record['measured'])} blocks, measured mean sparsity {mean:.4f})")


def eval_command(model_spec: ModelSpec, data: DataSpec, prune_spec: PruneSpec, allocation: str | None,
                 test_windows: int | None = None, tasks: list[str] | None = None, tasks_path: str | None = None,
                 zeroshot_limit: int | None = None, perplexity_too: bool = True,
                 val_windows: int = DEFAULT_VAL_WINDOWS, progress: bool = True) -> dict:
    """Test-split perplexity and, with ``tasks``, lm-eval zero-shot accuracy (optionally after
    pruning): the numbers to report."""
    manager = None
    if tasks:  # unknown task names and a missing lm-eval fail here, before any loading or pruning
        from dsa.outputs.zeroshot import task_manager
        manager = task_manager(tasks, tasks_path)
    if allocation:
        model, tokenizer, record = prune_model(model_spec, data, prune_spec, allocation, val_windows, progress)
    else:
        model, tokenizer = load_model(model_spec.model, model_spec.dtype, model_spec.device)
        record = {"allocation": None}
    result = {"model": model_name(model_spec)}
    if perplexity_too:
        texts = load_split(data.data, "test", data.data_dir)
        windows = token_windows(tokenizer, texts, data.seqlen, test_windows)
        start = time.perf_counter()
        interval = perplexity_interval(window_nlls(model, windows, data.batch_size, progress=progress).tolist())
        result.update({"data": data.data, "data_source": source_of(texts), "split": "test", "seqlen": data.seqlen,
                       "windows": int(windows.shape[0]), "perplexity": interval.value,
                       "perplexity_95ci": [interval.lo, interval.hi],
                       "seconds": round(time.perf_counter() - start, 2)})
    if tasks:
        from dsa.outputs.zeroshot import zero_shot
        result["zeroshot"] = zero_shot(model, tokenizer, tasks, batch_size=data.batch_size, limit=zeroshot_limit,
                                       include_path=tasks_path, manager=manager, progress=progress)
    return {**result, **record}
