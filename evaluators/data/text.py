"""Text data: WikiText-2 / C4 splits, token windows, calibration batches.

``load_split("wikitext2" | "c4", split, data_dir)`` takes the first of these that applies:

1. ``data_dir`` (the CLI's ``--data-dir``), else ``$DSA_DATA_DIR``: a local data folder. Once one is
   given it is used alone: a file missing there is a :class:`UserError` naming the path.
2. The Hugging Face Hub, when reachable (:func:`evaluators.models.hub.hub_reachable`; never with
   ``HF_HUB_OFFLINE=1``): ``Salesforce/wikitext`` ``wikitext-2-raw-v1`` and an ``allenai/c4`` shard.
3. The copy bundled with the package (``evaluators/data/bundled/``, xz-compressed; licences and
   provenance in its README), identical to the local folder's files below, so a fresh install
   works offline with no data folder.

A local data folder holds (the bundled copy: the same content, xz-compressed, C4's texts as JSON lines):

- ``wikitext-2/raw/test.raw.txt``: the raw WikiText-2 test split (one dataset row per line).
- ``wikitext-2/valid.txt``: the *tokenized* release of the validation split (there is no raw valid
  file). It is de-tokenized with `` @-@ `` → ``-``, `` @,@ `` → ``,``, `` @.@ `` → ``.``; its
  ``<unk>`` tokens stay, so validation perplexities are close to, not equal to, the raw split's.
- ``c4/c4_validation_2k.parquet``: 2000 C4 validation documents (column ``text``). Calibration
  (split ``train``) uses these too when the hub is not used.

Any other name is a local .txt/.parquet/.json/.jsonl file. Every result is a :class:`Texts`, a
list of strings whose ``source`` says where it came from (for a run's config).
"""
from __future__ import annotations

import io
import json
import lzma
import os
import random
import re
import warnings
from pathlib import Path

import torch

from evaluators.errors import UserError
from evaluators.files import path_kind
from evaluators.models.hub import hub_reachable

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
WIKITEXT_FILES = {"test": "wikitext-2/raw/test.raw.txt", "validation": "wikitext-2/valid.txt"}
C4_FILE = "c4/c4_validation_2k.parquet"
# data-folder layout → the bundled xz file with the same content (C4: its texts as JSON lines)
BUNDLED_FILES = {"wikitext-2/raw/test.raw.txt": "wikitext-2-test.raw.txt.xz",
                 "wikitext-2/valid.txt": "wikitext-2-valid.txt.xz",
                 C4_FILE: "c4-validation-2k.jsonl.xz"}
WIKITEXT_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")
C4_HUB = "allenai/c4"
C4_SHARDS = {"validation": "en/c4-validation.00000-of-00008.json.gz",
             "train": "en/c4-train.00000-of-01024.json.gz"}
DETOKENIZE = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation"}
FLAGS = "--data/--calib"


class Texts(list):
    """A list of texts that remembers where it came from: ``source`` is ``"hub:<repo> <config/file> <split>"``,
    ``"dir:<file>"`` (a data folder), ``"bundled:<file in evaluators/data/bundled>"`` or ``"file:<path>"``."""

    def __init__(self, texts=(), source: str = ""):
        super().__init__(texts)
        self.source = source


