"""Multi-task fitness: one allocation function searched for several (model, pruner, sparsity) tasks at
once, so that what is found transfers by construction (``dsa search --model A,B --method wanda,sparsegpt
--sparsity 0.6,0.7,0.8``).

A tree is decoded on every task's scores (its own allocator: that model's blocks, that pruner's scores,
that target); its fitness is the mean over tasks of ``log(f_t(allocation_t) / f_t(uniform_t))``, with
``f_t`` the task's fitness (validation perplexity or KL) — 0 is uniform on average, negative is better.
Each model is loaded once; each (model, pruner) has one evaluator, shared by its sparsities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from evaluators.models.loading import load_model
from gp import Problem, rounded_key
from primitives import LayerAllocator, build_pset

from dsa.run.problem import formula_display, has_reduction
from dsa.run.settings import EvaluatorSpec


@dataclass
class Task:
    """One (model, pruner, sparsity): its allocator and fitness, and the fitness of uniform (per windows)."""

    name: str
    allocator: LayerAllocator
    fitness: Callable
    uniform: dict = field(default_factory=dict)  # (split, windows) → fitness of the uniform allocation

    def ratio(self, sparsities, windows: int | None, split: str) -> float:
        if (split, windows) not in self.uniform:
            self.uniform[(split, windows)] = self.fitness(self.allocator.ctx.uniform, windows=windows, split=split)
        value = self.fitness(sparsities, windows=windows, split=split)
        base = self.uniform[(split, windows)]
        return math.log(value / base) if 0 < value < math.inf and 0 < base < math.inf else math.inf


class MultiTaskFitness:
    """``fitness(allocations, windows=None, split="search")``: the mean log-ratio to uniform over tasks."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks

    def __call__(self, allocations, windows: int | None = None, split: str = "search") -> float:
        ratios = [t.ratio(a, windows, split) for t, a in zip(self.tasks, allocations)]
        return sum(ratios) / len(ratios)


def task_name(spec: EvaluatorSpec) -> str:
    """``model|method|sparsity``, the model by its file or folder name."""
    model = Path(spec.model.model).name if spec.model.model else "SmolLM2-135M"
    return f"{model}|{spec.prune.method}|{spec.prune.sparsity:g}"


def multitask_problem(tasks: list[Task]) -> Problem:
    """A GP problem whose output is one allocation per task; candidates invalid or uniform on any task
    get the worst fitness."""
    pset = tasks[0].allocator.pset

    def decode(tree):
        out = []
        for task in tasks:
            result = task.allocator(tree)
            if not result.valid or result.uniform:
                return None
            out.append(result.sparsities)
        return out

    return Problem(pset=pset, decode=decode, fitness=MultiTaskFitness(tasks), valid=has_reduction,
                   output_key=lambda outs: tuple(rounded_key(o) for o in (outs.values() if isinstance(outs, dict)
                                                                         else outs)),  # decoded, or described
                   describe=lambda outs: {t.name: [float(v) for v in o] for t, o in zip(tasks, outs)},
                   display=lambda tree: formula_display(tree, pset))


def build_tasks(specs: list[EvaluatorSpec]) -> tuple[list[Task], dict]:
    """Load each model once and build one evaluator per (model, pruner); one task per spec."""
    from dsa.run.llm import build_evaluator
    pset = build_pset()
    loaded: dict = {}
    evaluators: dict = {}
    tasks, infos = [], {}
    for spec in specs:
        model_key = (spec.model.model, spec.model.dtype, spec.model.device)
        if model_key not in loaded:
            loaded[model_key] = load_model(*model_key)
        key = (model_key, spec.prune.method)
        if key not in evaluators:
            evaluators[key] = build_evaluator(spec, loaded=loaded[model_key])
        evaluator, info = evaluators[key]
        blocks = evaluator.blocks
        allocator = LayerAllocator(blocks.scores, target=spec.prune.sparsity, weights=blocks.counts, pset=pset)
        tasks.append(Task(task_name(spec), allocator, evaluator))
        infos[task_name(spec)] = info
    return tasks, infos


def first_allocation(output) -> list[float] | None:
    """The first task's allocation of a multi-task row's output (for plots), or the output itself."""
    if isinstance(output, dict):
        return next(iter(output.values()), None)
    return output

