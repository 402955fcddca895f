"""The level database (evaluators.fitness.leveldb): exact SparseGPT weights per level, row mixing between levels,
bit-exact restore, reuse and resume on disk, and the evaluator's exact fitness."""
import json
import math

import pytest
import torch
from torch import nn

from conftest import TINY_VOCAB, make_tiny_llama
from evaluators.fitness import leveldb, levelfiles as leveldb_files
from evaluators.data.calibration import collect_stats
from evaluators.errors import UserError
from evaluators.fitness.evaluator import PruningEvaluator
from evaluators.fitness.leveldb import LevelWeights, level_grid, mixed_rows, open_levels, spread_rows
from evaluators.models.loading import model_linears
from evaluators.fitness.perplexity import perplexity
from evaluators.pruning.pruners import PRUNERS, ScorePruner, SparseGPTPruner

GRID = level_grid(0.1)  # 0, 0.1, …, 0.9, 0.99: 10 stored levels
KEY = {"model": "tiny-llama", "dtype": "fp32", "calib": "random", "nsamples": 4, "seqlen": 64, "seed": 1}


def _calib():
    return torch.randint(0, TINY_VOCAB, (4, 64), generator=torch.Generator().manual_seed(1))


def _val():
    return torch.randint(0, TINY_VOCAB, (4, 64), generator=torch.Generator().manual_seed(2))


def _weights(model):
    return {n: lin.weight.clone() for block in model_linears(model) for n, lin in block.items()}


@pytest.fixture(scope="module")
def db_root(tmp_path_factory):
    """One database of the tiny model (sparsegpt, GRID), built once for the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("leveldb")
    open_levels(make_tiny_llama(), _calib(), "sparsegpt", KEY, grid=GRID, root=root)
    yield root
    torch.set_num_threads(threads)


@pytest.fixture
def counted(monkeypatch):
    """Counts SparseGPT's prune_linear calls (the reference still runs)."""
    calls = []
    original = SparseGPTPruner.prune_linear

    def prune_linear(self, linear, sparsity, stats, m=None):
        calls.append(sparsity)
        return original(self, linear, sparsity, stats, m)

    monkeypatch.setattr(SparseGPTPruner, "prune_linear", prune_linear)
    return calls


def test_level_grid():
    assert level_grid(0.05) == pytest.approx([i / 20 for i in range(20)] + [0.99])
    assert level_grid() == pytest.approx([i / 10 for i in range(10)] + [0.99])  # the default: step 0.1
    assert level_grid(0.25) == [0.0, 0.25, 0.5, 0.75, 0.99]
    assert level_grid(0.01)[-2:] == [0.98, 0.99] and len(level_grid(0.01)) == 100
    assert level_grid(0.3, top=1.0) == [0.0, 0.3, 0.6, 0.9, 1.0]
    with pytest.raises(UserError):
        level_grid(0.0)


def test_pruners_say_whether_they_update_weights():
    assert PRUNERS["sparsegpt"].updates_weights and PRUNERS["sparsegpt-row"].updates_weights
    assert not PRUNERS["wanda"].updates_weights and not PRUNERS["magnitude"].updates_weights
    assert isinstance(PRUNERS["wanda"], ScorePruner)


def _reference_pairs(model, dense, stats, sparsities, m=None):
    """(name, the model's linear, the reference SparseGPT on a clone of its dense weight at the block's
    sparsity with the dense model's statistics) for every linear."""
    for s, block in zip(sparsities, model_linears(model)):
        for name, lin in block.items():
            ref = nn.Linear(lin.in_features, lin.out_features, bias=False)
            ref.weight.data = dense[name].clone()
            with torch.no_grad():
                PRUNERS["sparsegpt"].prune_linear(ref, s, stats[name], m)
            yield name, lin, ref


