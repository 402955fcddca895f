"""EvoPress's per-layer level database: an exact fitness for pruners that update the weights they keep.

Masks from dense-model scores (:mod:`evaluators.fitness.masking`) reproduce Wanda and magnitude pruning, but not
SparseGPT, whose OBS update changes the surviving weights. As in EvoPress, every decoder linear is
instead pruned once by the reference pruner (``PRUNERS[method].prune_linear``) at every level of a
sparsity grid, the results are stored on disk, and a candidate allocation is assembled from them.

**Build** (:func:`open_levels`, once per model × calibration × method × grid). Calibration statistics
come from the *dense* model in one forward pass (EvoPress's one-shot protocol: block ``l`` is pruned
from the dense model's inputs, not from those of already-pruned blocks as the sequential
:func:`evaluators.pruning.pruners.prune` does). Each linear's weight is cloned into a temporary ``nn.Linear``
and pruned there at each level ``> 0``; the model is never written. Stored in the model's dtype (the
pruner's own output dtype), so an assembled weight at a grid level equals the pruner's output bit for
bit. Cost: ``levels × linears`` pruner calls; the hessians of every linear still to build are held at
once (``4·in²`` bytes per linear, as :func:`evaluators.data.calibration.collect_stats`), and one block's
levels in memory while its file is written. Before building, the projected size
(:func:`evaluators.fitness.levelfiles.projected_bytes`, from the shapes, grid and dtype) and the free space
of the folder are printed, and the build is refused in one line when it does not fit. Measured on
SmolLM2-135M (fp32, 16 × 512 calibration tokens, 2-core CPU; ``python -m bench.leveldb_cost``): at step
0.05 (20 stored levels) 4.31 GB, built in 296 s (format 1's dense copies: 8.49 GB, 833 s with one torch
thread); at the default step 0.1 (10 levels) 2.05 GB, built in 142 s.

**On disk** (format 2), under ``ROOT/HASH/`` (``ROOT``: ``root``, else ``$DSA_CACHE_DIR/leveldb``, else
``~/.cache/dsa-gp/leveldb``; ``HASH``: 16 hex digits of the sha256 of the key): one safetensors file per
decoder block, ``block_000.safetensors`` …, holding for each linear ``name`` (qualified) and grid index
``i ≥ 1`` (level 0 is the dense weight and is not stored) the tensors ``f"{name}@{i}/values"`` and
``f"{name}@{i}/mask"``: the weight's entries whose bits are not all zero, in its dtype, and a bitmask of
where they go (:mod:`evaluators.fitness.levelfiles`), about ``(1 − g)·N·b + N/8`` bytes for ``N`` weights of
``b`` bytes at level ``g`` instead of ``N·b``. Summed over a 0.05 step: ``9.51·b + 2.5`` bytes per
weight against format 1's ``20·b`` (fp32: 40.5 against 80; bf16: 21.5 against 40); projected for
LLaMA-2-7B's linears in bf16, 139 GB (format 1: 259 GB), and 66.5 GB at the default 0.1 step. Each file is written to a
temporary name and renamed, its metadata holding the key; then ``meta.json`` (format, key, grid, dtype,
names and shapes, each block file's size and sha256 digest, build seconds), written last. The key is
the caller's ``key`` dict (model id, dtype, calibration source/sizes/seed, …) plus what the database
checks itself: method, grid, the pruner's parameters (percdamp, blocksize, mask), a digest of the
calibration token ids, a fingerprint of the weights (first and last row of every linear) and the
format. A database of format 1 therefore sits in another folder and is never read (delete it to free
its space).

**Reuse** checks what it reads (:mod:`evaluators.fitness.levelfiles`): the cache folder and ``HASH`` must be
folders, ``meta.json`` and the block files regular files (a FIFO, a device, a folder or a dangling
link there: refused in one line, nothing deleted); ``meta.json`` must be at most 16 MiB of JSON whose
format, key, grid, dtype, names and shapes equal this model's and settings' exactly, whose sizes are
block sizes in range and digests sha256 digests, and every block file must have its recorded size;
otherwise the folder's files are deleted and rebuilt. A block file's digest is checked when it is
first opened (by :meth:`LevelDatabase.weight`): a file that does not match (zeroed, swapped, changed)
is refused in one line, never read. That check reads the whole file once per process, at sha256's
speed: measured here 1.4–2.0 GB/s (2-core CPU shared with another job; 256 MiB in memory, and the tiny
test model's 4 block files, 2.9 MB, from the page cache). It scales with the database's bytes: about
2–3 s for SmolLM2 in fp32 (projected 4.3 GB) and 70–100 s for LLaMA-2-7B in bf16 (projected 139 GB),
plus the disk's read time where the files are not in the page cache. The digest guards against
damage, not against someone who rewrites ``meta.json`` to match: a shared cache folder is trusted.
A build killed before ``meta.json`` resumes, skipping the block files already written (checked by
their key and tensor names, then digested with the others when ``meta.json`` is written).

**Assembly** (:class:`LevelWeights`, the interface of :class:`evaluators.fitness.masking.Masks`): the grid is
``g_0 = 0 < g_1 < … < g_K`` (``g_K = top``), extended by ``g_{K+1} = 1`` (all zeros, not stored) when
``top < 1``. Block sparsity ``s`` lies in ``[g_i, g_{i+1}]``; each of the block's linears (``rows``
output rows) takes ``r = round((s − g_i)/(g_{i+1} − g_i) · rows)`` rows (halves up) from level ``i+1``
and the others from level ``i``, each row copied exactly as stored. The ``r`` rows are spread evenly
and deterministically: row ``j`` is taken iff ``⌊(j+1)·r/rows⌋ > ⌊j·r/rows⌋``. At a grid level
``r = 0`` (or ``rows``), so the weight *is* the stored level. This is how allocations from formulas are
put on the grid with the exact parameter-weighted target mean: a linear's nominal sparsity
``s' = g_i + (r/rows)·(g_{i+1} − g_i)`` differs from ``s`` by at most half a row's share of one level
step, ``|s' − s| ≤ (g_{i+1} − g_i)/(2·rows)``, so the parameter-weighted mean of the ``s'`` equals the
allocation's parameter-weighted mean to within the parameter-weighted average of these bounds, at most
the largest (at the default step 0.1: 2.6·10⁻⁴ for SmolLM2's 192-row k/v projections, 8.7·10⁻⁵ for its
576-row linears). Measured zeros: with a per-row-exact pruner (``sparsegpt-row``, wanda,
magnitude) a stored row of level ``g`` has ``round(g·cols)`` zeros, so the linear has exactly
``(rows − r)·round(g_i·cols) + r·round(g_{i+1}·cols)``. SparseGPT's reference mask (one threshold per
128-column block over all rows) lets rows of one level differ in sparsity, so a mixed linear's measured
sparsity also moves by how much the ``r`` chosen rows differ from the average row. Measured, random
allocations in [0.5, 0.9]: per linear within 1.5·10⁻³ of ``s``, the model's parameter-weighted mean
within 3·10⁻⁵ of the allocation's (SmolLM2-135M, step 0.05); 6·10⁻³ and 10⁻³ on the 64-wide test
models.

Per candidate, one block at a time: the (at most two) levels each linear needs are decoded from the
memory-mapped block file (``safe_open``) or taken from a cache of decoded block levels (at most
``cache_bytes``, default :data:`CACHE_BYTES` = 1 GiB, which holds every level a SmolLM2 fp32 candidate
needs, at most 2 × 425 MB; when full, the least recently used levels that the candidate does not need
are dropped first, so a candidate's own levels are never evicted for each other). A candidate that
keeps a block's levels thus reads and decodes nothing for it. The levels are copied into the model;
:meth:`LevelWeights.restore` copies the dense weights back (a dense copy is kept, like ``Masks``'
``"inplace"``). Decoding runs at about 0.3–0.5 GB of weights per second on one thread here (fp32 and
bf16, 1536×576 and 4096×4096 at level 0.7). What one candidate costs against a plain forward:
``python -m bench.leveldb_cost``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from evaluators.data.calibration import LinearStats, StatsCollector, run_through_blocks
from evaluators.errors import UserError
from evaluators.files import file_digest, write_atomic
from evaluators.fitness.levelfiles import (block_bound, decode_level, encode_level, meta_problem, projected_bytes,
                                           read_meta)
from evaluators.models.loading import model_linears
from evaluators.pruning.pruners import Pruner, check_sparsities, get_pruner

FORMAT = 2  # 2: non-zero values + bitmask per level; 1: dense copies. Part of the key: bump when the layout changes
META = "meta.json"
CACHE_BYTES = 2**30  # LevelWeights' default budget for decoded block levels
# the default grid's step: 0, 0.1, …, 0.9, 0.99 (10 stored levels). Chosen from
# bench/results/level_agreement_cpu_smollm2_sparsegpt70*: on the same 44 allocations and the same exact
# sequential-SparseGPT test numbers, step 0.1 ranks as well as step 0.05 (ρ 0.933 against 0.928; better half 0.740
# against 0.621) at half the size (SmolLM2-135M 2.05 GB against 4.31; LLaMA-2-7B bf16 projected 66.5 GB against
# 139) and half the build time
DEFAULT_STEP = 0.1


def level_grid(step: float = DEFAULT_STEP, top: float = 0.99) -> list[float]:
    """The sparsity levels ``0, step, 2·step, …`` below ``top``, then ``top`` (default: 0, 0.1, … 0.9, 0.99)."""
    if not 0.0 < step < 1.0 or not 0.0 < top <= 1.0:
        raise UserError(f"level grid: step must be in (0, 1) and top in (0, 1], got step {step}, top {top}")
    grid, i = [], 0
    while (level := round(i * step, 10)) < top:
        grid.append(level)
        i += 1
    return grid + [float(top)]


def default_root() -> Path:
    """``$DSA_CACHE_DIR/leveldb``, else ``~/.cache/dsa-gp/leveldb``."""
    base = os.environ.get("DSA_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "dsa-gp") / "leveldb"


def _bytes_digest(tensors: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _pruner_params(pruner: Pruner) -> dict:
    """The pruner's name and plain settings (SparseGPT: blocksize, percdamp, mask)."""
    return {k: v for k, v in sorted(vars(pruner).items()) if isinstance(v, (bool, int, float, str))}


