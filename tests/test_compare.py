"""``dsa compare`` runs ``dsa search``'s code; the two seeds; intervals (tiny random LLaMA, CPU, seconds)."""
import json
import math
import shutil

import numpy as np
import pytest

from dsa.run.allocations import best_row
from conftest import make_tiny_llama
from dsa.cli import main
from evaluators.models.loading import model_label
from evaluators.fitness.intervals import paired_interval, perplexity_interval, verdict
from test_cli_llm import data_args

GP = ["--population", "4", "--generations", "1", "--val-windows", "2", "--max-scores-per-layer", "5000",
      "--no-progress"]


def search(root, run, *extra):
    return main(["search", *map(str, data_args(root)), *GP, "--run-dir", str(run), *extra])


def compare(root, out, *extra):
    return main(["compare", *map(str, data_args(root)), *GP, "--out", str(out), "--test-windows", "3",
                 "--baselines", "uniform,owl,atp-tuned", *extra])


def test_compare_gp_row_is_a_dsa_search_run(tiny_dir, tmp_path, capsys):  # noqa: F811
    assert search(tiny_dir, tmp_path / "run", "--seed", "3", "--data-seed", "5") == 0
    assert compare(tiny_dir, tmp_path / "cmp", "--seeds", "3", "--data-seed", "5") == 0
    mine = json.loads((tmp_path / "run" / "hall_of_fame.json").read_text())
    theirs = json.loads((tmp_path / "cmp" / "runs" / "gp-seed3" / "hall_of_fame.json").read_text())
    assert mine == theirs  # the same search: same trees, fitness, selection values and flags
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    best, _ = best_row(tmp_path / "run")  # what the run ships: its best formula, or the strongest baseline
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    row = next(r for r in result["rows"] if r["kind"] == "gp")
    assert row["name"] == "GP search (seed 3)" and row["formula"] == best["tree"]
    assert row["sparsities"] == best["output"] and row["val ppl"] == best["fitness"]
    names = [r["name"] for r in result["rows"]]
    assert names == ["dense", "uniform", "owl", "atp-tuned", "GP search (seed 3)"]
    assert all(len(r["test nlls"]) == 3 for r in result["rows"])
    # the baselines were tuned as the search tunes them (same validation values as its config.json)
    for name in ("uniform", "owl", "atp-tuned"):
        assert next(r for r in result["rows"] if r["name"] == name)["val ppl"] == config["baselines"][name]
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "Δ vs uniform [95 % CI]" in table and "data seed 5" in table
    assert (tmp_path / "cmp" / "intervals.png").stat().st_size > 0 and (tmp_path / "cmp" / "allocations.png").exists()


