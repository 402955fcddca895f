import math

import pytest
import torch

from conftest import TINY_VOCAB, make_tiny_llama
from evaluators.fitness import evaluator as fitness
from evaluators.errors import UserError
from evaluators.pruning.blockscores import subsample_scores
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.models.loading import model_linears
from evaluators.fitness.perplexity import dense_reference, perplexity, token_scores, window_kls, window_nlls
from evaluators.pruning.pruners import measured_sparsity, prune

SPARSITIES = [0.3, 0.5, 0.65, 0.8]


def _weights(model):
    return {n: lin.weight.clone() for block in model_linears(model) for n, lin in block.items()}


def test_perplexity_matches_hf_loss(tiny_llama, tiny_val):
    losses = [float(tiny_llama(w[None], labels=w[None]).loss) for w in tiny_val]
    assert window_nlls(tiny_llama, tiny_val, batch_size=3).tolist() == pytest.approx(losses, rel=1e-5)
    assert perplexity(tiny_llama, tiny_val) == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-5)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_apply_restore_bit_exact(tiny_llama, tiny_calib, tiny_val, method):
    dense_w = _weights(tiny_llama)
    ev = PruningEvaluator(tiny_llama, None, method=method, calib_ids=tiny_calib, val_windows=tiny_val)
    dense_ppl = ev.dense_perplexity()
    assert dense_ppl == perplexity(tiny_llama, tiny_val)
    pruned = ev(SPARSITIES)
    assert math.isfinite(pruned) and pruned != dense_ppl
    assert all(torch.equal(w, dense_w[n]) for n, w in _weights(tiny_llama).items())
    assert perplexity(tiny_llama, tiny_val) == dense_ppl
    ev.apply(SPARSITIES)
    assert measured_sparsity(tiny_llama) == pytest.approx(SPARSITIES, abs=1 / 64)
    assert perplexity(tiny_llama, tiny_val) == pruned
    ev.restore()
    assert all(torch.equal(w, dense_w[n]) for n, w in _weights(tiny_llama).items())
    assert ev.evaluations == 1 and ev.seconds > 0


def test_evaluator_masks_equal_exact_magnitude_pruner(tiny_llama, tiny_val):
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val)
    ev.apply(SPARSITIES)
    fast = _weights(tiny_llama)
    ev.restore()
    exact_model = make_tiny_llama()
    prune(exact_model, "magnitude", SPARSITIES)
    exact = _weights(exact_model)
    assert all(torch.equal(fast[n] == 0, exact[n] == 0) for n in fast)
    assert all(torch.equal(fast[n], exact[n]) for n in fast)


def test_wanda_evaluator_block0_masks_equal_exact_pruner(tiny_llama, tiny_calib, tiny_val):
    """Block 0 sees the same (dense) calibration inputs in both modes, so its masks agree."""
    ev = PruningEvaluator(tiny_llama, None, method="wanda", calib_ids=tiny_calib, val_windows=tiny_val)
    ev.apply(SPARSITIES)
    fast = _weights(tiny_llama)
    ev.restore()
    exact_model = make_tiny_llama()
    prune(exact_model, "wanda", SPARSITIES, tiny_calib)
    exact = _weights(exact_model)
    for n in model_linears(tiny_llama)[0]:
        assert torch.equal(fast[n] == 0, exact[n] == 0), n


def test_block_scores_and_counts(tiny_llama, tiny_calib, tiny_val):
    ev = PruningEvaluator(tiny_llama, None, method="wanda", calib_ids=tiny_calib, val_windows=tiny_val)
    counts = ev.blocks.counts
    per_block = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128
    assert counts == [per_block] * 4
    scores = ev.blocks.scores
    assert [s.numel() for s in scores] == counts and scores[0].dtype == torch.float32
    # S_l is the block's linears' scores, flattened and concatenated; Wanda's metric reads the same vector
    assert torch.equal(scores[2], ev.blocks.wanda_metric(2))
    sub = subsample_scores(scores[1], 1000, seed=1)
    assert sub.numel() == 1000 and torch.equal(sub, subsample_scores(scores[1], 1000, seed=1))
    small = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, max_scores_per_block=500)
    assert [s.numel() for s in small.blocks.scores] == [500] * 4
    # the evaluator's S_l is what dsa prune/eval compute from the model (same seeded subset)
    from dsa.run.llm import score_source
    again = score_source(tiny_llama, "magnitude", None, max_per_block=500)
    assert all(torch.equal(a, b) for a, b in zip(again.scores, small.blocks.scores))


