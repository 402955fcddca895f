import pytest
import torch

from evaluators.baselines import BASELINES, alphapruning, block_alphas, esd_alpha, global_threshold
from evaluators.errors import UserError
from evaluators.fitness import PruningEvaluator


@pytest.fixture
def evaluator(tiny_llama, tiny_calib, tiny_val):
    return PruningEvaluator(tiny_llama, None, method="wanda", calib_ids=tiny_calib, val_windows=tiny_val)


def _weighted_mean(s, counts):
    return sum(a * b for a, b in zip(s, counts)) / sum(counts)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("target", [0.0, 0.5, 0.8])
def test_baselines_valid(evaluator, name, target):
    s = BASELINES[name](evaluator, target)
    counts = evaluator.param_counts()
    assert len(s) == len(counts) and all(isinstance(v, float) for v in s)
    assert all(0.0 <= v <= 0.99 for v in s)
    assert _weighted_mean(s, counts) == pytest.approx(target, abs=1e-6)


class FakeSource:
    """Blocks with given scores and sizes (and no model)."""

    def __init__(self, scores):
        self.scores = scores

    def param_counts(self):
        return [s.numel() for s in self.scores]

    def block_scores(self, max_per_block=None):
        return self.scores


def test_global_threshold_follows_scores():
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(1000, generator=g) * scale for scale in (1.0, 2.0, 4.0)]
    s = global_threshold(FakeSource(scores), 0.5)
    assert s[0] > s[1] > s[2]  # blocks with larger scores keep more weights
    t = torch.cat(scores).sort().values[1499]
    assert s == pytest.approx([float((x <= t).float().mean()) for x in scores], abs=2e-3)


def test_alphapruning_prunes_larger_alpha_more(evaluator):
    alphas = block_alphas(evaluator.model)
    s = alphapruning(evaluator, 0.5, epsilon=0.2)
    order = sorted(range(len(s)), key=lambda i: alphas[i])
    assert [s[i] for i in order] == sorted(s)
    assert max(s) / min(s) == pytest.approx(1.2 / 0.8)  # ratios span [1 − ε, 1 + ε]


def test_esd_alpha_hill_estimator():
    torch.manual_seed(0)
    w = torch.randn(200, 100)
    eigs = torch.linalg.svdvals(w).double().square().sort().values
    i, n = 50, 50
    expected = 1 + n / (eigs[i:].log().sum() - n * eigs[i].log())
    assert esd_alpha(w, "xmin_mid") == pytest.approx(float(expected))
    assert esd_alpha(w, "xmin_peak") > 1


def test_bad_target(evaluator):
    with pytest.raises(UserError):
        BASELINES["uniform"](evaluator, 1.2)