def test_grid_levels_equal_reference_sparsegpt_bit_for_bit(db_root):
    """(a) At a grid level, every linear is the reference pruner's output on a clone of the dense linear with
    stats from collect_stats on the dense model (EvoPress's one-shot protocol), bit for bit."""
    model = make_tiny_llama()
    dense = _weights(model)
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=GRID, root=db_root)
    assert db.reused and db.grid == GRID and db.n_blocks == 4
    assert "nm_group" not in db.meta["key"]  # unstructured keys as before N:M levels existed: old databases stay valid
    stats = collect_stats(model, _calib(), need_hessian=True)
    alloc = [0.1, 0.5, 0.9, 0.99]
    weights = LevelWeights(model_linears(model), db)
    weights.apply(alloc)
    for name, lin, ref in _reference_pairs(model, dense, stats, alloc):
        assert torch.equal(lin.weight, ref.weight), name
        assert not torch.equal(lin.weight, dense[name] * (lin.weight != 0))  # the OBS update moved weights
    weights.restore()
    assert all(torch.equal(w, dense[n]) for n, w in _weights(model).items())


def test_spread_rows_and_mixed_rows():
    for rows in (1, 7, 32, 64):
        for r in range(rows + 1):
            take = spread_rows(r, rows)
            assert int(take.sum()) == r
            # evenly spread: every window of k consecutive rows holds ⌊k·r/rows⌋ or ⌈k·r/rows⌉ of them
            k = max(1, rows // 4)
            counts = take.float().unfold(0, k, 1).sum(1)
            assert counts.min() >= math.floor(k * r / rows) and counts.max() <= math.ceil(k * r / rows)
    assert mixed_rows(0.35, 0.3, 0.4, 64) == 32 and mixed_rows(0.3, 0.3, 0.4, 64) == 0
    assert mixed_rows(0.4, 0.3, 0.4, 64) == 64


def test_rows_between_levels_come_from_the_two_levels(db_root):
    """(b) Between two levels each row is one of the two stored levels' rows, exactly; the nominal
    sparsity is within half a row's share of a level step, the measured one close, the mean closer."""
    model = make_tiny_llama()
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=GRID, root=db_root)
    weights = LevelWeights(model_linears(model), db)
    alloc = [0.05, 0.34, 0.66, 0.995]  # between 0 (dense) and 0.1, … and between 0.99 and 1 (zeros)
    weights.apply(alloc)
    grid = GRID + [1.0]
    zeros = total = 0
    for l, (s, block) in enumerate(zip(alloc, model_linears(model))):
        i = max(j for j, g in enumerate(grid) if g <= s)
        for name, lin in block.items():
            rows, cols = lin.weight.shape
            r = round((s - grid[i]) / (grid[i + 1] - grid[i]) * rows)
            take = spread_rows(r, rows)
            assert torch.equal(lin.weight[~take], weights.weight(l, name, i)[~take]), name
            assert torch.equal(lin.weight[take], weights.weight(l, name, i + 1)[take]), name
            nominal = grid[i] + r / rows * (grid[i + 1] - grid[i])
            step = grid[i + 1] - grid[i]
            assert abs(nominal - s) <= step / (2 * rows) + 1e-12
            measured = float((lin.weight == 0).float().mean())
            assert abs(measured - s) <= step / rows + 1 / 128, (name, measured, s)  # + SparseGPT's row spread
            zeros += int((lin.weight == 0).sum())
            total += lin.weight.numel()
    assert zeros / total == pytest.approx(sum(alloc) / len(alloc), abs=2e-3)  # blocks have equal sizes
    weights.restore()


