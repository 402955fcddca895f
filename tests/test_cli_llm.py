"""``dsa search / prune / eval`` end to end on a tiny random LLaMA saved as a HF folder (CPU, seconds)."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--seqlen", "32", "--nsamples", "2", "--calib-seqlen", "32", "--batch-size", "2"]


def dsa(*args, cwd=None):
    env_args = [sys.executable, "-m", "dsa.cli", *map(str, args)]
    return subprocess.run(env_args, capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


def data_args(root):
    return ["--model", root / "model", "--data", root / "text.txt", "--calib", root / "text.txt", *SMALL]


def test_search_prune_eval(tiny_dir, tmp_path):
    run = tmp_path / "run"
    out = dsa("search", *data_args(tiny_dir), "--population", 4, "--generations", 1, "--val-windows", 2,
              "--data-seed", 5, "--max-scores-per-layer", 5000, "--run-dir", run, "--no-progress")
    assert out.returncode == 0, out.stderr
    config = json.loads((run / "config.json").read_text())
    assert set(config["baselines"]) == {"uniform", "owl", "atp-tuned", "dsa-code", "dlp"}
    rows = json.loads((run / "hall_of_fame.json").read_text())
    # the choice: the hall of fame's best against the strongest baseline on the selection split (the next
    # 32 validation windows, disjoint from the search's), shipped only where the paired interval is below 0
    choice = config["selection"]
    strongest = min(config["baselines"], key=config["baselines"].get)
    assert choice["rule"] == "paired-95" and choice["windows"] == 32 and choice["strongest"] == strongest
    candidate = rows[0]
    assert candidate["rank"] == choice["candidate_rank"] == 1 and "selection" in candidate
    shipped_found = choice["verdict"] == "beats"
    assert choice["shipped"] == ("found" if shipped_found else strongest.removesuffix("-tuned")
                                 + choice["shipped"][len(strongest.removesuffix("-tuned")):])
    assert ("flag" in candidate) != shipped_found
    assert (run / "allocation.png").stat().st_size > 0
    want = candidate["output"] if shipped_found else config["baseline_settings"][strongest]["allocation"]
    assert len(want) == 4 and abs(sum(want) / 4 - 0.7) < 1e-6

    pruned = tmp_path / "pruned"
    out = dsa("prune", *data_args(tiny_dir), "--allocation", run, "--sparsity", 0.7, "--save", pruned, "--no-progress")
    assert out.returncode == 0, out.stderr
    record = json.loads((pruned / "allocation.json").read_text())
    assert record["formula"] == (candidate["tree"] if shipped_found else None)
    # the run's seed (5) and score subset (5000 per layer) are taken from the run folder: the formula (or the
    # baseline it ships) gives the very allocation the search scored, not only the same text
    assert record["requested"] == pytest.approx(want, abs=1e-12)
    assert record["calibration"]["seed"] == 5
    model = AutoModelForCausalLM.from_pretrained(pruned)
    for layer, want in zip(model.model.layers, record["requested"]):
        weights = [m.weight for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        rows = sum(w.shape[0] for w in weights)
        assert abs(zeros - want) <= rows / sum(w.numel() for w in weights)  # ± one weight per row

    report = tmp_path / "eval.json"
    out = dsa("eval", "--model", pruned, "--data", tiny_dir / "text.txt", "--seqlen", 32, "--json", report,
              "--no-progress")
    assert out.returncode == 0, out.stderr
    result = json.loads(report.read_text())
    assert result["split"] == "test" and result["windows"] > 0 and result["perplexity"] > 1
    lo, hi = result["perplexity_95ci"]  # bootstrap over the test windows
    assert lo <= result["perplexity"] <= hi


@pytest.mark.parametrize("extra, needle", [
    (["--allocation", "dsa(r_nonsense(S), 0.1)"], "neither a known name"),
    (["--allocation", "owl", "--method", "bogus"], "invalid choice"),
    (["--allocation", "owl", "--sparsity", "1.5"], "sparsity must be in (0, 0.99]"),
])
def test_prune_bad_input(tiny_dir, tmp_path, extra, needle):
    out = dsa("prune", *data_args(tiny_dir), *extra, "--save", tmp_path / "out", "--no-progress")
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_model_and_data(tiny_dir, tmp_path):
    out = dsa("eval", "--model", tmp_path / "nope", "--seqlen", 32)
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr
    out = dsa("eval", "--model", tiny_dir / "model", "--data", tmp_path / "missing.txt", "--seqlen", 32)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr


def test_search_masking_forward_gives_the_same_run(tiny_dir, tmp_path):
    """--masking forward (no dense copy) scores every candidate exactly as the default in-place masks."""
    fame = {}
    for masking in ("inplace", "forward"):
        run = tmp_path / masking
        out = dsa("search", *data_args(tiny_dir), "--population", 4, "--generations", 1, "--val-windows", 2,
                  "--masking", masking, "--run-dir", run, "--no-progress")
        assert out.returncode == 0, out.stderr
        fame[masking] = [(h["tree"], h["fitness"]) for h in json.loads((run / "hall_of_fame.json").read_text())]
    assert fame["forward"] == fame["inplace"]


def test_multi_task_search_one_formula_for_every_task(tiny_dir, tmp_path):
    """--method and --sparsity lists: one formula scored on all four (pruner, sparsity) tasks at once, its
    fitness the mean log-ratio to uniform over them (0 = uniform), each task's allocation in the row."""
    run = tmp_path / "multi"
    out = dsa("search", *data_args(tiny_dir), "--method", "wanda,magnitude", "--sparsity", "0.5,0.7",
              "--population", 4, "--generations", 1, "--val-windows", 2, "--run-dir", run, "--no-progress")
    assert out.returncode == 0, out.stderr
    config = json.loads((run / "config.json").read_text())
    assert [(t["prune"]["method"], t["prune"]["sparsity"]) for t in config["tasks"]] == [
        ("wanda", 0.5), ("wanda", 0.7), ("magnitude", 0.5), ("magnitude", 0.7)]
    rows = json.loads((run / "hall_of_fame.json").read_text())
    best = next(r for r in rows if r["rank"] == config["selection"]["best_rank"])
    assert len(best["output"]) == 4
    for name, allocation in best["output"].items():
        target = float(name.split("|")[-1])
        assert len(allocation) == 4 and abs(sum(allocation) / 4 - target) < 1e-6
    assert all(math.isfinite(r["fitness"]) for r in rows[:1])
    # the formula applies to each task like any formula: prune with one of them reproduces its allocation
    pruned = tmp_path / "pruned"
    out = dsa("prune", *data_args(tiny_dir), "--allocation", best["tree"], "--method", "magnitude",
              "--sparsity", 0.5, "--save", pruned, "--no-progress")
    assert out.returncode == 0, out.stderr
    record = json.loads((pruned / "allocation.json").read_text())
    key = next(k for k in best["output"] if k.endswith("|magnitude|0.5"))
    assert record["requested"] == pytest.approx(best["output"][key], abs=1e-12)


