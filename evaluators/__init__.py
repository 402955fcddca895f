"""Evaluators: load models and data, prune (exact, layer by layer), and score allocations fast.

- ``models``: ``load_model``, ``decoder_blocks``, ``block_linears``, ``model_linears``, ``save_pruned``
- ``data``: ``load_split``, ``token_windows``, ``calibration_batch``
- ``calibration``: ``collect_stats`` (per-linear input statistics), block-input capture
- ``scores``: element-wise scores ``SCORERS`` (magnitude, wanda, sparsegpt)
- ``masks``: per-row selection shared by all pruners
- ``pruners``: exact pruning ``prune`` with plug-ins ``PRUNERS``, ``measured_sparsity``
- ``perplexity``: ``perplexity``, ``window_nlls``
- ``fitness``: ``PruningEvaluator`` (the GP's fitness, apply/restore on precomputed ranks)
- ``baselines``: ``BASELINES`` allocators (uniform, global, alphapruning)
- ``errors``: ``UserError``
"""