def test_compare_resume_and_changed_settings(tiny_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "cmp"
    assert compare(tiny_dir, out, "--seeds", "0,1", "--searches", "gp,warm") == 0
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [r["name"] for r in rows][-4:] == ["GP search (seed 0)", "direct search from GP (seed 0)",
                                              "GP search (seed 1)", "direct search from GP (seed 1)"]
    warm = next(r for r in rows if r["name"] == "direct search from GP (seed 0)")
    gp_row = next(r for r in rows if r["name"] == "GP search (seed 0)")
    assert warm["evaluations"] >= gp_row["evaluations"]  # the GP run's budget (stops after the generation)
    capsys.readouterr()
    assert compare(tiny_dir, out, "--seeds", "0,1", "--searches", "gp,warm") == 2  # no silent overwrite
    assert "--resume" in capsys.readouterr().err
    assert compare(tiny_dir, out, "--seeds", "0,1", "--searches", "gp,warm", "--resume") == 0
    assert json.loads((out / "compare.json").read_text())["rows"] == rows  # nothing re-run
    # the rows asked for may grow: finished rows are kept, the new one is added
    assert main(["compare", *map(str, data_args(tiny_dir)), *GP, "--out", str(out), "--test-windows", "3",
                 "--baselines", "uniform,owl,atp-tuned,dlp", "--seeds", "0", "--resume"]) == 0
    grown = json.loads((out / "compare.json").read_text())["rows"]
    assert grown[:-1] == rows and grown[-1]["name"] == "dlp"
    assert compare(tiny_dir, out, "--seeds", "0,1", "--searches", "gp,warm", "--resume", "--data-seed", "2") == 2
    assert "settings differ (evaluator)" in capsys.readouterr().err
    # compare.json names the model by its label: moved, it resumes from where it is now; another one is refused
    moved, other = tmp_path / "moved" / "model", tmp_path / "other" / "model"
    for folder in (moved, other):
        shutil.copytree(tiny_dir / "model", folder)
    make_tiny_llama(seed=1).save_pretrained(other)

    def grown_at(model):
        args = [str(a) for a in data_args(tiny_dir)]
        args[args.index("--model") + 1] = str(model)
        return main(["compare", *args, *GP, "--out", str(out), "--test-windows", "3", "--baselines",
                     "uniform,owl,atp-tuned,dlp", "--seeds", "0", "--resume"])
    assert grown_at(other) == 2
    assert f"was run on {model_label(str(tiny_dir / 'model'))}, not on" in capsys.readouterr().err
    assert grown_at(moved) == 0
    assert json.loads((out / "compare.json").read_text())["rows"] == grown  # nothing re-run
    # warm without gp starts from the finished GP run a folder already holds (e.g. copied from this one),
    # with --budget evaluations; a seed without one fails in one line before any work
    hybrid = tmp_path / "hybrid"
    shutil.copytree(out / "runs" / "gp-seed0", hybrid / "runs" / "gp-seed0")
    assert compare(tiny_dir, hybrid, "--seeds", "0,1", "--searches", "warm", "--budget", "30") == 2
    assert "gp-seed1, which is not there: add gp" in capsys.readouterr().err
    assert not (hybrid / "compare.json").exists()
    assert compare(tiny_dir, hybrid, "--seeds", "0", "--searches", "direct,warm", "--budget", "30") == 0
    rows = {r["name"]: r for r in json.loads((hybrid / "compare.json").read_text())["rows"]}
    assert "GP search (seed 0)" not in rows
    assert rows["direct search (seed 0)"]["evaluations"] >= 30
    assert rows["direct search from GP (seed 0)"]["evaluations"] >= 30
    start = json.loads((hybrid / "runs" / "warm-seed0" / "config.json").read_text())["init"]
    assert start == str(hybrid / "runs" / "gp-seed0")


def test_seed_and_data_seed_are_separate(tiny_dir, tmp_path, capsys):  # noqa: F811
    def baselines(run):
        return json.loads((run / "config.json").read_text())["baselines"]
    assert search(tiny_dir, tmp_path / "a", "--seed", "0") == 0
    assert search(tiny_dir, tmp_path / "b", "--seed", "1") == 0
    assert search(tiny_dir, tmp_path / "c", "--seed", "0", "--data-seed", "1") == 0
    assert baselines(tmp_path / "a") == baselines(tmp_path / "b")  # the search seed leaves the data alone
    assert baselines(tmp_path / "a") != baselines(tmp_path / "c")  # another calibration sample
    capsys.readouterr()
    assert main(["search", "--resume", str(tmp_path / "a"), "--data-seed", "1"]) == 2
    assert "cannot change --data-seed on resume" in capsys.readouterr().err


def test_compare_flags_fail_before_work(tmp_path, capsys):
    for bad, text in ((["--seeds", "0,0"], "distinct seeds"), (["--searches", "warm"], "add gp"),
                      (["--searches", "nope"], "expected gp, random, direct, warm"),
                      (["--searches", "gp,gp"], "each once")):
        assert main(["compare", "--out", str(tmp_path / "x"), *bad]) == 2
        assert text in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_perplexity_interval_holds_the_estimate_and_narrows():
    rng = np.random.default_rng(0)
    few, many = rng.normal(3.0, 0.3, 16), rng.normal(3.0, 0.3, 256)
    a, b = perplexity_interval(few), perplexity_interval(many)
    assert a.lo < a.value < a.hi and b.lo < b.value < b.hi
    assert math.isclose(b.value, math.exp(many.mean()))
    assert (b.hi - b.lo) < 0.5 * (a.hi - a.lo)  # width ∝ 1/√n: 16× the windows, a quarter of the width
    assert perplexity_interval([1.0, math.inf]).value == math.inf


def test_paired_interval_resolves_what_unpaired_cannot():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(3.0, 0.5, 64)      # windows differ far more than the two methods do
    a = difficulty + 0.02 + rng.normal(0, 0.01, 64)
    b = difficulty
    ia, ib = perplexity_interval(a), perplexity_interval(b)
    assert ia.lo < ib.hi  # the unpaired intervals overlap
    paired = paired_interval(a, b)
    assert verdict(paired) == "loses" and paired.lo > 0 and math.isclose(paired.value, float((a - b).mean()))
    assert verdict(paired_interval(b, a)) == "beats"
    same = paired_interval(b + rng.normal(0, 0.01, 64), b)
    assert verdict(same) == "tie" and same.lo < 0 < same.hi
    with pytest.raises(ValueError):
        paired_interval(a, b[:10])


def test_compare_in_nm_patterns_measures_each_row_on_its_pattern(tiny_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "cmp"
    assert compare(tiny_dir, out, "--sparsity", "0.5", "--nm", "4", "--searches", "none",
                   "--baselines", "uniform,atp-tuned") == 0
    rows = {r["name"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    for name in ("uniform", "atp-tuned"):
        s = rows[name]["sparsities"]
        assert all(round(v * 4) == v * 4 for v in s) and sum(s) / len(s) == pytest.approx(0.5)
    assert rows["uniform"]["sparsities"] == [0.5] * 4


def test_compare_random_search_row_has_the_gp_runs_budget(tiny_dir, tmp_path):  # noqa: F811
    """--searches gp,random: dsa search's random mode, seeded alike, at the GP run's number of evaluations,
    measured on the same protocol (its run folder under OUT/runs, its row what that run ships)."""
    out = tmp_path / "cmp"
    assert compare(tiny_dir, out, "--seeds", "0", "--searches", "gp,random", "--tune-constants", "2") == 0
    rows = {r["name"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    gp_row, random_row = rows["GP search (seed 0)"], rows["random search (seed 0)"]
    assert random_row["kind"] == "random" and random_row["run"] == "runs/random-seed0"
    config = json.loads((out / "runs" / "random-seed0" / "config.json").read_text())
    assert config["search"]["mode"] == "random" and config["search"]["tune_constants"] == 0
    assert config["search"]["max_evaluations"] == gp_row["evaluations"]
    assert gp_row["evaluations"] <= random_row["evaluations"] < gp_row["evaluations"] + 4  # stops after a generation
    assert len(random_row["test nlls"]) == 3


def test_tune_constants_is_refused_where_it_would_do_nothing(capsys):
    for extra in (["--mode", "random"], ["--objectives", "fitness,size"]):
        assert main(["search", "--tune-constants", "4", *extra]) == 2
        err = capsys.readouterr().err
        assert "tune_constants applies to single-objective evolution" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, words", [
    (lambda d: d["rows"][1].update({"test nlls": "1.0, 2.0"}), "test nlls are not finite"),
    (lambda d: d["rows"][1].update({"test nlls": d["rows"][1]["test nlls"][:2]}), "holds 2 test NLLs"),
    (lambda d: d["rows"][1]["test nlls"].__setitem__(0, float("nan")), "test nlls are not finite"),
    (lambda d: d["rows"][1].pop("name"), "no printable name"),
    (lambda d: d["rows"][1].update({"name": "x\x1b[2Jy"}), "no printable name"),
    (lambda d: d["rows"][1].pop("kind"), "unknown kind"),
    (lambda d: d["rows"].append(dict(d["rows"][1])), "repeats the name"),
    (lambda d: d.update({"version": 99}), "version '99'"),
    (lambda d: d["rows"][1].update({"val ppl": float("nan")}), "val ppl is not a positive number"),
    (lambda d: d["rows"][1].update({"sparsities": [5.0, 0.7]}), "sparsities are not numbers"),
    (lambda d: d["rows"][-1].update({"evaluations": 10**400}), "evaluations is not a count"),
])
def test_compare_resume_refuses_damaged_rows_before_any_work(tiny_dir, tmp_path, capsys, damage, words):  # noqa: F811
    """compare.json's rows enter every table and interval on --resume: each field is checked first, and a
    damaged file is refused in one line, left as it was (no model is loaded, nothing is rewritten)."""
    out = tmp_path / "cmp"
    if not (tmp_path.parent / "damaged-source").exists():
        assert compare(tiny_dir, tmp_path.parent / "damaged-source", "--searches", "gp") == 0
    shutil.copytree(tmp_path.parent / "damaged-source", out)
    saved = json.loads((out / "compare.json").read_text())
    damage(saved)
    text = json.dumps(saved)
    (out / "compare.json").write_text(text)
    capsys.readouterr()
    assert compare(tiny_dir, out, "--searches", "gp", "--resume") == 2
    err = capsys.readouterr().err
    assert words in err and "damaged" in err and len(err.strip().splitlines()) == 1, err
    assert (out / "compare.json").read_text() == text


def test_compare_measures_every_row_on_a_second_held_out_text(tiny_dir, tmp_path):  # noqa: F811
    """--c4-windows N: every row also on N windows of calibration-text documents that calibration never read
    (held-out C4 by default), with the paired interval against the strongest baseline there."""
    out = tmp_path / "cmp"
    assert compare(tiny_dir, out, "--searches", "none", "--calib-seqlen", "16", "--c4-windows", "4") == 0
    saved = json.loads((out / "compare.json").read_text())
    assert saved["info"]["c4_windows"] == 4 and saved["settings"]["c4_windows"] == 4
    for row in saved["rows"]:
        assert len(row["c4 nlls"]) == 4 and row["c4 ppl"] == pytest.approx(math.exp(np.mean(row["c4 nlls"])))
    dense = next(r for r in saved["rows"] if r["kind"] == "dense")
    uniform = next(r for r in saved["rows"] if r["name"] == "uniform")
    assert uniform["c4 nlls"] != dense["c4 nlls"]  # measured on the pruned model (a random model: not worse)
    table = (out / "compare.md").read_text()
    assert "held-out C4 ppl" in table and "4 windows of calibration-domain documents" in table
    # the windows are cut from documents calibration did not read
    from evaluators.data.text import heldout_docs, load_split
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    docs = load_split(str(tiny_dir / "text.txt"), "train")
    held = heldout_docs(tok, docs, 2, 16, 0)
    assert 0 < len(held) < len(docs)


# --- dsa compare --verify: re-measure what a folder claims ------------------------------------------------

@pytest.fixture(scope="module")
def compared(tiny_dir, tmp_path_factory, one_torch_thread):  # noqa: F811
    """A finished comparison of the tiny model: dense, three baselines, a GP row, held-out C4 on every row (one
    torch thread from here on: small tensors)."""
    out = tmp_path_factory.mktemp("verify") / "cmp"
    assert compare(tiny_dir, out, "--searches", "gp", "--calib-seqlen", "16", "--c4-windows", "4") == 0
    return out


def verify(root, out, row, *extra):
    return main(["compare", "--out", str(out), "--verify", row, "--model", str(root / "model"), "--no-progress",
                 *extra])


def verdicts(text: str) -> dict[tuple[str, str], str]:
    """(row, field) → match / MISMATCH / skip, from --verify's lines."""
    out = {}
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("match", "MISMATCH", "skip"):
            row, field, _ = rest.strip().rsplit(": ", 2) if rest.count(": ") >= 2 else (rest, "", "")
            out[(row, field)] = word
    return out


def test_verify_remeasures_faithful_rows_and_writes_nothing(tiny_dir, compared, capsys):  # noqa: F811
    from test_cli_errors import snapshot
    before, text = snapshot(compared), (compared / "compare.json").read_text()
    capsys.readouterr()
    assert verify(tiny_dir, compared, "GP search (seed 0)") == 0
    seen = verdicts(capsys.readouterr().out)
    fields = ("sparsities", "allocation", "val ppl", "selection ppl", "test nlls", "test ppl", "c4 nlls", "c4 ppl")
    assert {seen[("GP search (seed 0)", f)] for f in fields} == {"match"}, seen
    assert verify(tiny_dir, compared, "all") == 0
    out = capsys.readouterr().out
    seen = verdicts(out)
    names = [r["name"] for r in json.loads(text)["rows"]]
    assert all(seen[(name, "test nlls")] == "match" for name in names) and "MISMATCH" not in out
    assert all(seen[(name, "allocation")] == "match" for name in names if name != "dense"), seen
    # the search ships tuned ATP here: its row is not pruned again but takes atp-tuned's NLLs, and says so;
    # re-measured, they match
    rows = {r["name"]: r for r in json.loads(text)["rows"]}
    gp, atp = rows["GP search (seed 0)"], rows["atp-tuned"]
    assert gp["formula"].startswith("atp:") and gp["sparsities"] == atp["sparsities"]
    assert gp["nlls of"] == "atp-tuned" and gp["test nlls"] == atp["test nlls"] and gp["c4 nlls"] == atp["c4 nlls"]
    assert "nlls of" not in atp and seen[("GP search (seed 0)", "test nlls")] == "match"
    assert seen[("dense", "val ppl")] == "match" and ("dense", "sparsities") not in seen
    assert snapshot(compared) == before and (compared / "compare.json").read_text() == text


def test_verify_names_the_row_and_field_that_do_not_match(tiny_dir, compared, tmp_path, capsys):  # noqa: F811
    from dsa.run.settings import VERIFY_TOL
    from test_cli_errors import snapshot
    out = tmp_path / "cmp"
    shutil.copytree(compared, out)

    def edited(change) -> str:
        saved = json.loads((compared / "compare.json").read_text())
        change({r["name"]: r for r in saved["rows"]})
        (out / "compare.json").write_text(text := json.dumps(saved))
        return text

    capsys.readouterr()
    edited(lambda rows: rows["uniform"]["test nlls"].__setitem__(1, rows["uniform"]["test nlls"][1] + VERIFY_TOL / 2))
    assert verify(tiny_dir, out, "uniform") == 0  # within the tolerance
    text = edited(lambda rows: rows["uniform"]["test nlls"].__setitem__(1, rows["uniform"]["test nlls"][1] - 0.01))
    before = snapshot(out)
    capsys.readouterr()
    assert verify(tiny_dir, out, "all") == 1
    printed = capsys.readouterr().out
    seen = verdicts(printed)
    assert seen[("uniform", "test nlls")] == "MISMATCH" and "max |Δ| 0.01 (window 2)" in printed
    assert seen[("uniform", "test ppl")] == "match"  # the stored perplexity is still the measured one
    assert [k for k, v in seen.items() if v == "MISMATCH"] == [("uniform", "test nlls")]
    assert printed.strip().splitlines()[-1].endswith("mismatched: uniform (test nlls)")
    assert (out / "compare.json").read_text() == text and snapshot(out) == before  # nothing rewritten
    # a row whose allocation is not one of the comparison (another mean) is not re-measured as if it were
    edited(lambda rows: rows["owl"].update({"sparsities": [0.5] * len(rows["owl"]["sparsities"])}))
    capsys.readouterr()
    assert verify(tiny_dir, out, "owl") == 1
    printed = capsys.readouterr().out
    assert verdicts(printed)[("owl", "sparsities")] == "MISMATCH" and "not the target 0.7" in printed
    # a valid allocation, but not the one its row names: two blocks of equal size swapped, or other parameters
    def swapped(rows):
        s = rows["owl"]["sparsities"]
        s[0], s[-1] = s[-1], s[0]
    edited(swapped)
    capsys.readouterr()
    assert verify(tiny_dir, out, "owl") == 1
    seen = verdicts(capsys.readouterr().out)
    assert seen[("owl", "sparsities")] == "match" and seen[("owl", "allocation")] == "MISMATCH", seen
    edited(lambda rows: rows["owl"]["params"].update({"lam": rows["owl"]["params"]["lam"] * 2}))  # a wider spread
    capsys.readouterr()
    assert verify(tiny_dir, out, "owl") == 1
    assert verdicts(capsys.readouterr().out)[("owl", "allocation")] == "MISMATCH"


def test_verify_refuses_what_would_change_the_comparison(tiny_dir, compared, tmp_path, capsys):  # noqa: F811
    for extra, words in ((["--sparsity", "0.5"], "--sparsity cannot go with it"), (["--resume"], "--resume cannot"),
                         (["--seeds", "1", "--test-windows", "2"], "--seeds, --test-windows cannot")):
        assert verify(tiny_dir, compared, "uniform", *extra) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert verify(tiny_dir, compared, "nope") == 2
    assert "holds no row 'nope' (its rows: dense, uniform" in capsys.readouterr().err
    assert verify(tiny_dir, tmp_path / "none", "uniform") == 2
    assert "holds no compare.json" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_report_compares_evolution_with_the_other_searches_seed_by_seed():
    """compare.md's evolution-against-random table: per seed, Δ = log(GP's ppl / the other's) on the same test
    windows (and C4) with its paired interval, GP's side of the verdict, and a tally per kind; identical
    allocations tie at exactly 0; a seed without a GP row is left out."""
    from dsa.experiment.report import against_gp
    rng = np.random.default_rng(0)
    base = (rng.random(64) + 5).tolist()
    worse = [x + 0.2 + 0.02 * rng.normal() for x in base]

    def row(name, kind, seed, nlls):
        return {"name": name, "kind": kind, "seed": seed, "test nlls": nlls, "c4 nlls": nlls[:16]}
    rows = [row("GP search (seed 0)", "gp", 0, base), row("GP search (seed 1)", "gp", 1, base),
            row("random search (seed 0)", "random", 0, worse), row("random search (seed 1)", "random", 1, base),
            row("random search (seed 2)", "random", 2, worse)]
    text = against_gp(rows)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| random")}
    assert set(lines) == {"random search (seed 0)", "random search (seed 1)"}
    assert "**beats**" in lines["random search (seed 0)"] and "-0.2" in lines["random search (seed 0)"]
    assert "+0.000 [+0.000, +0.000] tie" in lines["random search (seed 1)"]
    assert "GP against random on test: beats in 1 of 2 seeds, loses in 0" in text
    assert against_gp(rows[2:]) == ""
