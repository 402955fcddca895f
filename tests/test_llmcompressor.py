"""The llm-compressor recipe that ``dsa export --to llmcompressor`` writes, run by llm-compressor's own
``oneshot`` on a tiny model: the per-layer sparsities it produces are the recipe's, within one weight
per row.

llm-compressor is not in the test extra: llmcompressor 0.14.0.1 pins ``transformers<=5.17.0`` and this
project runs a newer transformers (5.24), so the test skips here and says so. It runs in an environment
with llm-compressor installed (checked: a venv with llmcompressor 0.14.0.1, compressed-tensors 0.19.0 and
transformers 5.17.0 over this project's packages; recipe 0.3/0.5/0.6/0.7 → 0.297/0.500/0.594/0.689).
"""
import pytest
import torch

llmcompressor = pytest.importorskip(
    "llmcompressor", reason="llm-compressor is not installed: llmcompressor 0.14.0.1 pins transformers<=5.17.0, "
                            "newer than this project's transformers allows (see the module doc)")


def test_oneshot_prunes_each_layer_to_the_recipes_sparsity(tmp_path):
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from conftest import TINY_VOCAB, make_tiny_llama
    from dsa.outputs.exports import llmcompressor_recipe
    from evaluators.models.loading import model_linears
    from evaluators.pruning.pruners import measured_sparsity

    make_tiny_llama().save_pretrained(tmp_path / "model")  # oneshot reads the model's config from disk
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{f"w{i}": i + 1 for i in range(TINY_VOCAB - 1)}},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    processor = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    want = [0.3, 0.5, 0.6, 0.7]
    layers = [f"model.layers.{i}" for i in range(4)]
    recipe = llmcompressor_recipe({"method": "wanda", "requested": want, "layers": layers, "target": 0.525})
    ids = torch.randint(0, TINY_VOCAB, (8, 64), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    llmcompressor.oneshot(model=model, dataset=data, recipe=recipe, processor=processor,
                          num_calibration_samples=8, max_seq_length=64)
    narrowest = min(lin.in_features for block in model_linears(model) for lin in block.values())
    got = measured_sparsity(model)
    assert all(abs(g - w) <= 1 / narrowest for g, w in zip(got, want)), (got, want)
