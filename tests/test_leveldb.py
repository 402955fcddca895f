"""The level database (evaluators.fitness.leveldb): exact SparseGPT weights per level, row mixing between levels,
bit-exact restore, reuse and resume on disk, and the evaluator's exact fitness."""
import json
import math

import pytest
import torch
from torch import nn

from conftest import TINY_VOCAB, make_tiny_llama
from evaluators.fitness import leveldb
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
    assert level_grid() == pytest.approx([i / 20 for i in range(20)] + [0.99])
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