def test_row_exact_pruner_gives_exact_zero_counts(tmp_path):
    """(b) With per-row-exact SparseGPT masks a mixed linear has exactly (rows − r)·round(g_i·cols) +
    r·round(g_{i+1}·cols) zeros."""
    model = make_tiny_llama()
    grid = level_grid(0.25)
    db = open_levels(model, _calib(), "sparsegpt-row", KEY, grid=grid, root=tmp_path)
    weights = LevelWeights(model_linears(model), db)
    alloc = [0.1, 0.3, 0.6, 0.9]
    weights.apply(alloc)
    for s, block in zip(alloc, model_linears(model)):
        i = max(j for j, g in enumerate(grid) if g <= s)
        for name, lin in block.items():
            rows, cols = lin.weight.shape
            r = mixed_rows(s, grid[i], grid[i + 1], rows)
            want = (rows - r) * round(grid[i] * cols) + r * round(grid[i + 1] * cols)
            assert int((lin.weight == 0).sum()) == want, name
    weights.close()


def test_restore_is_bit_exact_after_many_allocations(db_root):
    """(c)"""
    model = make_tiny_llama()
    dense = _weights(model)
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=GRID, root=db_root)
    weights = LevelWeights(model_linears(model), db)
    assert weights.masking == "levels"
    assert weights.state_bytes == sum(w.numel() * 4 for w in dense.values())
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        weights.apply(torch.rand(4, generator=gen, dtype=torch.float64).tolist())
    weights.apply([0.0, 0.0, 0.0, 0.0])  # dense: nothing touched
    assert all(torch.equal(w, dense[n]) for n, w in _weights(model).items())
    weights.apply([0.5, 1.0, 0.2, 0.99])
    weights.close()
    assert all(torch.equal(w, dense[n]) for n, w in _weights(model).items())


def test_reuse_rebuild_and_resume(tmp_path, counted):
    """(d) A second open reuses the files (no pruner call); a changed key builds elsewhere; a killed build
    (no meta.json, one block file missing) rebuilds only that block, bit for bit; a mismatching meta.json
    rebuilds."""
    model, grid = make_tiny_llama(), level_grid(0.25)
    per_block = len(model_linears(model)[0]) * (len(grid) - 1)
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=grid, root=tmp_path)
    assert len(counted) == 4 * per_block and not db.reused and "built in" in db.describe()
    assert db.size_bytes == sum(f.stat().st_size for f in db.path.glob("block_*.safetensors"))
    meta = json.loads((db.path / "meta.json").read_text())
    assert meta["key"]["run"] == KEY and meta["grid"] == grid and meta["dtype"] == "float32"

    counted.clear()
    again = open_levels(model, _calib(), "sparsegpt", KEY, grid=grid, root=tmp_path)
    assert again.reused and again.path == db.path and not counted and "reused" in again.describe()

    other = open_levels(model, _calib(), "sparsegpt", {**KEY, "seed": 2}, grid=grid, root=tmp_path)
    assert other.path != db.path and len(counted) == 4 * per_block
    counted.clear()
    open_levels(model, _calib(), "sparsegpt", KEY, grid=level_grid(0.5), root=tmp_path)  # the grid is keyed
    open_levels(model, _calib()[:2], "sparsegpt", KEY, grid=grid, root=tmp_path)  # so are the calibration tokens
    assert len(counted) == 4 * len(model_linears(model)[0]) * 2 + 4 * per_block

    before = {n: db.weight(2, n, 3) for n in db.names[2]}
    db.close()
    (db.path / "meta.json").unlink()
    (db.path / "block_002.safetensors").unlink()
    counted.clear()
    resumed = open_levels(model, _calib(), "sparsegpt", KEY, grid=grid, root=tmp_path)
    assert len(counted) == per_block and not resumed.reused and resumed.path == db.path
    assert all(torch.equal(resumed.weight(2, n, 3), w) for n, w in before.items())

    meta = json.loads((db.path / "meta.json").read_text())
    meta["shapes"][db.names[0][0]] = [1, 1]
    (db.path / "meta.json").write_text(json.dumps(meta))
    counted.clear()
    assert not open_levels(model, _calib(), "sparsegpt", KEY, grid=grid, root=tmp_path).reused
    assert len(counted) == 4 * per_block
    folders = list(tmp_path.iterdir())  # one folder per key, named by 16 hex digits of its hash
    assert len(folders) == 4 and all(p.is_dir() and len(p.name) == 16 for p in folders)