def _block_file(path: Path, block: int) -> Path:
    return path / f"block_{block:03d}.safetensors"


def _tensor_names(names: list[str], n_levels: int) -> set[str]:
    return {f"{n}@{i}/{part}" for n in names for i in range(1, n_levels) for part in ("values", "mask")}


def _structure(linears: list[dict[str, nn.Linear]]) -> tuple[list[list[str]], dict[str, list[int]], str]:
    """(names per block, shape per name, dtype) of the model's decoder linears."""
    names = [list(block) for block in linears]
    shapes = {n: list(lin.weight.shape) for block in linears for n, lin in block.items()}
    dtype = str(next(lin.weight.dtype for block in linears for lin in block.values())).removeprefix("torch.")
    return names, shapes, dtype


def _damaged(path: Path, what: str) -> UserError:
    return UserError(f"{what}: the level database at {path} is damaged; delete that folder to rebuild it")


class LevelDatabase:
    """A built level database on disk: ``weight(block, name, i)`` is linear ``name`` of decoder block
    ``block`` pruned at ``grid[i]`` (``i ≥ 1``), read lazily; each block file is checked against its digest
    when first opened. Made by :func:`open_levels`."""

    def __init__(self, path: Path, meta: dict, reused: bool):
        self.path, self.meta, self.reused = Path(path), meta, reused
        self.grid: list[float] = list(meta["grid"])
        self.method: str = meta["key"]["method"]
        self.nm_group: int | None = meta["key"].get("nm_group")  # N:M levels in groups of this many (else absent)
        self.names: list[list[str]] = meta["names"]
        self.shapes: dict[str, list[int]] = meta["shapes"]
        self.dtype: str = meta["dtype"]
        self._handles: dict[int, object] = {}
        self._verified: set[int] = set()  # block files whose digest matched (kept across close())

    @property
    def n_blocks(self) -> int:
        return len(self.names)

    @property
    def size_bytes(self) -> int:
        """Bytes of the block files on disk."""
        return sum(self.meta["sizes"])

    def describe(self) -> str:
        """One line: blocks × stored levels, size, where, and how long it took to build (or "reused")."""
        how = "reused" if self.reused else f"built in {self.meta['build_seconds']:.0f} s"
        return (f"level database: {self.n_blocks} blocks × {len(self.grid) - 1} levels, "
                f"{_gb(self.size_bytes)} at {self.path}, {how}")

    def verify(self, block: int) -> None:
        """UserError unless block ``block``'s file has the size and sha256 digest ``meta.json`` records (read
        once per process: a matching file is not read again)."""
        if block in self._verified:
            return
        file, size = _block_file(self.path, block), self.meta["sizes"][block]
        try:
            found = file_digest(file, size)
        except OSError as exc:
            raise _damaged(self.path, f"{file.name} is not readable ({exc.strerror or exc})") from None
        if found != (size, self.meta["digests"][block]):
            raise _damaged(self.path, f"{file.name} does not match the size and digest meta.json records for it")
        self._verified.add(block)

    def _handle(self, block: int):
        if block not in self._handles:
            self.verify(block)
            self._handles[block] = safe_open(str(_block_file(self.path, block)), framework="pt")
        return self._handles[block]

    def weight(self, block: int, name: str, level: int) -> torch.Tensor:
        """The stored weight of ``name`` (block ``block``) pruned at ``grid[level]``, decoded, on the CPU."""
        if not 1 <= level < len(self.grid):
            raise IndexError(f"level index {level} is not stored (1 … {len(self.grid) - 1})")
        f = self._handle(block)
        return decode_level(f.get_tensor(f"{name}@{level}/values"), f.get_tensor(f"{name}@{level}/mask"),
                            self.shapes[name])

    def block_level(self, block: int, level: int) -> dict[str, torch.Tensor]:
        """Every linear of block ``block`` at ``grid[level]``, decoded (:meth:`weight`)."""
        return {name: self.weight(block, name, level) for name in self.names[block]}

    def close(self) -> None:
        """Drop the open file handles (reopened on the next read)."""
        self._handles = {}


