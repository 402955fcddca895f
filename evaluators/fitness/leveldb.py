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
levels in memory while its file is written. SmolLM2-135M in fp32 at the default grid (20 stored levels):
8.5 GB, built in 14 min on a 2-core CPU shared with another job (one torch thread: SparseGPT's
column loop runs many small ops, which oversubscribed threads slow tenfold).

**On disk**, under ``ROOT/HASH/`` (``ROOT``: ``root``, else ``$DSA_CACHE_DIR/leveldb``, else
``~/.cache/dsa-gp/leveldb``; ``HASH``: 16 hex digits of the sha256 of the key): one safetensors file per
decoder block, ``block_000.safetensors`` …, tensors ``f"{name}@{i}"`` (``name`` the qualified linear
name, ``i`` the grid index, ``i ≥ 1``: level 0 is the dense weight and is not stored), each file written
to a temporary name and renamed, its metadata holding the key; then ``meta.json`` (key, grid, dtype,
names and shapes, file sizes, build seconds), written last. The key is the caller's ``key`` dict (model
id, dtype, calibration source/sizes/seed, …) plus what the database checks itself: method, grid, the
pruner's parameters (percdamp, blocksize, mask), a digest of the calibration token ids and a
fingerprint of the weights (first and last row of every linear). A later run with the same key reuses
the files; a ``meta.json`` whose key, names, shapes or dtype differ is rebuilt; a build killed before
``meta.json`` resumes, skipping the block files already written.

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
the largest (at the default step 0.05: 1.3·10⁻⁴ for SmolLM2's 192-row k/v projections, 4·10⁻⁵ for its
576-row linears). Measured zeros: with a per-row-exact pruner (``sparsegpt-row``, wanda,
magnitude) a stored row of level ``g`` has ``round(g·cols)`` zeros, so the linear has exactly
``(rows − r)·round(g_i·cols) + r·round(g_{i+1}·cols)``. SparseGPT's reference mask (one threshold per
128-column block over all rows) lets rows of one level differ in sparsity, so a mixed linear's measured
sparsity also moves by how much the ``r`` chosen rows differ from the average row. Measured, random
allocations in [0.5, 0.9]: per linear within 1.5·10⁻³ of ``s``, the model's parameter-weighted mean
within 3·10⁻⁵ of the allocation's (SmolLM2-135M, default grid); 6·10⁻³ and 10⁻³ on the 64-wide test
models.

Per candidate: the stored tensors of the (at most two) levels each linear needs are read lazily
(``safe_open``, handles cached per block file; the OS page cache keeps repeated reads cheap) and copied
into the model; :meth:`LevelWeights.restore` copies the dense weights back (a dense copy is kept, like
``Masks``' ``"inplace"``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from evaluators.data.calibration import LinearStats, StatsCollector, run_through_blocks
from evaluators.errors import UserError
from evaluators.models.loading import model_linears
from evaluators.pruning.pruners import Pruner, check_sparsities, get_pruner

FORMAT = 1  # bump when the layout changes: part of the key
META = "meta.json"


def level_grid(step: float = 0.05, top: float = 0.99) -> list[float]:
    """The sparsity levels ``0, step, 2·step, …`` below ``top``, then ``top`` (default: 0 … 0.95, 0.99)."""
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


def _structure(linears: list[dict[str, nn.Linear]]) -> tuple[list[list[str]], dict[str, list[int]], str]:
    """(names per block, shape per name, dtype) of the model's decoder linears."""
    names = [list(block) for block in linears]
    shapes = {n: list(lin.weight.shape) for block in linears for n, lin in block.items()}
    dtype = str(next(lin.weight.dtype for block in linears for lin in block.values())).removeprefix("torch.")
    return names, shapes, dtype


class LevelDatabase:
    """A built level database on disk: ``weight(block, name, i)`` is linear ``name`` of decoder block
    ``block`` pruned at ``grid[i]`` (``i ≥ 1``), read lazily. Made by :func:`open_levels`."""

    def __init__(self, path: Path, meta: dict, reused: bool):
        self.path, self.meta, self.reused = Path(path), meta, reused
        self.grid: list[float] = list(meta["grid"])
        self.method: str = meta["key"]["method"]
        self.nm_group: int | None = meta["key"].get("nm_group")  # N:M levels in groups of this many (else absent)
        self.names: list[list[str]] = meta["names"]
        self.shapes: dict[str, list[int]] = meta["shapes"]
        self.dtype: str = meta["dtype"]
        self._handles: dict[int, object] = {}

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
                f"{self.size_bytes / 1e9:.1f} GB at {self.path}, {how}")

    def weight(self, block: int, name: str, level: int) -> torch.Tensor:
        """The stored weight of ``name`` (block ``block``) pruned at ``grid[level]``, on the CPU."""
        if not 1 <= level < len(self.grid):
            raise IndexError(f"level index {level} is not stored (1 … {len(self.grid) - 1})")
        if block not in self._handles:
            self._handles[block] = safe_open(str(_block_file(self.path, block)), framework="pt")
        return self._handles[block].get_tensor(f"{name}@{level}")

    def close(self) -> None:
        """Drop the open file handles (reopened on the next read)."""
        self._handles = {}


