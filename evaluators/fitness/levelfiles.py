"""The level database's files (:mod:`evaluators.fitness.leveldb`): how a pruned weight is stored, how big a
database will be, and how its files are read back without trusting them.

**A stored level** of a ``rows × cols`` weight is two 1-D tensors: ``values``, the weight's entries whose
bits are not all zero, in row-major order and in the weight's own dtype, and ``mask``, one bit per entry
(``numpy.packbits``, row-major, most significant bit first) saying which entries those are. Decoding puts
the values back into zeros where the bits say: bit for bit the weight that was encoded (a kept ``-0.0``
is a value, not a zero). At level ``p`` a linear of ``N`` weights of ``b`` bytes takes about
``(1 − p)·N·b + N/8`` bytes instead of ``N·b`` (exactly ``nnz·b + ⌈N/8⌉`` + the safetensors header).
Column indices instead of the bitmask (uint16, 2 bytes per kept weight against 1/8 byte per weight) are
smaller only above ``p ≈ 0.94``: at the default grid they would save under 1 % of the total (arithmetic,
not measured), so one layout serves every level.

**Reading back**: a database lives in a cache folder that other runs share and anything may have
damaged, so a file is opened only when it is a regular file (a FIFO would block, ``/dev/zero`` never
end) no larger than a bound computed from the model's shapes; ``meta.json`` is typed and ranged field
by field; each block file's sha256 digest, written at build, is checked when the file is first opened.
(The reading itself is :mod:`evaluators.files`, shared with run and comparison folders and data files.)
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from evaluators.files import read_json

META_MAX_BYTES = 16 * 2**20  # a meta.json larger than this is not read
TENSOR_HEADER = 128  # about what one tensor's entry adds to a safetensors header (bytes)
_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_DIGEST = re.compile(r"[0-9a-f]{64}")


def encode_level(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """``weight`` as ``{"values", "mask"}`` (module doc), on the CPU."""
    flat = weight.detach().cpu().contiguous().view(-1)
    keep = flat.view(_SAME_WIDTH_INT[flat.element_size()]) != 0  # by bits: -0.0 is kept
    return {"values": flat[keep], "mask": torch.from_numpy(np.packbits(keep.numpy()))}


def decode_level(values: torch.Tensor, mask: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The weight of ``shape`` that :func:`encode_level` stored as ``values`` and ``mask``."""
    n = math.prod(shape)
    keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=n).view(bool))
    return torch.zeros(n, dtype=values.dtype).masked_scatter_(keep, values).view(*shape)


def level_bytes(rows: int, cols: int, level: float, element_size: int) -> int:
    """Projected bytes of one stored level (module doc): ``⌈(1 − level)·N⌉`` values, ``⌈N/8⌉`` mask bytes and
    two header entries. SparseGPT keeps ``N − ⌊level·N⌋`` weights per 128-column block, so a few more
    values than this at most; weights the update leaves at exactly zero make it fewer."""
    n = rows * cols
    return math.ceil((1.0 - level) * n) * element_size + math.ceil(n / 8) + 2 * TENSOR_HEADER


def projected_bytes(shapes: Iterable[Sequence[int]], grid: Sequence[float], element_size: int) -> int:
    """Projected size of a database of linears of ``shapes`` (rows, cols) at the stored ``grid`` levels
    (``grid[1:]``; level 0 is the dense model) in a dtype of ``element_size`` bytes."""
    return sum(level_bytes(rows, cols, g, element_size) for rows, cols in shapes for g in grid[1:])


def block_bound(shapes: Iterable[Sequence[int]], levels: int, element_size: int, header: int) -> int:
    """The most bytes a block file may hold: every level dense (no entry zero), its mask, its header."""
    return header + levels * sum(rows * cols * element_size + math.ceil(rows * cols / 8) + 2 * TENSOR_HEADER
                                 for rows, cols in shapes)


def read_meta(path: Path) -> object:
    """JSON data of ``meta.json`` at ``path``, None when it is no JSON; OSError when it is not a regular
    file of at most :data:`META_MAX_BYTES` bytes (the caller refuses: it is not ours to delete)."""
    try:
        return read_json(path, META_MAX_BYTES)
    except ValueError:  # not JSON, or nested too deeply for the parser
        return None


def _same(a: object, b: object) -> bool:
    """Equal as JSON text: types included (``64.0`` is not ``64``, ``true`` not ``1``)."""
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return False


def meta_problem(meta: object, expected: dict, bounds: list[int]) -> str | None:
    """What makes ``meta`` (read back from ``meta.json``) unusable, None when nothing: ``expected`` holds the
    fields it must equal exactly (format, key, grid, dtype, names, shapes); ``sizes`` must be ``len(bounds)``
    integers in ``[1, bounds[l]]``, ``digests`` as many sha256 hex digests, ``build_seconds`` a finite
    number ≥ 0."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    for field, want in expected.items():
        if not _same(meta.get(field), want):
            return f"its {field} differs from this model's and settings'"
    sizes, digests, seconds = meta.get("sizes"), meta.get("digests"), meta.get("build_seconds")
    if not isinstance(sizes, list) or len(sizes) != len(bounds) or not all(
            type(s) is int and 1 <= s <= bound for s, bound in zip(sizes, bounds)):
        return f"sizes is not {len(bounds)} block sizes in range"
    if not isinstance(digests, list) or len(digests) != len(bounds) or not all(
            isinstance(d, str) and _DIGEST.fullmatch(d) for d in digests):
        return f"digests is not {len(bounds)} sha256 digests"
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0:
        return "build_seconds is not a number of seconds"
    return None
