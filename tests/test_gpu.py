"""The CUDA path (skipped without a GPU; CI has none): the evaluator, the exact pruners and the CLI on
the GPU agree with the CPU."""
import json
import math

import pytest
import torch

from conftest import make_tiny_llama
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.models.loading import model_linears
from evaluators.fitness.perplexity import perplexity
from evaluators.pruning.pruners import measured_sparsity, prune
from test_cli_llm import data_args, dsa

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
ALLOCATIONS = [[0.3, 0.5, 0.65, 0.8], [0.7] * 4]


def _gpu_model():
    return make_tiny_llama().cuda()


@pytest.mark.parametrize("masking", ["inplace", "forward", "block"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_evaluator_on_gpu_matches_cpu(tiny_calib, tiny_val, method, masking):
    cpu = PruningEvaluator(make_tiny_llama(), None, method=method, calib_ids=tiny_calib, val_windows=tiny_val)
    model = _gpu_model()
    dense = {n: lin.weight.clone() for b in model_linears(model) for n, lin in b.items()}
    gpu = PruningEvaluator(model, None, method=method, calib_ids=tiny_calib, val_windows=tiny_val, masking=masking,
                           batch_size=len(tiny_val) if masking == "block" else 1)
    assert gpu.dense_perplexity() == pytest.approx(cpu.dense_perplexity(), rel=1e-4)
    for a in ALLOCATIONS:
        assert gpu(a) == pytest.approx(cpu(a), rel=1e-3)
    gpu.close()
    assert all(torch.equal(lin.weight, dense[n]) for b in model_linears(model) for n, lin in b.items())
    assert perplexity(model, tiny_val) == gpu.dense_perplexity()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_exact_pruners_on_gpu(tiny_calib, tiny_val, method):
    cpu, gpu = make_tiny_llama(), _gpu_model()
    for model in (cpu, gpu):
        prune(model, method, ALLOCATIONS[0], tiny_calib)
    assert measured_sparsity(gpu) == pytest.approx(measured_sparsity(cpu), abs=1e-9)
    assert perplexity(gpu, tiny_val) == pytest.approx(perplexity(cpu, tiny_val), rel=1e-2)


def test_cli_eval_on_gpu(tiny_dir, tmp_path):  # noqa: F811
    runs = {}
    for device in ("cpu", "cuda"):
        out = dsa("eval", *data_args(tiny_dir), "--device", device, "--allocation", "owl", "--sparsity", 0.6,
                  "--json", tmp_path / f"{device}.json", "--no-progress")
        assert out.returncode == 0, out.stderr
        runs[device] = json.loads((tmp_path / f"{device}.json").read_text())
    assert runs["cuda"]["requested"] == pytest.approx(runs["cpu"]["requested"], abs=1e-6)
    assert math.isclose(runs["cuda"]["perplexity"], runs["cpu"]["perplexity"], rel_tol=1e-3)


def test_kl_fitness_on_gpu(tiny_val):
    cpu = PruningEvaluator(make_tiny_llama(), None, method="magnitude", val_windows=tiny_val, fitness="kl")
    gpu = PruningEvaluator(_gpu_model(), None, method="magnitude", val_windows=tiny_val, fitness="kl")
    for a in ALLOCATIONS:
        assert gpu(a) == pytest.approx(cpu(a), rel=1e-3)


def test_alphapruning_esd_on_gpu():
    from evaluators.baselines import block_alphas
    assert block_alphas(_gpu_model()) == pytest.approx(block_alphas(make_tiny_llama()), rel=1e-3)


def test_ray_actors_share_one_gpu(tiny_dir, monkeypatch):  # noqa: F811
    """Two Ray actors on one card (fractional ``num_gpus``) give the in-process evaluator's fitness."""
    from dsa.cli.dispatch import search_specs
    from dsa.run.distributed import LOOPBACK_ENV, RayEvaluation
    from dsa.cli.parser import build_parser
    from dsa.run.llm import build_evaluator
    monkeypatch.setenv(LOOPBACK_ENV, "0")
    ray = pytest.importorskip("ray")
    spec = search_specs(build_parser().parse_args(["search", *map(str, data_args(tiny_dir)), "--device", "cuda"]))[0]
    local, _ = build_evaluator(spec)
    allocations = [torch.tensor(a, dtype=torch.float64) for a in ALLOCATIONS]
    want = [local(a) for a in allocations]
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        with RayEvaluation(spec, workers=2) as pool:
            assert pool.use_gpu and len(set(pool.pids)) == 2
            got = pool.map(None, [a.tolist() for a in allocations])
    finally:
        ray.shutdown()
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability()[0] < 8,
                    reason="2:4 kernels need compute capability >= 8.0")
def test_sparse_24_kernels_keep_the_outputs(tiny_val):
    """bench/speed_24.py's swap: the pruned blocks' linears on torch's semi-structured 2:4 kernels give the
    dense kernels' logits (fp16) on the same weights."""
    from bench.speed_24 import sparse_linears, to_sparse_kernels
    model, sparsities = make_tiny_llama(), [0.0, 0.0, 0.5, 0.5]
    prune(model, "magnitude", sparsities, m=4)
    model = model.half().cuda()
    before = model(tiny_val[:1].cuda()).logits.float()
    linears = sparse_linears(model, sparsities)
    to_sparse_kernels(linears)
    from torch.sparse import SparseSemiStructuredTensor
    assert all(isinstance(lin.weight, SparseSemiStructuredTensor) for lin in linears.values())
    after = model(tiny_val[:1].cuda()).logits.float()
    assert torch.allclose(after, before, atol=2e-2, rtol=2e-2)
