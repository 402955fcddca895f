"""AlphaPruning (Lu et al., NeurIPS 2024; haiquanlu/AlphaPruning ``ww_sparsity``, block-wise mapping):
per block the mean heavy-tail exponent α̂ of its linears' ESD, mapped linearly onto sparsity ratios."""
from __future__ import annotations

from typing import Sequence

import torch

from primitives.bounds import MAX_SPARSITY, MIN_SPARSITY

from evaluators.pruning.blockscores import BlockScores
from evaluators.errors import UserError
from evaluators.pruning.methods import METHODS
from evaluators.models.loading import model_linears
from evaluators.baselines.common import check_target, constant_statistic, finish

# ε of the authors' LLaMA-7B scripts, per pruner (README/scripts: magnitude_ww 0.3, wanda_ww 0.2, sparsegpt_ww 0.2)
# ε per pruner (the authors' scripts) lives on each method's record (evaluators.pruning.methods); by name:
ALPHA_EPSILON = {name: m.alpha_epsilon for name, m in METHODS.items()}


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
    """Per decoder block, the plain mean ESD exponent α̂ of its linears (the reference's block-wise ``m_j``)."""
    return [sum(esd_alpha(lin.weight, fix_fingers) for lin in block.values()) / len(block)
            for block in model_linears(model)]


def alphapruning_sparsities(alphas: Sequence[float], counts: Sequence[int], target: float,
                            epsilon: float) -> list[float]:
    """``q = (α̂ − min)/(max − min)·((1+ε) − (1−ε)) + (1−ε)``, then ``q·c`` with
    ``c = s·Σn / Σ(n·q)`` (the parameter-weighted rescale; no clip). Larger α̂ (a lighter tail: less
    well trained, by heavy-tailed self-regularisation theory) → pruned more."""
    uniform = constant_statistic("alphapruning", list(alphas), target)
    if uniform is not None:
        return uniform
    a = torch.tensor(alphas, dtype=torch.float64)
    n = torch.tensor(counts, dtype=torch.float64)
    s1, s2 = 1 - epsilon, 1 + epsilon
    q = (a - a.min()) / (a.max() - a.min()) * (s2 - s1) + s1
    c = n.sum() * target / (n * q).sum()
    return (q * c).tolist()


def alphapruning(blocks: BlockScores, target: float, lo: float = MIN_SPARSITY, hi: float = MAX_SPARSITY,
                 epsilon: float | None = None, fix_fingers: str = "xmin_peak",
                 alphas: Sequence[float] | None = None) -> list[float]:
    """AlphaPruning, block-wise: ratios span ``[1 − ε, 1 + ε]`` times one scale that keeps the weighted
    mean at ``target``. ``epsilon=None``: the authors' LLaMA-7B value for ``blocks.method``
    (its :class:`~evaluators.pruning.methods.Method` record). ``alphas``: precomputed :func:`block_alphas` (else from ``blocks.model``)."""
    check_target(target, lo, hi)
    if epsilon is None:
        if blocks.method not in METHODS:
            raise UserError(f"alphapruning has no default ε for pruner {blocks.method!r}: pass epsilon=")
        epsilon = METHODS[blocks.method].alpha_epsilon
    if alphas is None:
        if blocks.model is None:
            raise UserError("alphapruning needs the model's weights (its ESD)")
        alphas = block_alphas(blocks.model, fix_fingers)
    return finish(alphapruning_sparsities(alphas, blocks.counts, target, epsilon), blocks, target, lo, hi)