def _block_done(file: Path, key_text: str, names: list[str], n_levels: int) -> bool:
    """Whether ``file`` is a complete block file of this key (a killed build leaves none half-written)."""
    if not file.is_file():
        return False
    try:
        with safe_open(str(file), framework="pt") as f:
            return (f.metadata() or {}).get("key") == key_text and \
                set(f.keys()) == {f"{n}@{i}" for n in names for i in range(1, n_levels)}
    except Exception:  # unreadable or truncated by something else: rebuild it
        return False


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def _build(path: Path, key: dict, model: nn.Module, linears: list[dict[str, nn.Linear]], pruner: Pruner,
           calib_ids: torch.Tensor | None, grid: list[float], progress: bool, batch_size: int,
           m: int | None = None) -> None:
    """Write the block files still missing under ``path``, then ``meta.json``."""
    start = time.perf_counter()
    path.mkdir(parents=True, exist_ok=True)
    key_text = json.dumps(key, sort_keys=True)
    todo = [l for l, block in enumerate(linears) if not _block_done(_block_file(path, l), key_text, list(block),
                                                                      len(grid))]
    stats: dict[str, LinearStats] = {}
    if todo and pruner.needs_calibration:
        if calib_ids is None:
            raise UserError(f"the {pruner.name} level database needs calibration data (--calib)")
        stats = _dense_stats(model, {n: lin for l in todo for n, lin in linears[l].items()}, calib_ids,
                             pruner.needs_hessian, batch_size)
    bar = tqdm(total=len(linears), initial=len(linears) - len(todo), desc=f"level database ({pruner.name})",
               disable=not progress)
    for l in todo:
        tensors = {}
        for name, lin in linears[l].items():
            for i, level in enumerate(grid[1:], 1):
                tensors[f"{name}@{i}"] = _pruned(pruner, lin, level, stats.get(name), m)
            stats.pop(name, None)  # free its hessian
        _write_atomic(_block_file(path, l), lambda tmp, t=tensors: save_file(t, str(tmp), metadata={"key": key_text}))
        del tensors
        bar.update()
    bar.close()
    names, shapes, dtype = _structure(linears)
    meta = {"key": key, "grid": grid, "dtype": dtype, "names": names, "shapes": shapes,
            "sizes": [_block_file(path, l).stat().st_size for l in range(len(linears))],
            "build_seconds": round(time.perf_counter() - start, 1), "format": FORMAT}
    _write_atomic(path / META, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n"))


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None


def open_levels(model: nn.Module, calib_ids: torch.Tensor | None, method: str, key: dict,
                grid: Sequence[float] | None = None, root: str | os.PathLike | None = None,
                progress: bool = False, batch_size: int = 1, m: int | None = None) -> LevelDatabase:
    """Open the level database of ``model`` pruned by ``method`` at every ``grid`` level (default
    :func:`level_grid`), building what is missing (module doc). ``key``: what identifies the run
    (model id, dtype, calibration source, sizes and seed, …; JSON-serialisable); method, grid, pruner
    settings, a calibration digest and a weight fingerprint are added. ``root``: the cache folder
    (default :func:`default_root`). ``m``: every level pruned in N:M groups of ``m`` (the grid's levels
    then multiples of ``1/m``; an N:M allocation lands on them, so nothing is mixed). The model's weights
    are left as they are."""
    pruner = get_pruner(method)
    grid = [float(g) for g in (level_grid() if grid is None else grid)]
    if len(grid) < 2 or grid[0] != 0.0 or any(b <= a for a, b in zip(grid, grid[1:])) or grid[-1] > 1.0:
        raise UserError(f"a level grid starts at 0, increases and ends at most at 1, got {grid}")
    linears = model_linears(model)
    full_key = {"run": key, "method": method, "grid": grid, "pruner": _pruner_params(pruner),
                **({"nm_group": m} if m is not None else {}),  # absent for unstructured: older databases stay valid
                "calib_tokens": None if calib_ids is None else _bytes_digest([calib_ids]),
                "weights": _bytes_digest([lin.weight[[0, -1]] for block in linears for lin in block.values()]),
                "format": FORMAT}
    full_key = json.loads(json.dumps(full_key))  # as meta.json will hold it (tuples → lists)
    digest = hashlib.sha256(json.dumps(full_key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(root).expanduser() if root is not None else default_root()
    path = path / digest
    names, shapes, dtype = _structure(linears)
    meta = _read_meta(path)
    if meta is not None and (meta.get("key"), meta.get("names"), meta.get("shapes"), meta.get("dtype")) == \
            (full_key, names, shapes, dtype) and all(_block_file(path, l).is_file() for l in range(len(names))):
        return LevelDatabase(path, meta, reused=True)
    if meta is not None:  # another key or model under this name, or files gone: build afresh
        (path / META).unlink(missing_ok=True)
        for l in range(len(names)):
            _block_file(path, l).unlink(missing_ok=True)
    _build(path, full_key, model, linears, pruner, calib_ids, grid, progress, batch_size, m)
    return LevelDatabase(path, _read_meta(path), reused=False)


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
    :class:`evaluators.fitness.masking.Masks`; keeps a dense copy of every linear for :meth:`restore`."""

    masking = "levels"

    def __init__(self, linears: list[dict[str, nn.Linear]], levels: LevelDatabase):
        names, shapes, dtype = _structure(linears)
        if (names, shapes, dtype) != (levels.names, levels.shapes, levels.dtype):
            raise UserError(f"the level database at {levels.path} was built for another model (names, shapes "
                            f"or dtype {levels.dtype} differ)")
        self.linears, self.levels = linears, levels
        self.grid = levels.grid + ([1.0] if levels.grid[-1] < 1.0 else [])  # the last: all zeros, not stored
        self._dense = [{n: lin.weight.detach().clone() for n, lin in block.items()} for block in linears]
        self._touched: list[tuple[nn.Linear, torch.Tensor]] = []

    @property
    def state_bytes(self) -> int:
        """Bytes kept besides the model: the dense copies (the database is on disk)."""
        return sum(t.numel() * t.element_size() for block in self._dense for t in block.values())

    def weight(self, block: int, name: str, i: int) -> torch.Tensor:
        """Linear ``name`` of ``block`` at ``self.grid[i]``: the dense copy, a stored level, or zeros."""
        if i == 0:
            return self._dense[block][name]
        if i >= len(self.levels.grid):
            return torch.zeros_like(self._dense[block][name])
        return self.levels.weight(block, name, i)

    @torch.no_grad()
    def apply(self, values: Sequence[float]) -> None:
        """Put block ``l``'s linears at ``values[l]``: stored levels, rows mixed between two (module doc)."""
        self.restore()
        grid = self.grid
        for l, (s, block) in enumerate(zip(check_sparsities(values, len(self.linears)), self.linears)):
            i = max(0, min(len(grid) - 2, sum(g <= s for g in grid) - 1))  # grid[i] ≤ s ≤ grid[i + 1]
            for name, lin in block.items():
                rows = lin.out_features
                r = mixed_rows(s, grid[i], grid[i + 1], rows)
                if r == 0 and i == 0:
                    continue  # dense
                self._touched.append((lin, self._dense[l][name]))
                if r == 0 or r == rows:
                    lin.weight.copy_(self.weight(l, name, i + (r == rows)))
                    continue
                take = spread_rows(r, rows).to(lin.weight.device)
                lin.weight.copy_(self.weight(l, name, i))
                lin.weight[take] = self.weight(l, name, i + 1).to(lin.weight.device)[take]

    @torch.no_grad()
    def restore(self) -> None:
        """Undo :meth:`apply`: copy the dense weights back (bit-exact)."""
        for lin, dense in self._touched:
            lin.weight.copy_(dense)
        self._touched = []

    def close(self) -> None:
        """Leave the model dense; drop the database's open file handles."""
        self.restore()
        self.levels.close()
