"""Rewrite records written before models were named by label, so that they hold no path of the machine
they ran on:

    python -m bench.scrub_paths bench/results/NAME ... [--relative-to /root/m] [--check]

Every text file (.json, .jsonl, .md, .txt, .csv) under the given folders (or given itself) that holds an
absolute path under one of :data:`MACHINE_ROOTS` is rewritten; the others are left as they are:

- a model path (a ``model`` value of a JSON record, or any path ending in .gguf) becomes the model's label
  (:func:`evaluators.models.loading.model_label`: file name and content digest, computed when the file is
  at that path on this machine; the file name alone when it is not), and its file name where it starts a
  multi-task name (``name|method|sparsity``, as :func:`dsa.run.multitask.task_name` writes it);
- a level database (``…/leveldb/<digest>``) becomes ``leveldb/<digest>`` (relative to the cache folder);
- a path inside this repository, or inside a ``--relative-to`` folder (where a benchmark ran), becomes
  relative to it.

JSON records are read, their strings (keys too) rewritten and written back in their own layout (indent,
final newline), so no number changes; a ``compare.md`` is rendered again from its rewritten ``compare.json``
by :func:`dsa.experiment.report.report` and must equal its own text with the paths replaced (else the replaced
text is kept and the difference named). A path no rule covers is listed and the exit code is 1.
``--check`` lists what would change and writes nothing. Resuming such a folder takes ``--model`` again
(:meth:`dsa.run.settings.ModelSpec.located`).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from evaluators.models.loading import model_label

ROOT = Path(__file__).resolve().parents[1]
MACHINE_ROOTS = ("root", "home", "Users", "usr", "work", "tmp", "mnt", "opt", "srv", "scratch", "var")
# an absolute path under one of MACHINE_ROOTS, up to a space, quote, table bar, comma, colon, bracket …
PATH = re.compile(r"(?<![\w.~/-])/(?:" + "|".join(MACHINE_ROOTS) + r")/[^\s\"'|,;:()\[\]<>`]*")
LEVELDB = re.compile(r".*/(leveldb/[0-9a-f]+/?)")
TEXT = (".json", ".jsonl", ".md", ".txt", ".csv")


class Scrubber:
    def __init__(self, models: set[str], relative_to: list[Path]):
        self.models = {m.rstrip("/") for m in models}
        self.bases = [ROOT, *relative_to]
        self.labels: dict[str, str] = {}
        self.unknown: set[str] = set()

    def label(self, path: str) -> str:
        if path not in self.labels:
            here = Path(path)
            self.labels[path] = model_label(path) if here.is_file() or here.is_dir() else here.name
        return self.labels[path]

    def text(self, text: str) -> str:
        return PATH.sub(self._one, text)

    def _one(self, match: re.Match) -> str:
        path = match.group(0).rstrip(".")
        tail = match.group(0)[len(path):]
        after = match.string[match.end():match.end() + 1]
        if path.rstrip("/").endswith(".gguf") or path.rstrip("/") in self.models:
            name = Path(path.rstrip("/")).name if after == "|" else self.label(path.rstrip("/"))
            return name + tail
        if (db := LEVELDB.fullmatch(path)) is not None:
            return db.group(1) + tail
        for base in self.bases:
            if Path(path).is_relative_to(base):
                return Path(path).relative_to(base).as_posix() + ("/" if path.endswith("/") else "") + tail
        self.unknown.add(path)
        return match.group(0)

    def data(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.data(v) for k, v in value.items()}
        return value


def json_layout(text: str) -> dict | None:
    """The ``json.dumps`` arguments (and final newline) that write ``text`` again exactly, or None."""
    data = json.loads(text)
    for indent in (1, None, 2):
        for ascii_only in (False, True):
            for end in ("", "\n"):
                if json.dumps(data, indent=indent, ensure_ascii=ascii_only) + end == text:
                    return {"indent": indent, "ensure_ascii": ascii_only, "end": end}
    return None


def model_paths(value, found: set[str]) -> set[str]:
    """Every string value of a ``model`` key in a JSON record (and in the ``args`` of a benchmark's)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "model" and isinstance(item, str):
                found.add(item)
            model_paths(item, found)
    elif isinstance(value, list):
        for item in value:
            model_paths(item, found)
    return found


def files(targets: list[Path]) -> list[Path]:
    out = []
    for target in targets:
        out += [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    return [p for p in out if p.name.endswith(TEXT)]


def render_compare(md: Path, record: dict) -> str:
    """compare.md as :func:`dsa.experiment.report.report` writes it from ``record`` (its compare.json)."""
    from dsa.experiment.compare import Comparison
    from dsa.experiment.report import report
    from dsa.run.settings import EvaluatorSpec
    from gp import SearchConfig
    settings = record["settings"]
    c = Comparison(EvaluatorSpec.from_dict(settings["evaluator"]), md.parent, SearchConfig.from_dict(settings["gp"]),
                   seeds=tuple(settings["seeds"]))
    return report(c, record["info"], record["rows"])


def scrub(targets: list[Path], relative_to: list[Path], write: bool = True) -> int:
    paths = [p for p in files(targets) if PATH.search(p.read_text(encoding="utf-8"))]
    models: set[str] = set()
    for path in paths:
        if path.suffix == ".json":
            model_paths(json.loads(path.read_text(encoding="utf-8")), models)
    scrubber = Scrubber({m for m in models if PATH.fullmatch(m)}, relative_to)
    records: dict[Path, dict] = {}
    for path in sorted(paths, key=lambda p: p.suffix != ".json"):  # records first: reports render from them
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            layout = json_layout(text)
            if layout is None:
                print(f"{path}: not in a layout json.dumps writes again exactly; left as it is")
                continue
            records[path] = scrubber.data(json.loads(text))
            end = layout.pop("end")
            new = json.dumps(records[path], **layout) + end
        else:
            new = scrubber.text(text)
            record = records.get(path.with_name("compare.json"))
            if path.name == "compare.md" and record is not None:
                rendered = render_compare(path, record)
                if rendered != new:
                    print(f"{path}: dsa.experiment.report.report renders it otherwise than its text with the paths "
                          f"replaced; the replaced text is kept")
        print(f"{path}: {'rewritten' if write else 'would be rewritten'}")
        if write:
            path.write_text(new, encoding="utf-8")
    for old, new in sorted(scrubber.labels.items()):
        print(f"model {old} → {new}")
    for old in sorted(scrubber.unknown):
        print(f"no rule for {old} (give the folder it ran in with --relative-to)")
    return 1 if scrubber.unknown else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="+", type=Path, help="result folders or files")
    ap.add_argument("--relative-to", type=Path, action="append", default=[],
                    help="a folder a benchmark ran in: paths inside it become relative to it")
    ap.add_argument("--check", action="store_true", help="list what would change; write nothing")
    args = ap.parse_args()
    return scrub(args.targets, args.relative_to, write=not args.check)


if __name__ == "__main__":
    sys.exit(main())