def test_evaluator_with_levels_is_the_stored_weights_perplexity(db_root):
    """(e) The evaluator's fitness with a level database is the perplexity of the model carrying the stored
    weights (set by hand here), and differs from the mask fitness for SparseGPT."""
    model, val = make_tiny_llama(), _val()
    dense = _weights(model)
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=GRID, root=db_root)
    exact = PruningEvaluator(model, None, method="sparsegpt", calib_ids=_calib(), val_windows=val, levels=db)
    masks = PruningEvaluator(model, None, method="sparsegpt", calib_ids=_calib(), val_windows=val)
    assert exact.masking == "levels" and len(exact.blocks) == 4
    for alloc in ([0.5, 0.5, 0.5, 0.5], [0.3, 0.6, 0.8, 0.9], [0.45, 0.62, 0.77, 0.2]):
        fitness = exact(alloc)
        with torch.no_grad():
            for l, (s, block) in enumerate(zip(alloc, model_linears(model))):
                i = max(j for j, g in enumerate(GRID) if g <= s)
                for name, lin in block.items():
                    r = mixed_rows(s, GRID[i], GRID[i + 1], lin.out_features)
                    take = spread_rows(r, lin.out_features)
                    low = dense[name] if i == 0 else db.weight(l, name, i)
                    lin.weight.copy_(torch.where(take[:, None], db.weight(l, name, i + 1), low))
        assert fitness == perplexity(model, val)
        with torch.no_grad():
            for block in model_linears(model):
                for name, lin in block.items():
                    lin.weight.copy_(dense[name])
        assert fitness != masks(alloc)
    assert all(torch.equal(w, dense[n]) for n, w in _weights(model).items())
    with pytest.raises(UserError, match="replaces masking"):
        PruningEvaluator(model, None, method="sparsegpt", calib_ids=_calib(), val_windows=val, levels=db,
                         masking="block")
    with pytest.raises(UserError, match="another model"):
        LevelWeights(model_linears(make_tiny_llama(layers=2)), db)


def test_files_land_only_under_root(tmp_path, monkeypatch):
    """(f) With ``root`` given, nothing is written to $DSA_CACHE_DIR or the home cache; without it, the
    default root is $DSA_CACHE_DIR/leveldb."""
    monkeypatch.setenv("DSA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    model = make_tiny_llama(layers=2)
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=[0.0, 0.5], root=tmp_path / "db")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(p.is_relative_to(tmp_path / "db" / db.path.name) for p in files)
    assert sorted(p.name for p in files) == ["block_000.safetensors", "block_001.safetensors", "meta.json"]
    assert leveldb.default_root() == tmp_path / "cache" / "leveldb"
    monkeypatch.delenv("DSA_CACHE_DIR")
    assert leveldb.default_root() == tmp_path / "home" / ".cache" / "dsa-gp" / "leveldb"


@pytest.mark.parametrize("nm", ["4", "2:4"])
def test_nm_levels_are_the_reference_nm_sparsegpt_and_the_fitness_exact(db_root, nm):
    """With --nm the database stores SparseGPT pruned in N:M groups at the pattern's levels (n/M, or 0 and
    N/M); the evaluator puts every candidate on the pattern, so it assembles stored levels only, each the
    reference N:M SparseGPT output on the dense model's statistics, bit for bit."""
    from evaluators.pruning.nm import parse_nm
    n, m = parse_nm(nm)
    grid = [k / m for k in range(m)] if n is None else [0.0, n / m]
    model = make_tiny_llama()
    dense = _weights(model)
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=grid, root=db_root, m=m)
    assert db.nm_group == m and db.grid == grid
    ev = PruningEvaluator(model, None, method="sparsegpt", calib_ids=_calib(), val_windows=_calib()[:2],
                          levels=db, nm=nm)
    alloc = [0.3, 0.45, 0.55, 0.7] if n is None else [0.1, 0.2, 0.3, 0.4]
    pattern = ev.on_pattern(alloc)
    stats = collect_stats(model, _calib(), need_hessian=True)
    ev.apply(alloc)
    for name, lin, ref in _reference_pairs(model, dense, stats, pattern, m):
        assert torch.equal(lin.weight, ref.weight), name
    ev.restore()
    with pytest.raises(UserError, match="unstructured"):
        PruningEvaluator(model, None, method="sparsegpt", calib_ids=_calib(), val_windows=_calib()[:2], levels=db)