def _block_done(file: Path, key_text: str, names: list[str], n_levels: int, bound: int) -> bool:
    """Whether ``file`` is a complete block file of this key (a killed build leaves none half-written)."""
    if not file.is_file() or file.stat().st_size > bound:
        return False
    try:
        with safe_open(str(file), framework="pt") as f:
            return (f.metadata() or {}).get("key") == key_text and set(f.keys()) == _tensor_names(names, n_levels)
    except Exception:  # unreadable or truncated by something else: rebuild it
        return False


@torch.no_grad()
def _pruned(pruner: Pruner, lin: nn.Linear, level: float, stats: LinearStats | None,
            m: int | None = None) -> torch.Tensor:
    """``lin``'s weight pruned at ``level`` by ``pruner`` (in N:M groups of ``m`` when given), on a clone in
    a temporary linear (the model is never written); on the CPU."""
    tmp = nn.Linear(lin.in_features, lin.out_features, bias=False, device="meta")
    tmp.weight = nn.Parameter(lin.weight.detach().clone(), requires_grad=False)
    pruner.prune_linear(tmp, level, stats, m)
    return tmp.weight.detach().cpu().contiguous()


def _dense_stats(model: nn.Module, linears: dict[str, nn.Linear], calib_ids: torch.Tensor, need_hessian: bool,
                 batch_size: int) -> dict[str, LinearStats]:
    """:func:`evaluators.data.calibration.collect_stats` restricted to ``linears`` (the blocks still to build)."""
    with StatsCollector(linears, need_hessian) as collector:
        run_through_blocks(model, calib_ids, batch_size)
    return collector.stats()


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (where the space it will take is counted)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_space(path: Path, todo: list[int], shapes: list[list[list[int]]], grid: list[float], element_size: int,
                 freed: int, method: str) -> None:
    """Print the projected size of the blocks to build and the free space at ``path``; UserError when the
    first exceeds the second (plus ``freed``, the bytes of the stale files that will be deleted first)."""
    need = sum(projected_bytes(shapes[l], grid, element_size) for l in todo)
    free = shutil.disk_usage(_existing(path)).free
    print(f"level database ({method}): building {len(todo)} of {len(shapes)} blocks × {len(grid) - 1} levels at "
          f"{path}: projected {_gb(need)}, {_gb(free + freed)} free", flush=True)
    if need > free + freed:
        raise UserError(f"the level database needs about {_gb(need)} at {path}, but only {_gb(free + freed)} are free "
                        f"there: free space or set $DSA_CACHE_DIR to another disk")


