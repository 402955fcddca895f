"""N:M sparsity: the pruners' N:M masks (Wanda's and SparseGPT's ``prune_n, prune_m``), exact pruning of
a model with N:M per block, and the two N:M allocation spaces (mixed N:M with a fixed M; dense or 2:4)."""
import pytest
import torch
from torch import nn

from evaluators.data.calibration import LinearStats
from evaluators.errors import UserError
from evaluators.models.loading import model_linears
from evaluators.pruning.nm import dense_or_nm, mixed_nm
from evaluators.pruning.pruners import PRUNERS, SparseGPTPruner, measured_sparsity, prune
from evaluators.pruning.selection import nm_count, nm_mask
from test_evaluators_pruners import _reference_fasterprune


def groups_hold(weight: torch.Tensor, n: int, m: int) -> bool:
    """Every group of m consecutive input weights of every row has at least n zeros (exactly n when the
    dense weights have none)."""
    zeros = (weight == 0).reshape(weight.shape[0], -1, m).sum(-1)
    return bool((zeros >= n).all())


def test_nm_mask_by_hand():
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.0, 5.0, 4.0, 7.0, 6.0],
                           [1.0, 1.0, 1.0, 1.0, 0.0, 9.0, 0.0, 9.0]])  # ties: the lower column first
    want = torch.tensor([[0, 1, 0, 1, 1, 1, 0, 0],
                         [1, 1, 0, 0, 1, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(nm_mask(scores, 2, 4), want)
    assert nm_count(0.25, 8) == 2 and nm_count(0.0, 4) == 0
    with pytest.raises(ValueError, match="1/4"):
        nm_count(0.3, 4)


def _wanda_reference(W, sq_norm, nsamples, prune_n, prune_m):
    """Wanda's prune_wanda N:M branch, written out: per group of prune_m columns, the prune_n lowest."""
    metric = W.abs() * torch.sqrt(sq_norm.float() / nsamples).reshape(1, -1)
    mask = torch.zeros_like(metric, dtype=torch.bool)
    for ii in range(metric.shape[1]):
        if ii % prune_m == 0:
            tmp = metric[:, ii:(ii + prune_m)].float()
            mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
    return W.masked_fill(mask, 0)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (6, 8)])
def test_wanda_and_magnitude_nm_follow_the_reference(n, m):
    g = torch.Generator().manual_seed(n * 10 + m)
    W = torch.randn(12, 64, generator=g)
    X = torch.randn(100, 64, generator=g)
    stats = LinearStats(sq_norm=(X * X).sum(0).double(), nsamples=100)
    lin = nn.Linear(64, 12, bias=False).requires_grad_(False)
    lin.weight.copy_(W)
    PRUNERS["wanda"].prune_linear(lin, n / m, stats, m)
    assert torch.equal(lin.weight, _wanda_reference(W, stats.sq_norm, 100, n, m))
    assert ((lin.weight == 0).reshape(12, -1, m).sum(-1) == n).all()
    lin.weight.copy_(W)
    PRUNERS["magnitude"].prune_linear(lin, n / m, None, m)
    assert torch.equal(lin.weight, W.masked_fill(nm_mask(W.abs(), n, m), 0))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_sparsegpt_nm_matches_the_reference(n, m):
    g = torch.Generator().manual_seed(3)
    rows, cols = 16, 256  # two column blocks
    X = torch.randn(300, cols, generator=g) @ torch.randn(cols, cols, generator=g) / cols ** 0.5
    H = 2 / 300 * X.T @ X
    W = torch.randn(rows, cols, generator=g)
    want = _reference_fasterprune(W, H, 0.0, prunen=n, prunem=m)
    lin = nn.Linear(cols, rows, bias=False).requires_grad_(False)
    lin.weight.copy_(W)
    SparseGPTPruner().prune_linear(lin, n / m, LinearStats(sq_norm=(X * X).sum(0).double(), nsamples=300, hessian=H), m)
    assert torch.equal(lin.weight == 0, want == 0)
    assert torch.allclose(lin.weight, want, atol=1e-5, rtol=1e-4)
    assert ((lin.weight == 0).reshape(rows, -1, m).sum(-1) == n).all()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_prune_a_model_with_mixed_nm_per_block(tiny_llama, tiny_calib, method):
    sparsities = [0.25, 0.5, 0.75, 0.0]  # 1:4, 2:4, 3:4, dense
    prune(tiny_llama, method, sparsities, tiny_calib, m=4)
    assert measured_sparsity(tiny_llama) == pytest.approx(sparsities, abs=1e-3)
    for s, block in zip(sparsities, model_linears(tiny_llama)):
        assert all(groups_hold(lin.weight, round(s * 4), 4) for lin in block.values())


def test_prune_refuses_what_nm_cannot_hold(tiny_llama, tiny_calib):
    with pytest.raises(UserError, match="block 1.*1/4"):
        prune(tiny_llama, "wanda", [0.5, 0.3, 0.5, 0.5], tiny_calib, m=4)
    with pytest.raises(UserError, match="divisor of 128"):
        prune(tiny_llama, "wanda", [0.5] * 4, tiny_calib, m=3)


def test_mixed_nm_keeps_the_exact_target_by_largest_remainder():
    # 0.3·4 = 1.2 and 0.6·4 = 2.4: floors 1, 1, 2, 2 (mean 6/16); the two largest remainders (0.4) get
    # one more each → 1, 1, 3, 3 = mean 8/16 = the target 0.5
    assert mixed_nm([0.3, 0.3, 0.6, 0.6], [1, 1, 1, 1], 0.5, 4) == [0.25, 0.25, 0.75, 0.75]
    assert mixed_nm([0.1, 0.6, 0.9, 0.8], [1, 1, 1, 1], 0.5, 4) == [0.0, 0.5, 0.75, 0.75]  # floors: exact
    assert mixed_nm([0.7] * 30, [5] * 30, 0.7, 8) == [6 / 8] * 18 + [5 / 8] * 12  # 18·6 + 12·5 = 168 = 0.7·240; ties: earlier
    with pytest.raises(UserError, match="multiple of 1/16"):
        mixed_nm([0.5] * 4, [1] * 4, 0.53, 4)


def test_dense_or_24_makes_the_hardest_pruned_blocks_24():
    # share of 2:4 parameters = target·4/2 = 0.5: the two blocks the allocation prunes hardest (3, then 1)
    assert dense_or_nm([0.6, 0.8, 0.7, 0.9], [1, 1, 1, 1], 0.25) == [0.0, 0.5, 0.0, 0.5]
    assert dense_or_nm([0.7] * 4, [1] * 4, 0.375) == [0.0, 0.5, 0.5, 0.5]  # ties: the later block first
    with pytest.raises(UserError, match="at most mean sparsity 0.5"):
        dense_or_nm([0.7] * 4, [1] * 4, 0.6)
    with pytest.raises(UserError, match="whole blocks"):
        dense_or_nm([0.7] * 4, [1] * 4, 0.3)


@pytest.mark.parametrize("nm", ["4", "2:4"])
def test_the_fitness_of_an_nm_allocation_is_the_exactly_pruned_models(tiny_llama, tiny_val, nm):
    """With magnitude scores the evaluator's N:M masks are exact pruning's: the same perplexity."""
    from evaluators.fitness.evaluator import PruningEvaluator
    from evaluators.fitness.perplexity import perplexity
    from evaluators.pruning.nm import on_pattern
    ev = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, nm=nm)
    alloc = [0.3, 0.45, 0.55, 0.7] if nm == "4" else [0.1, 0.2, 0.3, 0.4]  # means 0.5 and 0.25
    fitness = ev(alloc)
    pattern, m = on_pattern(nm, alloc, ev.blocks.counts)
    assert pattern == ([0.25, 0.5, 0.5, 0.75] if nm == "4" else [0.0, 0.0, 0.5, 0.5])
    ev.close()
    prune(tiny_llama, "magnitude", pattern, m=m)
    assert fitness == pytest.approx(perplexity(tiny_llama, tiny_val), rel=1e-6)
    with pytest.raises(UserError, match="in place"):
        PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val, nm=nm, masking="forward")


def test_the_pattern_is_parsed_once_and_recorded_as_written():
    """PruneSpec.pattern: the flag's text parsed once into a typed pattern (what the code reads), while the
    record keeps the text; the method resolves to its record."""
    from dsa.run.settings import PruneSpec
    from evaluators.pruning.nm import Pattern, parse_nm

    spec = PruneSpec(method="sparsegpt", nm="2:4")
    assert spec.pattern == Pattern(2, 4) and spec.pattern is spec.pattern and str(spec.pattern) == "2:4"
    assert parse_nm(spec.pattern) is spec.pattern and PruneSpec(nm="8").pattern == Pattern(None, 8)
    assert spec.to_dict()["nm"] == "2:4" and spec == PruneSpec(method="sparsegpt", nm="2:4")
    assert PruneSpec().pattern is None and spec.record.updates_weights and not PruneSpec().record.updates_weights
