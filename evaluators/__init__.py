"""Evaluators: load models and data, prune (exact, layer by layer), and score allocations fast.

- ``models``: ``load_model`` (causal LMs, GGUF files, LLaVA-style image-text models), ``decoder_blocks``,
  ``block_linears``, ``model_linears``
- ``saving``: ``save_pruned`` (atomic HF folder)
- ``data``: ``load_split`` (hub, a data folder, or the bundled copy), ``token_windows``, ``calibration_batch``
- ``calibration``: ``collect_stats`` (per-linear input statistics), block-input capture
- ``scores``: element-wise scores ``SCORERS`` (magnitude, wanda, sparsegpt)
- ``blockscores``: ``BlockScores``, what allocators read per decoder block (S_l, counts, Wanda's metric)
- ``masks``: per-row and per-block selection shared by all pruners
- ``pruners``: exact pruning ``prune`` with plug-ins ``PRUNERS``, ``measured_sparsity``
- ``perplexity``: ``perplexity``, ``window_nlls``
- ``fitness``: ``PruningEvaluator`` (the GP's fitness, apply/restore on precomputed ranks)
- ``leveldb``: ``open_levels``, EvoPress's per-layer level database (exact SparseGPT weights per sparsity
  level, on disk) and ``LevelWeights``, the evaluator's exact fitness for pruners that update weights
- ``baselines``: ``BASELINES``, the reference allocators (uniform, global, AlphaPruning, OWL, DSA's
  released code and paper formula, ATP, DLP) and ``tune``
- ``errors``: ``UserError``
"""
