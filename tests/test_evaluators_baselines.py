import inspect
import math

import pytest
import torch

from evaluators.baselines import (BASELINES, OWL_GRID, alphapruning, alphapruning_sparsities, atp, atp_grid,
                                  atp_sparsities, block_alphas, dlp, dlp_score, dlp_sparsities, dsa_code,
                                  dsa_code_importance, dsa_paper, dsa_paper_importance, dsa_sparsities, er,
                                  er_densities, er_plus, esd_alpha,
                                  global_threshold, outlier_ratio, owl, owl_sparsities, released_value, tune, uniform)
from evaluators.baselines import simple
from evaluators.pruning.blockscores import BlockScores, subsample_scores
from evaluators.errors import UserError
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.models.loading import model_linears

CONSTANT = "ignore:.*same statistic:RuntimeWarning"  # dsa-code on the tiny model: every block NaN → uniform


@pytest.fixture
def evaluator(tiny_llama, tiny_calib, tiny_val):
    return PruningEvaluator(tiny_llama, None, method="wanda", calib_ids=tiny_calib, val_windows=tiny_val)


@pytest.fixture
def blocks(evaluator):
    return evaluator.blocks


def _weighted_mean(s, counts):
    return sum(a * b for a, b in zip(s, counts)) / sum(counts)


def _metric(blocks, l):
    """Wanda's metric of block l, computed here from the weights and Σ_tokens x² / tokens (an independent check)."""
    parts = [(lin.weight.abs() * (blocks.sq_norms[name] / blocks.tokens).sqrt().float()[None, :]).reshape(-1)
             for name, lin in model_linears(blocks.model)[l].items()]
    return torch.cat(parts)


def _fake_fitness(s):
    return sum(i * v for i, v in enumerate(s))  # lowest for allocations that prune the last blocks least


@pytest.mark.filterwarnings(CONSTANT)
@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("target", [0.0, 0.5, 0.8])
def test_baselines_valid(blocks, name, target):
    params = {"fitness": _fake_fitness} if BASELINES[name].tuned else {}
    if name == "atp":
        params["beta"] = 0.01
    if name.startswith("atp") and target == 0.0:  # no legal β > 0 at sparsity 0
        with pytest.raises(UserError):
            BASELINES[name](blocks, target, **params)
        return
    if name == "owl-nm" and abs(target * 8 - round(target * 8)) > 1e-9:  # n of every 8: multiples of 1/8 only
        with pytest.raises(UserError, match="multiple of 1/8"):
            BASELINES[name](blocks, target, **params)
        return
    if name == "er-plus" and blocks.counts[-1] > (1 - target) * sum(blocks.counts):  # the last block alone
        with pytest.raises(UserError, match="density"):  # keeps more than the target allows
            BASELINES[name](blocks, target, **params)
        return
    s = BASELINES[name](blocks, target, **params)
    assert len(s) == len(blocks) and all(isinstance(v, float) for v in s)
    assert all(0.0 <= v <= 0.99 for v in s)
    assert _weighted_mean(s, blocks.counts) == pytest.approx(target, abs=1e-6)


def test_registry_defaults_match_signatures():
    for name, base in BASELINES.items():
        sig = inspect.signature(base.fn).parameters
        assert list(sig)[:4] == ["blocks", "target", "lo", "hi"], name
        for key, value in base.defaults.items():
            assert sig[key].default == value, (name, key)
    assert BASELINES["owl"].defaults == {"m": 5.0, "lam": 0.08}
    assert BASELINES["dlp"].defaults == {"alpha": 0.15}
    assert BASELINES["dsa-code"].defaults == BASELINES["dsa-paper"].defaults == {"lam": 0.08}
    assert {n for n, b in BASELINES.items() if b.tuned} == {"owl-tuned", "atp-tuned"}


def test_global_threshold_follows_scores():
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(1000, generator=g) * scale for scale in (1.0, 2.0, 4.0)]
    s = global_threshold(BlockScores(scores, [1000] * 3), 0.5)
    assert s[0] > s[1] > s[2]  # blocks with larger scores keep more weights
    t = torch.cat(scores).sort().values[1499]
    assert s == pytest.approx([float((x <= t).float().mean()) for x in scores], abs=2e-3)


