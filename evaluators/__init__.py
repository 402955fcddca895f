"""Evaluators: load models and data, prune (exact, layer by layer), and score allocations fast.

- ``models``: loading (``load_model``: causal LMs, GGUF files, LLaVA-style image-text models;
  ``decoder_blocks``, ``model_linears``), ``saving`` (``save_pruned``, an atomic HF folder), ``compressed``
  (the compressed-tensors sparse formats), ``hub``
- ``data``: ``text`` (``load_split``: hub, a data folder or the bundled copy in ``data/bundled/``;
  ``token_windows``, ``calibration_batch``), ``calibration`` (``collect_stats``, block-input capture)
- ``pruning``: ``scores`` (``SCORERS``), ``selection`` (which weights a per-row or per-block quota
  removes), ``pruners`` (exact ``prune`` with plug-ins ``PRUNERS``, ``measured_sparsity``), ``methods``
  (one record per pruning method: scorer, pruner, what the rest reads), ``blockscores`` (``BlockScores``:
  what allocators read per decoder block)
- ``fitness``: ``evaluator`` (``PruningEvaluator``, the search's fitness, and the ``FITNESSES``
  records), ``masking`` (how a candidate's masks reach the model), ``leveldb`` (EvoPress's level database:
  exact weights for pruners that update them; ``levelfiles``, its files), ``perplexity`` (perplexity, KL), ``intervals`` (bootstrap
  and paired intervals over windows)
- ``baselines``: ``BASELINES``, the reference allocators (uniform, global, ER, ER-plus, AlphaPruning, OWL,
  DSA's released code and paper formula, ATP, DLP) and ``tune``
- ``errors``: ``UserError``
"""
