"""The fitness of a per-block sparsity vector: how much pruning with it hurts the model on validation
text (the GP's hot path).

Once per run, :class:`PruningEvaluator` collects calibration statistics on the *dense* model, scores
every weight and keeps per-row score ranks (:mod:`evaluators.fitness.masking`: how a candidate's masks reach
the model, in place, in each linear's forward, or per decoder block). Per candidate: masks from the
ranks, one pass over the validation windows, the dense model back.

Fitness (``fitness``, a :class:`Fitness` record in :data:`FITNESSES`): ``"ppl"``, the perplexity of the
pruned model, or ``"kl"``, the mean per-token KL divergence of its next-token distributions from the dense
model's (EvoPress's fitness; the dense side cached once per split as top-k log-probabilities,
:func:`evaluators.fitness.perplexity.window_kls`).

Windows: the search's windows (``val_windows``), and optionally a disjoint ``selection`` split on
which a finished search's hall of fame is re-scored before anything is called best. A call may score
the first ``windows`` windows of a split only (multi-step selection: many candidates on few windows).

Scores come from the dense model in one pass (no re-calibration through pruned blocks as in the
exact :func:`evaluators.pruning.pruners.prune`); for magnitude the masks are identical to the exact pruner's.

For a pruner that updates the weights it keeps (SparseGPT, ``Pruner.updates_weights``), masks are not
its result: with ``levels`` (a :class:`evaluators.fitness.leveldb.LevelDatabase`) a candidate's weights are
instead assembled from the database's stored pruned weights (:class:`evaluators.fitness.leveldb.LevelWeights`,
EvoPress's protocol); scores are still computed, for the allocation functions, but no ranks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from evaluators.pruning.blockscores import block_scores
from evaluators.data.calibration import collect_stats
from evaluators.errors import UserError
from evaluators.fitness.leveldb import LevelDatabase, LevelWeights
from evaluators.fitness.masking import Masks
from evaluators.pruning.methods import get_method
from evaluators.pruning.nm import on_pattern, parse_nm
from evaluators.models.loading import model_linears
from evaluators.fitness.perplexity import (CHUNK, dense_reference, known_nlls, perplexity_from_nlls, token_scores,
                                          window_kls, window_nlls)
from evaluators.pruning.pruners import check_sparsities


KL_TOP_K = 256  # dense tokens kept per position for the KL fitness (plus the rest of the mass)


@dataclass(frozen=True)
class Fitness:
    """One fitness: ``score(evaluator, windows, split)`` of the model as it is now (lower is better).
    ``reference``: it compares with the dense model, whose outputs on a split are cached before any
    candidate's masks go on (:meth:`PruningEvaluator.reference`). ``windows``: per window, the
    log-perplexity a choice between two allocations is made on (paired over windows). ``markers``: it
    leaves out the targets ``ignore`` marks. A new fitness is one record here."""

    name: str
    description: str  # as the run's info and the plots say it
    score: Callable[["PruningEvaluator", torch.Tensor, str], float]
    reference: bool = False
    # per window, the log-perplexity whose paired differences decide a search's choice (dsa.run.choice.decide)
    windows: Callable[["PruningEvaluator", torch.Tensor, str], torch.Tensor] | None = None
    markers: bool = False  # reads ``ignore``: the targets of each split that are a marker (<unk>)


def _window_nlls(ev: "PruningEvaluator", tokens: torch.Tensor, split: str) -> torch.Tensor:
    return window_nlls(ev.model, tokens, ev.batch_size, ev.progress, ev.head_chunk)


def _known(ev: "PruningEvaluator", tokens: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window, (NLL sum, count) over the targets that are not a marker (``ignore[split]``)."""
    return known_nlls(token_scores(ev.model, tokens, None, ev.batch_size, ev.progress, ev.head_chunk)[0],
                      ev.ignore[split][:tokens.shape[0]])


def _known_window_nlls(ev: "PruningEvaluator", tokens: torch.Tensor, split: str) -> torch.Tensor:
    total, count = _known(ev, tokens, split)
    return total / count.clamp_min(1.0)


def _known_perplexity(ev: "PruningEvaluator", tokens: torch.Tensor, split: str) -> float:
    total, count = _known(ev, tokens, split)
    return perplexity_from_nlls((total.sum() / count.sum().clamp_min(1.0)).reshape(1))


def _kl(ev: "PruningEvaluator", tokens: torch.Tensor, split: str) -> float:
    reference = ev.reference(split)[:tokens.shape[0]]
    return float(window_kls(ev.model, tokens, reference, ev.batch_size, ev.progress, ev.head_chunk).mean())


