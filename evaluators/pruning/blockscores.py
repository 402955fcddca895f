"""What allocators read about a model, per decoder block: the element-wise scores ``S_l`` and the
number of prunable weights; and, for the baselines that read Wanda's metric whatever the pruner
(OWL, DSA's released code, DLP), the calibration inputs' squared norms.

One value type (:class:`BlockScores`), built in one place (:func:`block_scores`, or the search
evaluator, which computes the same scores while it ranks them): the search, ``dsa prune/eval``,
the Ray driver and the baselines all read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from evaluators.data.calibration import LinearStats
from evaluators.models.loading import model_linears
from evaluators.pruning.methods import get_method
from evaluators.pruning.scores import SCORERS


def subsample_scores(scores: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """A seeded random subset of ``limit`` elements (kept in their original order), or all of them."""
    if limit is None or scores.numel() <= limit:
        return scores
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(scores.numel(), generator=gen)[:limit].sort().values
    return scores[idx]


def layer_scores(scores: list[torch.Tensor], limit: int | None, seed: int) -> torch.Tensor:
    """One block's ``S_l``: its linears' scores flattened into one float32 CPU vector, then the seeded
    subset of :func:`subsample_scores` (seed = run seed + block index)."""
    return subsample_scores(torch.cat([s.reshape(-1).float().cpu() for s in scores]), limit, seed)


@dataclass
class BlockScores:
    """Per decoder block: ``scores[l]`` = ``S_l`` (float32, CPU; the ``method``'s scores, a seeded subset
    when ``max_per_block`` was set) and ``counts[l]`` = prunable weights.

    ``model`` (weights, for AlphaPruning's ESD and Wanda's metric) and ``sq_norms`` (per linear name,
    ``Σ_tokens x_j²`` of its calibration inputs, from ``sequences`` calibration windows) are absent on a
    Ray driver, which holds no model."""

    scores: list[torch.Tensor] = field(repr=False)
    counts: list[int]
    method: str = ""
    model: nn.Module | None = field(default=None, repr=False)
    sq_norms: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    sequences: int | None = None  # calibration sequences behind sq_norms (the reference scales ‖X‖² by 1/this)
    tokens: int | None = None     # calibration tokens behind sq_norms (Wanda's scores divide ‖X‖² by this)

    def __len__(self) -> int:
        return len(self.counts)

    def summary(self) -> BlockScores:
        """Scores and counts only (small and picklable: what a Ray worker sends its driver)."""
        return replace(self, model=None, sq_norms=None)

    def wanda_metric(self, block: int) -> torch.Tensor:
        """Wanda's metric ``|W_ij|·‖X_j‖₂`` (RMS over calibration tokens, as the scores) of every weight of ``block``, each linear flattened row by row
        and concatenated in registration order (float32, on the weights' device): the vector OWL's and
        DSA's released code read, exact (no subsample). Needs ``model`` and ``sq_norms``."""
        if self.model is None or self.sq_norms is None:
            raise ValueError("Wanda's metric needs the model and its calibration statistics")
        wanda = SCORERS["wanda"]
        parts = [wanda.score(lin.weight, LinearStats(self.sq_norms[name], self.tokens or 0)).reshape(-1)
                 for name, lin in model_linears(self.model)[block].items()]
        return torch.cat(parts)


def param_counts(model: nn.Module) -> list[int]:
    """Prunable weights per decoder block."""
    return [sum(lin.weight.numel() for lin in block.values()) for block in model_linears(model)]


def block_scores(model: nn.Module, method: str, stats: dict[str, LinearStats] | None,
                 max_per_block: int | None = None, seed: int = 0, sequences: int | None = None,
                 each: Callable[[int, str, nn.Linear, torch.Tensor], None] | None = None) -> BlockScores:
    """The :class:`BlockScores` of ``model`` for ``method``'s scores (``stats``: the calibration
    statistics of ``sequences`` windows, from :func:`evaluators.data.calibration.collect_stats`; None for
    magnitude without calibration). ``each(block, name, linear, score)`` sees every linear's full score
    on the weights' device before it is flattened (the evaluator ranks its masks there): the one recipe."""
    scorer = get_method(method).scorer
    scores = []
    for l, block in enumerate(model_linears(model)):
        flat = []
        for name, lin in block.items():
            score = scorer.score(lin.weight, stats.get(name) if stats else None)
            if each is not None:
                each(l, name, lin, score)
            flat.append(score.cpu())
            del score
        scores.append(layer_scores(flat, max_per_block, seed + l))
    sq_norms = {name: st.sq_norm for name, st in stats.items()} if stats else None
    tokens = next(iter(stats.values())).nsamples if stats else None
    return BlockScores(scores, param_counts(model), method, model, sq_norms, sequences if stats else None, tokens)
