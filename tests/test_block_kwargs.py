"""Per-block keyword arguments in exact (sequential) pruning.

Gemma-3 alternates sliding-window and full-attention blocks, which get different attention masks and a
different RoPE (``position_embeddings``: local base 10k vs global 1M). Calibrating every block with block
0's keyword arguments (what ``prune`` did before) feeds the full-attention blocks the sliding mask and
the local RoPE: :func:`test_block0_kwargs_misrun_gemma3_full_attention_blocks` measures that error, the
other Gemma-3 tests check that :func:`capture_per_block_inputs` and ``prune`` reproduce the model's own
forward. On LLaMA every block gets block 0's arguments: the old, cheaper path is kept, bit for bit.
"""
from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from evaluators.data.calibration import (StatsCollector, capture_block_inputs, capture_per_block_inputs, run_block,
                                    same_value)
from evaluators.pruning.selection import prune_count
from evaluators.models.loading import decoder_blocks, model_linears
from evaluators.pruning.pruners import PRUNERS, measured_sparsity, prune

from conftest import TINY_VOCAB, make_tiny_llama

LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"] * 2
SLIDING_WINDOW = 8  # < the 32-token windows: sliding and full attention differ


def make_tiny_gemma3(seed: int = 0) -> Gemma3ForCausalLM:
    """A seeded random Gemma-3 text model: hidden 64, 6 blocks (2 sliding : 1 full, twice), window 8."""
    config = Gemma3TextConfig(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                              max_position_embeddings=128, sliding_window=SLIDING_WINDOW, layer_types=LAYER_TYPES)
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config).eval().requires_grad_(False)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gemma3():
    return make_tiny_gemma3()


@pytest.fixture
def calib() -> torch.Tensor:
    return torch.randint(0, TINY_VOCAB, (3, 32), generator=torch.Generator().manual_seed(1))


@torch.inference_mode()
def own_block_io(model, ids: torch.Tensor, batch_size: int) -> list[list[torch.Tensor]]:
    """Per batch, the model's own hidden states: the input of every block (``output_hidden_states``)
    and, last, the output of the last block (a hook: ``hidden_states[-1]`` is after the final norm)."""
    last_out = []
    handle = decoder_blocks(model)[-1].register_forward_hook(lambda m, a, out: last_out.append(out))
    try:
        result = []
        for start in range(0, ids.shape[0], batch_size):
            out = model(ids[start:start + batch_size], output_hidden_states=True, use_cache=False)
            n = len(decoder_blocks(model))
            assert len(out.hidden_states) == n + 1
            result.append(list(out.hidden_states[:n]) + [last_out[-1]])
    finally:
        handle.remove()
    return result


@torch.inference_mode()
def block_by_block(model, captured) -> list[list[torch.Tensor]]:
    """Per batch, block 0's captured input and every block's output, running the blocks one by one."""
    result = []
    for hidden, block_kwargs in captured:
        states = [hidden]
        for index, block in enumerate(decoder_blocks(model)):
            states.append(run_block(block, states[-1], block_kwargs[index]))
        result.append(states)
    return result


