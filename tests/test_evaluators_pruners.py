import pytest
import torch
from torch import nn

from evaluators.data.calibration import LinearStats, capture_block_inputs, collect_stats
from evaluators.errors import UserError
from evaluators.pruning.selection import prune_count, row_ranks, threshold_mask
from evaluators.models.loading import model_linears
from evaluators.pruning.pruners import PRUNERS, SparseGPTPruner, measured_sparsity, prune
from evaluators.pruning.scores import PERCDAMP

SPARSITIES = [0.3, 0.5, 0.65, 0.8]


def test_row_ranks_is_stable_inverse_permutation():
    scores = torch.tensor([[3.0, 1.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    ranks = row_ranks(scores)
    assert ranks.dtype == torch.int16
    assert ranks.tolist() == [[3, 1, 2, 0], [0, 1, 2, 3]]
    assert prune_count(0.5, 7) == 4 and prune_count(0.0, 7) == 0 and prune_count(1.0, 7) == 7


def test_collect_stats_shapes(tiny_llama, tiny_calib, capsys):
    stats = collect_stats(tiny_llama, tiny_calib, need_hessian=True)
    assert "calibration" not in capsys.readouterr().err
    again = collect_stats(tiny_llama, tiny_calib, need_hessian=False, batch_size=1, progress=True)
    assert "calibration: 100%" in capsys.readouterr().err  # one step per calibration batch, shown on request
    assert torch.equal(again["model.layers.0.self_attn.q_proj"].sq_norm, stats["model.layers.0.self_attn.q_proj"].sq_norm)
    from dsa.run.llm import score_source  # dsa prune/eval's scores: the same bar through their progress flag
    score_source(tiny_llama, "wanda", tiny_calib, progress=True)
    assert "calibration: 100%" in capsys.readouterr().err
    assert set(stats) == {n for block in model_linears(tiny_llama) for n in block}
    q = stats["model.layers.0.self_attn.q_proj"]
    assert q.nsamples == tiny_calib.numel() and q.sq_norm.shape == (64,)
    assert q.hessian.shape == (64, 64) and torch.allclose(torch.diag(q.hessian), 2 * q.sq_norm.float() / q.nsamples)


def test_block_inputs_carry_position_embeddings(tiny_llama, tiny_calib):
    captured = capture_block_inputs(tiny_llama, tiny_calib, batch_size=2)
    assert len(captured) == 2
    hidden, kwargs = captured[0]
    assert hidden.shape == (2, 64, 64) and "position_embeddings" in kwargs


ROW_EXACT = ["magnitude", "wanda", "sparsegpt-row"]  # SparseGPT's default mask is one threshold per column block


@pytest.mark.parametrize("method", ROW_EXACT)
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


def test_sparsegpt_prunes_reference_count_per_column_block(tiny_llama, tiny_calib):
    """Every linear of the tiny model has ≤ 128 input columns: one column block, one threshold, which
    prunes int(n·s) + 1 of its n weights (no ties among random scores)."""
    prune(tiny_llama, "sparsegpt", SPARSITIES, tiny_calib)
    for s, measured, block in zip(SPARSITIES, measured_sparsity(tiny_llama), model_linears(tiny_llama)):
        for lin in block.values():
            n = lin.weight.numel()
            assert int((lin.weight == 0).sum()) == int(n * s) + 1
        total = sum(lin.weight.numel() for lin in block.values())
        assert measured == sum(int(lin.weight.numel() * s) + 1 for lin in block.values()) / total
        assert 0 < measured - s <= len(block) / total + 1e-12  # at most one weight more per column block


def test_threshold_mask_is_the_reference_rule():
    scores = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.7], [0.2, 0.8, 0.4, 0.6, 0.0]])
    mask = threshold_mask(scores, 0.35)  # int(10·0.35) = 3: threshold = sorted[3] = 0.3, pruned ≤ 0.3
    assert mask.tolist() == [[False, True, False, True, False], [True, False, False, False, True]]
    ties = torch.tensor([[1.0, 1.0, 1.0, 2.0]])
    assert int(threshold_mask(ties, 0.25).sum()) == 3  # every score tied at the threshold goes
    assert not threshold_mask(scores, 0.0).any()  # the reference would prune the minimum
    assert threshold_mask(scores, 0.95).all() and threshold_mask(scores, 1.0).all()