# ---- format 2: non-zero values + bitmask; reuse checks what it reads; space before building; the cache ----

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_encoded_level_decodes_bit_for_bit(dtype):
    """Zeros are left out by their bits, so a kept -0.0 comes back as -0.0; the mask takes one bit per weight."""
    w = torch.randn(7, 13, generator=torch.Generator().manual_seed(0)).to(dtype)
    w[w.abs() < 0.7] = 0.0
    w[0, :3] = -0.0
    stored = leveldb_files.encode_level(w)
    ints = {2: torch.int16, 4: torch.int32}[w.element_size()]
    assert stored["values"].dtype == dtype and stored["values"].numel() == int((w.view(ints) != 0).sum())
    assert stored["mask"].dtype == torch.uint8 and stored["mask"].numel() == math.ceil(7 * 13 / 8)
    back = leveldb_files.decode_level(stored["values"], stored["mask"], [7, 13])
    assert back.dtype == dtype and torch.equal(back.view(ints), w.view(ints))


def test_database_holds_values_and_masks_at_its_projected_size(db_root):
    """Each level is stored as values + mask, and the files are the size projected from shapes, grid and
    dtype (within the headers' estimate), about half of format 1's dense copies at GRID."""
    model = make_tiny_llama()
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=GRID, root=db_root)
    shapes = [lin.weight.shape for block in model_linears(model) for lin in block.values()]
    projected = leveldb_files.projected_bytes(shapes, GRID, 4)
    assert db.size_bytes == pytest.approx(projected, rel=0.02)
    dense = sum(r * c for r, c in shapes) * 4 * (len(GRID) - 1)
    assert db.size_bytes < dense * (sum(1 - g for g in GRID[1:]) / (len(GRID) - 1) + 1 / 32 + 0.02)
    meta = json.loads((db.path / "meta.json").read_text())
    assert meta["format"] == leveldb.FORMAT == 2 and len(meta["digests"]) == 4


def _small(tmp_path):
    """A database of the tiny model at levels 0, 0.5 under ``tmp_path``; (model, db, pruner calls per build)."""
    model = make_tiny_llama()
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=[0.0, 0.5], root=tmp_path)
    return model, db, 4 * len(model_linears(model)[0])


def _reopen(model, tmp_path):
    return open_levels(model, _calib(), "sparsegpt", KEY, grid=[0.0, 0.5], root=tmp_path)


def test_old_format_is_rebuilt(tmp_path, counted):
    """A meta.json of format 1 (or none) under this key's folder, or block files of format 1's layout
    (dense tensors ``name@i``) left by a killed build, are rebuilt, never read."""
    model, db, per_build = _small(tmp_path)
    meta = json.loads((db.path / "meta.json").read_text())
    for old in ({**meta, "format": 1}, {k: v for k, v in meta.items() if k != "format"}):
        (db.path / "meta.json").write_text(json.dumps(old))
        counted.clear()
        again = _reopen(model, tmp_path)
        assert not again.reused and len(counted) == per_build and again.meta["format"] == 2
    (db.path / "meta.json").unlink()
    dense = {f"{n}@1": lin.weight.clone() for n, lin in model_linears(model)[1].items()}
    from safetensors.torch import save_file
    key_text = json.dumps(db.meta["key"], sort_keys=True)
    save_file(dense, str(db.path / "block_001.safetensors"), metadata={"key": key_text})
    counted.clear()
    again = _reopen(model, tmp_path)
    assert not again.reused and len(counted) == per_build // 4  # only that block
    assert set(again.block_level(1, 1)) == set(again.names[1])


