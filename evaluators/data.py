"""Text data: WikiText-2 / C4 splits (hub when online, local files otherwise), windows, calibration.

Offline, the local data folder (``data_dir``, else ``$DSA_DATA_DIR``, else ``../shared/data``
relative to the working directory or to the repository) holds:

- ``wikitext-2/raw/test.raw.txt``: the raw WikiText-2 test split (one dataset row per line).
- ``wikitext-2/valid.txt``: the *tokenized* release of the validation split (there is no raw valid
  file). It is de-tokenized with `` @-@ `` → ``-``, `` @,@ `` → ``,``, `` @.@ `` → ``.``; its
  ``<unk>`` tokens stay, so validation perplexities are close to, not equal to, the raw split's.
- ``c4/c4_validation_2k.parquet``: 2000 C4 validation documents (column ``text``).
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import torch

from .errors import UserError
from .hub import hub_reachable

REPO_ROOT = Path(__file__).resolve().parents[1]
WIKITEXT_FILES = {"test": "wikitext-2/raw/test.raw.txt", "validation": "wikitext-2/valid.txt"}
C4_FILE = "c4/c4_validation_2k.parquet"
C4_SHARDS = {"validation": "en/c4-validation.00000-of-00008.json.gz",
             "train": "en/c4-train.00000-of-01024.json.gz"}
DETOKENIZE = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation"}
FLAGS = "--data/--calib"


def find_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """``data_dir`` if given, else ``$DSA_DATA_DIR``, else ``../shared/data`` from the cwd or the repo."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    candidates = [os.environ.get("DSA_DATA_DIR"), Path.cwd() / "../shared/data", REPO_ROOT / "../shared/data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c).resolve()
    return None


def _rows(text: str) -> list[str]:
    """Lines as HF's wikitext rows: newline kept, blank lines as ""."""
    return [line if line.strip() else "" for line in text.splitlines(keepends=True)]


def _local_file(data_dir: str | Path | None, relative: str, what: str) -> Path:
    root = find_data_dir(data_dir)
    path = root / relative if root is not None else None
    if path is None or not path.is_file():
        where = str(path) if path is not None else f"<data dir>/{relative} (no data dir found; set DSA_DATA_DIR)"
        raise UserError(f"{what} is not available offline: missing {where}; pass a local file with {FLAGS}")
    return path


