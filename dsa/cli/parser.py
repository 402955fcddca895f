"""Every command's flags, added to the subparsers of :mod:`dsa.cli.commands`: the parser the ``dsa`` script
parses with (:func:`build_parser`), and which flags a command line gave (:func:`given_flags`). A run setting's
flag is generated from its field (:mod:`dsa.run.settings`' specs, :mod:`gp.config`'s search config: name, default,
help, kind, choices; :func:`dsa.cli.flags.add_spec_flags`); the commands' own options are declared here.
Building the parser imports no torch, transformers or SymPy."""
from __future__ import annotations

import argparse

from evaluators.models.compressed import SAVE_FORMATS
from gp import SearchConfig

from dsa.cli.commands import top_parser
from dsa.cli.flags import (DIRECT, EVALUATOR, SEARCHES, add_fitness_args, add_gp_args, add_model_args, add_spec_flags,
                           baseline_list, nonempty, nonnegative_int, positive_int, search_list, seed_list,
                           sparsity, stages)
from dsa.run.settings import COMPARE_BASELINES, EXPORT_FORMATS, SEARCH_BASELINES, SPACES, VERIFY_TOL


def build_parser() -> argparse.ArgumentParser:
    parser, commands = top_parser()
    s = commands["search"]
    s.add_argument("--task", choices=("llm", "synthetic"), default="llm",
                   help="llm: prune a real model (default); synthetic: a known-optimum toy task that runs in seconds")
    add_model_args(s, lists=True)
    add_spec_flags(s, SearchConfig, ("seed",))
    add_fitness_args(s)
    g = add_gp_args(s)
    g.add_argument("--run-dir", type=nonempty, help="run folder (default: results/<time>-<task>)")
    g.add_argument("--resume", metavar="RUN_DIR", type=nonempty,
                   help="continue a killed run from its last checkpoint (only --generations, --no-progress, "
                        "--workers, --ray-address and --model may be given with it: --model is where the run's "
                        "local model is, which a run folder names but never records)")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="evaluate candidates on N Ray workers (each holds the model once), on a local Ray "
                        "instance or with --ray-address on that cluster; same result as without (needs: "
                        "pip install -e .[ray])")
    g.add_argument("--ray-address", metavar="ADDR", type=nonempty,
                   help="evaluate candidates on an existing Ray cluster (its GCS address, e.g. head-node:6379): "
                        "one worker per GPU, else per CPU, unless --workers says how many")
    d = s.add_argument_group("direct search (--space direct: EvoPress-style, per-layer sparsity levels)")
    d.add_argument("--space", choices=SPACES, default="formula",
                   help="formula (default): evolve allocation functions; direct: evolve the per-layer sparsities "
                        "themselves (levels, level switches, multi-step selection), as EvoPress does")
    d.add_argument("--offspring", type=positive_int,
                   help=f"children per generation (direct: default {DIRECT.offspring}, EvoPress: 64; formula with "
                        f"--stages: default 3 × population)")
    d.add_argument("--stages", type=stages,
                   help="multi-step selection: windows:survivors per step, the last on all validation windows "
                        "(direct: default 1:4,all:1, EvoPress on a GPU e.g. 1:8,8:2,all:1; formula: e.g. "
                        "1:15,all:8 with population 10 and elitism 2 — the last survivors fill the population)")
    d.add_argument("--max-level", type=positive_int, default=DIRECT.max_level,
                   help=f"levels each way from the start (default {DIRECT.max_level})")
    d.add_argument("--level-step", type=sparsity, help="sparsity per level for a layer of average size (default "
                                                       "min(s, 1 − s)/16, EvoPress's resolution)")
    d.add_argument("--init", type=nonempty, metavar="RUN",
                   help="start from this allocation instead of uniform: a GP run folder (its best formula), a "
                        "formula or a baseline name — a hybrid of both searches")
    g.add_argument("--baselines", type=baseline_list, default=",".join(SEARCH_BASELINES),
                   help=f"allocations scored on the same validation windows at the start, for comparison "
                        f"(default {','.join(SEARCH_BASELINES)}; add owl-tuned for OWL's tuned grid: "
                        f"20 more evaluations)")
    g.add_argument("--no-progress", action="store_true")

    c = commands["compare"]
    add_model_args(c)
    add_fitness_args(c)
    g = add_gp_args(c)
    g.add_argument("--offspring", type=positive_int, help="GP multi-step selection: children per generation "
                                                         "(default 3 × population with --stages)")
    g.add_argument("--stages", type=stages, help="GP multi-step selection, as dsa search's (e.g. 1:24,all:8)")
    c.add_argument("--seeds", type=seed_list, default=(0,),
                   help="search seeds, comma-separated (default 0): every search repeated on the same data "
                        "(--data-seed), each seed reported")
    c.add_argument("--searches", type=search_list, default=("gp",),
                   help=f"which searches: {', '.join(SEARCHES)} (gp: dsa search; random: its random mode, the same "
                        f"seed formulas, with the GP run's number of evaluations; direct: the direct search with the GP "
                        f"run's number of evaluations, else --budget; warm: the direct search from the GP's chosen "
                        f"allocation; without gp: from the finished GP run already in OUT/runs/gp-seedN), comma-separated, "
                        f"or none (default gp)")
    c.add_argument("--budget", type=positive_int, default=40,
                   help="direct search evaluations when no GP search runs (default 40)")
    d = c.add_argument_group("direct search")
    d.add_argument("--direct-offspring", type=positive_int, default=DIRECT.offspring,
                   help=f"children per generation (default {DIRECT.offspring})")
    d.add_argument("--direct-stages", type=stages, default=DIRECT.stages,
                   help="selection steps, windows:survivors (default 1:4,all:1)")
    d.add_argument("--max-level", type=positive_int, default=DIRECT.max_level,
                   help=f"levels each way from the start (default {DIRECT.max_level})")
    d.add_argument("--level-step", type=sparsity, help="sparsity per level (default min(s, 1 − s)/16)")
    c.add_argument("--baselines", type=baseline_list, default=",".join(COMPARE_BASELINES),
                   help=f"baselines, each tuned on the search's validation windows as its authors tuned it "
                        f"(default {','.join(COMPARE_BASELINES)})")
    c.add_argument("--formulas", type=str, default="",
                   help="found functions to measure too: run folders or formulas (or a baseline with its "
                        "parameters, owl:m=7,lam=0.1), comma-separated")
    c.add_argument("--test-windows", type=nonnegative_int,
                   help="test windows (default: 128 × 512 tokens on CPU, all 2048-token windows on CUDA; 0 = all)")
    c.add_argument("--c4-windows", type=nonnegative_int, default=32,
                   help="a second test text: windows of calibration-domain documents that calibration never read "
                        "(held-out C4 by default), every row measured and compared there too (default 32; 0 = off)")
    c.add_argument("--out", required=True, type=nonempty,
                   help="the comparison's folder: compare.json (every row with its per-window test NLLs), "
                        "compare.md, allocations.png, intervals.png (a forest plot of the paired intervals) and the "
                        "searches' run folders")
    c.add_argument("--resume", action="store_true", help="continue the comparison in --out: finished rows are "
                                                        "kept, a killed search resumes from its checkpoint")
    c.add_argument("--verify", metavar="ROW", type=nonempty,
                   help=f"re-measure row ROW of the comparison in --out (its name as in compare.md, e.g. uniform or "
                        f"'GP search (seed 0)'; all: every row) as the comparison measured it, with the folder's "
                        f"own settings: its stored sparsities (checked as an allocation of its model and target, and "
                        f"re-derived from the baseline, run folder or formula the row names) pruned with its method, pattern, data and calibration. Prints per stored number whether "
                        f"it matches: per-window NLLs within {VERIFY_TOL:g} nats each, perplexities within "
                        f"{VERIFY_TOL:g} relative (on the same library versions the test model's rows came back "
                        f"exactly; another transformers version moved real models' per-window NLLs by up to 0.08, so a "
                        f"mismatch across versions may be the library's); exits 0 when all match, 1 otherwise; "
                        f"writes nothing. Goes only with --out, --model (where a local model is), --device and "
                        f"--no-progress")
    c.add_argument("--no-progress", action="store_true")

    sh = commands["show"]
    sh.add_argument("run", help="run folder")
    sh.add_argument("--top", type=positive_int)
    sh.add_argument("--notation", choices=("formula", "latex", "tree"), default="formula")

    allocation_help = (f"a baseline ({', '.join(COMPARE_BASELINES)}; atp with its beta, atp:beta=0.004; owl-nm, "
                       "OWL's own N:M rule, for --nm 8), "
                       "a run folder (its best formula, applied with the run's settings unless given here) "
                       "or a formula")
    pr = commands["prune"]
    add_model_args(pr)
    pr.add_argument("--allocation", type=nonempty, default="uniform", help=allocation_help)
    pr.add_argument("--val-windows", type=positive_int, default=EVALUATOR.val_windows,
                    help=f"validation windows that tuned baselines (owl-tuned, atp-tuned) are tuned on (default "
                         f"{EVALUATOR.val_windows})")
    pr.add_argument("--save", required=True, type=nonempty, help="output folder (safetensors; loads with from_pretrained)")
    pr.add_argument("--format", choices=SAVE_FORMATS, default=SAVE_FORMATS[0],
                    help="how --save stores the weights: plain safetensors (default), or, for --nm 2:4, "
                         "compressed-tensors' 2:4 bitmask (needs compressed-tensors<=0.14.0.1; loads back with "
                         "transformers 4.56-4.57)")
    pr.add_argument("--no-progress", action="store_true")

    ev = commands["eval"]
    add_model_args(ev)
    ev.add_argument("--allocation", type=nonempty, help="prune first with this allocation: " + allocation_help)
    ev.add_argument("--val-windows", type=positive_int, default=EVALUATOR.val_windows,
                    help=f"validation windows that tuned baselines are tuned on (default {EVALUATOR.val_windows})")
    ev.add_argument("--test-windows", type=positive_int, help="limit the number of test windows (default: all)")
    ev.add_argument("--tasks", type=nonempty,
                    help="also zero-shot accuracy on these lm-eval tasks, comma-separated; 'paper' = the "
                         "papers' seven: boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa "
                         "(needs pip install -e .[zeroshot]; their datasets come from the Hub)")
    ev.add_argument("--tasks-path", help="folder(s) of your own lm-eval task YAMLs, comma-separated (lm-eval's "
                                         "include_path). lm-eval imports the Python files (!function utils.x) "
                                         "those YAMLs name: they run as code, so use folders you trust")
    ev.add_argument("--zeroshot-limit", type=positive_int,
                    help="at most this many examples per zero-shot task (quick checks; the papers use all)")
    ev.add_argument("--no-perplexity", action="store_true", help="skip the test-split perplexity (with --tasks)")
    ev.add_argument("--json", type=nonempty, help="write the result here too")
    ev.add_argument("--no-progress", action="store_true")

    ex = commands["export"]
    ex.add_argument("source", help="an allocation.json written by dsa prune, or its --save folder")
    ex.add_argument("--to", choices=EXPORT_FORMATS, default=EXPORT_FORMATS[0],
                    help="json (the record), or llmcompressor (a oneshot YAML recipe with per-layer sparsity)")
    ex.add_argument("--out", type=nonempty, help="write here instead of printing")
    return parser


def given_flags(argv: list[str]) -> set[str]:
    """The destinations of the flags given on the command line (argparse cannot tell a default from a
    value given equal to it): the same parser, every default suppressed."""
    parser = build_parser()
    for action in _actions(parser):
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(parser.parse_args(argv)))


def _actions(parser):
    for action in parser._actions:  # argparse keeps them here; there is no public accessor
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