def test_prune_with_a_tuned_baseline_scores_the_model_once(tiny_dir, monkeypatch):
    """The tuner's scores are the allocation's: one calibration pass, one scoring (issue: twice before)."""
    import dsa.run.llm as llm
    import evaluators.fitness.evaluator as fitness
    from dsa.run.settings import DataSpec, ModelSpec, PruneSpec

    calls = []
    for module in (llm, fitness):
        original = module.collect_stats
        monkeypatch.setattr(module, "collect_stats", lambda *a, _f=original, **k: calls.append(1) or _f(*a, **k))
    data = DataSpec(str(tiny_dir / "text.txt"), str(tiny_dir / "text.txt"), None, 32, 2, 32, 2, 0)
    _, _, record = llm.prune_model(ModelSpec(str(tiny_dir / "model"), "fp32", "cpu"), data,
                                   PruneSpec("wanda", 0.6, None), "atp-tuned", val_windows=2, progress=False)
    assert len(calls) == 1
    assert sum(record["requested"]) / len(record["requested"]) == pytest.approx(0.6)
    assert record["requested"] != [0.6] * len(record["requested"])  # a tuned ramp, not uniform


@pytest.mark.parametrize("nm, sparsity, allocation, want", [
    ("2:4", 0.25, "uniform", [0.0, 0.0, 0.5, 0.5]),  # dense or 2:4 on half the weights; ties: later blocks
    ("4", 0.5, "atp:beta=0.1", [0.25, 0.5, 0.5, 0.75]),  # ATP's ramp 0.35, 0.45, 0.55, 0.65 on quarters
])
def test_prune_in_nm_patterns(tiny_dir, tmp_path, nm, sparsity, allocation, want):
    pruned = tmp_path / "pruned"
    out = dsa("prune", *data_args(tiny_dir), "--method", "wanda", "--allocation", allocation, "--sparsity", sparsity,
              "--nm", nm, "--save", pruned, "--no-progress")
    assert out.returncode == 0, out.stderr
    record = json.loads((pruned / "allocation.json").read_text())
    assert record["nm"] == nm and record["requested"] == want
    m = int(nm.split(":")[-1])
    model = AutoModelForCausalLM.from_pretrained(pruned)
    for layer, s in zip(model.model.layers, want):
        for lin in (mod for mod in layer.modules() if isinstance(mod, torch.nn.Linear)):
            zeros = (lin.weight == 0).reshape(lin.weight.shape[0], -1, m).sum(-1)
            assert (zeros == round(s * m)).all()  # the pattern holds in every group of every row
    export = dsa("export", pruned, "--to", "llmcompressor")
    assert export.returncode == 2 and "N:M" in export.stderr


