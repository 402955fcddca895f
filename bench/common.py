"""Shared bits of the benchmark scripts: model/data arguments and loading, weight snapshots,
machine description and result writing (a model by its label, never by its path)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from evaluators.models.loading import model_label, weight_snapshot  # noqa: F401 (the scripts import these from here)

from dsa.run.folder import machine  # noqa: F401

RESULTS = Path(__file__).resolve().parent / "results"
# LLaMA-2-7B's decoder linears (rows, cols): 32 blocks of q, k, v, o (4096×4096), gate, up (11008×4096), down
LLAMA2_7B_SHAPES = 32 * (4 * [(4096, 4096)] + 2 * [(11008, 4096)] + [(4096, 11008)])


def add_model_args(ap: argparse.ArgumentParser, name: str, split: str = "validation", windows: int = 2) -> None:
    """The CLI's model and data flags (one home: :func:`dsa.cli.flags.add_model_args`: --model --dtype --device
    --data --calib --data-dir --seqlen --batch-size --data-seed), plus --name, the number of WikiText-2
    windows of ``split`` (--val-windows or --test-windows) and the calibration size."""
    from dsa.cli.flags import add_model_args as model_args
    model_args(ap, pruning=False, calibration=True)
    ap.add_argument("--name", default=name)
    ap.add_argument("--val-windows" if split == "validation" else "--test-windows", type=int, default=windows,
                    help="token windows of WikiText-2 " + split + (" (0 = all)" if split == "test" else ""))


def load_inputs(args: argparse.Namespace, split: str = "validation"):
    """(model, tokenizer, WikiText-2 ``split`` windows, C4 calibration batch) from :func:`add_model_args`'s
    flags; the sizes left unset are filled in for the device (and written back to ``args`` for the tables)."""
    from dsa.cli.dispatch import data_spec, model_spec
    from evaluators.data.text import calibration_batch, load_split, token_windows
    from evaluators.models.loading import load_model

    mspec, data = model_spec(args), data_spec(args)  # the CLI's own builders: one home of the settings
    data = data.sized(mspec.is_cuda())
    args.seqlen, args.nsamples, args.calib_seqlen = data.seqlen, data.nsamples, data.calib_seqlen
    model, tok = load_model(mspec.model, mspec.dtype, mspec.device)
    n = args.val_windows if split == "validation" else (args.test_windows or None)
    windows = token_windows(tok, load_split(data.data, split, data.data_dir), data.seqlen, n)
    calib = calibration_batch(tok, load_split(data.calib, "train", data.data_dir), data.nsamples, data.calib_seqlen,
                              seed=data.seed)
    return model, tok, windows, calib


def model_name(args: argparse.Namespace) -> str:
    """The model of :func:`add_model_args`'s flags as tables name it (:func:`dsa.run.llm.model_name`: its label)."""
    from dsa.run.llm import model_name as name
    from dsa.run.settings import ModelSpec
    return name(ModelSpec(args.model))


def recorded(args: dict) -> dict:
    """A script's arguments as its result file holds them: ``model`` by its label, other absolute paths (a
    folder argument) by their last part: never a path of the machine it ran on."""
    out = {k: Path(v).name if isinstance(v, str) and v.startswith(("/", "~")) else v for k, v in args.items()}
    return {**out, "model": model_label(args["model"])} if args.get("model") else out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (Pearson's on their ranks; ties broken by order)."""
    def ranks(x: list[float]) -> list[float]:
        r = [0.0] * len(x)
        for i, j in enumerate(sorted(range(len(x)), key=x.__getitem__)):
            r[j] = float(i)
        return r
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def agreement(rows: list[dict], truth: str, fitnesses: dict[str, str]) -> dict:
    """Spearman's ρ of each fitness column (label → column) with the ``truth`` column, over all rows and over
    the better half by ``truth`` (the region a search ends in, where the ranking matters)."""
    best = sorted(rows, key=lambda r: r[truth])[:max(3, len(rows) // 2)]
    out = {"allocations": len(rows)}
    for suffix, group in (("", rows), (" (better half)", best)):
        reference = [r[truth] for r in group]
        for label, column in fitnesses.items():
            out[f"{label}{suffix}"] = spearman([r[column] for r in group], reference)
    return out


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write(name: str, payload: dict, table: str, title: str, quiet: bool = False) -> None:
    (RESULTS / name).parent.mkdir(parents=True, exist_ok=True)  # NAME may be FOLDER/NAME
    payload = {"machine": machine(), **payload}
    if isinstance(payload.get("args"), dict):
        payload["args"] = recorded(payload["args"])
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
    m = payload["machine"]
    head = f"# {title}\n\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, CUDA: {m['cuda']}; {m['date']}\n\n"
    (RESULTS / f"{name}.md").write_text(head + table + "\n")
    if not quiet:
        print(table)
