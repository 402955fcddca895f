"""Models: loading (HF folders, hub ids, GGUF files, LLaVA-style models), their decoder blocks and
linears, saving a pruned model (plain or compressed-tensors), and whether the hub is reachable."""
