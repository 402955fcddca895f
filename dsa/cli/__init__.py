"""The command line: the ``dsa`` script and its commands (search, compare, show, prune, eval, export).

- ``commands``: the command names with their one-line help and the top-level parser (standard library only)
- ``flags``: the flag kinds (every value checked as it is parsed) and the run settings' flags, generated from
  their fields (:mod:`dsa.run.schema`)
- ``parser``: every command's flags: the run settings' generated groups and each command's own options
- ``dispatch``: turns parsed flags into typed settings, checks them, and runs the command

:func:`main` is the ``dsa`` script: ``dsa`` and ``dsa --help`` answer from here without importing anything
heavy; a command imports :mod:`dsa.cli.dispatch`, which loads torch, transformers and SymPy only when it runs.
"""
from __future__ import annotations

import sys

from .commands import top_parser


def main(argv: list[str] | None = None) -> int:
    """The ``dsa`` script (in-process: returns the exit code): the top-level help and errors here; a command
    runs in :func:`dsa.cli.dispatch.main`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-"):  # no command yet: nothing below needs the heavy modules
        try:
            top_parser()[0].parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0)
    from .dispatch import main as run
    return run(argv)
