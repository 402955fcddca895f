"""The ``dsa`` command as a user meets it: synthetic search end to end, show, kill + resume, bad input."""
import json
import subprocess
import sys
import time

import pytest

DSA = [sys.executable, "-m", "dsa.cli"]
SYNTHETIC = ["search", "--task", "synthetic", "--population", "16", "--seed", "3", "--no-progress"]


def dsa(*args, **kw):
    return subprocess.run([*DSA, *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


def hall_of_fame(run_dir):
    return [(r["tree"], r["fitness"]) for r in json.loads((run_dir / "hall_of_fame.json").read_text())]


def test_synthetic_search_writes_run_folder_and_show_prints_it(tmp_path):
    run = tmp_path / "run"
    out = dsa(*SYNTHETIC, "--generations", 3, "--run-dir", run)
    assert out.returncode == 0, out.stderr
    for name in ("config.json", "checkpoint.json", "hall_of_fame.json", "logbook.csv", "fitness.png", "allocation.png"):
        assert (run / name).stat().st_size > 0, name
    rows = json.loads((run / "hall_of_fame.json").read_text())
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["fitness"] <= b["fitness"] for a, b in zip(rows, rows[1:]))
    assert len(rows[0]["output"]) == 12 and rows[0]["formula"] and rows[0]["latex"]
    shown = dsa("show", run, "--top", 3)
    assert shown.returncode == 0, shown.stderr
    assert rows[0]["formula"][:40] in shown.stdout and "per-layer sparsity" in shown.stdout
    again = dsa(*SYNTHETIC, "--generations", 3, "--run-dir", run)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrite a run


def test_killed_run_resumes_to_the_same_hall_of_fame(tmp_path):
    generations = 60
    reference = tmp_path / "reference"
    assert dsa(*SYNTHETIC, "--generations", generations, "--run-dir", reference).returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*DSA, *SYNTHETIC, "--generations", str(generations), "--run-dir", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        logbook = killed / "logbook.csv"
        if logbook.exists() and len(logbook.read_text().splitlines()) >= 4:  # header + generations 0..2
            break
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    gen_at_kill = json.loads((killed / "checkpoint.json").read_text())["gen"]
    assert 2 <= gen_at_kill < generations, "the run must really have been interrupted"

    resumed = dsa("search", "--resume", killed, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert hall_of_fame(killed) == hall_of_fame(reference)


@pytest.mark.parametrize("args, needle", [
    (["search", "--task", "synthetic", "--sparsity", "1.5"], "sparsity must be in (0, 0.99]"),
    (["search", "--task", "synthetic", "--population", "abc"], "positive integer"),
    (["search", "--task", "synthetic", "--elitism", "50"], "elitism"),
    (["search", "--resume", "/nonexistent/run"], "no config.json"),
    (["show", "/nonexistent/run"], "not a run folder"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, needle, tmp_path):
    out = dsa(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir()), "nothing written on bad input"


def test_command_help_loads_no_torch_transformers_or_sympy():
    """``dsa <command> --help`` builds the full parser from light modules (the flags, the specs, the configs,
    the names the CLI offers); what runs a command loads only when it runs."""
    code = ("import contextlib, io, json, sys; from dsa.cli import main; from dsa.cli.commands import COMMANDS\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    codes = {name: main([name, '--help']) for name in COMMANDS}\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'sympy') if m in sys.modules)\n"
            "print(json.dumps([codes, heavy, out.getvalue().count('usage: dsa ')]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from dsa.cli.commands import COMMANDS
    assert json.loads(done.stdout) == [dict.fromkeys(COMMANDS, 0), [], len(COMMANDS)]


def test_offered_names_are_the_records_names():
    """The names the parser offers are written out in :mod:`dsa.run.settings` (so that it loads no torch); each is
    what its records give: a new method, fitness, masking mode, baseline or export format is named there too."""
    from dsa.outputs import exports
    from dsa.run import allocations, settings
    from evaluators.fitness.evaluator import FITNESSES
    from evaluators.fitness.masking import MASKING
    from evaluators.pruning.methods import METHODS
    assert settings.METHODS == tuple(name for name, m in METHODS.items() if m.listed)
    assert settings.FITNESSES == tuple(FITNESSES)
    assert settings.MASKING == MASKING
    assert settings.SEARCH_BASELINES == allocations.SEARCH_BASELINES
    assert settings.COMPARE_BASELINES == allocations.COMPARE_BASELINES
    assert settings.EXPORT_FORMATS == exports.FORMATS


def test_setting_groups_are_derived_from_the_specs():
    """What --task synthetic refuses and what names a level database come from the spec fields' roles:
    each name is a real flag, the synthetic task keeps exactly the settings it reads, and the level key
    moves with a calibration setting but not with a runtime or perplexity one."""
    from dataclasses import replace

    from dsa.cli.flags import LLM_ONLY
    from dsa.cli.parser import build_parser
    from dsa.run.llm import level_key
    from dsa.run.settings import DataSpec, ModelSpec
    parser = build_parser()
    search = next(a for a in parser._actions if a.dest == "command").choices["search"]
    dests = {a.dest for a in search._actions}
    assert set(LLM_ONLY) <= dests and {"sparsity", "data_seed", "seed"}.isdisjoint(LLM_ONLY)
    assert {"model", "nm", "val_windows", "masking", "baselines"} <= set(LLM_ONLY)
    model, data = ModelSpec("m.gguf"), DataSpec()
    key = level_key(model, data)
    assert set(key) == {"model", "dtype", "calib", "data_dir", "nsamples", "calib_seqlen", "data_seed"}
    for changed in (replace(data, seed=1), replace(data, nsamples=8), replace(data, calib="x.txt")):
        assert level_key(model, changed) != key
    for same in (replace(data, batch_size=4), replace(data, data="y.txt"), replace(data, seqlen=64)):
        assert level_key(model, same) == key
    assert level_key(replace(model, device="cpu"), data) == key != level_key(replace(model, dtype="bf16"), data)


def test_flag_defaults_are_the_specs_defaults():
    """A run setting's default is declared once, on its spec field: the flags of dsa prune/eval/compare,
    given nothing, build the specs' defaults."""
    from dsa.cli.dispatch import data_spec, model_spec, prune_spec
    from dsa.cli.parser import build_parser
    from dsa.run.settings import DataSpec, EvaluatorSpec, ModelSpec, PruneSpec
    default = EvaluatorSpec()
    for argv in (["prune", "--save", "x"], ["eval"], ["compare", "--out", "x"]):
        args = build_parser().parse_args(argv)
        assert (model_spec(args), data_spec(args), prune_spec(args)) == (ModelSpec(), DataSpec(), PruneSpec()), argv
        assert args.val_windows == default.val_windows, argv
        if argv[0] == "compare":
            assert (args.fitness, args.masking) == (default.fitness, default.masking)


def test_every_setting_flag_is_generated_from_its_field():
    """One schema: each spec or search-config field that describes a flag (dsa.run.schema.setting,
    gp.config.flag) is a flag of dsa search with the field's default (or its flag default), help and choices;
    a field without a description has none; the search config built from the flags given nothing is the
    config's default."""
    from dataclasses import MISSING

    from dsa.cli.dispatch import search_config
    from dsa.cli.parser import build_parser
    from dsa.run.schema import flat_fields, flag_name
    from dsa.run.settings import EvaluatorSpec
    from gp import SearchConfig
    parser = build_parser()
    search = next(a for a in parser._actions if a.dest == "command").choices["search"]
    actions = {a.dest: a for a in search._actions}

    described = [f for cls in (EvaluatorSpec, SearchConfig) for f in flat_fields(cls) if "help" in f.metadata]
    assert len(described) >= 30
    for f in described:
        action = actions[flag_name(f)]
        if f.metadata["kind"] in ("switch", "off-switch"):
            assert action.default is False and action.nargs == 0, f.name
            continue
        default = f.metadata.get("flag_default", f.default if f.default is not MISSING else None)
        many = f.metadata.get("many")
        assert action.default == ((default,) if many and default is not None else default), f.name
        assert f.metadata["help"].split("{default}")[0].replace("%%", "%")[:30] in action.help, f.name
        if "choices" in f.metadata and not many:
            assert tuple(action.choices) == tuple(f.metadata["choices"]), f.name
    undescribed = {flag_name(f) for cls in (EvaluatorSpec, SearchConfig) for f in flat_fields(cls)
                   if "help" not in f.metadata}
    assert {"name", "init_min_height", "offspring", "stages", "seeds", "max_evaluations"} <= undescribed
    assert not {"init_min_height", "max_evaluations", "name"} & set(actions)
    args = parser.parse_args(["search"])
    assert search_config(args, set()) == SearchConfig()
