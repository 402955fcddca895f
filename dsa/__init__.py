"""dsa-gp's application: the ``dsa`` command and the Python API that runs a search, a comparison or a
pruning on a language model, on top of the three libraries (``primitives``: the allocation language;
``gp``: the search engine, which knows nothing about LLMs; ``evaluators``: models, data, pruners, fitness).

Four rooms, each importing only from the rooms after it (and ``dsa.errors``, the one error type):

- ``dsa.cli``: the command line (flag types, the parser, dispatch to a command; ``dsa --help`` loads nothing
  heavy)
- ``dsa.experiment``: ``dsa compare``, the fair comparison: rows, paired intervals, the report, ``--verify``
- ``dsa.run``: one run: typed settings, the evaluator recipe, allocations, the search, its choice rule and
  its run folder, distributed evaluation
- ``dsa.outputs``: what a run leaves for people and other tools: plots, the hall-of-fame table, allocation
  exports (JSON, llm-compressor recipes), zero-shot accuracy

The walk of one setting and one run through the rooms is in docs/design.md.
"""
