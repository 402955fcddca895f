"""The sparsity bounds every allocation lies within, and the limits of every tree, named once (no imports:
the CLI reads them without loading torch). A layer's sparsity is in ``[MIN_SPARSITY, MAX_SPARSITY]``; a
target in ``(MIN_SPARSITY, MAX_SPARSITY]``."""

MIN_SPARSITY = 0.0
MAX_SPARSITY = 0.99  # post-processes keep every layer below this

# What any tree of this package may be: the parser, the interpreter and SymPy recurse once per level
MAX_HEIGHT = 50
MAX_SIZE = 1000
