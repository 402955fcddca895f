"""Fitness evaluation on Ray actors (``dsa search --workers N``): a local Ray instance on loopback, the
tiny model of ``test_cli_llm`` on CPU. The tests that need Ray skip cleanly without it; the last two
run without Ray on purpose."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsa.cli.dispatch import search_specs
from dsa.cli.parser import build_parser
from dsa.run.distributed import LOOPBACK_ENV, EvaluatorActor, RayEvaluation, WorkerError
from dsa.run.llm import build_evaluator
from test_cli_llm import data_args, dsa

POISON = 0.123456789  # the first sparsity of the allocation that kills its worker


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs, loopback) for the module's pools; they leave it running."""
    with pytest.MonkeyPatch.context() as mp:
        if "ray" not in sys.modules:  # as the CLI does: a local instance on loopback
            mp.setenv(LOOPBACK_ENV, "0")
        ray = pytest.importorskip("ray")
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        # the actor classes below are defined in this test module, which the workers cannot import
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray
        ray.shutdown()


@pytest.fixture(scope="module")
def spec(tiny_dir):
    return search_specs(build_parser().parse_args(["search", *map(str, data_args(tiny_dir))]))[0]


@pytest.fixture(scope="module")
def local(spec):
    """The in-process evaluator (single-threaded, as the CPU workers are)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    evaluator, info = build_evaluator(spec)
    yield evaluator
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def allocations():
    gen = torch.Generator().manual_seed(0)
    values = [torch.rand(4, generator=gen, dtype=torch.float64) * 0.9 for _ in range(10)]
    return [torch.full((4,), 0.5, dtype=torch.float64), *values]


def crashing(marker: Path, every_time: bool = False):
    """An actor class that dies (``os._exit``) inside the evaluation of the POISON allocation: the first
    time only (a marker file remembers), or every time."""
    class CrashingActor(EvaluatorActor):
        def evaluate(self, sparsities):
            if sparsities[0] == POISON and (every_time or not marker.exists()):
                marker.touch()
                os._exit(1)
            return super().evaluate(sparsities)
    return CrashingActor


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids(pool):
    return [pid for pid in pool._get([a.ready.remote() for a in pool.actors])]


def test_pool_matches_in_process(ray_local, spec, local, allocations):
    with RayEvaluation(spec, workers=2) as pool:
        assert not pool.owns_ray and len(pool.actors) == 2 and len(set(pool.pids)) == 2
        if os.environ.get(LOOPBACK_ENV) == "0":
            assert [node["NodeManagerAddress"] for node in ray_local.nodes()] == ["127.0.0.1"]
        allocator, _, info, candidates = pool.task(spec, ("uniform", "owl"))
        blocks = pool._get(pool.actors[0].setup.remote(0.7, ("uniform",)))["blocks"]
        assert blocks.counts == local.blocks.counts and blocks.model is None
        assert all(torch.equal(a, b) for a, b in zip(blocks.scores, local.blocks.scores))
        assert set(candidates) == {"uniform", "owl"} and info["workers"] == 2
        want = [local(a) for a in allocations]
        assert pool.map(local, allocations) == want  # in input order, bit for bit
        assert pool.map(None, [a.tolist() for a in reversed(allocations)]) == want[::-1]

        os.kill(pool.pids[0], 9)  # a worker process gone between two batches: Ray restarts it
        assert pool.map(None, allocations) == want
        after = pids(pool)
        assert pool.pids[0] not in after and pool.pids[1] in after and not alive(pool.pids[0])
    assert pool.actors == []


def test_worker_killed_mid_evaluation(ray_local, spec, local, allocations, tmp_path):
    poison = torch.tensor([POISON, 0.6, 0.7, 0.8], dtype=torch.float64)
    batch = [*allocations[:4], poison, *allocations[4:]]
    want = [local(a) for a in batch]
    marker = tmp_path / "crashed"
    with RayEvaluation(spec, workers=2, actor_cls=crashing(marker)) as pool:
        before = set(pool.pids)
        assert pool.map(None, batch) == want  # the poisoned allocation re-run on the restarted worker
        assert marker.exists()
        after = set(pids(pool))
        (dead,) = before - after  # one worker process replaced, and gone
        assert not alive(dead) and len(after - before) == 1
        assert pool.map(None, allocations) == want[:4] + want[5:]  # the new worker evaluates too


def test_retries_are_bounded(ray_local, spec, allocations, tmp_path):
    poison = torch.tensor([POISON, 0.6, 0.7, 0.8], dtype=torch.float64)
    actor = crashing(tmp_path / "crashed", every_time=True)
    with RayEvaluation(spec, workers=1, max_retries=1, actor_cls=actor) as pool:
        with pytest.raises(WorkerError, match="killed its worker"):
            pool.map(None, [allocations[0], poison])


def hall_of_fame(run: Path) -> list:
    return [(row["tree"], row["fitness"], row["output"]) for row in json.loads((run / "hall_of_fame.json").read_text())]


def test_search_with_workers_same_hall_of_fame(tiny_dir, tmp_path):
    pytest.importorskip("ray")
    common = [*data_args(tiny_dir), "--population", 6, "--generations", 2, "--no-progress"]
    single = dsa("search", *common, "--run-dir", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    ray_run = dsa("search", *common, "--workers", 2, "--run-dir", tmp_path / "ray")
    assert ray_run.returncode == 0, ray_run.stderr
    assert hall_of_fame(tmp_path / "ray") == hall_of_fame(tmp_path / "single")
    configs = [json.loads((tmp_path / run / "config.json").read_text()) for run in ("single", "ray")]
    assert configs[1]["baselines"] == configs[0]["baselines"]
    assert configs[1]["info"]["workers"] == 2 and configs[1]["evaluator"] == configs[0]["evaluator"]
    assert configs[1]["info"]["model"] == configs[0]["info"]["model"]


NO_RAY = "import sys; sys.modules['ray'] = None; from dsa.cli import main; sys.exit(main(sys.argv[1:]))"


def dsa_without_ray(*args, cwd):
    return subprocess.run([sys.executable, "-c", NO_RAY, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("flag", [["--workers", "2"], ["--ray-address", "127.0.0.1:6379"]])
def test_flags_without_ray_name_the_extra(tmp_path, flag):  # before anything is loaded
    out = dsa_without_ray("search", "--model", tmp_path / "nope", *flag, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "pip install -e .[ray]" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_search_without_ray_unchanged(tmp_path):
    out = dsa_without_ray("search", "--task", "synthetic", "--population", 6, "--generations", 1, "--no-progress",
                          "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "hall_of_fame.json").exists()
