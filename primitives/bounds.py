"""The sparsity bounds every allocation lies within, named once (no imports: the CLI reads them without
loading torch). A layer's sparsity is in ``[MIN_SPARSITY, MAX_SPARSITY]``; a target in
``(MIN_SPARSITY, MAX_SPARSITY]``."""

MIN_SPARSITY = 0.0
MAX_SPARSITY = 0.99  # post-processes keep every layer below this