def test_global_threshold_subsamples_large_models(monkeypatch):
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(1000, generator=g) * scale for scale in (1.0, 2.0, 4.0)]
    monkeypatch.setattr(simple, "GLOBAL_MAX_SCORES", 1500)
    raw = simple.threshold_shares([subsample_scores(s, 500, seed=l) for l, s in enumerate(scores)], 0.5)
    got = global_threshold(BlockScores(scores, [1000] * 3), 0.5)
    shift = got[0] - raw[0]  # the final step only shifts (no clip here) to the exact mean
    assert got == pytest.approx([r + shift for r in raw], abs=1e-12) and sum(got) / 3 == pytest.approx(0.5)


def test_alphapruning_reference_example():
    """Spec example: LLaMA-7B shapes, ε = 0.2, made-up per-linear α̂ (q,k,v,o,gate,up,down)."""
    alphas = [[2.0, 2.1, 3.0, 3.4, 2.2, 3.6, 2.5], [2.4, 2.5, 3.1, 3.9, 2.9, 4.2, 3.0],
              [2.9, 3.0, 3.3, 4.0, 3.4, 4.5, 3.6], [3.5, 3.6, 4.0, 4.6, 4.1, 5.0, 4.4]]
    means = [sum(a) / 7 for a in alphas]
    assert means == pytest.approx([2.685714, 3.142857, 3.528571, 4.171429], abs=1e-6)
    count = 4 * 4096 * 4096 + 3 * 11008 * 4096
    want = [0.567089, 0.654333, 0.727945, 0.850633]
    assert alphapruning_sparsities(means, [count] * 4, 0.7, 0.2) == pytest.approx(want, abs=1e-6)
    blocks = BlockScores([torch.zeros(1)] * 4, [count] * 4, "wanda")
    assert alphapruning(blocks, 0.7, alphas=means) == pytest.approx(want, abs=1e-6)  # ε 0.2 for Wanda


def test_alphapruning_prunes_larger_alpha_more(blocks):
    alphas = block_alphas(blocks.model)
    s = alphapruning(blocks, 0.5, epsilon=0.2)
    order = sorted(range(len(s)), key=lambda i: alphas[i])
    assert [s[i] for i in order] == sorted(s)
    assert max(s) / min(s) == pytest.approx(1.2 / 0.8)  # ratios span [1 − ε, 1 + ε]


def test_alphapruning_epsilon_per_pruner():
    a = [2.0, 3.0, 4.0]
    spread = {m: alphapruning(BlockScores([torch.zeros(1)] * 3, [10] * 3, m), 0.5, alphas=a)
              for m in ("magnitude", "wanda", "sparsegpt")}
    assert max(spread["magnitude"]) / min(spread["magnitude"]) == pytest.approx(1.3 / 0.7)
    assert spread["wanda"] == spread["sparsegpt"]
    assert max(spread["wanda"]) / min(spread["wanda"]) == pytest.approx(1.2 / 0.8)
    explicit = alphapruning(BlockScores([torch.zeros(1)] * 3, [10] * 3, "magnitude"), 0.5, epsilon=0.1, alphas=a)
    assert max(explicit) / min(explicit) == pytest.approx(1.1 / 0.9)
    with pytest.raises(UserError, match="epsilon"):
        alphapruning(BlockScores([torch.zeros(1)] * 3, [10] * 3, ""), 0.5, alphas=a)


def test_esd_alpha_hill_estimator():
    torch.manual_seed(0)
    w = torch.randn(200, 100)
    eigs = torch.linalg.svdvals(w).double().square().sort().values
    i, n = 50, 50
    expected = 1 + n / (eigs[i:].log().sum() - n * eigs[i].log())
    assert esd_alpha(w, "xmin_mid") == pytest.approx(float(expected))
    assert esd_alpha(w, "xmin_peak") > 1


def test_bad_target(blocks):
    with pytest.raises(UserError):
        BASELINES["uniform"](blocks, 1.2)
    assert uniform(blocks, 0.3) == [0.3] * 4


# ---- OWL ---------------------------------------------------------------------------------------------

def test_owl_outlier_ratio_and_mapping():
    v = torch.tensor([1.0] * 9 + [20.0])  # mean 2.9: both 3·mean and 5·mean leave one outlier in ten
    assert outlier_ratio(v, 3) == outlier_ratio(v, 5) == pytest.approx(10.0)
    assert outlier_ratio(v, 7) == 0.0  # 20.3 > 20: strictly above the threshold only
    assert owl_sparsities([2.5, 4.0, 3.1], 0.7, 0.08) == pytest.approx([0.774667, 0.614667, 0.710667], abs=1e-6)
    s = owl_sparsities([2.5, 4.0, 3.1], 0.05, 0.08)  # density > 1 → sparsity ≤ 0 → 0.01 (not a clip)
    assert s[1] == 0.01 and s[0] == pytest.approx(0.124667, abs=1e-6) and s[2] == pytest.approx(0.060667, abs=1e-6)


