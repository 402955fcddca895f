"""Rewrite the ``--help`` blocks of docs/cli.md from the parser (``python docs/cli_help.py``);
``tests/test_docs.py`` fails when they differ."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

CLI_MD = Path(__file__).resolve().parent / "cli.md"
COLUMNS = "110"


def helps() -> dict[str, str]:
    """Each command's ``--help`` at :data:`COLUMNS` columns."""
    from dsa.cli.parser import build_parser
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {name: command.format_help() for name, command in sub.choices.items()}
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def rendered(text: str) -> str:
    """``text`` (docs/cli.md) with every ``### `dsa NAME` `` block replaced by the current help."""
    for name, body in helps().items():
        text = re.sub(rf"(### `dsa {name}`\n\n```\n).*?(```\n)", lambda m: m.group(1) + body + m.group(2), text,
                      count=1, flags=re.S)
    return text


if __name__ == "__main__":
    CLI_MD.write_text(rendered(CLI_MD.read_text()))