def _build(path: Path, expected: dict, bounds: list[int], model: nn.Module, linears: list[dict[str, nn.Linear]],
           todo: list[int], pruner: Pruner, calib_ids: torch.Tensor | None, progress: bool, batch_size: int,
           m: int | None = None) -> dict:
    """Write the block files ``todo`` under ``path``, then ``meta.json`` (with every block file's size and
    digest); its content."""
    start = time.perf_counter()
    grid, key_text = expected["grid"], json.dumps(expected["key"], sort_keys=True)
    path.mkdir(parents=True, exist_ok=True)
    stats: dict[str, LinearStats] = {}
    if todo and pruner.needs_calibration:
        stats = _dense_stats(model, {n: lin for l in todo for n, lin in linears[l].items()}, calib_ids,
                             pruner.needs_hessian, batch_size)
    bar = tqdm(total=len(linears), initial=len(linears) - len(todo), desc=f"level database ({pruner.name})",
               disable=not progress)
    for l in todo:
        tensors = {}
        for name, lin in linears[l].items():
            for i, level in enumerate(grid[1:], 1):
                for part, t in encode_level(_pruned(pruner, lin, level, stats.get(name), m)).items():
                    tensors[f"{name}@{i}/{part}"] = t
            stats.pop(name, None)  # free its hessian
        write_atomic(_block_file(path, l), lambda tmp, t=tensors: save_file(t, str(tmp), metadata={"key": key_text}))
        del tensors
        bar.update()
    bar.close()
    sizes, digests = zip(*(file_digest(_block_file(path, l), bound) for l, bound in enumerate(bounds)))
    meta = {**expected, "sizes": list(sizes), "digests": list(digests),
            "build_seconds": round(time.perf_counter() - start, 1)}
    write_atomic(path / META, (json.dumps(meta, indent=1) + "\n").encode())
    return meta


