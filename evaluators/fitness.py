"""The fitness of a per-block sparsity vector: perplexity of the pruned model (the GP's hot path).

Once per run, :class:`PruningEvaluator` collects calibration statistics on the *dense* model,
scores every weight and keeps per-row score ranks. Two ways to turn ranks into a pruned model
(``masking``), identical perplexities:

- ``"inplace"`` (default): a copy of the dense weights is kept; a candidate costs one comparison +
  ``masked_fill_`` per linear, a perplexity pass, and a weight copy back. Memory: weights ×2 + ranks.
- ``"forward"``: no copy; each linear is parametrised (:mod:`torch.nn.utils.parametrize`) to use
  ``W.masked_fill(rank < k, 0)`` in its forward, so masks are rebuilt in every forward call and the
  weights are never written. Memory: weights + ranks (+ one linear's masked weight at a time).

Scores come from the dense model in one pass (no re-calibration through pruned blocks as in the
exact :func:`evaluators.pruners.prune`); for magnitude the masks are identical to the exact pruner's.

Multi-fidelity (``low_fidelity_windows = k``): every candidate is first scored on the first ``k``
validation windows. Let ``best_low`` be the lowest such low-fidelity perplexity so far. A candidate
whose low-fidelity perplexity exceeds ``best_low·(1 + low_fidelity_margin)`` is not competitive:
its low-fidelity perplexity is returned as its fitness (``last_fidelity = "low"``). Otherwise the
remaining windows are evaluated and the all-window perplexity is returned (``"full"``). The very
first candidate is always evaluated in full. Returned values thus mix fidelities, but a rejected
candidate is by construction worse than the best one on the shared first ``k`` windows.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from .calibration import collect_stats
from .errors import UserError
from .masks import prune_count, row_ranks
from .models import model_linears
from .perplexity import CHUNK, perplexity_from_nlls, window_nlls
from .pruners import check_sparsities
from .scores import get_scorer


def subsample_scores(scores: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """A seeded random subset of ``limit`` elements (kept in their original order), or all of them."""
    if limit is None or scores.numel() <= limit:
        return scores
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(scores.numel(), generator=gen)[:limit].sort().values
    return scores[idx]


def layer_scores(scores: list[torch.Tensor], limit: int | None, seed: int) -> torch.Tensor:
    """One block's ``S_l``: its linears' scores flattened into one float32 CPU vector, then the seeded
    subset of :func:`subsample_scores` (seed = run seed + block index). The search evaluator and
    ``dsa prune/eval`` both build ``S_l`` here, so a formula gives the same allocation in both."""
    return subsample_scores(torch.cat([s.reshape(-1).float().cpu() for s in scores]), limit, seed)


MASKING = ("inplace", "forward")


class RankMask(nn.Module):
    """Parametrisation of a linear's weight: zero the weights whose row rank is below ``k``."""

    def __init__(self, ranks: torch.Tensor):
        super().__init__()
        self.ranks, self.k = ranks, 0  # a plain attribute, not a buffer: kept out of state_dict

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.masked_fill(self.ranks < self.k, 0) if self.k else weight


