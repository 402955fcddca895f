import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import evaluators
from evaluators.data import text as data
from evaluators.data.text import Texts, calibration_batch, load_split, read_text_file, token_windows
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


def test_special_files_are_named_never_missing_and_never_read(tmp_path, monkeypatch):
    """A FIFO in a data folder would block the reader, a link to /dev/zero never end: each is refused in one
    line that says what is there (not "missing"), before anything is opened."""
    import os

    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    root = tmp_path / "data"
    (root / "wikitext-2/raw").mkdir(parents=True)
    os.mkfifo(root / "wikitext-2/raw/test.raw.txt")
    with pytest.raises(UserError, match="a FIFO, not a regular file") as err:
        load_split("wikitext2", "test", data_dir=str(root))
    assert "missing" not in str(err.value) and "\n" not in str(err.value)
    (root / "c4").mkdir()
    (root / "c4/c4_validation_2k.parquet").symlink_to("/dev/zero")
    with pytest.raises(UserError, match="a character device, not a regular file"):
        load_split("c4", "validation", data_dir=str(root))
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(UserError, match="is a FIFO, not a regular file"):
        load_split(str(tmp_path / "pipe.txt"))
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(UserError, match="is a folder, not a regular file"):
        read_text_file(tmp_path / "folder.jsonl")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    with pytest.raises(UserError, match="a link to nothing"):  # no suffix: still taken as the file it names
        load_split(str(tmp_path / "dangling"))


SHARED = (Path(evaluators.__file__).parents[1] / "../shared/data").resolve()
needs_shared = pytest.mark.skipif(not (SHARED / "wikitext-2").is_dir() or not (SHARED / "c4").is_dir(),
                                  reason="../shared/data not found next to the repository")


