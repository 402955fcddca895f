"""Fitness: the search's evaluator (an allocation → validation perplexity or KL), how masks or stored
level weights reach the model, perplexity and KL over windows, and intervals over windows."""
