"""The documentation keeps up with the tool: every flag of every command is in docs/cli.md, and the
README's links lead somewhere."""
import argparse
import re
from pathlib import Path

from dsa.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_every_flag_is_documented():
    text = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in sub.choices.items():
        assert f"dsa {name}" in text, f"command {name} is not in docs/cli.md"
        for action in command._actions:
            missing += [f"dsa {name} {flag}" for flag in action.option_strings
                        if flag.startswith("--") and flag != "--help" and flag not in text]
    assert not missing, f"flags missing from docs/cli.md: {', '.join(missing)}"


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    local = [link for link in links if not link.startswith("http")]
    assert local, "the README links to its docs"
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_cli_md_shows_the_current_help():
    import importlib.util
    spec = importlib.util.spec_from_file_location("cli_help", ROOT / "docs" / "cli_help.py")
    cli_help = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli_help)
    text = cli_help.CLI_MD.read_text()
    assert cli_help.rendered(text) == text, "docs/cli.md's --help blocks are stale: run python docs/cli_help.py"


def test_every_baseline_is_in_the_baselines_table():
    from evaluators.baselines import BASELINES
    rows = (ROOT / "docs" / "baselines.md").read_text()
    missing = [name for name in BASELINES if f"`{name}`" not in rows]
    assert not missing, f"baselines missing from docs/baselines.md: {', '.join(missing)}"