def test_speed24_finds_the_2_4_linears_and_says_what_it_needs(tiny_dir, tmp_path):
    """bench/speed_24.py (the GPU timing of a dense-or-2:4 model): it moves exactly the pruned blocks'
    linears to the 2:4 kernels, refuses a weight off the pattern, a folder that is not dense-or-2:4 and,
    without a CUDA GPU, runs nothing: one line, exit 2, nothing written."""
    from bench.speed_24 import check_folder, sparse_linears
    from dsa.errors import UserError
    pruned, plain = tmp_path / "pruned", tmp_path / "plain"
    out = dsa("prune", *data_args(tiny_dir), "--allocation", "uniform", "--nm", "2:4", "--sparsity", 0.25,
              "--save", pruned, "--no-progress")
    assert out.returncode == 0, out.stderr
    record = check_folder(pruned)
    plain.mkdir()  # unstructured at the same sparsities: its record has no nm
    (plain / "allocation.json").write_text(json.dumps({k: v for k, v in record.items() if k != "nm"}))
    model = AutoModelForCausalLM.from_pretrained(pruned)
    found = sparse_linears(model, record["requested"])  # uniform at 25 %: blocks 2 and 3 in 2:4
    assert sorted({name.split(".")[2] for name in found}) == ["2", "3"] and len(found) == 14
    with torch.no_grad():
        next(iter(found.values())).weight[0, :4] = 1.0
    with pytest.raises(UserError, match="not 2:4"):
        sparse_linears(model, record["requested"])
    script = [sys.executable, "-m", "bench.speed_24"]  # run as the docs say, from the repository root
    results = sorted((ROOT / "bench" / "results").iterdir())
    bad = subprocess.run([*script, str(plain)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "not a dense-or-2:4 model" in bad.stderr and len(bad.stderr.splitlines()) == 1
    if not torch.cuda.is_available():
        out = subprocess.run([*script, str(pruned)], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 2 and "need a CUDA GPU" in out.stderr and len(out.stderr.splitlines()) == 1
    assert sorted((ROOT / "bench" / "results").iterdir()) == results


def test_prune_nm_bad_input(tiny_dir, tmp_path):
    for extra, needle in ((["--nm", "3"], "M must divide 128"), (["--nm", "4:4"], "0 < N < M"),
                          (["--nm", "2:4", "--sparsity", "0.7"], "at most mean sparsity 0.5")):
        out = dsa("prune", *data_args(tiny_dir), "--allocation", "uniform", *extra, "--save", tmp_path / "x",
                  "--no-progress")
        assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_search_in_nm_patterns_and_prune_with_its_run(tiny_dir, tmp_path):
    """dsa search --nm scores every candidate on its N:M pattern; the run folder passes the pattern on."""
    run, pruned = tmp_path / "run", tmp_path / "pruned"
    out = dsa("search", *data_args(tiny_dir), "--population", 4, "--generations", 1, "--val-windows", 2,
              "--sparsity", 0.5, "--nm", 4, "--run-dir", run, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "config.json").read_text())["evaluator"]["prune"]["nm"] == "4"
    out = dsa("prune", *data_args(tiny_dir), "--allocation", run, "--save", pruned, "--no-progress")
    assert out.returncode == 0, out.stderr
    record = json.loads((pruned / "allocation.json").read_text())
    assert record["nm"] == "4" and all(round(s * 4) == s * 4 for s in record["requested"])
    assert sum(record["requested"]) / 4 == pytest.approx(0.5)
    # the direct search on the pattern: levels move N by one per block, from the GP run's allocation
    out = dsa("search", *data_args(tiny_dir), "--space", "direct", "--nm", 4, "--sparsity", 0.5, "--generations", 2,
              "--offspring", 4, "--val-windows", 2, "--init", run, "--run-dir", tmp_path / "direct", "--no-progress")
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "direct" / "hall_of_fame.json").read_text())
    assert all(all(round(v * 4) == v * 4 for v in r["output"]) and sum(r["output"]) / 4 == pytest.approx(0.5)
               for r in rows)
    assert any(r["output"] == record["requested"] for r in rows)  # the start: the GP run's allocation on the pattern