def _reference_fasterprune(W, H, sparsity, blocksize=128, percdamp=PERCDAMP, prunen=0, prunem=0):
    """SparseGPT's fasterprune (unstructured, or N:M with ``prunen`` of every ``prunem``), written out
    directly from the algorithm's description."""
    W, H = W.clone().float(), H.clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape(1, -1)) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            w, d = W1[:, i], Hinv1[i, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_sparsegpt_block_mask_matches_reference(sparsity):
    g = torch.Generator().manual_seed(0)
    rows, cols = 24, 200  # two column blocks, the second 72 wide
    X = torch.randn(300, cols, generator=g) @ torch.randn(cols, cols, generator=g) / cols ** 0.5
    X[:, 17] = 0  # a dead input
    H = 2 / 300 * X.T @ X
    W = torch.randn(rows, cols, generator=g)
    want = _reference_fasterprune(W, H, sparsity)
    lin = nn.Linear(cols, rows, bias=False).requires_grad_(False)
    lin.weight.copy_(W)
    stats = LinearStats(sq_norm=(X * X).sum(0).double(), nsamples=300, hessian=H)
    SparseGPTPruner().prune_linear(lin, sparsity, stats)
    assert torch.equal(lin.weight == 0, want == 0)
    assert torch.allclose(lin.weight, want, atol=1e-5, rtol=1e-4)
    for i1, i2 in ((0, 128), (128, 200)):
        n = rows * (i2 - i1)
        assert int((lin.weight[:, i1:i2] == 0).sum()) == int(n * sparsity) + 1


def test_sparsegpt_masks_are_registered():
    assert PRUNERS["sparsegpt"].mask == "block" and PRUNERS["sparsegpt"].name == "sparsegpt"
    assert PRUNERS["sparsegpt-row"].mask == "row" and PRUNERS["sparsegpt-row"].name == "sparsegpt-row"
    with pytest.raises(UserError):
        SparseGPTPruner(mask="column")


@pytest.mark.parametrize("method", ["sparsegpt", "sparsegpt-row"])
def test_zero_sparsity_is_a_no_op(tiny_llama, tiny_calib, method):
    dense = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    prune(tiny_llama, method, [0.0] * 4, tiny_calib)
    assert all(torch.equal(v, dense[k]) for k, v in tiny_llama.state_dict().items())


def test_sparsegpt_update_beats_plain_masking():
    """The OBS update must reconstruct the layer output better than zeroing by magnitude or Wanda."""
    torch.manual_seed(0)
    X = torch.randn(512, 96) @ torch.randn(96, 96)  # correlated inputs
    lin = nn.Linear(96, 48, bias=False).requires_grad_(False)
    W = lin.weight.clone()
    stats = LinearStats(sq_norm=(X * X).sum(0).double(), nsamples=512, hessian=2 / 512 * X.T @ X)
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt", "sparsegpt-row"):
        lin.weight.copy_(W)
        PRUNERS[method].prune_linear(lin, 0.5, stats)
        errors[method] = float(((X @ (lin.weight - W).T) ** 2).sum())
    assert max(errors["sparsegpt"], errors["sparsegpt-row"]) < errors["wanda"] < errors["magnitude"]


def test_bad_inputs(tiny_llama):
    with pytest.raises(UserError):
        prune(tiny_llama, "nosuch", [0.5] * 4)
    with pytest.raises(UserError):
        prune(tiny_llama, "magnitude", [0.5] * 3)
    with pytest.raises(UserError):
        prune(tiny_llama, "magnitude", [1.5] * 4)
    with pytest.raises(UserError, match="calib"):
        prune(tiny_llama, "wanda", [0.5] * 4, calib_ids=None)


def test_every_pruner_has_one_method_record():
    """A pruner is reachable only through its method record (evaluators.pruning.methods): scorer, pruner, ε, modifier."""
    from dsa.run.settings import METHODS as CLI_METHODS
    from evaluators.pruning.methods import METHODS, get_method
    from evaluators.pruning.pruners import PRUNERS
    assert {m.pruner for m in METHODS.values()} == set(PRUNERS.values())
    assert CLI_METHODS == ("magnitude", "wanda", "sparsegpt")
    assert get_method("sparsegpt").updates_weights and not get_method("wanda").updates_weights
    assert get_method("wanda").needs_calibration and not get_method("magnitude").needs_calibration
    assert get_method("sparsegpt-row").scorer is get_method("sparsegpt").scorer
    with pytest.raises(UserError, match="magnitude, wanda, sparsegpt"):
        get_method("obc")