def _one_line_error(call) -> str:
    with pytest.raises(UserError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("damage", ["meta fifo", "meta /dev/zero", "meta folder", "meta dangling link",
                                    "block fifo", "block folder"])
def test_files_that_are_not_regular_are_refused_in_one_line(tmp_path, damage):
    """Nothing that is not a regular file is opened (a FIFO would hang, /dev/zero never end) or deleted."""
    import os
    model, db, _ = _small(tmp_path)
    target = db.path / ("meta.json" if damage.startswith("meta") else "block_001.safetensors")
    target.unlink()
    if damage.endswith("fifo"):
        os.mkfifo(target)
    elif damage.endswith("/dev/zero"):
        target.symlink_to("/dev/zero")
    elif damage.endswith("folder"):
        target.mkdir()
    else:
        target.symlink_to(tmp_path / "nowhere")
    before = sorted(p.name for p in db.path.iterdir())
    assert "damaged" in _one_line_error(lambda: _reopen(model, tmp_path))
    assert sorted(p.name for p in db.path.iterdir()) == before


def test_cache_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "cache").write_text("")
    assert "not a folder" in _one_line_error(
        lambda: open_levels(make_tiny_llama(layers=2), _calib(), "sparsegpt", KEY, grid=[0.0, 0.5],
                            root=tmp_path / "cache"))


@pytest.mark.parametrize("edit", ["list", "nested", "text grid", "shifted grid", "text sizes", "float shapes",
                                  "short digests", "too large"])
def test_meta_that_is_not_this_database_is_rebuilt(tmp_path, counted, edit):
    """meta.json is typed and ranged: anything but this model's and settings' exact fields is rebuilt."""
    model, db, per_build = _small(tmp_path)
    meta = json.loads((db.path / "meta.json").read_text())
    text = {"list": "[1, 2]", "nested": "[" * 100_000 + "]" * 100_000,
            "text grid": json.dumps({**meta, "grid": "0 0.5"}),
            "shifted grid": json.dumps({**meta, "grid": [0.0, 0.6]}),
            "text sizes": json.dumps({**meta, "sizes": [str(s) for s in meta["sizes"]]}),
            "float shapes": json.dumps({**meta, "shapes": {n: [float(v) for v in shape]
                                                           for n, shape in meta["shapes"].items()}}),
            "short digests": json.dumps({**meta, "digests": [d[:16] for d in meta["digests"]]}),
            "too large": json.dumps({**meta, "sizes": [2**40] * 4})}[edit]
    (db.path / "meta.json").write_text(text)
    counted.clear()
    again = _reopen(model, tmp_path)
    assert not again.reused and len(counted) == per_build


def test_damaged_block_files_are_never_reused(tmp_path, counted):
    """A truncated block file is rebuilt; one of the right size whose bytes changed (tensors zeroed, or two
    files swapped) is refused in one line when first read, before any of it reaches the model."""
    model, db, per_build = _small(tmp_path)
    dense = _weights(model)
    good = {l: db.block_level(l, 1) for l in range(4)}
    file = db.path / "block_002.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[:len(data) // 2])
    counted.clear()
    again = _reopen(model, tmp_path)
    assert not again.reused and len(counted) == per_build
    assert all(torch.equal(again.block_level(2, 1)[n], w) for n, w in good[2].items())

    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: length, JSON header, then the tensors
    file.write_bytes(data[:header] + bytes(len(data) - header))
    zeroed = _reopen(model, tmp_path)
    assert zeroed.reused  # same size: only the digest tells
    assert "does not match" in _one_line_error(lambda: zeroed.weight(2, zeroed.names[2][0], 1))
    ev = PruningEvaluator(model, None, method="sparsegpt", calib_ids=_calib(), val_windows=_val(), levels=zeroed)
    _one_line_error(lambda: ev([0.5] * 4))
    assert all(torch.equal(w, dense[n]) for n, w in _weights(model).items())  # restored

    file.write_bytes(data)
    other = db.path / "block_003.safetensors"
    data3 = other.read_bytes()
    file.write_bytes(data3)
    other.write_bytes(data)
    swapped = _reopen(model, tmp_path)
    if swapped.reused:  # the two files happen to have one size
        _one_line_error(lambda: swapped.block_level(2, 1))
    else:
        assert all(torch.equal(swapped.block_level(2, 1)[n], w) for n, w in good[2].items())


