"""The ``dsa`` command's front: its commands with their one-line help and the top-level parser.

Imports nothing but the standard library, so ``dsa`` and ``dsa --help`` answer at once; any command
imports :mod:`dsa.cli.dispatch`, which adds each command's flags (:func:`dsa.cli.parser.build_parser`, from modules that
load no torch, transformers or SymPy, so ``dsa <command> --help`` answers quickly too) to these same
subparsers and runs it (torch, transformers and SymPy load only then).
"""
from __future__ import annotations

import argparse

DESCRIPTION = "Discover and apply layer-wise sparsity allocation functions for LLM pruning."

COMMANDS = {
    "search": "evolve allocation functions (fitness: validation perplexity of the pruned model)",
    "compare": "the fair comparison: every baseline (tuned on validation), found formulas and searches over "
               "seeds, pruned exactly and measured on the test split with 95 %% bootstrap intervals",
    "show": "print a run's hall of fame",
    "prune": "prune a model with an allocation and save it as a HF folder",
    "eval": "test-split perplexity (and zero-shot accuracy with --tasks) of a model, optionally pruned first; "
            "JSON out",
    "export": "export a dsa prune allocation as JSON or as an llm-compressor recipe",
}


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse prints the whole usage otherwise)
        from evaluators.errors import escape  # the message quotes what was typed: no control character passes
        self.exit(2, f"{self.prog}: error: {escape(message, None)} (see --help)\n")


def top_parser() -> tuple[Parser, dict[str, Parser]]:
    """The ``dsa`` parser and its command subparsers, without their flags."""
    parser = Parser(prog="dsa", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    return parser, {name: sub.add_parser(name, help=text) for name, text in COMMANDS.items()}