def max_diff(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> list[float]:
    """Per block output (index 1..L), the max abs difference over the batches."""
    return [max(float((x[i] - y[i]).abs().max()) for x, y in zip(a, b)) for i in range(1, len(a[0]))]


def test_gemma3_blocks_get_different_kwargs(gemma3, calib):
    captured = capture_per_block_inputs(gemma3, calib, batch_size=2)
    assert len(captured) == 2 and captured[0][0].shape == (2, 32, 64) and captured[1][0].shape == (1, 32, 64)
    for _, block_kwargs in captured:
        assert len(block_kwargs) == len(LAYER_TYPES)
        for kind, kwargs in zip(LAYER_TYPES, block_kwargs):
            same_as_0 = all(same_value(kwargs[k], block_kwargs[0][k]) for k in kwargs)
            assert same_as_0 == (kind == LAYER_TYPES[0]), kind


def test_per_block_inputs_reproduce_gemma3_forward(gemma3, calib):
    """Test 1: the captured per-block inputs, run block by block, give the model's own hidden states."""
    own = own_block_io(gemma3, calib, batch_size=2)
    new = block_by_block(gemma3, capture_per_block_inputs(gemma3, calib, batch_size=2))
    for h_own, h_new in zip(own, new):
        assert torch.equal(h_own[0], h_new[0])
    assert max(max_diff(own, new)) <= 1e-5


def test_block0_kwargs_misrun_gemma3_full_attention_blocks(gemma3, calib):
    """The old behaviour (every block with block 0's kwargs, as ``prune`` did before): the sliding blocks
    before the first full-attention block match, the full-attention block and all after it do not."""
    own = own_block_io(gemma3, calib, batch_size=2)
    n = len(LAYER_TYPES)
    old = block_by_block(gemma3, [(h, [k] * n) for h, k in capture_block_inputs(gemma3, calib, batch_size=2)])
    diffs = max_diff(own, old)
    first_full = LAYER_TYPES.index("full_attention")
    assert max(diffs[:first_full]) <= 1e-5
    assert min(diffs[first_full:]) > 1e-2, diffs


def test_llama_keeps_block0_fast_path():
    """Test 2: on LLaMA every block gets block 0's kwargs: one dict object per batch, the same tensors as
    :func:`capture_block_inputs` captures, and the same hidden states."""
    model = make_tiny_llama()
    ids = torch.randint(0, TINY_VOCAB, (3, 64), generator=torch.Generator().manual_seed(1))
    new = capture_per_block_inputs(model, ids, batch_size=2)
    old = capture_block_inputs(model, ids, batch_size=2)
    assert len(new) == len(old) == 2
    for (h_new, kw_new), (h_old, kw_old) in zip(new, old):
        assert torch.equal(h_new, h_old)
        assert len(kw_new) == 4 and all(k is kw_new[0] for k in kw_new)
        assert kw_new[0].keys() == kw_old.keys()
        assert all(same_value(kw_new[0][k], kw_old[k]) for k in kw_old)


def reference_prune_block0_kwargs(model, method: str, sparsities, ids: torch.Tensor, batch_size: int) -> None:
    """``prune`` as it was: every block run with block 0's keyword arguments."""
    pruner = PRUNERS[method]
    captured = capture_block_inputs(model, ids, batch_size)
    with torch.inference_mode():
        for block, block_lin, s in zip(decoder_blocks(model), model_linears(model), sparsities):
            with StatsCollector(block_lin, pruner.needs_hessian) as collector:
                for hidden, kwargs in captured:
                    run_block(block, hidden, kwargs)
            stats = collector.stats()
            for name, lin in block_lin.items():
                pruner.prune_linear(lin, s, stats[name])
            captured = [(run_block(block, hidden, kwargs), kwargs) for hidden, kwargs in captured]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_llama_prune_bit_identical_to_block0_path(method):
    ids = torch.randint(0, TINY_VOCAB, (3, 64), generator=torch.Generator().manual_seed(1))
    sparsities = [0.3, 0.5, 0.6, 0.7]
    model, reference = make_tiny_llama(), make_tiny_llama()
    prune(model, method, sparsities, ids, batch_size=2)
    reference_prune_block0_kwargs(reference, method, sparsities, ids, batch_size=2)
    ref_state = reference.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, ref_state[name]), name


def reference_prune_own_forward(model, method: str, sparsities, ids: torch.Tensor, batch_size: int) -> None:
    """Sequential pruning by the model's own forward: block ``l``'s statistics from full-model forwards
    (blocks ``< l`` already pruned), then its linears pruned."""
    pruner = PRUNERS[method]
    with torch.inference_mode():
        for block_lin, s in zip(model_linears(model), sparsities):
            with StatsCollector(block_lin, pruner.needs_hessian) as collector:
                for start in range(0, ids.shape[0], batch_size):
                    model(ids[start:start + batch_size], use_cache=False)
            stats = collector.stats()
            for name, lin in block_lin.items():
                pruner.prune_linear(lin, s, stats[name])


def test_gemma3_wanda_prune_matches_own_forward_reference(calib):
    """Test 3: exact Wanda on Gemma-3 prunes every block at 0.5 ± one weight per row, and as pruning
    block by block with the model's own hidden states (hence masks / RoPE) as inputs does."""
    sparsities = [0.5] * len(LAYER_TYPES)
    model, reference, old = make_tiny_gemma3(), make_tiny_gemma3(), make_tiny_gemma3()
    prune(model, "wanda", sparsities, calib, batch_size=2)
    reference_prune_own_forward(reference, "wanda", sparsities, calib, batch_size=2)
    for s, measured, block in zip(sparsities, measured_sparsity(model), model_linears(model)):
        for lin in block.values():
            assert torch.all((lin.weight == 0).sum(dim=1) == prune_count(s, lin.in_features))
        rows = sum(lin.out_features for lin in block.values())
        assert abs(measured - s) * sum(lin.weight.numel() for lin in block.values()) <= rows
    ref_state = reference.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, ref_state[name]), name
    # the old path (block 0's kwargs everywhere) prunes the full-attention blocks differently
    reference_prune_block0_kwargs(old, "wanda", sparsities, calib, batch_size=2)
    old_masks = [[lin.weight == 0 for lin in block.values()] for block in model_linears(old)]
    new_masks = [[lin.weight == 0 for lin in block.values()] for block in model_linears(model)]
    first_full = LAYER_TYPES.index("full_attention")
    for index, (o, n) in enumerate(zip(old_masks, new_masks)):
        same = all(torch.equal(a, b) for a, b in zip(o, n))
        assert same == (index < first_full), index
