"""PNG plots of a run: fitness per generation, and per-layer sparsity of the best formula vs baselines."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_fitness(logbook: list[dict], path: Path, ylabel: str = "fitness (lower is better)") -> Path:
    gens = [int(r["gen"]) for r in logbook]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, style in (("best", "-o"), ("min", "--"), ("median", ":")):
        values = [float(r[key]) for r in logbook]
        ax.plot(gens, values, style, label={"best": "best so far", "min": "generation best",
                                            "median": "generation median"}[key], markersize=3)
    ax.set_xlabel("generation")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log") if all(float(r["min"]) > 0 for r in logbook) else None
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_allocations(allocations: dict[str, list[float]], path: Path, target: float | None = None,
                     title: str = "") -> Path:
    """Per-layer sparsity of each named allocation (as the DSA paper's Figure 1)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, values in allocations.items():
        ax.plot(range(len(values)), values, "-o", markersize=3, label=name)
    if target is not None:
        ax.axhline(target, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("layer")
    ax.set_ylabel("sparsity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_differences(rows: list[tuple[str, float, float, float]], path: Path, reference: str) -> Path:
    """A forest plot: per row, log(ppl / reference's ppl) with its paired 95 % interval (``rows``: name,
    value, low, high); an interval clear of 0 is a verdict, one that holds 0 is not."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for y, (name, value, lo, hi) in enumerate(reversed(rows)):
        color = "tab:green" if hi < 0 else "tab:red" if lo > 0 else "tab:grey"
        ax.errorbar(value, y, xerr=[[value - lo], [hi - value]], fmt="o", color=color, capsize=3, markersize=4)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"log(test ppl / {reference}'s), paired 95 % interval (left of 0: lower perplexity)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
