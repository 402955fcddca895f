"""Pruning methods, one record each: the element-wise score, the exact pruner, and what the rest of the
tool reads about it (calibration, whether it updates the weights it keeps, its llm-compressor modifier,
AlphaPruning's ε). A new pruner is a :class:`~evaluators.pruning.scores.Scorer`, a :class:`~evaluators.pruning.pruners.Pruner`
and one :class:`Method` here; everything else looks it up with :func:`get_method`.
"""
from __future__ import annotations

from dataclasses import dataclass

from evaluators.errors import UserError
from evaluators.pruning.pruners import PRUNERS, Pruner
from evaluators.pruning.scores import SCORERS, Scorer


@dataclass(frozen=True)
class Method:
    name: str
    scorer: Scorer  # the scores the allocation functions read and the masks rank by
    pruner: Pruner  # what exact (sequential) pruning runs
    alpha_epsilon: float  # AlphaPruning's ε for this pruner (the authors' LLaMA-7B scripts)
    modifier: str | None = None  # its llm-compressor modifier (dsa export --to llmcompressor), if there is one
    listed: bool = True  # offered by the CLI's --method (a variant for benchmarks is not)

    @property
    def needs_calibration(self) -> bool:
        return self.scorer.needs_calibration or self.pruner.needs_calibration

    @property
    def needs_hessian(self) -> bool:
        return self.scorer.needs_hessian or self.pruner.needs_hessian

    @property
    def updates_weights(self) -> bool:
        """Whether pruning changes the kept weights (SparseGPT's OBS update): its exact fitness then needs
        the level database (:mod:`evaluators.fitness.leveldb`), not masks of the dense weights."""
        return self.pruner.updates_weights


METHODS: dict[str, Method] = {m.name: m for m in (
    # AlphaPruning's scripts: magnitude_ww ε 0.3, wanda_ww 0.2, sparsegpt_ww 0.2
    Method("magnitude", SCORERS["magnitude"], PRUNERS["magnitude"], 0.3),
    Method("wanda", SCORERS["wanda"], PRUNERS["wanda"], 0.2, "WandaPruningModifier"),
    Method("sparsegpt", SCORERS["sparsegpt"], PRUNERS["sparsegpt"], 0.2, "SparseGPTModifier"),
    # SparseGPT's OBS update with masks chosen per row (bench/level_agreement.py)
    Method("sparsegpt-row", SCORERS["sparsegpt"], PRUNERS["sparsegpt-row"], 0.2, listed=False),
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        listed = ", ".join(n for n, m in METHODS.items() if m.listed)
        raise UserError(f"unknown pruning method {name!r}: choose one of {listed}")
    return METHODS[name]
