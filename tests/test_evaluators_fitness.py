import math

import pytest
import torch

from conftest import make_tiny_llama
from evaluators import fitness
from evaluators.errors import UserError
from evaluators.fitness import PruningEvaluator
from evaluators.models import model_linears
from evaluators.perplexity import perplexity, window_nlls
from evaluators.pruners import measured_sparsity, prune

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
    counts = ev.param_counts()
    per_block = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128
    assert counts == [per_block] * 4
    scores = ev.block_scores()
    assert [s.numel() for s in scores] == counts and scores[0].dtype == torch.float32
    sub = ev.block_scores(max_per_block=1000)
    assert [s.numel() for s in sub] == [1000] * 4 and torch.equal(sub[1], ev.block_scores(1000)[1])
    small = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, max_scores_per_block=500)
    assert [s.numel() for s in small.block_scores()] == [500] * 4


def test_low_fidelity(tiny_llama, tiny_val):
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, low_fidelity_windows=1,
                          low_fidelity_margin=0.0)
    low = {}
    for s in (0.2, 0.9):
        ev.apply([s] * 4)
        low[s] = perplexity(tiny_llama, tiny_val[:1])
    ev.restore()
    assert low[0.2] != low[0.9]
    good, bad = sorted(low, key=low.get)
    first = ev([good] * 4)
    assert ev.last_fidelity == "full" and ev.best_low == low[good]
    ev.apply([good] * 4)
    assert first == perplexity(tiny_llama, tiny_val)
    ev.restore()
    assert ev([bad] * 4) == low[bad]  # worse on the first window: rejected at low fidelity
    assert ev.last_fidelity == "low" and ev.low_fidelity_rejections == 1
    assert ev([good] * 4) == first and ev.last_fidelity == "full" and ev.full_evaluations == 2


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
