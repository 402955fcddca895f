"""Models: loading (HF folders, hub ids, GGUF files, LLaVA-style models), their decoder blocks and
linears, saving a pruned model, and whether the hub is reachable."""