def find_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local data folder to use: ``data_dir`` if given, else ``$DSA_DATA_DIR`` if set, else None
    (then the hub or the bundled copy is used)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("DSA_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else None


def _rows(text: str) -> list[str]:
    """Lines as HF's wikitext rows: newline kept, blank lines as ""."""
    return [line if line.strip() else "" for line in text.splitlines(keepends=True)]


def _dir_file(root: Path, relative: str, what: str, data_dir) -> Path:
    """``root/relative``, which must exist: a data folder once given is used alone."""
    path = root / relative
    if (kind := path_kind(path)) != "a file":  # a FIFO would block the reader, /dev/zero never end
        origin = "--data-dir" if data_dir is not None and str(data_dir) != "" else "$DSA_DATA_DIR"
        problem = "missing" if kind == "missing" else f"{kind}, not a regular file:"
        raise UserError(f"{what}: {problem} {path} (data folder from {origin}); "
                        f"fix the folder, or pass a local file with {FLAGS}")
    return path


def _bundled_bytes(relative: str) -> bytes:
    path = BUNDLED_DIR / BUNDLED_FILES[relative]
    try:
        return lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as exc:  # a broken install
        raise UserError(f"the bundled data file {path} is unreadable ({type(exc).__name__}: {exc}); "
                        f"reinstall dsa-gp, or set DSA_DATA_DIR / pass --data-dir") from exc


def _bundled_text(relative: str) -> str:
    """The bundled file decoded exactly as ``Path.read_text(encoding="utf-8")`` reads the original."""
    return io.TextIOWrapper(io.BytesIO(_bundled_bytes(relative)), encoding="utf-8").read()


def read_text_file(path: str | Path) -> Texts:
    """A local .txt (one row per line), .parquet, .json or .jsonl (column/field ``text``) file."""
    path = Path(path).expanduser()
    if (kind := path_kind(path)) != "a file":  # a FIFO would block the reader, /dev/zero never end
        problem = "not found" if kind == "missing" else f"is {kind}, not a regular file"
        raise UserError(f"data file {problem}: {path} ({FLAGS})")
    source = f"file:{path.resolve()}"
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix == ".txt":
            return Texts(_rows(path.read_text(encoding="utf-8")), source)
        if suffix == ".parquet":  # pyarrow directly: same rows as datasets' parquet builder, less to import
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if "text" not in table.column_names:
                raise UserError(f"data file {path} has no 'text' column ({FLAGS}); columns: {table.column_names}")
            return Texts((t or "" for t in table.column("text").to_pylist()), source)
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
    return Texts((t or "" for t in table["text"]), source)


def _wikitext2(split: str, data_dir) -> Texts:
    root = find_data_dir(data_dir)
    if root is None and hub_reachable():
        try:
            import datasets

            rows = datasets.load_dataset(*WIKITEXT_HUB, split=split)["text"]
            return Texts(rows, f"hub:{WIKITEXT_HUB[0]} {WIKITEXT_HUB[1]} {split}")
        except Exception as exc:  # hub hiccup: fall back to the bundled copy
            warnings.warn(f"wikitext2 from the hub failed ({type(exc).__name__}); using the bundled copy")
    if split not in WIKITEXT_FILES:
        raise UserError(f"wikitext2 split {split!r} has no local copy; use test or validation ({FLAGS})")
    relative = WIKITEXT_FILES[split]
    if root is not None:
        path = _dir_file(root, relative, f"wikitext2 {split}", data_dir)
        text, source = path.read_text(encoding="utf-8"), f"dir:{path.resolve()}"
    else:
        text, source = _bundled_text(relative), f"bundled:{BUNDLED_FILES[relative]}"
    if split == "validation":
        for old, new in DETOKENIZE:
            text = text.replace(old, new)
    return Texts(_rows(text), source)


def _c4(split: str, data_dir) -> Texts:
    if split not in C4_SHARDS:
        raise UserError(f"c4 split {split!r} unknown; use validation or train ({FLAGS})")
    root = find_data_dir(data_dir)
    if root is None and hub_reachable():
        try:
            import datasets

            shard = C4_SHARDS[split]
            rows = datasets.load_dataset(C4_HUB, data_files={split: shard}, split=split)["text"]
            return Texts(rows, f"hub:{C4_HUB} {shard} {split}")
        except Exception as exc:
            warnings.warn(f"c4 from the hub failed ({type(exc).__name__}); using the bundled copy")
    # offline there is no C4 train shard: calibration reads the 2000 validation documents (said in `source`)
    as_train = " (C4 validation documents, standing in for train)" if split == "train" else ""
    if root is not None:
        path = _dir_file(root, C4_FILE, "c4", data_dir)
        return Texts(read_text_file(path), f"dir:{path.resolve()}{as_train}")
    lines = _bundled_bytes(C4_FILE).decode("utf-8").split("\n")  # JSON escapes every newline inside a text
    return Texts((json.loads(line)["text"] for line in lines if line), f"bundled:{BUNDLED_FILES[C4_FILE]}{as_train}")


def load_split(name: str, split: str = "test", data_dir: str | None = None) -> Texts:
    """Texts of ``name`` ∈ {"wikitext2", "c4"} (``data_dir`` → ``$DSA_DATA_DIR`` → the hub when
    reachable → the bundled copy) or of a local .txt/.parquet/.json/.jsonl file (``split`` ignored).
    The result's ``source`` says which was used."""
    split = SPLIT_ALIASES.get(split, split)
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("wikitext2", "wikitext"):
        return _wikitext2(split, data_dir)
    if key == "c4":
        return _c4(split, data_dir)
    if Path(name).expanduser().suffix or os.path.lexists(Path(name).expanduser()):
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


UNK = "<unk>"  # WikiText-2's tokenized release writes every out-of-vocabulary word as this literal marker


def marker_tokens(tokenizer, texts: list[str], seqlen: int, max_windows: int | None = None,
                  marker: str = UNK) -> torch.Tensor:
    """BoolTensor ``[n, seqlen]``, aligned with :func:`token_windows` on the same arguments: True where a
    token covers part of a literal ``marker`` in the text.

    The bundled WikiText-2 validation split is the tokenized release: about 5 % of its words are ``<unk>``,
    which the raw test split never contains and which a subword tokenizer cuts into several costly pieces.
    A fitness that leaves these targets out (``ppl-known``) scores the model on the words the text really
    has. Needs a fast tokenizer (character offsets)."""
    text = "\n\n".join(texts)
    try:
        enc = tokenizer(text, return_offsets_mapping=True, verbose=False)
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise UserError(f"finding {marker!r} in the text needs a fast tokenizer with character offsets "
                        f"({type(exc).__name__})") from None
    inside = torch.zeros(len(text) + 1, dtype=torch.int64)
    for match in re.finditer(re.escape(marker), text):
        inside[match.start() + 1:match.end() + 1] = 1
    covered = inside.cumsum(0)  # covered[e] − covered[s]: marker characters in text[s:e]
    spans = torch.tensor(enc["offset_mapping"], dtype=torch.int64).reshape(-1, 2)
    hit = (covered[spans[:, 1]] - covered[spans[:, 0]]) > 0
    n = hit.numel() // seqlen if max_windows is None else min(hit.numel() // seqlen, max_windows)
    if n == 0:
        raise UserError(f"the text has {hit.numel()} tokens, fewer than one window of {seqlen}")
    return hit[: n * seqlen].reshape(n, seqlen).clone()


def heldout_docs(tokenizer, docs: list[str], nsamples: int, seqlen: int, seed: int = 0) -> list[str]:
    """The documents :func:`calibration_batch` with the same arguments never reads (in its visiting order):
    text of the calibration domain that neither calibration nor a fitness on these has seen. A
    UserError when calibration had to read every document."""
    order = _visit_order(len(docs), random.Random(seed))
    for count, (position, _) in enumerate(_long_documents(tokenizer, docs, order, seqlen), 1):
        if count == nsamples:  # the document that gave calibration its last window
            return [docs[i] for i in order[position + 1:]]
    raise UserError(f"calibration with {nsamples} × {seqlen} tokens reads every one of the {len(docs)} "
                    f"documents: none is held out")


def _visit_order(n: int, rng: random.Random) -> list[int]:
    """The seeded order in which calibration visits ``n`` documents (the rng's first draw)."""
    order = list(range(n))
    rng.shuffle(order)
    return order


def _long_documents(tokenizer, docs: list[str], order: list[int], seqlen: int, chunk: int = 32):
    """(position in ``order``, token ids) of every document longer than ``seqlen`` tokens, in visiting order
    (tokenized ``chunk`` at a time): the documents that give calibration a window each."""
    for start in range(0, len(order), chunk):
        for k, ids in enumerate(tokenizer([docs[i] for i in order[start:start + chunk]], verbose=False).input_ids):
            if len(ids) > seqlen:
                yield start + k, ids


def calibration_batch(tokenizer, docs: list[str], nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``nsamples`` random windows of ``seqlen`` tokens (Wanda/SparseGPT style) → LongTensor [nsamples, seqlen].

    Documents are visited once in a seeded random order; each one longer than ``seqlen`` tokens
    gives one window at a random offset. If too few are long enough, the remaining windows are cut
    at random offsets from all documents joined with "\\n\\n" (so short documents never loop forever).
    """
    if nsamples < 1 or seqlen < 2:
        raise UserError(f"need nsamples ≥ 1 and seqlen ≥ 2, got {nsamples} and {seqlen}")
    rng = random.Random(seed)
    order = _visit_order(len(docs), rng)
    samples: list[torch.Tensor] = []
    for _, ids in _long_documents(tokenizer, docs, order, seqlen):
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