def test_owl_end_to_end(blocks):
    ratios = [float((v > v.mean() * 5).sum()) / v.numel() * 100 for v in (_metric(blocks, l) for l in range(4))]
    s = owl(blocks, 0.7)
    assert s == pytest.approx(owl_sparsities(ratios, 0.7, 0.08), abs=1e-12)
    assert max(s) - min(s) == pytest.approx(0.16)
    assert s.index(min(s)) == ratios.index(max(ratios))  # most outliers → densest block
    assert owl(blocks, 0.7, m=3, lam=0.02) != s


def test_owl_reads_wanda_metric_whatever_the_pruner(tiny_llama, tiny_val, blocks):
    magnitude = PruningEvaluator(tiny_llama, None, method="magnitude", val_windows=tiny_val).blocks
    with pytest.raises(UserError, match="Wanda"):
        owl(magnitude, 0.7)
    sparsegpt_like = BlockScores(blocks.scores, blocks.counts, "sparsegpt", blocks.model, blocks.sq_norms)
    assert owl(sparsegpt_like, 0.7) == owl(blocks, 0.7)


# ---- DSA ---------------------------------------------------------------------------------------------

def test_dsa_code_importance_reference_ops():
    # spec demo: ABSLOG [0, −ln 2, ln 2, ln 4] (zero → log 1), unbiased var 0.800755, asin(atan(·))
    assert dsa_code_importance(torch.tensor([0.0, 0.5, 2.0, 4.0])) == pytest.approx(0.741237, abs=1e-6)
    assert dsa_code_importance(torch.tensor([1.0, 100.0])) == 0.0  # var > tan 1: asin > 1 → NaN → 0.0
    assert released_value(float("nan")) == 0.0 and released_value(float("-inf")) == -1.0


def test_dsa_mapping_reference_examples():
    b = [math.asin(math.atan(1.2)), released_value(float("nan")), released_value(float("inf"))]
    assert dsa_sparsities(b, 0.7, 0.08) == pytest.approx([0.780872, 0.698256, 0.620872], abs=1e-6)
    a = [math.asin(math.atan(0.9)), math.asin(math.atan(1.4)), 0.0, -1.0]
    assert dsa_sparsities(a, 0.7, 0.08) == pytest.approx([0.739244, 0.769934, 0.680888, 0.609934], abs=1e-6)
    with pytest.warns(RuntimeWarning, match="same statistic"):
        assert dsa_sparsities([0.0, 0.0, 0.0], 0.7, 0.08) == [0.7] * 3


def test_dsa_paper_importance():
    def by_hand(values):
        x = [math.log((v if v > 0 else 1.0) + 1e-6) for v in values]
        y = [math.log(abs(t if t != 0 else 1.0)) for t in x]
        g = math.exp(sum(math.log(abs(t)) for t in y) / len(y))
        return math.exp(math.cos(g))

    v = [0.5, 2.0, 4.0, 0.03, 1e-4]
    assert dsa_paper_importance(torch.tensor(v)) == pytest.approx(by_hand(v), rel=1e-5)
    # a zero becomes 1, then ln(1 + 1e-6) in float32 (1 + 1e-6 rounds to 1 + 2⁻²⁰)
    y = abs(math.log(math.log(1 + 2**-20)))
    assert dsa_paper_importance(torch.tensor([0.0])) == pytest.approx(math.exp(math.cos(y)), rel=1e-5)
    # ln(e) = 1 → ln|1| = 0 → the geometric mean is 0 → exp(cos 0) = e
    assert dsa_paper_importance(torch.tensor([math.e - 1e-6, 2.0])) == pytest.approx(math.e, rel=1e-5)
    big = torch.rand(2_000_000, generator=torch.Generator().manual_seed(0)) * 1e-3 + 1e-4
    assert torch.isinf(torch.prod(torch.log(torch.log(big + 1e-6).abs()).abs()))  # the released prod overflows
    assert dsa_paper_importance(big) == pytest.approx(by_hand(big[:1000].tolist()), rel=2e-2)
    assert 1 / math.e <= dsa_paper_importance(big) <= math.e