def test_partial_windows_and_the_selection_split(tiny_llama, tiny_val):
    search, selection = tiny_val[:3], tiny_val[3:]
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=search, selection_windows=selection)
    ev.apply(SPARSITIES)
    want = {"first": perplexity(tiny_llama, search[:1]), "all": perplexity(tiny_llama, search),
            "selection": perplexity(tiny_llama, selection)}
    ev.restore()
    assert ev(SPARSITIES, windows=1) == want["first"]
    assert ev(SPARSITIES) == want["all"]
    assert ev(SPARSITIES, split="selection") == want["selection"]
    with pytest.raises(UserError, match="no 'test' windows"):
        ev(SPARSITIES, split="test")
    alone = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=search)
    with pytest.raises(UserError, match="selection"):
        alone(SPARSITIES, split="selection")


def kl_full(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(P ‖ Q) over the whole vocabulary, per window."""
    p, q = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1).mean(-1)


@pytest.mark.parametrize("chunk", [None, 16])
def test_kl_equals_the_full_kl_with_the_whole_vocabulary_and_bounds_it_below(tiny_llama, tiny_val, chunk):
    dense_logits = tiny_llama(tiny_val).logits[:, :-1]
    full_ref = dense_reference(tiny_llama, tiny_val, k=TINY_VOCAB, chunk=chunk)
    small_ref = dense_reference(tiny_llama, tiny_val, k=8, chunk=chunk)
    assert window_kls(tiny_llama, tiny_val, full_ref, chunk=chunk).abs().max() < 1e-5  # dense vs itself
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val)
    ev.apply(SPARSITIES)
    want = kl_full(dense_logits, tiny_llama(tiny_val).logits[:, :-1])
    full = window_kls(tiny_llama, tiny_val, full_ref, batch_size=3, chunk=chunk)
    small = window_kls(tiny_llama, tiny_val, small_ref, chunk=chunk)
    ev.close()
    assert full.tolist() == pytest.approx(want.tolist(), rel=1e-4)
    assert all(0 < a <= b + 1e-9 for a, b in zip(small.tolist(), full.tolist()))


def test_kl_fitness(tiny_llama, tiny_val):
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, fitness="kl", kl_top_k=TINY_VOCAB)
    assert ev([0.0] * 4) == pytest.approx(0.0, abs=1e-6)
    values = [ev([s] * 4) for s in (0.2, 0.5, 0.8)]
    assert values == sorted(values) and values[0] > 0  # more pruning, further from the dense model
    ev.apply([0.5] * 4)
    pruned = tiny_llama(tiny_val).logits[:, :-1]
    ev.restore()
    assert values[1] == pytest.approx(float(kl_full(tiny_llama(tiny_val).logits[:, :-1], pruned).mean()), rel=1e-4)
    with pytest.raises(UserError, match="fitness"):
        PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, fitness="mse")


def test_non_finite_loss_is_inf(tiny_llama, tiny_val, monkeypatch):
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val)
    monkeypatch.setattr(fitness, "window_nlls", lambda *a, **k: torch.tensor([float("nan")]))
    assert ev([0.5] * 4) == math.inf


def test_bad_arguments(tiny_llama, tiny_val):
    with pytest.raises(UserError):
        PruningEvaluator(tiny_llama, None, method="wanda", val_windows=tiny_val)  # no calibration
    with pytest.raises(UserError):
        PruningEvaluator(tiny_llama, None, method="nosuch", val_windows=tiny_val)
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val)
    with pytest.raises(UserError):
        ev([0.5] * 3)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_forward_masking_equals_inplace_and_never_writes_weights(tiny_llama, tiny_calib, tiny_val, method):
    dense_w = _weights(tiny_llama)
    keys = set(tiny_llama.state_dict())
    inplace = PruningEvaluator(tiny_llama, None, method=method, calib_ids=tiny_calib, val_windows=tiny_val)
    allocations = [SPARSITIES, [0.7] * 4, [0.0, 0.9, 0.2, 0.5]]
    want = [inplace(a) for a in allocations]
    ev = PruningEvaluator(tiny_llama, None, method=method, calib_ids=tiny_calib, val_windows=tiny_val,
                          masking="forward")
    assert ev.dense_perplexity() == inplace.dense_perplexity()
    assert [ev(a) for a in allocations] == want  # same masks, same arithmetic: bit-identical
    ev.apply(SPARSITIES)
    assert measured_sparsity(tiny_llama) == pytest.approx(SPARSITIES, abs=1 / 64)
    ev.close()
    assert set(tiny_llama.state_dict()) == keys  # a plain model again
    assert all(torch.equal(w, dense_w[n]) for n, w in _weights(tiny_llama).items())
    assert perplexity(tiny_llama, tiny_val) == inplace.dense_perplexity()


def test_unknown_masking_is_a_user_error(tiny_llama, tiny_val):
    with pytest.raises(UserError, match="masking"):
        PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, masking="lazy")


def test_chunked_lm_head_equals_full_logits(tiny_llama, tiny_val):
    full = window_nlls(tiny_llama, tiny_val, batch_size=2, chunk=None)
    chunked = window_nlls(tiny_llama, tiny_val, batch_size=2, chunk=16)  # 63 positions → 4 head chunks
    assert getattr(tiny_llama, "_dsa_head_split_ok") is True
    assert chunked.tolist() == pytest.approx(full.tolist(), rel=1e-6)


def test_chunked_lm_head_falls_back_when_logits_are_not_head_of_decoder(tiny_val):
    class Scaled(torch.nn.Module):  # logits ≠ lm_head(decoder(x)): the check must notice
        def __init__(self):
            super().__init__()
            self.inner = make_tiny_llama()
            self.config = self.inner.config

        def get_decoder(self):
            return self.inner.get_decoder()

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def forward(self, ids, **kw):
            out = self.inner(ids, **kw)
            out.logits = out.logits * 2
            return out

    model = Scaled()
    nlls = window_nlls(model, tiny_val, chunk=16)
    assert getattr(model, "_dsa_head_split_ok") is False
    assert nlls.tolist() == window_nlls(model, tiny_val, chunk=None).tolist()


def test_chunked_lm_head_applies_gemma_softcap(tiny_val):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
                              max_position_embeddings=256, final_logit_softcapping=5.0)
    model = Gemma3ForCausalLM(config).eval()
    chunked = window_nlls(model, tiny_val, chunk=16)
    assert getattr(model, "_dsa_head_split_ok") is True  # the soft-capped head reproduces the model's logits
    assert chunked.tolist() == pytest.approx(window_nlls(model, tiny_val, chunk=None).tolist(), rel=1e-6)


@pytest.mark.parametrize("masking", ["inplace", "forward", "block"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_weights_come_back_bit_exact_after_fifty_allocations(tiny_llama, tiny_calib, tiny_val, method, masking):
    dense_w = _weights(tiny_llama)
    ev = PruningEvaluator(tiny_llama, None, method=method, calib_ids=tiny_calib, val_windows=tiny_val[:1],
                          masking=masking)
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        ev((torch.rand(4, generator=gen, dtype=torch.float64) * 0.99).tolist())
    ev.close()
    assert all(torch.equal(w, dense_w[n]) for n, w in _weights(tiny_llama).items())
    assert ev.evaluations == 50


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_block_masking_equals_inplace_bit_for_bit_one_block_at_a_time(tiny_llama, tiny_calib, tiny_val, method):
    """cols ≤ 128 ≤ 256: uint8 levels are exact ranks, so "block" gives the other modes' perplexities."""
    dense_w = _weights(tiny_llama)
    keys = set(tiny_llama.state_dict())
    inplace = PruningEvaluator(tiny_llama, None, method=method, calib_ids=tiny_calib, val_windows=tiny_val)
    allocations = [SPARSITIES, [0.7] * 4, [0.0, 0.9, 0.2, 0.5], [1.0, 0.0, 0.99, 0.01]]
    want = [inplace(a) for a in allocations]
    ev = PruningEvaluator(tiny_llama, None, method=method, calib_ids=tiny_calib, val_windows=tiny_val,
                          batch_size=len(tiny_val), masking="block")
    assert ev.dense_perplexity() == inplace.dense_perplexity()
    assert [ev(a) for a in allocations] == want
    assert ev.state_bytes == sum(w.numel() for w in dense_w.values())  # 1 byte per prunable weight
    assert inplace.state_bytes == sum(w.numel() * (4 + 2) for w in dense_w.values())  # fp32 copy + int16 ranks

    # inside a block's forward: its linears are masked, every other block's are dense (one masked copy at a time)
    linears = model_linears(tiny_llama)
    seen = []

    def spy(l):
        def hook(module, args, output):
            others = [lin.weight for m, block in enumerate(linears) if m != l for lin in block.values()]
            seen.append((l, float((module.weight == 0).float().mean()), all(bool((w != 0).all()) for w in others)))
        return hook
    handles = [lin.register_forward_hook(spy(l)) for l, block in enumerate(linears) for lin in block.values()]
    ev.apply(SPARSITIES)
    assert all(torch.equal(w, dense_w[n]) for n, w in _weights(tiny_llama).items())  # outside the forward: dense
    assert perplexity(tiny_llama, tiny_val, batch_size=len(tiny_val)) == want[0]
    for h in handles:
        h.remove()
    assert len(seen) == 7 * 4
    for l, zeros, others_dense in seen:
        assert zeros == pytest.approx(SPARSITIES[l], abs=1 / 64) and others_dense
    ev.close()
    assert set(tiny_llama.state_dict()) == keys
    assert all(not block._forward_pre_hooks and not block._forward_hooks for block in tiny_llama.model.layers)
    assert all(torch.equal(w, dense_w[n]) for n, w in _weights(tiny_llama).items())
    assert perplexity(tiny_llama, tiny_val) == inplace.dense_perplexity()


def test_block_masking_puts_weights_back_when_a_block_raises(tiny_llama, tiny_val):
    dense_w = _weights(tiny_llama)
    storage = {n: lin.weight.data_ptr() for block in model_linears(tiny_llama) for n, lin in block.items()}
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, masking="block")

    def boom(module, args, output):
        raise RuntimeError("boom")
    handle = tiny_llama.model.layers[1].mlp.down_proj.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        ev([0.5] * 4)
    handle.remove()
    assert all(lin.weight.data_ptr() == storage[n] for block in model_linears(tiny_llama) for n, lin in block.items())
    assert all(torch.equal(w, dense_w[n]) for n, w in _weights(tiny_llama).items())
    assert math.isfinite(ev([0.5] * 4))
    ev.close()