class PruningEvaluator:
    """Perplexity of the model pruned block-wise at given sparsities, with fast apply/restore.

    >>> ev = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val)
    >>> ev([0.5] * len(ev.param_counts()))   # perplexity at 50 % uniform sparsity
    """

    def __init__(self, model, tokenizer, *, method: str = "wanda", calib_ids: torch.Tensor | None = None,
                 val_windows: torch.Tensor, batch_size: int = 1, low_fidelity_windows: int | None = None,
                 low_fidelity_margin: float = 0.1, max_scores_per_block: int | None = None, seed: int = 0,
                 progress: bool = False, masking: str = "inplace", head_chunk: int | None = CHUNK):
        """``max_scores_per_block``: keep only a seeded random subset of each block's scores for
        :meth:`block_scores` (saves memory on large models; default: keep all, float32 on CPU).
        ``masking``: ``"inplace"`` (dense copy) or ``"forward"`` (no copy, masks rebuilt in every forward
        call: as fast on a GPU, slower on a CPU with several forward calls per candidate; module doc).
        With ``"forward"``, call :meth:`close` before using the model for anything else.
        ``head_chunk``: LM-head positions per step in the perplexity pass (None: all logits at once;
        see :mod:`evaluators.perplexity`)."""
        if masking not in MASKING:
            raise UserError(f"masking must be one of {', '.join(MASKING)}, got {masking!r}")
        scorer = get_scorer(method)
        if scorer.needs_calibration and calib_ids is None:
            raise UserError(f"{method} scores need calibration data (--calib)")
        if val_windows is None or val_windows.dim() != 2 or val_windows.shape[0] == 0:
            raise UserError("the evaluator needs validation windows, a [n, seqlen] tensor with n ≥ 1")
        self.model, self.tokenizer, self.method = model, tokenizer, method
        self.val_windows = val_windows
        self.batch_size = batch_size
        self.low_fidelity_windows = low_fidelity_windows
        self.low_fidelity_margin = low_fidelity_margin
        self.seed = seed
        self.progress = progress
        self.masking = masking
        self.head_chunk = head_chunk
        self.linears = model_linears(model)
        stats = collect_stats(model, calib_ids, scorer.needs_hessian, batch_size) if scorer.needs_calibration else None
        self._ranks: list[dict[str, torch.Tensor]] = []
        self._dense: list[dict[str, torch.Tensor]] = []
        self._scores: list[torch.Tensor] = []
        for l, block in enumerate(self.linears):
            ranks, dense, flat = {}, {}, []
            for name, lin in block.items():
                score = scorer.score(lin.weight, stats[name] if stats else None)
                ranks[name] = row_ranks(score)
                flat.append(score.cpu())
                if masking == "inplace":
                    dense[name] = lin.weight.detach().clone()
                else:
                    parametrize.register_parametrization(lin, "weight", RankMask(ranks[name]), unsafe=True)
                del score
            self._ranks.append(ranks)
            self._dense.append(dense)
            self._scores.append(layer_scores(flat, max_scores_per_block, seed + l))
        del stats
        self._touched: list[tuple[torch.nn.Linear, torch.Tensor]] = []
        self._dense_ppl: float | None = None
        self.best_low: float | None = None
        self.last_fidelity: str | None = None
        self.evaluations = 0
        self.full_evaluations = 0
        self.low_fidelity_rejections = 0
        self.seconds = 0.0

    @property
    def n_blocks(self) -> int:
        return len(self.linears)

    def block_scores(self, max_per_block: int | None = None) -> list[torch.Tensor]:
        """Per block, the flattened element-wise scores of all its linears (float32, CPU) — ``S_l``.

        ``max_per_block`` returns a seeded random subset of that size (order kept)."""
        return [subsample_scores(s, max_per_block, self.seed + l) for l, s in enumerate(self._scores)]

    def param_counts(self) -> list[int]:
        """Prunable weights per block."""
        return [sum(lin.weight.numel() for lin in block.values()) for block in self.linears]

    @torch.no_grad()
    def apply(self, sparsities: Sequence[float]) -> None:
        """Prune: in each row, zero the weights ranked below ``round(s_l·cols)`` (in place, or in the
        forward with ``masking="forward"``)."""
        values = check_sparsities(sparsities, self.n_blocks)
        self.restore()
        for s, block, ranks, dense in zip(values, self.linears, self._ranks, self._dense):
            for name, lin in block.items():
                k = prune_count(s, lin.in_features)
                if not k:
                    continue
                if self.masking == "forward":
                    mask = lin.parametrizations.weight[0]
                    mask.k = k
                    self._touched.append((mask, None))
                else:
                    self._touched.append((lin, dense[name]))
                    lin.weight.masked_fill_(ranks[name] < k, 0)

    @torch.no_grad()
    def restore(self) -> None:
        """Undo :meth:`apply`: copy the dense weights back (bit-exact), or switch the masks off."""
        for target, dense in self._touched:
            if dense is None:
                target.k = 0
            else:
                target.weight.copy_(dense)
        self._touched = []

    def close(self) -> None:
        """Leave the model dense and plain (removes ``masking="forward"``'s parametrisations)."""
        self.restore()
        for block in self.linears:
            for lin in block.values():
                if parametrize.is_parametrized(lin, "weight"):
                    parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)

    def _nlls(self, windows: torch.Tensor) -> torch.Tensor:
        return window_nlls(self.model, windows, self.batch_size, self.progress, self.head_chunk)

    def _evaluate(self) -> float:
        k, n = self.low_fidelity_windows, self.val_windows.shape[0]
        if not k or k >= n:
            self.last_fidelity = "full"
            self.full_evaluations += 1
            return perplexity_from_nlls(self._nlls(self.val_windows))
        low = self._nlls(self.val_windows[:k])
        low_ppl = perplexity_from_nlls(low)
        if self.best_low is not None and not low_ppl <= self.best_low * (1.0 + self.low_fidelity_margin):
            self.last_fidelity = "low"
            self.low_fidelity_rejections += 1
            return low_ppl
        self.best_low = low_ppl if self.best_low is None else min(self.best_low, low_ppl)
        self.last_fidelity = "full"
        self.full_evaluations += 1
        return perplexity_from_nlls(torch.cat([low, self._nlls(self.val_windows[k:])]))

    def __call__(self, sparsities: Sequence[float]) -> float:
        """Perplexity of the model pruned at ``sparsities`` (+inf if not finite); weights restored after."""
        start = time.perf_counter()
        try:
            self.apply(sparsities)
            value = self._evaluate()
        finally:
            self.restore()
            self.evaluations += 1
            self.seconds += time.perf_counter() - start
        return value if math.isfinite(value) else math.inf

    def state_dict(self) -> dict:
        """What a resumed search needs to score candidates exactly as before (multi-fidelity threshold)."""
        return {"best_low": self.best_low}

    def load_state_dict(self, state: dict) -> None:
        self.best_low = state.get("best_low")

    def dense_perplexity(self) -> float:
        """Perplexity of the dense model on all validation windows (cached)."""
        if self._dense_ppl is None:
            self.restore()
            self._dense_ppl = perplexity_from_nlls(self._nlls(self.val_windows))
        return self._dense_ppl
