import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from evaluators import data
from evaluators.data import calibration_batch, find_data_dir, load_split, read_text_file, token_windows
from evaluators.errors import UserError

WORDS = "the a of and to in is was for on as with by at from it that his her film series".split()


@pytest.fixture(scope="module")
def word_tokenizer():
    """Whitespace word-level tokenizer built in-test (no hub)."""
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _docs(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (length,), generator=g)) for _ in range(n)]


def test_token_windows_convention(word_tokenizer):
    texts = _docs(5, 37)
    ids = word_tokenizer("\n\n".join(texts)).input_ids
    win = token_windows(word_tokenizer, texts, seqlen=16)
    assert win.dtype == torch.long and win.shape == (len(ids) // 16, 16)
    assert win.flatten().tolist() == ids[: win.numel()]
    assert token_windows(word_tokenizer, texts, 16, max_windows=2).equal(win[:2])
    with pytest.raises(UserError):
        token_windows(word_tokenizer, ["the a"], seqlen=16)


def test_calibration_batch_shapes_and_determinism(word_tokenizer):
    docs = _docs(20, 50) + _docs(20, 5, seed=1)
    a = calibration_batch(word_tokenizer, docs, nsamples=6, seqlen=32, seed=3)
    b = calibration_batch(word_tokenizer, docs, nsamples=6, seqlen=32, seed=3)
    c = calibration_batch(word_tokenizer, docs, nsamples=6, seqlen=32, seed=4)
    assert a.shape == (6, 32) and a.dtype == torch.long
    assert a.equal(b) and not a.equal(c)
    # every sample is a contiguous slice of one long document
    long_ids = [word_tokenizer(d).input_ids for d in docs[:20]]
    for row in a.tolist():
        assert any(any(ids[i:i + 32] == row for i in range(len(ids) - 31)) for ids in long_ids)


def test_calibration_batch_short_docs_concatenate(word_tokenizer):
    docs = _docs(30, 6)  # every doc shorter than seqlen
    batch = calibration_batch(word_tokenizer, docs, nsamples=5, seqlen=40, seed=0)
    assert batch.shape == (5, 40)
    with pytest.raises(UserError):
        calibration_batch(word_tokenizer, docs[:2], nsamples=1, seqlen=40)


def test_local_files(tmp_path, word_tokenizer):
    (tmp_path / "a.txt").write_text(" = T = \n \n the film \n", encoding="utf-8")
    assert read_text_file(tmp_path / "a.txt") == [" = T = \n", "", " the film \n"]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["x y", "z"]), encoding="utf-8")
    assert load_split(str(tmp_path / "b.jsonl"), "test") == ["x y", "z"]
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}), encoding="utf-8")
    with pytest.raises(UserError, match="text"):
        read_text_file(tmp_path / "c.jsonl")


def test_missing_data_is_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    with pytest.raises(UserError, match="--data"):
        load_split(str(tmp_path / "missing.txt"), "test")
    with pytest.raises(UserError, match="--data"):
        load_split("wikitext2", "test", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="--data"):
        load_split("c4", "validation", data_dir=str(tmp_path))
    with pytest.raises(UserError):
        load_split("nosuchset", "test")


needs_shared = pytest.mark.skipif(find_data_dir() is None or not (find_data_dir() / "wikitext-2").is_dir(),
                                  reason="../shared/data not found")


@needs_shared
def test_local_wikitext2_rows(monkeypatch):
    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    test = load_split("wikitext2", "test")
    assert len(test) == 4358 and test[:2] == ["", " = Robert Boulter = \n"]
    valid = load_split("wikitext2", "valid")
    assert len(valid) == 3760
    joined = "".join(valid)
    assert " @-@ " not in joined and " @,@ " not in joined and " @.@ " not in joined


@needs_shared
def test_local_c4(monkeypatch):
    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    docs = load_split("c4", "validation")
    assert len(docs) == 2000 and all(isinstance(d, str) for d in docs)
