"""One run: what ``dsa search``, ``dsa prune`` and ``dsa eval`` do once the flags are typed settings.

- ``schema``: how a setting is declared once (a spec field and its metadata) and what is derived from it;
  ``settings``: the typed settings themselves (model, data, pruner, evaluator), their defaults and checks
- ``llm``: the recipe that loads a model, its data and calibration and builds the fitness evaluator; prune
  and eval
- ``allocations``: what ``--allocation`` names (a baseline, a run folder, a formula) as per-layer sparsities
- ``problem``, ``synthetic``, ``multitask``, ``levels``: the search problems (formula, toy task, several
  tasks at once, the direct search's levels)
- ``search``: ``dsa search`` (build, search, write the run folder); ``choice``: what a search ships;
  ``folder``: the run folder's files, config.json and the choice's record written and every file read back
  without trusting it
- ``distributed``: where candidates are evaluated (this process or Ray actors)
"""
