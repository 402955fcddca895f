"""Reference allocators: per-block sparsities for a target mean sparsity.

Each has the signature ``(ctx, target, **params) -> list[float]`` where ``ctx`` is a
:class:`~evaluators.fitness.PruningEvaluator` (or anything with ``model``, ``param_counts()`` and
``block_scores(max_per_block)``). Results lie in ``[lo, hi]`` and their parameter-weighted mean is
``target`` (``primitives.postprocess.project_to_target`` does the final shift and clip).
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from primitives.postprocess import project_to_target

from .errors import UserError
from .models import model_linears

GLOBAL_MAX_SCORES = 2**27  # above this many scores in total, global_threshold subsamples every block


class AllocationSource(Protocol):
    model: torch.nn.Module

    def param_counts(self) -> list[int]: ...

    def block_scores(self, max_per_block: int | None = None) -> list[torch.Tensor]: ...


def _check_target(target: float, lo: float, hi: float) -> None:
    if not (0.0 <= lo <= target <= hi < 1.0):
        raise UserError(f"target sparsity must satisfy {lo} ≤ target ≤ {hi}, got {target}")


def _finish(raw: torch.Tensor, ctx: AllocationSource, target: float, lo: float, hi: float) -> list[float]:
    weights = torch.tensor(ctx.param_counts(), dtype=torch.float64)
    return [float(s) for s in project_to_target(raw.to(torch.float64), weights, target, lo, hi)]


def uniform(ctx: AllocationSource, target: float, lo: float = 0.0, hi: float = 0.99) -> list[float]:
    """The same sparsity in every block."""
    _check_target(target, lo, hi)
    return [float(target)] * len(ctx.param_counts())


def global_threshold(ctx: AllocationSource, target: float, lo: float = 0.0, hi: float = 0.99,
                     max_per_block: int | None = None) -> list[float]:
    """One score threshold for the whole model: block sparsity = share of its scores below the
    global ``target`` quantile (``torch.kthvalue``, not ``torch.quantile``, which stops at 2²⁴).
    With more than 2²⁷ scores in total, each block contributes a seeded subsample of at most
    2²⁷/L of them (see ``block_scores``); the final projection restores the exact weighted mean."""
    _check_target(target, lo, hi)
    counts = ctx.param_counts()
    if max_per_block is None and sum(counts) > GLOBAL_MAX_SCORES:
        max_per_block = GLOBAL_MAX_SCORES // len(counts)
    scores = [s.float().reshape(-1) for s in ctx.block_scores(max_per_block)]
    flat = torch.cat(scores)
    k = min(max(1, round(target * flat.numel())), flat.numel())
    threshold = flat.kthvalue(k).values
    raw = torch.tensor([float((s <= threshold).double().mean()) for s in scores])
    return _finish(raw, ctx, target, lo, hi)


def esd_alpha(weight: torch.Tensor, fix_fingers: str = "xmin_peak", bins: int = 100, xmin_pos: int = 2) -> float:
    """Hill estimate of the power-law exponent of the ESD of ``WᵀW`` (AlphaPruning's ``net_esd_estimator``).

    ``xmin_mid``: xmin at the median eigenvalue. ``xmin_peak`` (their default): xmin candidates up
    to 1.5× the peak of the log10-eigenvalue histogram, the one with the smallest KS distance wins
    (their lower bound ``log10(0.95·peak)`` is compared against raw eigenvalues; kept as is). Falls
    back to ``xmin_mid`` when no candidate qualifies.
    """
    eigs = torch.linalg.svdvals(weight.detach().float()).double().square().sort().values.cpu()
    n_eigs = eigs.numel()
    log_e = eigs.log()
    suffix = log_e.flip(0).cumsum(0).flip(0)  # suffix[i] = Σ_{j≥i} log λ_j
    idx = torch.arange(n_eigs, dtype=torch.float64)

    def hill(i: torch.Tensor) -> torch.Tensor:
        n = n_eigs - i
        return 1 + n / (suffix[i] - n * log_e[i])

    if fix_fingers == "xmin_peak":
        h = torch.log10(eigs)
        counts = torch.histc(h, bins, min=float(h.min()), max=float(h.max()))
        peak = 10 ** torch.linspace(float(h.min()), float(h.max()), bins + 1, dtype=torch.float64)[counts.argmax()]
        lower, upper = torch.log10(0.95 * peak), 1.5 * peak
        cand = torch.nonzero((eigs[:-1] >= lower) & (eigs[:-1] <= upper)).flatten()
        if cand.numel() > 0:
            alphas = hill(cand)
            n = (n_eigs - cand).double()
            ratio = torch.where(idx[None, :] >= cand[:, None], eigs[None, :] / eigs[cand][:, None], 1.0)
            cdf_gap = (1 - ratio ** (1 - alphas[:, None]) - (idx[None, :] - cand[:, None]) / n[:, None]).abs()
            ks = torch.where(idx[None, :] >= cand[:, None], cdf_gap, 0.0).max(dim=1).values
            ks = torch.where(alphas > 1, ks, torch.ones_like(ks))
            return float(alphas[ks.argmin()])
    elif fix_fingers != "xmin_mid":
        raise UserError(f"unknown ESD xmin rule {fix_fingers!r}: use xmin_peak or xmin_mid")
    return float(hill(torch.tensor(n_eigs // xmin_pos)))


def block_alphas(model: torch.nn.Module, fix_fingers: str = "xmin_peak") -> list[float]:
    """Per decoder block, the mean ESD exponent α̂ of its linears."""
    return [sum(esd_alpha(lin.weight, fix_fingers) for lin in block.values()) / len(block)
            for block in model_linears(model)]


def alphapruning(ctx: AllocationSource, target: float, lo: float = 0.0, hi: float = 0.99,
                 epsilon: float = 0.2, fix_fingers: str = "xmin_peak", alphas: list[float] | None = None) -> list[float]:
    """AlphaPruning (Lu et al., NeurIPS 2024): block α̂ = mean heavy-tail exponent of its linears;
    ratios map α̂ linearly onto ``[1 − ε, 1 + ε]`` (larger α̂ = less heavy-tailed = pruned more),
    scaled so that sparsity = ``target · ratio`` has the weighted mean ``target``. ``ε = 0.2`` is
    their LLaMA Wanda/SparseGPT setting (0.3 for magnitude)."""
    _check_target(target, lo, hi)
    alphas = torch.tensor(alphas if alphas is not None else block_alphas(ctx.model, fix_fingers), dtype=torch.float64)
    weights = torch.tensor(ctx.param_counts(), dtype=torch.float64)
    span = float(alphas.max() - alphas.min())
    unit = (alphas - alphas.min()) / span if span > 0 else torch.zeros_like(alphas)
    ratios = unit * 2 * epsilon + (1 - epsilon)
    raw = target * ratios * weights.sum() / (weights * ratios).sum()
    return _finish(raw, ctx, target, lo, hi)


BASELINES: dict[str, Callable[..., list[float]]] = {
    "uniform": uniform,
    "global": global_threshold,
    "alphapruning": alphapruning,
}