@pytest.fixture
def offline(monkeypatch):
    """No data folder, no hub: load_split must fall back to the bundled copy."""
    monkeypatch.delenv("DSA_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    return monkeypatch


def test_local_wikitext2_rows(offline):
    test = load_split("wikitext2", "test")
    assert len(test) == 4358 and test[:2] == ["", " = Robert Boulter = \n"]
    valid = load_split("wikitext2", "valid")
    assert len(valid) == 3760
    joined = "".join(valid)
    assert " @-@ " not in joined and " @,@ " not in joined and " @.@ " not in joined
    assert "<unk>" in joined  # the tokenized release keeps its unknown-word tokens


def test_local_c4(offline):
    docs = load_split("c4", "validation")
    assert len(docs) == 2000 and all(isinstance(d, str) and d for d in docs)
    train = load_split("c4", "train")  # offline: the validation documents stand in, and the source says so
    assert train == docs and "standing in for train" in train.source


def test_bundled_is_the_fallback_and_says_so(offline):
    for (name, split), file in {("wikitext2", "test"): "wikitext-2-test.raw.txt.xz",
                                ("wikitext2", "validation"): "wikitext-2-valid.txt.xz",
                                ("c4", "validation"): "c4-validation-2k.jsonl.xz"}.items():
        texts = load_split(name, split)
        assert isinstance(texts, Texts) and isinstance(texts, list)
        assert texts.source == f"bundled:{file}" and (data.BUNDLED_DIR / file).is_file()
    # every bundled file is one the loader uses, and the licences travel with them
    assert {p.name for p in data.BUNDLED_DIR.iterdir()} == {*data.BUNDLED_FILES.values(), "README.md"}
    assert "CC BY-SA 3.0" in (data.BUNDLED_DIR / "README.md").read_text(encoding="utf-8")


def _fake_data_dir(root: Path, tag: str) -> Path:
    (root / "wikitext-2/raw").mkdir(parents=True)
    (root / "wikitext-2/raw/test.raw.txt").write_text(f" = {tag} = \n \n", encoding="utf-8")
    (root / "wikitext-2/valid.txt").write_text(f" {tag} @-@ valid \n", encoding="utf-8")
    return root


def test_env_data_dir_beats_bundled(tmp_path, offline):
    root = _fake_data_dir(tmp_path / "env", "env")
    offline.setenv("DSA_DATA_DIR", str(root))
    test = load_split("wikitext2", "test")
    assert test == [" = env = \n", ""]
    assert test.source == f"dir:{(root / 'wikitext-2/raw/test.raw.txt').resolve()}"
    assert load_split("wikitext2", "valid") == [" env-valid \n"]
    with pytest.raises(UserError, match="DSA_DATA_DIR") as err:  # no C4 there: no silent fallback
        load_split("c4", "validation")
    assert str(root / "c4/c4_validation_2k.parquet") in str(err.value) and "\n" not in str(err.value)
    # DSA_DATA_DIR also beats the hub
    offline.setattr(data, "hub_reachable", lambda: pytest.fail("the hub must not be asked"))
    assert load_split("wikitext2", "test").source.startswith("dir:")


def test_explicit_data_dir_beats_env(tmp_path, offline):
    env = _fake_data_dir(tmp_path / "env", "env")
    explicit = _fake_data_dir(tmp_path / "explicit", "explicit")
    offline.setenv("DSA_DATA_DIR", str(env))
    test = load_split("wikitext2", "test", data_dir=str(explicit))
    assert test == [" = explicit = \n", ""] and str(explicit) in test.source
    with pytest.raises(UserError, match="--data-dir"):
        load_split("c4", "validation", data_dir=str(explicit))
    with pytest.raises(UserError, match="--data-dir"):  # a data_dir that does not exist at all
        load_split("wikitext2", "test", data_dir=str(tmp_path / "nowhere"))


def test_local_file_source(tmp_path):
    (tmp_path / "a.txt").write_text("x\n", encoding="utf-8")
    texts = load_split(str(tmp_path / "a.txt"))
    assert texts == ["x\n"] and texts.source == f"file:{(tmp_path / 'a.txt').resolve()}"


@needs_shared
def test_bundled_equals_shared_data(offline, word_tokenizer):
    """The packaged copy gives exactly the texts of ../shared/data's files, in the same order."""
    for name, split in [("wikitext2", "test"), ("wikitext2", "validation"), ("c4", "validation")]:
        bundled = load_split(name, split)
        shared = load_split(name, split, data_dir=str(SHARED))
        assert bundled.source.startswith("bundled:") and shared.source.startswith(f"dir:{SHARED}")
        assert type(bundled) is type(shared) and bundled == shared, (name, split)
    # hence the same perplexity windows and calibration windows
    a = token_windows(word_tokenizer, load_split("wikitext2", "test"), 64)
    b = token_windows(word_tokenizer, load_split("wikitext2", "test", data_dir=str(SHARED)), 64)
    assert a.equal(b)
    a = calibration_batch(word_tokenizer, load_split("c4", "validation"), 4, 32, seed=0)
    b = calibration_batch(word_tokenizer, load_split("c4", "validation", data_dir=str(SHARED)), 4, 32, seed=0)
    assert a.equal(b)


def test_marker_tokens_mark_exactly_the_unk_pieces(word_tokenizer):
    # the word-level tokenizer cuts "<unk>" into "<", "unk", ">", three out-of-vocabulary pieces ([UNK]), as a
    # subword tokenizer cuts it into several costly ones; every other word of these texts is in its vocabulary
    texts = ["the film <unk> was a", "series <unk> of the a", "his film is <unk>"] * 4
    windows = token_windows(word_tokenizer, texts, 8)
    marks = data.marker_tokens(word_tokenizer, texts, 8)
    assert marks.shape == windows.shape and marks.dtype == torch.bool
    stream = word_tokenizer("\n\n".join(texts)).tokens()
    want = [t == "[UNK]" for t in stream][:windows.numel()]
    assert marks.flatten().tolist() == want and 0 < sum(want) < len(want)
    assert data.marker_tokens(word_tokenizer, texts, 8, max_windows=2).equal(marks[:2])
    assert not data.marker_tokens(word_tokenizer, ["the film was a series of"] * 8, 8).any()


def test_heldout_docs_are_the_ones_calibration_never_reads(word_tokenizer):
    docs = _docs(40, 50) + _docs(40, 5, seed=1)
    import random
    random.Random(7).shuffle(docs)
    batch = calibration_batch(word_tokenizer, docs, nsamples=6, seqlen=32, seed=3)
    held = data.heldout_docs(word_tokenizer, docs, nsamples=6, seqlen=32, seed=3)
    assert 0 < len(held) < len(docs) - 6
    used = [d for d in docs if d not in held]
    used_ids = [word_tokenizer(d).input_ids for d in used]
    # every calibration sample is a slice of a document that is not held out
    for row in batch.tolist():
        assert any(any(ids[i:i + 32] == row for i in range(len(ids) - 31)) for ids in used_ids)
    # the held-out ones are the tail of calibration's visiting order: a larger calibration reads into them
    more = data.heldout_docs(word_tokenizer, docs, nsamples=12, seqlen=32, seed=3)
    assert set(more) < set(held)
    with pytest.raises(UserError, match="none is held out"):
        data.heldout_docs(word_tokenizer, docs, nsamples=60, seqlen=32, seed=3)
