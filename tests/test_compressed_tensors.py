"""``dsa prune --nm 2:4 --format compressed-tensors``: the folder is written by compressed-tensors' own
``ModelCompressor`` (2:4 bitmask) and loaded back by transformers' compressed-tensors support with the very
weights of the plain save.

The sparse formats were removed from compressed-tensors in 0.15 (vllm-project/compressed-tensors#610) and
transformers 5 no longer decompresses them, so the round trip runs only with compressed-tensors<=0.14.0.1
and transformers 4.56-4.57 (checked: a venv with compressed-tensors 0.14.0.1 and transformers 4.57.6 over
this project's packages). Where they are missing, and for models that are not dense-or-2:4, the flag fails
in one line, exit 2, before any work and with nothing written (tested in every environment).
"""
import json

import pytest
import torch
import transformers
from safetensors import safe_open

from evaluators.errors import UserError
from evaluators.models.compressed import check_available
from test_cli_llm import data_args, dsa

try:
    check_available("2:4")
    MISSING = None
except UserError as exc:
    MISSING = str(exc)
OLD_TRANSFORMERS = int(transformers.__version__.split(".")[0]) < 5


@pytest.mark.parametrize("extra, needle", [
    ((), "writes dense-or-2:4 models"), (("--nm", "8", "--sparsity", "0.5"), "writes dense-or-2:4 models"),
    (("--nm", "2:4", "--sparsity", "0.25"), "compressed-tensors<=0.14.0.1")])
def test_what_cannot_be_written_fails_before_any_work(tiny_dir, tmp_path, extra, needle):  # noqa: F811
    if needle != "writes dense-or-2:4 models" and MISSING is None:
        pytest.skip("this compressed-tensors writes the 2:4 bitmask (the round trip below runs)")
    out = dsa("prune", *data_args(tiny_dir), *extra, "--format", "compressed-tensors", "--save", tmp_path / "out",
              "--no-progress")
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and needle in out.stderr
    assert not (tmp_path / "out").exists()


def test_round_trip_through_transformers_gives_the_plain_saves_weights(tiny_dir, tmp_path):  # noqa: F811
    if MISSING is not None:
        pytest.skip(MISSING)
    if not OLD_TRANSFORMERS:
        pytest.skip(f"transformers {transformers.__version__} does not decompress compressed-tensors' sparse formats")
    extra = ["--sparsity", 0.25, "--allocation", "atp:beta=0.05", "--nm", "2:4"]
    for name, how in (("plain", "safetensors"), ("ct", "compressed-tensors")):
        out = dsa("prune", *data_args(tiny_dir), *extra, "--format", how, "--save", tmp_path / name, "--no-progress")
        assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["sparsity_config"]
    assert config["format"] == "sparse-24-bitmask"
    record = json.loads((tmp_path / "ct" / "allocation.json").read_text())
    with safe_open(tmp_path / "ct" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert sorted(record["requested"]) == [0, 0, 0.5, 0.5]
    for i, s in enumerate(record["requested"]):  # 2:4 blocks compressed, dense ones plain
        assert (f"model.layers.{i}.mlp.up_proj.bitmask" in keys) == (s > 0)
        assert (f"model.layers.{i}.mlp.up_proj.weight" in keys) == (s == 0)
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain", dtype=torch.float32).state_dict()
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32).state_dict()
    assert plain.keys() == back.keys()
    assert all(torch.equal(plain[k], back[k]) for k in plain)
    packed = (tmp_path / "ct" / "model.safetensors").stat().st_size
    assert packed < (tmp_path / "plain" / "model.safetensors").stat().st_size