@pytest.mark.filterwarnings(CONSTANT)
def test_dsa_end_to_end(blocks):
    assert blocks.sequences == 4  # the evaluator records how many calibration windows sq_norms sums over
    blocks.sequences = None  # first: our scale, ‖X‖² as a mean over tokens
    metrics = [_metric(blocks, l) for l in range(4)]
    variances = [float(torch.var(m.log())) for m in metrics]
    assert all(v > math.tan(1) for v in variances)  # random weights: every block NaN in the released graph
    assert [dsa_code_importance(m) for m in metrics] == [0.0] * 4
    with pytest.warns(RuntimeWarning, match="same statistic"):
        assert dsa_code(blocks, 0.7) == [0.7] * 4
    paper = [dsa_paper_importance(m) for m in metrics]
    s = dsa_paper(blocks, 0.7)
    assert s == pytest.approx(dsa_sparsities(paper, 0.7, 0.08), abs=1e-12)
    assert s.index(max(s)) == paper.index(max(paper))  # higher importance → sparser
    assert blocks.tokens == 4 * 64  # tiny_calib: 4 windows of 64 tokens
    scaled = [dsa_paper_importance(m * 8) for m in metrics]  # the reference's Σ/N_sequences: √(256/4) = 8 × ours
    assert dsa_paper(blocks, 0.7, sequences=4) == pytest.approx(dsa_sparsities(scaled, 0.7, 0.08), abs=1e-6)
    blocks.sequences = 4  # read from BlockScores where it carries the number of calibration sequences
    assert dsa_paper(blocks, 0.7) == dsa_paper(blocks, 0.7, sequences=4)


# ---- ATP and DLP -------------------------------------------------------------------------------------

def test_atp_reference():
    assert atp_sparsities(4, 0.7, 0.05) == pytest.approx([0.625, 0.675, 0.725, 0.775], abs=1e-12)
    assert atp_sparsities(4, 0.7, 0.0) == pytest.approx([0.7] * 4)
    for beta in (0.21, -0.01):
        with pytest.raises(UserError, match="beta"):
            atp_sparsities(4, 0.7, beta)
    grid = [p["beta"] for p in atp_grid(32, 0.7)]  # bound 0.6/31 = 0.019355
    assert grid == pytest.approx([0.002 * k for k in range(1, 10)]) and grid[-1] == 0.018
    assert atp_grid(4, 0.7)[-1] == {"beta": 0.2} and len(atp_grid(4, 0.7)) == 100 and atp_grid(4, 0.0) == []


def test_atp_end_to_end(blocks):
    with pytest.raises(UserError, match="beta"):
        atp(blocks, 0.7)
    assert atp(blocks, 0.7, beta=0.05) == pytest.approx([0.625, 0.675, 0.725, 0.775], abs=1e-12)
    s = atp(blocks, 0.7, beta=0.2)  # legal: [0.4, 0.6, 0.8, 1.0]; 1.0 > hi = 0.99 → shifted and clipped
    assert max(s) == 0.99 and sum(s) / 4 == pytest.approx(0.7) and s == sorted(s)


def test_dlp_reference():
    want = [0.58, 0.64, 0.70, 0.88]
    assert dlp_sparsities([0.010, 0.014, 0.018, 0.030], 0.7, 0.15) == pytest.approx(want, abs=1e-12)
    assert dlp_score(torch.tensor([1.0, 2.0, 6.0])) == pytest.approx(3.0)


def test_dlp_end_to_end(blocks):
    scores = [float(_metric(blocks, l).mean()) for l in range(4)]
    s = dlp(blocks, 0.7)
    assert s == pytest.approx(dlp_sparsities(scores, 0.7, 0.15), abs=1e-9)
    assert max(s) - min(s) == pytest.approx(0.3) and s.index(max(s)) == scores.index(max(scores))


# ---- tuning ------------------------------------------------------------------------------------------