def read_text_file(path: str | Path) -> list[str]:
    """A local .txt (one row per line), .parquet, .json or .jsonl (column/field ``text``) file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data file not found: {path} ({FLAGS})")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix == ".txt":
            return _rows(path.read_text(encoding="utf-8"))
        if suffix == ".parquet":  # pyarrow directly: same rows as datasets' parquet builder, less to import
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if "text" not in table.column_names:
                raise UserError(f"data file {path} has no 'text' column ({FLAGS}); columns: {table.column_names}")
            return [t or "" for t in table.column("text").to_pylist()]
        import datasets

        builder = {".json": "json", ".jsonl": "json",
                   ".json.gz": "json", ".jsonl.gz": "json"}.get(suffix)
        if builder is None:
            raise UserError(f"unsupported data file type {path.name} ({FLAGS}): use .txt, .parquet, .json or .jsonl")
        quiet = not datasets.utils.are_progress_bars_disabled()
        if quiet:
            datasets.utils.disable_progress_bars()
        try:
            table = datasets.load_dataset(builder, data_files=str(path), split="train")
        finally:
            if quiet:
                datasets.utils.enable_progress_bars()
    except UserError:
        raise
    except Exception as exc:  # arrow/json/unicode errors
        raise UserError(f"cannot read data file {path} ({FLAGS}): {type(exc).__name__}: {exc}") from exc
    if "text" not in table.column_names:
        raise UserError(f"data file {path} has no 'text' column ({FLAGS}); columns: {table.column_names}")
    return [t or "" for t in table["text"]]


def _wikitext2(split: str, data_dir) -> list[str]:
    if data_dir is None and hub_reachable():
        try:
            import datasets

            return list(datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split=split)["text"])
        except Exception as exc:  # hub hiccup: fall back to the local copy
            warnings.warn(f"wikitext2 from the hub failed ({type(exc).__name__}); using local files")
    if split not in WIKITEXT_FILES:
        raise UserError(f"wikitext2 split {split!r} has no local copy; use test or validation ({FLAGS})")
    text = _local_file(data_dir, WIKITEXT_FILES[split], f"wikitext2 {split}").read_text(encoding="utf-8")
    if split == "validation":
        for old, new in DETOKENIZE:
            text = text.replace(old, new)
    return _rows(text)


def _c4(split: str, data_dir) -> list[str]:
    if split not in C4_SHARDS:
        raise UserError(f"c4 split {split!r} unknown; use validation or train ({FLAGS})")
    if data_dir is None and hub_reachable():
        try:
            import datasets

            shard = C4_SHARDS[split]
            return list(datasets.load_dataset("allenai/c4", data_files={split: shard}, split=split)["text"])
        except Exception as exc:
            warnings.warn(f"c4 from the hub failed ({type(exc).__name__}); using local files")
    if split == "train":
        warnings.warn("no local C4 train shard: using the local C4 validation documents")
    return read_text_file(_local_file(data_dir, C4_FILE, "c4"))


def load_split(name: str, split: str = "test", data_dir: str | None = None) -> list[str]:
    """Texts of ``name`` ∈ {"wikitext2", "c4"} (hub when online and no ``data_dir``, else local files)
    or of a local .txt/.parquet/.json/.jsonl file (``split`` ignored)."""
    split = SPLIT_ALIASES.get(split, split)
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("wikitext2", "wikitext"):
        return _wikitext2(split, data_dir)
    if key == "c4":
        return _c4(split, data_dir)
    if Path(name).expanduser().suffix or Path(name).expanduser().exists():
        return read_text_file(name)
    raise UserError(f"unknown dataset {name!r} ({FLAGS}): use wikitext2, c4 or a path to a .txt/.parquet/.json/.jsonl file")


def token_windows(tokenizer, texts: list[str], seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Join with "\\n\\n", tokenize once, cut into non-overlapping ``seqlen`` windows → LongTensor [n, seqlen].

    The Wanda/SparseGPT perplexity convention; a trailing partial window is dropped.
    """
    if seqlen < 2:
        raise UserError(f"sequence length must be at least 2, got {seqlen}")
    ids = tokenizer("\n\n".join(texts), return_tensors="pt", verbose=False).input_ids[0]
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise UserError(f"the text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    return ids[: n * seqlen].reshape(n, seqlen).clone()


def calibration_batch(tokenizer, docs: list[str], nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``nsamples`` random windows of ``seqlen`` tokens (Wanda/SparseGPT style) → LongTensor [nsamples, seqlen].

    Documents are visited once in a seeded random order; each one longer than ``seqlen`` tokens
    gives one window at a random offset. If too few are long enough, the remaining windows are cut
    at random offsets from all documents joined with "\\n\\n" (so short documents never loop forever).
    """
    if nsamples < 1 or seqlen < 2:
        raise UserError(f"need nsamples ≥ 1 and seqlen ≥ 2, got {nsamples} and {seqlen}")
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    samples: list[torch.Tensor] = []
    chunk = 32
    for start in range(0, len(order), chunk):
        batch = [docs[i] for i in order[start:start + chunk]]
        for ids in tokenizer(batch, verbose=False).input_ids:
            if len(ids) > seqlen and len(samples) < nsamples:
                i = rng.randint(0, len(ids) - seqlen - 1)
                samples.append(torch.tensor(ids[i:i + seqlen], dtype=torch.long))
        if len(samples) == nsamples:
            break
    if len(samples) < nsamples:
        stream = tokenizer("\n\n".join(docs[i] for i in order), return_tensors="pt", verbose=False).input_ids[0]
        if stream.numel() <= seqlen:
            raise UserError(f"calibration text has {stream.numel()} tokens, too few for windows of {seqlen}")
        while len(samples) < nsamples:
            i = rng.randint(0, stream.numel() - seqlen - 1)
            samples.append(stream[i:i + seqlen].clone())
    return torch.stack(samples)