def test_space_is_checked_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """The projected size and the free space are printed before building; a build that does not fit is
    refused in one line with nothing written."""
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(leveldb.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    root = tmp_path / "db"
    assert "free" in _one_line_error(lambda: _small(root))
    assert not root.exists()
    assert "projected" in capsys.readouterr().out
    monkeypatch.undo()
    _, db, _ = _small(root)
    assert "projected" in capsys.readouterr().out and db.size_bytes > 1000


def test_cache_reads_only_the_levels_a_candidate_changes(db_root):
    """A candidate that keeps a block's levels reads and decodes nothing for it; without a cache every
    candidate reads every level it needs; the weights are the same bit for bit either way."""
    model = make_tiny_llama()
    db = open_levels(model, _calib(), "sparsegpt", KEY, grid=GRID, root=db_root)
    cached = LevelWeights(model_linears(model), db)
    plain = LevelWeights(model_linears(make_tiny_llama()), db, cache_bytes=0)
    a, b = [0.35, 0.55, 0.65, 0.85], [0.35, 0.55, 0.92, 0.85]  # each between two levels; b moves block 2
    cached.apply(a)
    first = cached.reads
    assert first == 8 and cached.state_bytes > sum(w.numel() * 4 for w in _weights(model).values())
    cached.apply(a)
    assert cached.reads == first
    cached.apply(b)
    assert cached.reads == first + 2
    plain.apply(b)
    plain.apply(b)
    assert plain.reads == 16
    for block_c, block_p in zip(cached.linears, plain.linears):
        assert all(torch.equal(block_c[n].weight, block_p[n].weight) for n in block_c)
    cached.close()
    plain.close()


def test_leveldb_cost_benchmark_runs_on_the_tiny_model(tiny_dir, tmp_path, monkeypatch):
    """``python -m bench.leveldb_cost`` on the tiny model: sizes, projection, build and fitness times written."""
    import bench.common
    from bench import leveldb_cost
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path / "results")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        payload = leveldb_cost.main(["--model", str(tiny_dir / "model"), "--data", str(tiny_dir / "text.txt"),
                                     "--calib", str(tiny_dir / "text.txt"), "--seqlen", "32", "--nsamples", "2",
                                     "--calib-seqlen", "32", "--grid-step", "0.25", "--repeats", "2",
                                     "--leveldb-root", str(tmp_path / "db"), "--name", "tiny"])
    finally:
        torch.set_num_threads(threads)
    db, cost = payload["database"], payload["cost"]
    assert db["size (GB)"] == pytest.approx(db["projected size (GB)"], rel=0.05)
    assert db["size (GB)"] < db["format 1 size (GB)"] and not db["reused"]
    assert db["LLaMA-2-7B bf16 projected (GB)"] < db["LLaMA-2-7B bf16 format 1 (GB)"]
    assert cost["levels decoded per warm candidate (mean)"] < cost["levels decoded cold"]
    assert all(cost[k] > 0 for k in ("cold ÷ forward", "warm ÷ forward", "digest GB/s"))
    saved = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert saved["cost"] == pytest.approx(cost) and "leveldb_root" not in saved["args"]
    assert (tmp_path / "results" / "tiny.md").read_text().count("|") > 10
