import pytest
import torch
from torch import nn

from evaluators.calibration import LinearStats, capture_block_inputs, collect_stats
from evaluators.errors import UserError
from evaluators.masks import prune_count, row_ranks
from evaluators.models import model_linears
from evaluators.pruners import PRUNERS, measured_sparsity, prune

SPARSITIES = [0.3, 0.5, 0.65, 0.8]


def test_row_ranks_is_stable_inverse_permutation():
    scores = torch.tensor([[3.0, 1.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    ranks = row_ranks(scores)
    assert ranks.dtype == torch.int16
    assert ranks.tolist() == [[3, 1, 2, 0], [0, 1, 2, 3]]
    assert prune_count(0.5, 7) == 4 and prune_count(0.0, 7) == 0 and prune_count(1.0, 7) == 7


def test_collect_stats_shapes(tiny_llama, tiny_calib):
    stats = collect_stats(tiny_llama, tiny_calib, need_hessian=True)
    assert set(stats) == {n for block in model_linears(tiny_llama) for n in block}
    q = stats["model.layers.0.self_attn.q_proj"]
    assert q.nsamples == tiny_calib.numel() and q.sq_norm.shape == (64,)
    assert q.hessian.shape == (64, 64) and torch.allclose(torch.diag(q.hessian), 2 * q.sq_norm.float() / q.nsamples)


def test_block_inputs_carry_position_embeddings(tiny_llama, tiny_calib):
    captured = capture_block_inputs(tiny_llama, tiny_calib, batch_size=2)
    assert len(captured) == 2
    hidden, kwargs = captured[0]
    assert hidden.shape == (2, 64, 64) and "position_embeddings" in kwargs


@pytest.mark.parametrize("method", sorted(PRUNERS))
def test_exact_pruner_hits_requested_sparsity_per_row(tiny_llama, tiny_calib, method):
    dense = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    prune(tiny_llama, method, SPARSITIES, tiny_calib)
    for s, block in zip(SPARSITIES, model_linears(tiny_llama)):
        for lin in block.values():
            zeros_per_row = (lin.weight == 0).sum(dim=1)
            assert torch.all(zeros_per_row == prune_count(s, lin.in_features)), method
    for s, measured, block in zip(SPARSITIES, measured_sparsity(tiny_llama), model_linears(tiny_llama)):
        rows = sum(lin.out_features for lin in block.values())
        assert abs(measured - s) * sum(l.weight.numel() for l in block.values()) <= rows
    # only decoder-block linears change
    linear_names = {f"{n}.weight" for block in model_linears(tiny_llama) for n in block}
    for k, v in tiny_llama.state_dict().items():
        if k not in linear_names:
            assert torch.equal(v, dense[k]), k


def test_zero_sparsity_is_a_no_op(tiny_llama, tiny_calib):
    dense = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    prune(tiny_llama, "sparsegpt", [0.0] * 4, tiny_calib)
    assert all(torch.equal(v, dense[k]) for k, v in tiny_llama.state_dict().items())


def test_sparsegpt_update_beats_plain_masking():
    """The OBS update must reconstruct the layer output better than zeroing by magnitude or Wanda."""
    torch.manual_seed(0)
    X = torch.randn(512, 96) @ torch.randn(96, 96)  # correlated inputs
    lin = nn.Linear(96, 48, bias=False).requires_grad_(False)
    W = lin.weight.clone()
    stats = LinearStats(sq_norm=(X * X).sum(0).double(), nsamples=512, hessian=2 / 512 * X.T @ X)
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        lin.weight.copy_(W)
        PRUNERS[method].prune_linear(lin, 0.5, stats)
        errors[method] = float(((X @ (lin.weight - W).T) ** 2).sum())
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


def test_bad_inputs(tiny_llama):
    with pytest.raises(UserError):
        prune(tiny_llama, "nosuch", [0.5] * 4)
    with pytest.raises(UserError):
        prune(tiny_llama, "magnitude", [0.5] * 3)
    with pytest.raises(UserError):
        prune(tiny_llama, "magnitude", [1.5] * 4)
    with pytest.raises(UserError, match="calib"):
        prune(tiny_llama, "wanda", [0.5] * 4, calib_ids=None)