def test_level_quantisation_rule_on_a_wide_matrix():
    from evaluators.pruning.selection import (level_count, level_mask, level_threshold, prune_count, row_levels,
                                  row_ranks)
    cols = 1000
    scores = torch.randn(16, cols, generator=torch.Generator().manual_seed(0))
    levels, ranks = row_levels(scores), row_ranks(scores)
    assert levels.dtype == torch.uint8 and torch.equal(levels.long(), ranks.long() * 256 // cols)
    previous = torch.zeros_like(levels, dtype=torch.bool)
    for s in torch.linspace(0, 1, 401).tolist():
        q = level_threshold(s, cols)
        mask = level_mask(levels, q)
        pruned = mask.sum(dim=1)
        assert bool((pruned == level_count(q, cols)).all())  # the same count in every row
        assert abs(level_count(q, cols) - prune_count(s, cols)) <= math.ceil(cols / 256) / 2
        assert torch.equal(mask, ranks < level_count(q, cols))  # a prefix of the exact ranking
        assert bool((mask | ~previous).all())  # nested: monotone in s
        previous = mask
    assert not level_mask(levels, level_threshold(0.0, cols)).any()
    assert level_mask(levels, level_threshold(1.0, cols)).all()
    # exact (= int16 ranks) when cols ≤ 256, or for s = j/256 with cols a multiple of 256
    for cols, sparsities in ((200, torch.linspace(0, 1, 201).tolist()), (4096, [j / 256 for j in range(257)])):
        scores = torch.randn(4, cols, generator=torch.Generator().manual_seed(1))
        levels, ranks = row_levels(scores), row_ranks(scores)
        for s in sparsities:
            assert torch.equal(level_mask(levels, level_threshold(s, cols)), ranks < prune_count(s, cols)), (cols, s)


def test_wanda_scores_do_not_depend_on_the_number_of_calibration_tokens(tiny_llama, tiny_calib, tiny_val):
    """S is what an allocation function reads: the same text twice (twice the tokens) gives the same
    scores, so a formula found with 128×2048 calibration tokens on a GPU means the same with 16×512."""
    once = PruningEvaluator(tiny_llama, None, method="wanda", calib_ids=tiny_calib, val_windows=tiny_val)
    twice = PruningEvaluator(tiny_llama, None, method="wanda", calib_ids=torch.cat([tiny_calib, tiny_calib]),
                             val_windows=tiny_val)
    assert twice.blocks.tokens == 2 * once.blocks.tokens
    for a, b in zip(once.blocks.scores, twice.blocks.scores):
        assert torch.allclose(a, b, rtol=1e-5)


def test_fitness_is_a_plug_in(tiny_llama, tiny_calib, tiny_val, monkeypatch):
    """A fitness is one record: the evaluator, the CLI's choices and the run's description read it."""
    from dsa.run.settings import FITNESSES as CLI_FITNESSES
    from evaluators.fitness.evaluator import FITNESSES, Fitness

    record = Fitness("windows", "number of windows scored", lambda ev, tokens, split: float(tokens.shape[0]))
    monkeypatch.setitem(FITNESSES, "windows", record)
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, fitness="windows")
    assert ev([0.5] * ev.n_blocks) == float(tiny_val.shape[0])
    assert ev([0.5] * ev.n_blocks, windows=1) == 1.0
    assert CLI_FITNESSES == ("ppl", "ppl-known", "kl")


