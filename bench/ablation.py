"""The ablation of the search's options against overfitting (issue 28, part 3): one ``dsa compare`` per
variant, all on one protocol and the same search seeds, and one table row per variant.

    python -m bench.ablation --model PATH --name NAME --seeds 0,1,2 [--variants baseline,lexicase,...] \
        [--resume] [any other dsa compare flag: --method, --sparsity, --val-windows, --generations, --baselines …]

Each variant runs ``dsa compare`` itself (:func:`dsa.cli.dispatch.main`: its flag checks, then
:func:`dsa.experiment.compare.run_comparison` on a :class:`~dsa.experiment.compare.Comparison`) with the flags given here
plus the variant's own (:data:`VARIANTS`): ``baseline`` (today's defaults), then each option alone. Writes
``bench/results/NAME/<variant>/`` (a comparison folder each: compare.json, compare.md, runs/) and
``bench/results/NAME.md``, rewritten after every variant: per variant, and per seed within it, the run's
choice on the selection split (the paired verdict of its best against the strongest baseline it scored,
and whether it ships its found function), and what the allocation it ships does against the comparison's
strongest baseline on test and on held-out C4 (paired 95 % intervals, :func:`dsa.experiment.report.comparisons`).
``--resume`` continues every comparison (finished rows kept, killed searches resumed).

The resampling variant scores each generation on --val-windows windows drawn from a pool 4 times as large
(its --val-windows): its baselines are tuned on the pool, and its selection split is the windows after it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import RESULTS, machine, markdown_table

from evaluators.files import read_json

from dsa.cli.flags import positive_int, seed_list
from dsa.run.settings import DEFAULT_VAL_WINDOWS

POOL = 4  # the resampling variant's pool, in multiples of the windows each generation scores


@dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple[str, ...]  # dsa compare flags; "{val}": the protocol's --val-windows, "{pool}": POOL × it
    what: str


VARIANTS = (
    Variant("baseline", (), "today's defaults (tournament selection, fixed windows)"),
    Variant("lexicase", ("--selection", "lexicase"), "ε-lexicase selection, the validation windows as cases"),
    Variant("resample", ("--val-windows", "{pool}", "--resample-windows", "{val}"),
            f"each generation on --val-windows windows drawn from a pool {POOL}× as large"),
    Variant("parsimony", ("--parsimony", "1.4"), "double tournament, the smaller of two winners with probability 0.7"),
    Variant("dedup", ("--dedup",), "a child repeating a scored allocation is mutated again"),
    Variant("restart", ("--restart-after", "3"),
            "all but the elites re-seeded after 3 generations without a better best"),
)
BY_NAME = {v.name: v for v in VARIANTS}


def variant_list(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    bad = [n for n in names if n not in BY_NAME]  # an empty item too
    if not names or bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(BY_NAME)}, comma-separated, each once; "
                                         f"got {text!r}")
    return names


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__.split("\n\n")[0],
                                 allow_abbrev=False)
    ap.add_argument("--model", required=True, help="the model, as dsa compare takes it")
    ap.add_argument("--name", required=True, help="bench/results/NAME/ (the comparisons) and NAME.md (the table)")
    ap.add_argument("--seeds", type=seed_list, default=(0, 1, 2), help="search seeds (default 0,1,2)")
    ap.add_argument("--variants", type=variant_list, default=tuple(BY_NAME),
                    help=f"which variants, in this order (default all: {','.join(BY_NAME)})")
    ap.add_argument("--val-windows", type=positive_int, default=DEFAULT_VAL_WINDOWS,
                    help=f"validation windows per fitness evaluation (dsa compare's; default {DEFAULT_VAL_WINDOWS})")
    ap.add_argument("--resume", action="store_true", help="continue the comparisons already in bench/results/NAME/")
    return ap


def compare_argv(args, variant: Variant, out: Path, extra: list[str]) -> list[str]:
    """The ``dsa compare`` command line of one variant."""
    flags = [f.format(val=args.val_windows, pool=POOL * args.val_windows) for f in variant.flags]
    val = [] if "--val-windows" in flags else ["--val-windows", str(args.val_windows)]
    return ["compare", "--model", args.model, "--seeds", ",".join(map(str, args.seeds)), *val, *extra, *flags,
            "--out", str(out), *(["--resume"] if args.resume else [])]


# --- the table --------------------------------------------------------------------------------------------

def _delta(item) -> str:
    """One seed's paired verdict: Δ and its word."""
    if item is None:
        return "—"
    iv, word = item
    return f"{word} {iv.value:+.3f}"


