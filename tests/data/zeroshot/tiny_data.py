"""Rows of the tiny_yesno task (tiny_yesno.yaml): read from the JSON-lines file next to this module."""
import json
from pathlib import Path

import datasets


def load(data_file: str = "tiny_yesno.jsonl", **_metadata) -> datasets.DatasetDict:
    """lm-eval calls this with the task's metadata and dataset_kwargs; a relative path is taken
    from this folder, so the task works from any working directory."""
    path = Path(__file__).parent / data_file
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})
