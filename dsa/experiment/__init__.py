"""``dsa compare``: every baseline (tuned as its authors tuned it), found formulas and searches over seeds at
one (model, pruner, sparsity), pruned exactly and measured on the same test windows.

- ``compare``: the comparison's settings, its rows and their measurement, resume
- ``folder``: the comparison folder's record, ``compare.json`` and ``compare.md``: its one writer and reader
- ``report``: ``compare.md`` (intervals, paired differences, verdicts) and the summary over seeds
- ``verify``: ``--verify ROW``, re-measuring what a comparison folder claims
"""
