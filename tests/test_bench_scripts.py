"""The quick GPU check (bench/gpu_quick.sh): its CPU-side behaviour (the GPU parts are tests/test_gpu.py and
the bench scripts it calls, each tested on the tiny model)."""
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_quick.sh"


def run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_gpu_quick_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.parametrize("args", [(), ("a", "b", "c"), ("model.gguf", "../escape")])
def test_gpu_quick_refuses_bad_arguments_in_one_line(args):
    done = run(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("gpu_quick: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs")
def test_gpu_quick_refuses_on_a_cpu_in_one_line_writing_nothing(tmp_path):
    name = f"gpu_quick_test_{tmp_path.name}"
    done = run(str(tmp_path / "model.gguf"), name)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "gpu_quick: needs a CUDA GPU (torch sees none): nothing run"
    assert not (ROOT / "bench" / "results" / name).exists()
