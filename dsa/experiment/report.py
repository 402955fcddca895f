"""The comparison's report: ``compare.md``'s tables (test perplexity with its interval, the paired
log-perplexity difference from uniform and from the strongest baseline on validation, with the verdict) and
the summary over search seeds."""
from __future__ import annotations

import math
import statistics

from evaluators.fitness.intervals import paired_interval, perplexity_interval, verdict


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.{digits}g}"
    return str(x)


def strongest_baseline(rows: list[dict]) -> dict | None:
    """The baseline with the lowest *validation* perplexity other than uniform (chosen without test)."""
    base = [r for r in rows if r["kind"] == "baseline" and r["name"] != "uniform"]
    return min(base, key=lambda r: r["val ppl"]) if base else None


def comparisons(rows: list[dict]) -> dict[str, dict]:
    """Per row: its test perplexity interval, and its paired log-ppl difference from uniform and from the
    strongest baseline on validation (intervals and verdicts)."""
    uniform = next((r for r in rows if r["name"] == "uniform"), None)
    strongest = strongest_baseline(rows)
    out = {}
    for r in rows:
        item = {"test": perplexity_interval(r["test nlls"])}
        for label, ref in (("uniform", uniform), ("strongest", strongest)):
            if ref is not None and ref is not r and r["kind"] != "dense":
                iv = paired_interval(r["test nlls"], ref["test nlls"])
                item[label] = (iv, verdict(iv))
        if strongest is not None and strongest is not r and r["kind"] != "dense" and "c4 nlls" in r \
                and len(strongest.get("c4 nlls") or ()) == len(r["c4 nlls"]):
            iv = paired_interval(r["c4 nlls"], strongest["c4 nlls"])
            item["strongest c4"] = (iv, verdict(iv))
        out[r["name"]] = item
    return out


def _difference(item) -> str:
    """A table cell: Δ with its interval and verdict (bold where it decides), or empty."""
    if item is None:
        return ""
    iv, word = item
    return f"{iv.value:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}] {'**' + word + '**' if word != 'tie' else 'tie'}"


def report(c, info: dict, rows: list[dict]) -> str:
    """``compare.md`` of the comparison ``c`` (a :class:`dsa.experiment.compare.Comparison`) from its rows."""
    spec = c.spec
    strongest = strongest_baseline(rows)
    stats = comparisons(rows)
    m = info.get("machine", {})
    head = (f"Machine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}, CUDA: {m.get('cuda')}; "
            f"{m.get('date')}\n\nModel {info.get('model')}, {spec.prune.method} at {spec.prune.sparsity:.0%} "
            f"({'GPU' if spec.model.is_cuda() else 'CPU'} protocol). Test: raw WikiText-2, {info.get('test_windows')} "
            f"windows × {spec.data.seqlen} tokens; validation (fitness, tuning): {spec.val_windows} windows, selection "
            f"split: the next {spec.selection_windows}; calibration {spec.data.calib} {spec.data.nsamples} × "
            f"{spec.data.calib_seqlen} (data seed {spec.data.seed}); exact sequential pruning. Second test text: "
            f"{info.get('c4_windows') or 'no'} windows of calibration-domain documents calibration never read. Test ppl with its 95 % "
            f"bootstrap interval over windows; Δ = log(ppl / ppl of the reference) on the same windows with its paired "
            f"95 % interval: *beats* / *loses* where the interval excludes 0. Strongest baseline on validation: "
            f"{strongest['name'] if strongest else '—'}. Searches: GP population {c.gp.population}, {c.gp.generations} "
            f"generations; direct searches with the GP run's evaluations; search seeds {', '.join(map(str, c.seeds))}.\n")
    cols = ["allocation", "val ppl", "selection ppl", "test ppl [95 % CI]", "Δ vs uniform [95 % CI]",
            "Δ vs strongest [95 % CI]", "held-out C4 ppl", "Δ vs strongest on C4 [95 % CI]", "evaluations",
            "formula / params"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        s = stats[r["name"]]
        cells = [r["name"], _fmt(r.get("val ppl")), _fmt(r.get("selection ppl")), s["test"].text()]
        cells += [_difference(s.get("uniform")), _difference(s.get("strongest")), _fmt(r.get("c4 ppl")),
                  _difference(s.get("strongest c4")), _fmt(r.get("evaluations")),
                  str(r.get("formula") or r.get("params") or "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(lines) + "\n" + seeds_summary(rows, stats) + against_gp(rows) + "\n"


def seeds_summary(rows: list[dict], stats: dict) -> str:
    """Per search kind over its seeds: test perplexity mean and spread, and how many seeds beat uniform and
    the strongest baseline (every seed is in the table above)."""
    kinds = {}
    for r in rows:
        if r.get("seed") is not None:
            kinds.setdefault(r["kind"], []).append(r)
    if not kinds:
        return ""
    lines = ["", "| search | seeds | test ppl mean ± sd | beats uniform | beats strongest | beats strongest on "
             "held-out C4 |", "|---|---|---|---|---|---|"]
    for kind, group in kinds.items():
        ppl = [r["test ppl"] for r in group]
        sd = statistics.stdev(ppl) if len(ppl) > 1 else 0.0
        count = {label: sum(stats[r["name"]].get(label, (None, ""))[1] == "beats" for r in group)
                 for label in ("uniform", "strongest", "strongest c4")}
        lines.append(f"| {kind} | {len(group)} | {statistics.mean(ppl):.4g} ± {sd:.2g} | "
                     f"{count['uniform']}/{len(group)} | {count['strongest']}/{len(group)} | "
                     f"{count['strongest c4']}/{len(group)} |")
    return "\n".join(lines) + "\n"


OTHER_SEARCHES = ("random", "direct", "warm")


def against_gp(rows: list[dict]) -> str:
    """Evolution against the other searches of the same seed (random search, the direct and warm searches): per
    pair the paired 95 % interval of Δ = log(GP's ppl / the other's) on the test windows and on the held-out C4
    windows (below 0: the GP run's shipped allocation is better), and per kind how many seeds the GP run beats
    and loses to on test."""
    gp = {r["seed"]: r for r in rows if r["kind"] == "gp" and r.get("seed") is not None}
    others = [r for r in rows if r["kind"] in OTHER_SEARCHES and r.get("seed") in gp]
    if not others:
        return ""
    lines = ["", "Evolution against the other searches of the same seed: Δ = log(GP's ppl / the other's) on the same "
                 "windows with its paired 95 % interval (*beats*: the GP run's choice is better there)", "",
             "| GP against | Δ test [95 % CI] | Δ held-out C4 [95 % CI] |", "|---|---|---|"]
    tally: dict[str, list[str]] = {}
    for r in others:
        g = gp[r["seed"]]
        test = paired_interval(g["test nlls"], r["test nlls"])
        tally.setdefault(r["kind"], []).append(verdict(test))
        c4 = ("c4 nlls" in g and "c4 nlls" in r and len(g["c4 nlls"]) == len(r["c4 nlls"])
              and paired_interval(g["c4 nlls"], r["c4 nlls"]))
        lines.append(f"| {r['name']} | {_difference((test, verdict(test)))} | "
                     f"{_difference((c4, verdict(c4))) if c4 else ''} |")
    lines += ["", *(f"GP against {kind} on test: beats in {words.count('beats')} of {len(words)} seeds, loses in "
                    f"{words.count('loses')}" for kind, words in tally.items())]
    return "\n".join(lines) + "\n"
