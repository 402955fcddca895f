"""What a run leaves for people and other tools: ``plots`` (fitness per generation, per-layer sparsity),
``show`` (the hall of fame as a table), ``exports`` (the allocation record, llm-compressor recipes),
``zeroshot`` (lm-eval accuracy for ``dsa eval --tasks``)."""
