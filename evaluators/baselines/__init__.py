"""Reference allocators: per-block sparsities for a target mean sparsity, each as its reference code
computes them (see each module), pinned by tests to hand-computed cases.

One interface: ``fn(blocks: BlockScores, target, lo=MIN_SPARSITY, hi=MAX_SPARSITY, **params) -> list[float]``
(the bounds: :mod:`primitives.bounds`), registered
in :data:`BASELINES` with its defaults and, if tunable, its grid (:func:`tune`). Results lie in
``[lo, hi]`` and their parameter-weighted mean is ``target`` (:func:`.common.finish`).

- ``simple``: ``uniform``, ``global`` (one score threshold)
- ``er``: ``er``, ``er-plus`` (Erdős–Rényi shares by layer shape)
- ``alpha``: ``alphapruning`` (ESD heavy-tail exponent)
- ``owl``: ``owl``, ``owl-tuned`` (outlier ratio of Wanda's metric)
- ``dsa``: ``dsa-code``, ``dsa-paper``
- ``depth``: ``atp``, ``atp-tuned`` (arithmetic progression), ``dlp``
- ``registry``: ``BASELINES``, ``tune``
"""
from evaluators.baselines.alpha import ALPHA_EPSILON, alphapruning, alphapruning_sparsities, block_alphas, esd_alpha
from evaluators.baselines.common import wanda_metric
from evaluators.baselines.depth import atp, atp_grid, atp_sparsities, dlp, dlp_score, dlp_sparsities
from evaluators.baselines.dsa import dsa_code, dsa_code_importance, dsa_paper, dsa_paper_importance, dsa_sparsities, released_value
from evaluators.baselines.er import er, er_densities, er_plus
from evaluators.baselines.owl import OWL_GRID, outlier_ratio, outlier_ratios, owl, owl_sparsities
from evaluators.baselines.registry import BASELINES, Baseline, TuneResult, baseline_seeds, search_baselines, tune
from evaluators.baselines.simple import GLOBAL_MAX_SCORES, global_threshold, threshold_shares, uniform

__all__ = [
    "ALPHA_EPSILON", "BASELINES", "Baseline", "GLOBAL_MAX_SCORES", "OWL_GRID", "TuneResult", "alphapruning",
    "alphapruning_sparsities", "atp", "atp_grid", "atp_sparsities", "baseline_seeds", "block_alphas", "dlp",
    "dlp_score",
    "dlp_sparsities", "dsa_code", "dsa_code_importance", "dsa_paper", "dsa_paper_importance", "dsa_sparsities",
    "er", "er_densities", "er_plus",
    "esd_alpha", "global_threshold", "outlier_ratio", "outlier_ratios", "owl", "owl_sparsities", "released_value",
    "search_baselines",
    "threshold_shares", "tune", "uniform", "wanda_metric",
]
