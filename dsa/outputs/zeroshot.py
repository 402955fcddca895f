"""Zero-shot accuracy with EleutherAI's lm-evaluation-harness (``dsa eval --tasks``).

The Wanda, OWL and DSA papers report zero-shot accuracy on seven tasks: BoolQ, RTE, HellaSwag,
WinoGrande, ARC-easy, ARC-challenge and OpenBookQA, each scored with lm-eval's ``acc`` (the
log-likelihood argmax over the choices, no length normalisation), and their mean. ``zero_shot``
returns that mean as ``mean_acc``, with ``acc_norm`` per task too where the task defines it.

lm-eval is an optional dependency (``pip install -e .[zeroshot]``), imported only here and only
when zero-shot tasks are asked for.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path

from dsa.errors import UserError

PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
INSTALL = "pip install -e .[zeroshot]"


def parse_tasks(text: str) -> list[str]:
    """"boolq, rte" → ["boolq", "rte"]; "paper" → the papers' seven tasks. An empty item (``"boolq,,rte"``,
    ``"boolq,"``) is refused, not dropped."""
    names = [t.strip() for t in text.split(",")]
    if not any(names):
        raise UserError("--tasks is empty: give comma-separated lm-eval task names, e.g. boolq,rte")
    if not all(names):
        raise UserError(f"--tasks {text!r} has an empty item: give comma-separated lm-eval task names")
    out: list[str] = []
    for name in names:
        for task in (PAPER_TASKS if name == "paper" else (name,)):
            if task not in out:
                out.append(task)
    return out


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise UserError(f"zero-shot evaluation needs lm-eval, which is not installed ({exc.name or exc}): "
                        f"{INSTALL}") from None
    return lm_eval, HFLM, TaskManager


def _paths(include_path) -> list[Path]:
    """A folder, a comma-separated string of folders or a list of folders → paths."""
    if include_path is None:
        return []
    items = include_path if isinstance(include_path, (list, tuple)) else str(include_path).split(",")
    return [Path(str(p).strip()).expanduser() for p in items if str(p).strip()]


def task_manager(tasks: list[str], include_path: str | Path | list | None = None):
    """An lm-eval TaskManager that knows every name in ``tasks``; UserError naming the unknown ones.

    Call it before loading or pruning a model, so that a typo fails in seconds. When all the tasks
    are defined under ``include_path`` (folders of task YAMLs), lm-eval's ~15k built-in task
    configs are not indexed (that takes seconds)."""
    _, _, TaskManager = _lm_eval()
    paths = _paths(include_path)
    if paths:
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing:
            raise UserError(f"--tasks-path folder not found: {', '.join(missing)}")
        local = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = TaskManager(include_path=[str(p) for p in paths] or None)
    unknown = [t for t in tasks if t not in manager.all_tasks and not Path(t).is_file()]
    if unknown:
        raise UserError(f"unknown lm-eval task{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                        f"(list the names with `lm-eval ls tasks`; a task of your own: --tasks-path DIR "
                        f"holding its YAML)")
    return manager


def _metric(row: dict, name: str) -> float | None:
    value = row.get(f"{name},none")
    return None if value is None or value == "N/A" else float(value)


def zero_shot(model, tokenizer, tasks: list[str], batch_size: int = 1, limit: int | float | None = None,
              include_path: str | Path | list | None = None, num_fewshot: int | None = 0, seed: int = 0,
              manager=None, progress: bool = True) -> dict:
    """Zero-shot accuracy of ``model`` (a loaded transformers causal LM) on lm-eval ``tasks``.

    Returns ``{"tasks": {name: {"acc", "acc_stderr", "acc_norm"?, "acc_norm_stderr"?, "n"}},
    "mean_acc": mean of acc over the tasks, "metric": "acc", "num_fewshot", "limit", "lm_eval"}``.
    ``limit`` caps the examples per task (an int, or a fraction < 1), for quick runs only.
    Tasks are lm-eval names (groups and tags expand to their tasks), or YAML files / tasks
    defined under ``include_path``; ``manager``: a :func:`task_manager` built beforehand.
    """
    lm_eval, HFLM, _ = _lm_eval()
    manager = manager or task_manager(tasks, include_path)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-run warnings would flood the output
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    extra = {}
    if tokenizer.bos_token_id is None and tokenizer.eos_token_id is None:  # lm-eval needs a prefix token
        extra["prefix_token_id"] = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **extra)
    if not progress:  # the request-level progress bars (lm-eval has no switch for them)
        for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
            setattr(lm, name, functools.partial(getattr(lm, name), disable_tqdm=True))
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                      task_manager=manager, log_samples=False, random_seed=seed,
                                      numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    except (ConnectionError, OSError) as exc:  # a hub dataset while offline, a missing data file
        raise UserError(f"zero-shot task data could not be loaded ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}); lm-eval's tasks download their datasets "
                        f"from the Hugging Face Hub (offline: fill the HF datasets cache first, or define "
                        f"local tasks under --tasks-path)") from None
    finally:
        model.train(was_training)
    results = {}
    for name, counts in out["n-samples"].items():  # leaf tasks only (groups and tags are expanded)
        row = out["results"][name]
        acc = _metric(row, "acc")
        if acc is None:
            raise UserError(f"lm-eval task {name} reports no acc metric (not a multiple-choice task?)")
        entry = {"acc": acc, "acc_stderr": _metric(row, "acc_stderr")}
        if _metric(row, "acc_norm") is not None:
            entry.update(acc_norm=_metric(row, "acc_norm"), acc_norm_stderr=_metric(row, "acc_norm_stderr"))
        entry["n"] = int(counts["effective"])
        results[name] = entry
    mean = sum(r["acc"] for r in results.values()) / len(results)
    return {"tasks": results, "mean_acc": mean if math.isfinite(mean) else None, "metric": "acc",
            "num_fewshot": num_fewshot or 0, "limit": limit, "lm_eval": lm_eval.__version__,
            "seconds": round(time.perf_counter() - start, 2)}
