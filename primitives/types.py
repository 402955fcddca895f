"""The types of the allocation-function grammar (DEAP strongly typed GP).

An allocation function is ``post(transform(reduce(pre(S))))``; the types make every tree that DEAP
builds respect that order. They are plain marker classes: DEAP only compares them.
"""


class Scores:
    """Element-wise scores of every layer: a ``[L, N]`` tensor, or a list of ``L`` 1-D tensors."""


class Value:
    """One number per layer: a ``[L]`` float64 tensor (a reduction, a transform of one, or depth)."""


class Allocation:
    """Per-layer sparsities in ``[lo, hi]`` whose parameter-weighted mean is the target."""


class Spread:
    """The evolved spread constant ``λ`` of a post-process (sparsities span ``target ± λ``)."""


class Temperature:
    """The evolved temperature of the softmax post-process."""