def test_sparsegpt_search_in_nm_patterns_reads_nm_levels(tiny_dir, tmp_path):
    run = tmp_path / "run"
    out = dsa("search", *data_args(tiny_dir), "--method", "sparsegpt", "--nm", "2:4", "--sparsity", 0.25,
              "--population", 4, "--generations", 1, "--val-windows", 2, "--run-dir", run, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "level database: 4 blocks × 1 levels" in out.stdout  # the pattern's one stored level: 2:4


def test_prune_with_owls_nm_rule(tiny_dir, tmp_path):
    out = dsa("prune", *data_args(tiny_dir), "--allocation", "owl-nm", "--nm", 8, "--sparsity", 0.5,
              "--save", tmp_path / "p", "--no-progress")
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "p" / "allocation.json").read_text())
    assert all(round(v * 8) == v * 8 for v in record["requested"]) and sum(record["requested"]) / 4 == 0.5


def test_records_name_the_model_by_label_and_resume_finds_it_where_it_is(tiny_dir, tmp_path, capsys):
    """A run folder names a local model by its label (folder name and content digest), never its path: the
    run resumes with the model moved (--model where it is now), a different model is refused in one line, and
    a run folder from before labels (a path) resumes with a --model of the same folder name."""
    import shutil

    from dsa.cli import main
    from evaluators.models.loading import model_label

    shutil.copytree(tiny_dir / "model", tmp_path / "a" / "model")
    other = tmp_path / "other" / "model"
    shutil.copytree(tiny_dir / "model", other)
    make_tiny_llama(seed=1, layers=4).save_pretrained(other)
    label = model_label(str(tmp_path / "a" / "model"))
    run = tmp_path / "run"
    common = ["--data", str(tiny_dir / "text.txt"), "--calib", str(tiny_dir / "text.txt"), *SMALL]
    assert main(["search", "--model", str(tmp_path / "a" / "model"), *common, "--population", "4", "--generations",
                 "1", "--val-windows", "2", "--run-dir", str(run), "--no-progress"]) == 0
    records = {p.name: p.read_text() for p in run.iterdir() if p.suffix in (".json", ".csv")}
    assert set(records) >= {"config.json", "checkpoint.json", "hall_of_fame.json", "logbook.csv"}
    assert all(str(tmp_path) not in text for text in records.values())  # no path of the model
    config = json.loads(records["config.json"])
    assert config["evaluator"]["model"]["model"] == config["model"] == label
    assert json.loads(records["checkpoint.json"])["identity"]["model"] == label

    def refused(*args) -> str:
        capsys.readouterr()
        assert main(["search", "--resume", str(run), *args, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    shutil.move(tmp_path / "a", tmp_path / "b")  # the model moves
    assert "pass --model with its path" in refused("--generations", "2")
    assert f"was run on {label}, not on {model_label(str(other))}" in refused("--model", str(other))
    assert main(["search", "--resume", str(run), "--model", str(tmp_path / "b" / "model"), "--generations", "2",
                 "--no-progress"]) == 0
    assert [row["gen"] for row in csv.DictReader((run / "logbook.csv").open())][-1] == "2"

    # a run folder written before labels held the model's path: a --model of the same name resumes it
    for name in ("config.json", "checkpoint.json"):
        (run / name).write_text((run / name).read_text().replace(label, "/old/machine/model"))
    assert "which is not here: pass --model" in refused("--generations", "3")
    assert main(["search", "--resume", str(run), "--model", str(tmp_path / "b" / "model"), "--generations", "3",
                 "--no-progress"]) == 0
    assert json.loads((run / "checkpoint.json").read_text())["identity"]["model"] == "/old/machine/model"
