"""Element-wise importance scores of a linear's weights (low score = pruned first).

- ``magnitude``: ``|W|``.
- ``wanda``: ``|W_ij|·‖X_j‖₂`` (Sun et al. 2024), with ``‖X_j‖₂² = sq_norm[j] / tokens``: the root
  mean square over the calibration tokens, as SparseGPT's ``H = 2/n·XXᵀ`` is a mean. The masks are
  Wanda's (one factor for the whole model changes no rank), and the scores ``S`` an allocation function
  reads do not depend on how many calibration tokens there are (16×512 on a CPU, 128×2048 on a GPU).
- ``sparsegpt``: ``W_ij² / U_jj²`` with ``U`` the upper Cholesky factor of the damped inverse
  hessian — SparseGPT's mask criterion (Frantar & Alistarh 2023), here on the dense weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from evaluators.data.calibration import LinearStats
from evaluators.errors import UserError

PERCDAMP = 0.01


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float = PERCDAMP):
    """SparseGPT's ``Hinv = chol(H_damped⁻¹)ᵀ`` (upper) and the dead-input mask (``H_jj == 0``).

    Dead inputs get ``H_jj = 1``; dampening adds ``percdamp·mean(diag H)`` to the diagonal (×10 on
    each retry if the Cholesky factorisation fails).
    """
    H = hessian.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    damp = percdamp * torch.mean(torch.diag(H))
    for _ in range(6):
        try:
            L = torch.linalg.cholesky(H + damp * torch.eye(H.shape[0], device=H.device))
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True), dead
        except torch.linalg.LinAlgError:
            damp = damp * 10
    raise RuntimeError("hessian is not positive definite even with heavy dampening")


def _magnitude(weight: torch.Tensor, stats: LinearStats | None) -> torch.Tensor:
    return weight.detach().float().abs()


def _wanda(weight: torch.Tensor, stats: LinearStats) -> torch.Tensor:
    norm = torch.sqrt(stats.sq_norm.to(weight.device) / max(stats.nsamples, 1)).float()
    return weight.detach().float().abs() * norm[None, :]


def _sparsegpt(weight: torch.Tensor, stats: LinearStats) -> torch.Tensor:
    hinv, dead = inverse_hessian_factor(stats.hessian.to(weight.device))
    w = weight.detach().float().clone()
    w[:, dead] = 0.0
    return w.square() / torch.diag(hinv).square()[None, :]


@dataclass(frozen=True)
class Scorer:
    """A named element-wise score and what calibration it needs."""

    name: str
    needs_calibration: bool
    needs_hessian: bool
    fn: Callable[[torch.Tensor, LinearStats | None], torch.Tensor]

    def score(self, weight: torch.Tensor, stats: LinearStats | None = None) -> torch.Tensor:
        """float32 scores, same shape and device as ``weight``."""
        if self.needs_calibration and stats is None:
            raise UserError(f"{self.name} scores need calibration statistics")
        return self.fn(weight, stats)


SCORERS: dict[str, Scorer] = {
    "magnitude": Scorer("magnitude", False, False, _magnitude),
    "wanda": Scorer("wanda", True, False, _wanda),
    "sparsegpt": Scorer("sparsegpt", True, True, _sparsegpt),
}


def get_scorer(method: str) -> Scorer:
    if method not in SCORERS:
        raise UserError(f"unknown pruning method {method!r}: choose one of {', '.join(SCORERS)}")
    return SCORERS[method]