def _count(words: list[str]) -> str:
    return " / ".join(f"{words.count(w)} {w}" for w in ("beats", "tie", "loses") if words.count(w)) or "—"


def variant_row(variant: Variant, folder: Path) -> dict:
    """One table row from a variant's comparison folder: its GP rows (one per seed), the choices their runs
    made on the selection split (the runs' config.json) and their paired verdicts against the comparison's
    strongest baseline on test and held-out C4."""
    from dsa.experiment.report import comparisons, strongest_baseline
    data = read_json(folder / "compare.json")
    rows = data["rows"]
    stats, strongest = comparisons(rows), strongest_baseline(rows)
    searches = sorted((r for r in rows if r["kind"] == "gp"), key=lambda r: r["seed"])
    selection, shipped, test, c4 = [], [], [], []
    for r in searches:
        path = folder / r.get("run", "") / "config.json"
        config = read_json(path) if r.get("run") and path.is_file() else {}
        choice = config.get("selection") or {}
        delta = choice.get("delta")
        selection.append(f"s{r['seed']} {choice.get('verdict', '—')}" + (f" {delta[0]:+.3f}" if delta else ""))
        shipped.append(choice.get("shipped") == "found")
        test.append(stats[r["name"]].get("strongest"))
        c4.append(stats[r["name"]].get("strongest c4"))
    ppl = [r["test ppl"] for r in searches]
    return {
        "variant": variant.name, "options": " ".join(variant.flags) or "—",
        "strongest": strongest["name"] if strongest else "—",
        "seeds": len(searches),
        "ships found": f"{sum(shipped)}/{len(searches)}",
        "selection split (per seed)": "; ".join(selection),
        "test vs strongest": _count([t[1] for t in test if t]),
        "test Δ (per seed)": "; ".join(f"s{r['seed']} {_delta(t)}" for r, t in zip(searches, test)),
        "held-out C4 vs strongest": _count([t[1] for t in c4 if t]) if any(c4) else "—",
        "C4 Δ (per seed)": "; ".join(f"s{r['seed']} {_delta(t)}" for r, t in zip(searches, c4)) if any(c4) else "—",
        "test ppl mean": statistics.mean(ppl) if ppl else None,
        "evaluations mean": statistics.mean(r.get("evaluations") or 0 for r in searches) if searches else None,
    }


COLUMNS = ["variant", "options", "strongest", "seeds", "ships found", "selection split (per seed)", "test vs strongest",
           "test Δ (per seed)", "held-out C4 vs strongest", "C4 Δ (per seed)", "test ppl mean", "evaluations mean"]


def table(done: list[tuple[Variant, Path]]) -> str:
    """The ablation table: one row per variant whose comparison folder holds a compare.json."""
    return markdown_table([variant_row(v, folder) for v, folder in done if (folder / "compare.json").is_file()],
                          COLUMNS)


def shown(flags: list[str]) -> str:
    """Command-line flags as a record shows them: a path by its name (records hold no machine paths)."""
    return " ".join(Path(f).name if os.path.isabs(f) else f for f in flags)


def report(args, extra: list[str], done: list[tuple[Variant, Path]]) -> str:
    m = machine()
    options = "\n".join(f"- `{v.name}`: {v.what}" for v, _ in done)
    return (f"# Ablation: the search's options against overfitting ({args.name})\n\n"
            f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CUDA: {m['cuda']}; {m['date']}\n\n"
            f"Model {Path(args.model).name}; every variant is `dsa compare --seeds {','.join(map(str, args.seeds))} "
            f"--val-windows {args.val_windows} {shown(extra)}` plus its options; one comparison folder each under "
            f"`{args.name}/`. Per seed: the run's choice on the selection split (its best against the strongest "
            f"baseline it scored: paired 95 % verdict and Δ log-ppl; it ships its found function only where that "
            f"beats), then the shipped allocation against the comparison's strongest baseline (lowest validation "
            f"perplexity) on test and on held-out C4 (Δ log-ppl, paired 95 % intervals over windows).\n\n"
            f"{options}\n\n{table(done)}\n")


def main(argv: list[str] | None = None, root: Path = RESULTS) -> int:
    from dsa.cli import main as dsa
    args, extra = parser().parse_known_args(argv)
    base = root / args.name
    done: list[tuple[Variant, Path]] = []
    for name in args.variants:
        variant = BY_NAME[name]
        out = base / variant.name
        code = dsa(compare_argv(args, variant, out, extra))
        if code:
            return code
        done.append((variant, out))
        (root / f"{args.name}.md").write_text(report(args, extra, done))
    print(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