FITNESSES: dict[str, Fitness] = {f.name: f for f in (
    Fitness("ppl", "validation perplexity", lambda ev, t, s: perplexity_from_nlls(_window_nlls(ev, t, s)),
            windows=_window_nlls),
    # WikiText-2's tokenized validation release writes 5-10 % of its targets as the literal "<unk>", which the
    # raw test text never has (evaluators.data.text.marker_tokens): left out of the loss
    Fitness("ppl-known", "validation perplexity, <unk> targets left out", _known_perplexity,
            windows=_known_window_nlls, markers=True),
    Fitness("kl", "validation KL from the dense model", _kl, reference=True, windows=_window_nlls),  # EvoPress's
)}


class PruningEvaluator:
    """Perplexity of the model pruned block-wise at given sparsities, with fast apply/restore.

    >>> ev = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val)
    >>> ev([0.5] * len(ev.blocks))            # perplexity at 50 % uniform sparsity
    """

    def __init__(self, model, tokenizer, *, method: str = "wanda", calib_ids: torch.Tensor | None = None,
                 val_windows: torch.Tensor, selection_windows: torch.Tensor | None = None, fitness: str = "ppl",
                 batch_size: int = 1, max_scores_per_block: int | None = None, seed: int = 0,
                 progress: bool = False, masking: str = "inplace", head_chunk: int | None = CHUNK,
                 kl_top_k: int = KL_TOP_K, levels: LevelDatabase | None = None, nm: str | None = None,
                 ignore: dict[str, torch.Tensor] | None = None):
        """``max_scores_per_block``: keep only a seeded random subset of each block's scores in
        :attr:`blocks` (saves memory on large models; default: keep all, float32 on CPU).
        ``masking``: ``"inplace"`` (dense copy), ``"forward"`` (no copy, masks rebuilt in every forward
        call) or ``"block"`` (no copy, uint8 rank levels, one block's masked weights at a time; use it
        with ``batch_size`` ≥ the number of validation windows); see :mod:`evaluators.fitness.masking`. With
        ``"forward"`` or ``"block"``, call :meth:`close` before using the model for anything else.
        ``fitness``: ``"ppl"`` or ``"kl"`` (module doc). ``head_chunk``: LM-head positions per step
        (None: all logits at once; see :mod:`evaluators.fitness.perplexity`). ``levels``: a level database
        (:func:`evaluators.fitness.leveldb.open_levels`, built for this model): candidates are assembled from its
        stored pruned weights instead of masks (``masking`` must then stay ``"inplace"``). ``nm``: an N:M
        pattern (``"M"`` or ``"N:M"``, :mod:`evaluators.pruning.nm`): every candidate is put on it first and
        pruned in N:M groups, as exact pruning with that pattern does (``masking="inplace"`` only).
        ``ignore``: per split, a bool ``[n, seqlen]`` of the tokens that are a marker
        (:func:`evaluators.data.text.marker_tokens`), left out as targets by the ``ppl-known`` fitness."""
        if fitness not in FITNESSES:
            raise UserError(f"fitness must be one of {', '.join(FITNESSES)}, got {fitness!r}")
        spec = get_method(method)
        if spec.needs_calibration and calib_ids is None:
            raise UserError(f"{method} scores need calibration data (--calib)")
        splits = {"search": val_windows, "selection": selection_windows}
        for name, windows in splits.items():
            if (windows is not None or name == "search") and (windows is None or windows.dim() != 2
                                                              or windows.shape[0] == 0):
                raise UserError(f"the evaluator's {name} windows must be a [n, seqlen] tensor with n ≥ 1")
        self.model, self.tokenizer, self.method, self.fitness = model, tokenizer, method, fitness
        self.splits = {name: w for name, w in splits.items() if w is not None}
        self.ignore = dict(ignore or {})
        for name, windows in self.splits.items():
            mask = self.ignore.get(name)
            if FITNESSES[fitness].markers and (mask is None or mask.shape != windows.shape):
                raise UserError(f"the {fitness} fitness needs the marker tokens of the {name} windows "
                                f"(a [n, seqlen] mask like its windows)")
        self.val_windows = val_windows
        self.batch_size, self.seed, self.progress, self.head_chunk = batch_size, seed, progress, head_chunk
        self.kl_top_k = kl_top_k
        self.linears = model_linears(model)
        if levels is not None and masking != "inplace":
            raise UserError(f"a level database replaces masking: masking={masking!r} does not apply")
        self.nm = nm
        m = parse_nm(nm)[1] if nm else None
        if levels is not None and levels.nm_group != m:
            raise UserError(f"the level database holds {'N:M levels, M = ' + str(levels.nm_group) if levels.nm_group else 'unstructured levels'}"
                            f", not {'N:M with M = ' + str(m) if m else 'unstructured ones'} (--nm {nm})")
        self.masks = Masks(model, self.linears, masking, m) if levels is None else LevelWeights(self.linears, levels)
        # with calibration data, statistics are collected whatever the method: Wanda's metric (OWL, DLP,
        # DSA's released code) reads them for magnitude pruning too
        stats = collect_stats(model, calib_ids, spec.needs_hessian, batch_size, progress) if calib_ids is not None else None
        self.blocks = block_scores(model, method, stats, max_scores_per_block, seed,
                                   int(calib_ids.shape[0]) if stats else None,
                                   each=self.masks.add if levels is None else None)
        del stats
        self._reference: dict[str, list] = {}  # KL: the dense model's top-k log-probabilities, per split
        self._dense_ppl: float | None = None
        self.evaluations = 0
        self.seconds = 0.0

    @property
    def masking(self) -> str:
        return self.masks.masking

    @property
    def n_blocks(self) -> int:
        return len(self.linears)

    @property
    def state_bytes(self) -> int:
        """Bytes the evaluator keeps besides the model: dense copies ("inplace", level database) + ranks or
        levels."""
        return self.masks.state_bytes

    def apply(self, sparsities: Sequence[float]) -> None:
        """Prune block ``l`` at ``sparsities[l]`` (see :meth:`evaluators.fitness.masking.Masks.apply`, or
        :meth:`evaluators.fitness.leveldb.LevelWeights.apply` with a level database); with an N:M pattern,
        at :meth:`on_pattern`'s sparsities."""
        self.masks.apply(self.on_pattern(check_sparsities(sparsities, self.n_blocks)))

    def on_pattern(self, sparsities: Sequence[float]) -> list[float]:
        """``sparsities`` on the evaluator's N:M pattern (:func:`evaluators.pruning.nm.on_pattern`, at the
        allocation's own mean), or as they are without one."""
        return on_pattern(self.nm, sparsities, self.blocks.counts)[0] if self.nm else list(sparsities)

    def restore(self) -> None:
        """Undo :meth:`apply` (bit-exact)."""
        self.masks.restore()

    def close(self) -> None:
        """Leave the model dense and plain."""
        self.masks.close()

    def _windows(self, split: str, windows: int | None) -> torch.Tensor:
        if split not in self.splits:
            raise UserError(f"the evaluator has no {split!r} windows (splits: {', '.join(self.splits)})")
        return self.splits[split] if windows is None else self.splits[split][:windows]

    def _subset(self, split: str, rows: tuple[int, ...]) -> str:
        """The name of a split made of the windows ``rows`` of ``split`` (with their marker tokens), added once."""
        name = f"{split}{list(rows)}"
        if name not in self.splits:
            source = self._windows(split, None)
            if not rows or min(rows) < 0 or max(rows) >= source.shape[0]:
                raise UserError(f"windows {list(rows)} are not windows of the {split!r} split ({source.shape[0]})")
            index = torch.tensor(rows)
            self.splits[name] = source[index]
            if split in self.ignore:
                self.ignore[name] = self.ignore[split][index]
        return name

    def _score(self, split: str, windows: int | None) -> float:
        """The fitness of the model as it is now on the first ``windows`` windows of ``split``."""
        return FITNESSES[self.fitness].score(self, self._windows(split, windows), split)

    def reference(self, split: str = "search") -> list:
        """The dense model's top-k next-token log-probabilities on ``split`` (computed once)."""
        if split not in self._reference:
            self.restore()
            self._reference[split] = dense_reference(self.model, self._windows(split, None), self.kl_top_k,
                                                     self.batch_size, self.head_chunk)
        return self._reference[split]

    def __call__(self, sparsities: Sequence[float], windows: int | Sequence[int] | None = None,
                 split: str = "search", per_window: bool = False):
        """The fitness (perplexity, or KL from the dense model) of the model pruned at ``sparsities`` on the
        first ``windows`` windows of ``split`` (all by default; a sequence of indices: those windows, as a
        search that resamples its windows asks); +inf if not finite; weights restored after.
        ``per_window``: instead, the list of each window's log-perplexity as the fitness counts it (its
        ``windows`` function: the paired numbers a choice between two allocations is made on)."""
        if windows is not None and not isinstance(windows, int):
            split, windows = self._subset(split, tuple(int(w) for w in windows)), None
        start = time.perf_counter()
        record = FITNESSES[self.fitness]
        if record.reference and not per_window:
            self.reference(split)  # before the masks go on
        try:
            self.apply(sparsities)
            if per_window:
                return [float(v) for v in record.windows(self, self._windows(split, windows), split)]
            value = self._score(split, windows)
        finally:
            self.restore()
            self.evaluations += 1
            self.seconds += time.perf_counter() - start
        return value if math.isfinite(value) else math.inf

    def dense_perplexity(self) -> float:
        """Perplexity of the dense model on all search windows (cached)."""
        if self._dense_ppl is None:
            self.restore()
            self._dense_ppl = perplexity_from_nlls(window_nlls(self.model, self.val_windows, self.batch_size,
                                                               self.progress, self.head_chunk))
        return self._dense_ppl