def test_tune_picks_lowest_validation_fitness(blocks):
    calls = []

    def fitness(s):
        calls.append(s)
        return _fake_fitness(s)

    result = tune("atp", blocks, 0.7, lambda s: fitness(s) * 0 + (s[-1] - s[0] - 0.3) ** 2)  # best: span 3β = 0.3
    assert len(calls) == len(result.table) == len(atp_grid(4, 0.7)) == 100
    assert result.params == {"beta": 0.1} and result.fitness == min(f for _, f in result.table)
    assert result.sparsities == atp(blocks, 0.7, beta=0.1)
    ties = tune("atp", blocks, 0.7, lambda s: 1.0, grid=[{"beta": 0.01}, {"beta": 0.02}])
    assert ties.params == {"beta": 0.01} and [f for _, f in ties.table] == [1.0, 1.0]
    nan_first = iter([math.nan, 3.0, 2.0])
    grid = [{"beta": b} for b in (0.01, 0.02, 0.03)]
    assert tune("atp", blocks, 0.7, lambda s: next(nan_first), grid=grid).params == {"beta": 0.03}
    record = result.to_dict()
    assert record["params"] == {"beta": 0.1}
    assert record["table"][0] == {"params": {"beta": 0.002}, "fitness": result.table[0][1]}
    candidates = BASELINES["atp-tuned"].candidates(blocks, 0.7)
    assert [p for p, _ in candidates] == [p for p, _ in result.table]
    assert candidates[0][1] == atp(blocks, 0.7, beta=0.002)
    with pytest.raises(UserError, match="grid"):
        tune("dlp", blocks, 0.7, fitness)
    with pytest.raises(UserError, match="empty"):
        tune("atp-tuned", blocks, 0.0, fitness)
    with pytest.raises(UserError, match="fitness"):
        BASELINES["owl-tuned"](blocks, 0.7)


def test_owl_tuned_grid(blocks, evaluator):
    result = tune("owl-tuned", blocks, 0.7, _fake_fitness)
    assert [p for p, _ in result.table] == OWL_GRID and len(OWL_GRID) == 20
    assert result.sparsities == owl(blocks, 0.7, **result.params)  # ratios shared across the grid: same result
    picked = BASELINES["owl-tuned"](blocks, 0.7, fitness=evaluator)  # the real validation perplexity
    assert picked == tune("owl", blocks, 0.7, evaluator).sparsities


def test_baseline_records_hold_what_the_tool_reads():
    """What the CLI, the search and --seed-baselines read comes from the records, unchanged: the seed
    formulas as text (λ from each record's defaults), the default search baselines, Wanda's-metric readers."""
    from dsa.run.allocations import COMPARE_BASELINES, SEARCH_BASELINES, WANDA_METRIC
    from dsa.run.problem import baseline_seeds
    assert baseline_seeds(0.7) == baseline_seeds(0.5) == (
        "dsa(r_outlier(S), 0.08)",
        "dsa(t_reciprocal(t_asin(t_atan(r_var(p_abslog(S))))), 0.08)",
        "dsa(t_asin(t_atan(r_var(p_abslog(S)))), 0.08)",
        "dsa(t_reciprocal(r_mean(S)), 0.15)",
        "dsa(sub(mul(r_mean(S), 0.0), d), 0.1)")
    assert SEARCH_BASELINES == ("uniform", "owl", "atp-tuned", "dsa-code", "dlp")
    assert WANDA_METRIC == ("owl", "owl-tuned", "owl-nm", "dsa-code", "dsa-paper", "dlp")
    assert COMPARE_BASELINES == tuple(name for name in BASELINES if name not in ("atp", "owl-nm"))
    assert BASELINES["owl"].defaults == {"m": 5.0, "lam": 0.08} and BASELINES["dlp"].defaults == {"alpha": 0.15}
    assert BASELINES["dsa-code"].defaults == BASELINES["dsa-paper"].defaults == {"lam": 0.08}
    from dsa.cli.parser import build_parser
    prune = build_parser()._subparsers._group_actions[0].choices["prune"]
    help_text = next(a.help for a in prune._actions if a.dest == "allocation")
    assert all(name in help_text for name in COMPARE_BASELINES)


# ER / ER-plus: the reference's ERK arithmetic (VITA-Group/Random_Pruning, modes ERK and ERK_plus), by hand.
# Three blocks of one linear each: 4×4 (16 weights, (4+4)/16 = 0.5), 2×8 (16, 10/16 = 0.625), 2×2 (4, 4/4 = 1).
ER_SHAPES = [[(4, 4)], [(2, 8)], [(2, 2)]]


def test_er_by_hand():
    blocks = BlockScores([torch.zeros(1)] * 3, [16, 16, 4])
    # target 0.5: keep 18 of 36; ε = 18 / (0.5·16 + 0.625·16 + 1·4) = 18/22 ≤ 1 for every layer
    assert er(blocks, 0.5, shapes=ER_SHAPES) == pytest.approx([1 - 9 / 22, 1 - 11.25 / 22, 1 - 18 / 22], abs=1e-12)


