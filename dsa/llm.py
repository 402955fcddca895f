"""The LLM side of the CLI: the search task (validation-perplexity fitness), ``dsa prune`` and ``dsa eval``."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evaluators.baselines import BASELINES
from evaluators.calibration import collect_stats
from evaluators.data import calibration_batch, load_split, token_windows
from evaluators.fitness import PruningEvaluator, layer_scores
from evaluators.models import block_names, load_model, model_linears, save_pruned
from evaluators.perplexity import perplexity
from evaluators.pruners import measured_sparsity, prune
from evaluators.scores import compute_scores, get_scorer
from primitives import LayerAllocator

from .allocations import allocate, check_allocation
from .errors import UserError
from .exports import allocation_record, write_record


def model_name(args: argparse.Namespace) -> str:
    return args.model or "SmolLM2-135M (default)"


def load(args: argparse.Namespace):
    get_scorer(args.method)  # unknown method: fail before loading anything
    model, tokenizer = load_model(args.model, args.dtype, args.device)
    return model, tokenizer


def calibration(args: argparse.Namespace, tokenizer) -> torch.Tensor | None:
    """Calibration token windows (C4 by default), when the method needs them."""
    if not get_scorer(args.method).needs_calibration:
        return None
    docs = load_split(args.calib, "train", args.data_dir)
    return calibration_batch(tokenizer, docs, args.nsamples, args.calib_seqlen, seed=getattr(args, "seed", 0))


def build_evaluator(args: argparse.Namespace) -> tuple[PruningEvaluator, dict]:
    """(evaluator, info) for ``dsa search --task llm``: load the model, the validation windows and the
    calibration set, and build the :class:`PruningEvaluator` (scores and ranks, once). The one home of
    this recipe: the single-process search and every Ray worker (:mod:`dsa.distributed`) call it."""
    model, tokenizer = load(args)
    val = token_windows(tokenizer, load_split(args.data, "validation", args.data_dir), args.seqlen, args.val_windows)
    calib = calibration(args, tokenizer)
    start = time.perf_counter()
    evaluator = PruningEvaluator(model, tokenizer, method=args.method, calib_ids=calib, val_windows=val,
                                 batch_size=args.batch_size, low_fidelity_windows=args.low_fidelity_windows,
                                 max_scores_per_block=args.max_scores_per_layer, seed=args.seed,
                                 masking=getattr(args, "masking", "inplace"))
    setup = time.perf_counter() - start
    info = {
        "model": model_name(args), "fitness": "validation perplexity",
        "layers": evaluator.n_blocks, "val_windows": int(val.shape[0]), "seqlen": args.seqlen,
        "dense_val_ppl": evaluator.dense_perplexity(), "setup_seconds": round(setup, 2),
    }
    return evaluator, info


def allocation_task(args: argparse.Namespace, source, fitness, info: dict):
    """(allocator, fitness, info): the allocator reads ``source``'s block scores and parameter counts."""
    allocator = LayerAllocator(source.block_scores(), target=args.sparsity, weights=source.param_counts())
    print(f"{info['layers']} layers, {info['val_windows']}×{args.seqlen} validation tokens, "
          f"dense validation perplexity {info['dense_val_ppl']:.3f}, scores ready in {info['setup_seconds']:.1f}s")
    return allocator, fitness, info


def llm_task(args: argparse.Namespace):
    """(allocator, fitness, info) for ``dsa search --task llm``: the fitness of an allocation is the
    validation perplexity of the model pruned with it (fast path: masks from cached score ranks)."""
    evaluator, info = build_evaluator(args)
    return allocation_task(args, evaluator, evaluator, info)


@dataclass
class ScoreSource:
    """What allocators read: the model, its per-block parameter counts and element-wise scores."""

    model: torch.nn.Module
    scores: list[torch.Tensor] = field(repr=False)

    def param_counts(self) -> list[int]:
        return [sum(lin.weight.numel() for lin in block.values()) for block in model_linears(self.model)]

    def block_scores(self, max_per_block: int | None = None) -> list[torch.Tensor]:
        return self.scores


