"""Shared fixtures: a tiny seeded random LLaMA and token windows for it."""
from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

TINY_VOCAB = 256


def make_tiny_llama(seed: int = 0, layers: int = 4) -> LlamaForCausalLM:
    """A seeded random LlamaForCausalLM (hidden 64, MLP 128, 4 heads / 2 KV heads), eval, no grads."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


@pytest.fixture
def tiny_llama():
    """The tiny model, run single-threaded (thread start-up costs more than 64-wide matmuls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_tiny_llama()
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_calib() -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (4, 64), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def tiny_val() -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (4, 64), generator=torch.Generator().manual_seed(2))


@pytest.fixture(autouse=True, scope="session")
def _level_database_cache(tmp_path_factory):
    """SparseGPT's level databases (evaluators.fitness.leveldb) go to a temporary folder, never to ~/.cache
    (subprocesses inherit the variable)."""
    import os
    old = os.environ.get("DSA_CACHE_DIR")
    os.environ["DSA_CACHE_DIR"] = str(tmp_path_factory.mktemp("dsa-cache"))
    yield
    if old is None:
        os.environ.pop("DSA_CACHE_DIR", None)
    else:
        os.environ["DSA_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread is fastest, and avoids oversubscription on a busy machine (a module opts in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def task():
    """The synthetic task (a known optimum; no model)."""
    from dsa.run.synthetic import synthetic_task
    return synthetic_task()


WORDS = [f"w{i}" for i in range(TINY_VOCAB - 1)]  # the tiny tokenizer's words


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny LLaMA + word-level tokenizer in a folder, and a text file of its words."""
    root = tmp_path_factory.mktemp("tiny")
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(root / "model")
    make_tiny_llama(layers=4).save_pretrained(root / "model")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS[:40]) for _ in range(30)) for _ in range(120)]
    (root / "text.txt").write_text("\n".join(lines))
    return root