def test_er_makes_a_layer_dense_when_its_share_exceeds_one():
    # 2×2 (4, raw 1) and 4×8 (32, raw 0.375) at target 0.5: ε = 18/16 puts the 2×2 above 1, so it is dense
    # and ε is solved again: (32·0.5 − 4·0.5) / (0.375·32) = 14/12 → the 4×8 keeps 0.4375
    blocks = BlockScores([torch.zeros(1)] * 2, [4, 32])
    assert er(blocks, 0.5, shapes=[[(2, 2)], [(4, 8)]]) == pytest.approx([0.0, 1 - 0.4375], abs=1e-12)
    assert er_densities([(2, 2), (4, 8)], 0.5) == pytest.approx([1.0, 0.4375], abs=1e-12)


def test_er_sums_the_linears_of_a_block():
    # one block of 4×4 and 2×8 against one of 2×2: the first block keeps 9/22·16 + 11.25/22·16 of 32
    blocks = BlockScores([torch.zeros(1)] * 2, [32, 4])
    got = er(blocks, 0.5, shapes=[[(4, 4), (2, 8)], [(2, 2)]])
    assert got == pytest.approx([1 - (9 / 22 * 16 + 11.25 / 22 * 16) / 32, 1 - 18 / 22], abs=1e-12)


def test_er_plus_by_hand():
    blocks = BlockScores([torch.zeros(1)] * 3, [16, 16, 4])
    # the last block dense: the others keep (18 − 4)/32 = 0.4375 → ε = 14 / (0.5·16 + 0.625·16) = 14/18
    want = [1 - 0.5 * 14 / 18, 1 - 0.625 * 14 / 18, 0.0]
    got = er_plus(blocks, 0.5, shapes=ER_SHAPES)
    assert got == pytest.approx(want, abs=1e-12)
    assert sum(s * n for s, n in zip(got, [16, 16, 4])) / 36 == pytest.approx(0.5, abs=1e-12)


def test_er_on_equal_blocks_is_uniform_and_er_plus_keeps_the_last_block_dense():
    shapes = [[(8, 4), (4, 8)]] * 4  # every block the same, as in LLaMA-family models
    blocks = BlockScores([torch.zeros(1)] * 4, [64] * 4)
    assert er(blocks, 0.6, shapes=shapes) == pytest.approx([0.6] * 4, abs=1e-12)
    assert er_plus(blocks, 0.6, shapes=shapes) == pytest.approx([0.8] * 3 + [0.0], abs=1e-12)


def test_er_plus_refuses_a_target_the_last_block_cannot_leave_dense():
    blocks = BlockScores([torch.zeros(1)] * 2, [4, 32])
    with pytest.raises(UserError, match="density"):
        er_plus(blocks, 0.5, shapes=[[(2, 2)], [(4, 8)]])  # keep 18 of 36, but the last block alone has 32


def test_er_reads_the_model_shapes(blocks):
    shapes = [[tuple(lin.weight.shape) for lin in block.values()] for block in model_linears(blocks.model)]
    assert er(blocks, 0.7) == er(blocks, 0.7, shapes=shapes)
    assert er_plus(blocks, 0.7)[-1] == 0.0
    with pytest.raises(UserError, match="shapes"):
        er(BlockScores([torch.zeros(1)], [1]), 0.5)


def test_owl_nm_by_hand():
    """OWL's N:M rule (prune_wanda_outlier_structure, README: Lamda 2, 5:8): ratios 1…6 → min-max × 2 =
    0, .4, .8, 1.2, 1.6, 2; minus the mean 1 → −1, −.6, −.2, .2, .6, 1; np.round (half to even) → −1, −1, 0,
    0, 1, 1; n − that = 6, 6, 5, 5, 4, 4 of every 8 (sum 30 = 5·6: the target is kept as is)."""
    from evaluators.baselines.owl import owl_nm
    blocks = BlockScores([torch.zeros(1)] * 6, [10] * 6)
    got = owl_nm(blocks, 5 / 8, ratios=[1, 2, 3, 4, 5, 6])
    assert got == [6 / 8, 6 / 8, 5 / 8, 5 / 8, 4 / 8, 4 / 8]
    # ratios 1, 2, 4: scaled 0, 2/3, 2 → centred −8/9, −2/9, 10/9 → rounded −1, 0, 1 → 5, 4, 3 (sum 12 = 4·3)
    assert owl_nm(BlockScores([torch.zeros(1)] * 3, [10] * 3), 0.5, ratios=[1, 2, 4]) == [5 / 8, 4 / 8, 3 / 8]