# --- the fitness that leaves out the text's <unk> markers, and per-window values for the choice rule ---

@pytest.mark.parametrize("chunk", [None, 16])
def test_token_scores_agree_with_window_nlls_and_kls(tiny_llama, tiny_val, chunk):
    ref = dense_reference(tiny_llama, tiny_val, k=8, chunk=chunk)
    tokens, kls = token_scores(tiny_llama, tiny_val, ref, chunk=chunk)
    assert tokens.shape == (tiny_val.shape[0], tiny_val.shape[1] - 1)
    assert torch.allclose(tokens.mean(dim=1), window_nlls(tiny_llama, tiny_val, chunk=chunk), rtol=1e-6, atol=1e-9)
    assert torch.allclose(kls, window_kls(tiny_llama, tiny_val, ref, chunk=chunk), rtol=1e-6, atol=1e-9)


def test_ppl_known_leaves_out_exactly_the_marked_targets(tiny_llama, tiny_val):
    ignore = torch.zeros_like(tiny_val, dtype=torch.bool)
    ignore[:, 10:14] = True   # a 4-token marker in every window: targets 10–13 leave the loss
    ignore[1, 40] = True
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, fitness="ppl-known",
                          ignore={"search": ignore})
    got = ev(SPARSITIES)
    ev.apply(SPARSITIES)
    tokens = token_scores(tiny_llama, tiny_val)[0]
    plain = perplexity(tiny_llama, tiny_val)
    ev.restore()
    keep = ~ignore[:, 1:]  # column t of the token NLLs predicts token t + 1
    assert keep.sum() == tiny_val.numel() - tiny_val.shape[0] - 4 * tiny_val.shape[0] - 1
    assert got == pytest.approx(math.exp(float(tokens[keep].sum() / keep.sum())), rel=1e-9)
    assert got != pytest.approx(plain, rel=1e-6)
    # nothing marked: the plain perplexity
    none = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, fitness="ppl-known",
                            ignore={"search": torch.zeros_like(ignore)})
    assert none(SPARSITIES) == pytest.approx(plain, rel=1e-9)
    # per window (what the choice rule pairs): each window's mean over its kept targets
    per = ev(SPARSITIES, per_window=True)
    assert per == pytest.approx([float(tokens[w][keep[w]].mean()) for w in range(tiny_val.shape[0])], rel=1e-9)
    with pytest.raises(UserError, match="marker tokens"):
        PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, fitness="ppl-known")


def test_per_window_values_of_the_plain_fitnesses(tiny_llama, tiny_val):
    search, selection = tiny_val[:2], tiny_val[2:]
    for fitness in ("ppl", "kl"):  # KL searches decide on perplexity too
        ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=search, selection_windows=selection,
                              fitness=fitness)
        per = ev(SPARSITIES, split="selection", per_window=True)
        ev.apply(SPARSITIES)
        want = window_nlls(tiny_llama, selection).tolist()
        ev.restore()
        assert per == pytest.approx(want, rel=1e-12)