def score_source(model, method: str, calib: torch.Tensor | None, batch_size: int = 1,
                 max_per_block: int | None = None, seed: int = 0) -> ScoreSource:
    """Element-wise scores per block, subsampled exactly as the search evaluator does (same seed)."""
    scorer = get_scorer(method)
    stats = collect_stats(model, calib, scorer.needs_hessian, batch_size) if scorer.needs_calibration else None
    blocks = compute_scores(model, method, stats)
    return ScoreSource(model, [layer_scores(list(block.values()), max_per_block, seed + l)
                               for l, block in enumerate(blocks)])


def resolve_allocation(spec: str, source: ScoreSource, target: float) -> tuple[list[float], str | None]:
    """Per-block sparsities for ``--allocation`` (a baseline name, a run folder or a formula)."""
    if spec in BASELINES:
        return BASELINES[spec](source, target), None
    allocator = LayerAllocator(source.block_scores(), target=target, weights=source.param_counts())
    return allocate(spec, allocator)


def prune_model(args: argparse.Namespace):
    """Load, allocate and prune (exact sequential mode) → (model, tokenizer, record)."""
    if args.allocation not in BASELINES:
        check_allocation(args.allocation)
    model, tokenizer = load(args)
    calib = calibration(args, tokenizer)
    source = score_source(model, args.method, calib, args.batch_size, args.max_scores_per_layer)
    sparsities, formula = resolve_allocation(args.allocation, source, args.sparsity)
    del source
    prune(model, args.method, sparsities, calib, progress=not args.no_progress, batch_size=args.batch_size)
    record = allocation_record(allocation=args.allocation, formula=formula, method=args.method, target=args.sparsity,
                               model=model_name(args), layers=block_names(model),
                               requested=sparsities, measured=measured_sparsity(model))
    return model, tokenizer, record


def prune_command(args: argparse.Namespace) -> None:
    out = Path(args.save)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose another --save folder")
    model, tokenizer, record = prune_model(args)
    save_pruned(model, tokenizer, out)
    write_record(out, record)
    mean = sum(record["measured"]) / len(record["measured"])
    print(f"saved {out}/ ({len(record['measured'])} blocks, measured mean sparsity {mean:.4f})")


def eval_command(args: argparse.Namespace) -> dict:
    """Test-split perplexity and, with ``--tasks``, lm-eval zero-shot accuracy (optionally after
    pruning): the numbers to report."""
    tasks = getattr(args, "tasks", None)
    no_ppl = getattr(args, "no_perplexity", False)
    if no_ppl and not tasks:
        raise UserError("--no-perplexity leaves nothing to evaluate: add --tasks")
    manager = None
    if tasks:  # unknown task names and a missing lm-eval fail here, before any loading or pruning
        from .zeroshot import parse_tasks, task_manager
        tasks = parse_tasks(tasks)
        manager = task_manager(tasks, getattr(args, "tasks_path", None))
    if args.allocation:
        model, tokenizer, record = prune_model(args)
    else:
        model, tokenizer = load(args)
        record = {"allocation": None}
    result = {"model": model_name(args)}
    if not no_ppl:
        windows = token_windows(tokenizer, load_split(args.data, "test", args.data_dir), args.seqlen,
                                args.test_windows)
        start = time.perf_counter()
        ppl = perplexity(model, windows, args.batch_size, progress=not args.no_progress)
        result.update({"data": args.data, "split": "test", "seqlen": args.seqlen, "windows": int(windows.shape[0]),
                       "perplexity": ppl, "seconds": round(time.perf_counter() - start, 2)})
    if tasks:
        from .zeroshot import zero_shot
        result["zeroshot"] = zero_shot(model, tokenizer, tasks, batch_size=args.batch_size,
                                       limit=getattr(args, "zeroshot_limit", None),
                                       include_path=getattr(args, "tasks_path", None), manager=manager,
                                       progress=not args.no_progress)
    return {**result, **record}