def open_levels(model: nn.Module, calib_ids: torch.Tensor | None, method: str, key: dict,
                grid: Sequence[float] | None = None, root: str | os.PathLike | None = None,
                progress: bool = False, batch_size: int = 1, m: int | None = None) -> LevelDatabase:
    """Open the level database of ``model`` pruned by ``method`` at every ``grid`` level (default
    :func:`level_grid`), building what is missing (module doc). ``key``: what identifies the run
    (model id, dtype, calibration source, sizes and seed, …; JSON-serialisable); method, grid, pruner
    settings, a calibration digest and a weight fingerprint are added. ``root``: the cache folder
    (default :func:`default_root`). ``m``: every level pruned in N:M groups of ``m`` (the grid's levels
    then multiples of ``1/m``; an N:M allocation lands on them, so nothing is mixed). ``progress``: the
    build's progress bar. The model's weights are left as they are. UserError, before anything is
    written, when the folder or a file in it is not what it should be (module doc), or the build does
    not fit on the disk."""
    pruner = get_pruner(method)
    grid = [float(g) for g in (level_grid() if grid is None else grid)]
    if len(grid) < 2 or grid[0] != 0.0 or any(b <= a for a, b in zip(grid, grid[1:])) or grid[-1] > 1.0:
        raise UserError(f"a level grid starts at 0, increases and ends at most at 1, got {grid}")
    linears = model_linears(model)
    full_key = {"run": key, "method": method, "grid": grid, "pruner": _pruner_params(pruner),
                **({"nm_group": m} if m is not None else {}),  # absent for unstructured
                "calib_tokens": None if calib_ids is None else _bytes_digest([calib_ids]),
                "weights": _bytes_digest([lin.weight[[0, -1]] for block in linears for lin in block.values()]),
                "format": FORMAT}
    full_key = json.loads(json.dumps(full_key))  # as meta.json will hold it (tuples → lists)
    key_text = json.dumps(full_key, sort_keys=True)
    root = Path(root).expanduser() if root is not None else default_root()
    path = root / hashlib.sha256(key_text.encode()).hexdigest()[:16]
    for folder in (root, path):
        if os.path.lexists(folder) and not folder.is_dir():
            raise UserError(f"the level database folder {folder} is not a folder")
    names, shapes, dtype = _structure(linears)
    expected = {"format": FORMAT, "key": full_key, "grid": grid, "dtype": dtype, "names": names, "shapes": shapes}
    element_size = next(lin.weight.element_size() for block in linears for lin in block.values())
    block_shapes = [[shapes[n] for n in block] for block in names]
    bounds = [block_bound(s, len(grid) - 1, element_size, 2 * len(key_text) + 4096) for s in block_shapes]
    files = [_block_file(path, l) for l in range(len(names))]
    for file in (path / META, *files):
        if os.path.lexists(file) and not file.is_file():  # a FIFO, a device, a folder, a dangling link
            raise _damaged(path, f"{file.name} is not a regular file")

    stale: list[Path] = []
    if (path / META).is_file():
        try:
            meta = read_meta(path / META)
        except OSError as exc:
            raise _damaged(path, f"{META} is not readable ({exc.strerror or exc})") from None
        if meta_problem(meta, expected, bounds) is None and \
                all(f.is_file() and f.stat().st_size == s for f, s in zip(files, meta["sizes"])):
            return LevelDatabase(path, {**meta, **expected}, reused=True)
        stale = [f for f in (path / META, *files) if f.is_file()]  # another model, damaged, files gone: afresh
    todo = [l for l, block in enumerate(names)
            if stale or not _block_done(files[l], key_text, block, len(grid), bounds[l])]
    if todo and pruner.needs_calibration and calib_ids is None:
        raise UserError(f"the {pruner.name} level database needs calibration data (--calib)")
    if todo:
        _check_space(path, todo, block_shapes, grid, element_size, sum(f.stat().st_size for f in stale), method)
    for f in stale:
        f.unlink()
    meta = _build(path, expected, bounds, model, linears, todo, pruner, calib_ids, progress, batch_size, m)
    return LevelDatabase(path, meta, reused=False)


def spread_rows(r: int, rows: int) -> torch.Tensor:
    """Boolean mask of ``r`` of ``rows`` rows, spread evenly: row ``j`` iff
    ``⌊(j+1)·r/rows⌋ > ⌊j·r/rows⌋``."""
    j = torch.arange(rows)
    return (j + 1) * r // rows > j * r // rows


def mixed_rows(s: float, lower: float, upper: float, rows: int) -> int:
    """Rows taken from level ``upper`` at sparsity ``s ∈ [lower, upper]``: ``round((s − lower)/(upper −
    lower)·rows)``, halves up."""
    return min(rows, max(0, math.floor((s - lower) / (upper - lower) * rows + 0.5)))


class LevelWeights:
    """A candidate's weights assembled from a :class:`LevelDatabase` (module doc), with the interface of
    :class:`evaluators.fitness.masking.Masks`; keeps a dense copy of every linear for :meth:`restore`, and
    decoded block levels up to ``cache_bytes``."""

    masking = "levels"

    def __init__(self, linears: list[dict[str, nn.Linear]], levels: LevelDatabase, cache_bytes: int = CACHE_BYTES):
        names, shapes, dtype = _structure(linears)
        if (names, shapes, dtype) != (levels.names, levels.shapes, levels.dtype):
            raise UserError(f"the level database at {levels.path} was built for another model (names, shapes "
                            f"or dtype {levels.dtype} differ)")
        self.linears, self.levels, self.cache_bytes = linears, levels, cache_bytes
        self.grid = levels.grid + ([1.0] if levels.grid[-1] < 1.0 else [])  # the last: all zeros, not stored
        self._dense = [{n: lin.weight.detach().clone() for n, lin in block.items()} for block in linears]
        self._touched: list[tuple[nn.Linear, torch.Tensor]] = []
        self._cache: OrderedDict[tuple[int, int], dict[str, torch.Tensor]] = OrderedDict()
        self._cached = 0  # bytes in the cache
        self.reads = 0  # block levels read from disk and decoded (cache misses)

    @property
    def state_bytes(self) -> int:
        """Bytes kept besides the model: the dense copies and the cached levels (the database is on disk)."""
        return sum(t.numel() * t.element_size() for block in self._dense for t in block.values()) + self._cached

    def _level(self, block: int, i: int, keep: frozenset = frozenset()) -> dict[str, torch.Tensor]:
        """Block ``block``'s linears at stored level ``i``: cached, or read, decoded and cached within the
        budget, dropping first the least recently used levels not in ``keep`` (the current candidate's)."""
        if (block, i) in self._cache:
            self._cache.move_to_end((block, i))
            return self._cache[(block, i)]
        level = self.levels.block_level(block, i)
        self.reads += 1
        size = sum(t.numel() * t.element_size() for t in level.values())
        for old in [k for k in self._cache if k not in keep]:
            if self._cached + size <= self.cache_bytes:
                break
            self._cached -= sum(t.numel() * t.element_size() for t in self._cache.pop(old).values())
        if self._cached + size <= self.cache_bytes:
            self._cache[(block, i)] = level
            self._cached += size
        return level

    def weight(self, block: int, name: str, i: int) -> torch.Tensor:
        """Linear ``name`` of ``block`` at ``self.grid[i]``: the dense copy, a stored level, or zeros."""
        if i == 0:
            return self._dense[block][name]
        if i >= len(self.levels.grid):
            return torch.zeros_like(self._dense[block][name])
        return self._level(block, i)[name]

    @torch.no_grad()
    def apply(self, values: Sequence[float]) -> None:
        """Put block ``l``'s linears at ``values[l]``: stored levels, rows mixed between two (module doc); one
        block at a time."""
        self.restore()
        grid, stored = self.grid, len(self.levels.grid)  # grid[stored]: zeros, not stored
        plan = []  # per block: the lower grid index i and, per linear, the rows r taken from level i + 1
        for s, block in zip(check_sparsities(values, len(self.linears)), self.linears):
            i = max(0, min(len(grid) - 2, sum(g <= s for g in grid) - 1))  # grid[i] ≤ s ≤ grid[i + 1]
            plan.append((i, {name: mixed_rows(s, grid[i], grid[i + 1], lin.out_features)
                             for name, lin in block.items()}))
        keep = frozenset((l, j) for l, (i, rows) in enumerate(plan) for j in self._needed(l, i, rows) if j < stored)
        for l, ((i, rows), block) in enumerate(zip(plan, self.linears)):
            at = {0: self._dense[l], **{j: self._block_level(l, j, keep) for j in self._needed(l, i, rows)}}
            for name, lin in block.items():
                r, n = rows[name], lin.out_features
                if r == 0 and i == 0:
                    continue  # dense
                self._touched.append((lin, self._dense[l][name]))
                if r == 0 or r == n:
                    lin.weight.copy_(at[i + (r == n)][name])
                    continue
                take = spread_rows(r, n).to(lin.weight.device)
                lin.weight.copy_(at[i][name])
                lin.weight[take] = at[i + 1][name].to(lin.weight.device)[take]

    def _needed(self, block: int, i: int, rows: dict[str, int]) -> set[int]:
        """The grid indices ``≥ 1`` a block at ``grid[i] ≤ s ≤ grid[i + 1]`` takes rows from (``rows``: per
        linear, the rows from ``i + 1``), each read once per candidate."""
        n = {name: lin.out_features for name, lin in self.linears[block].items()}
        return {j for name, r in rows.items() for j, used in ((i, r < n[name]), (i + 1, r > 0))
                if used and j > 0}

    def _block_level(self, block: int, i: int, keep: frozenset) -> dict[str, torch.Tensor]:
        """Every linear of ``block`` at ``self.grid[i]``, ``i ≥ 1``: a stored level (:meth:`_level`) or zeros."""
        if i >= len(self.levels.grid):
            return {name: torch.zeros_like(w) for name, w in self._dense[block].items()}
        return self._level(block, i, keep)

    @torch.no_grad()
    def restore(self) -> None:
        """Undo :meth:`apply`: copy the dense weights back (bit-exact)."""
        for lin, dense in self._touched:
            lin.weight.copy_(dense)
        self._touched = []

    def close(self) -> None:
        """Leave the model dense; drop the database's open file handles and the cached levels."""
        self.restore()
        self.levels.close()
        self._cache.clear()
        self._cached = 0
