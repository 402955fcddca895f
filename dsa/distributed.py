"""Fitness evaluation on Ray actors: ``dsa search --workers N`` (a local Ray instance on loopback) or
``--ray-address ADDR`` (an existing cluster).

Each :class:`EvaluatorActor` rebuilds the search's :class:`~evaluators.fitness.PruningEvaluator` from a
small picklable :class:`Recipe` (the CLI arguments that define it) through
:func:`dsa.llm.build_evaluator`, the same code path as a single-process search, so it loads the model
and computes the calibration statistics, scores and ranks once. One actor per GPU (``num_gpus=1``)
when the cluster has GPUs, else one per CPU (``num_cpus=1``).

The driver (the ``dsa search`` process) loads no model: it asks one actor for the block scores and
parameter counts that the :class:`~primitives.LayerAllocator` reads, runs the GP and the allocation
functions itself, and sends each candidate's allocation (a plain list of floats) to an idle actor
through :class:`RayMap`, the engine's pluggable map. Results come back in input order, and fitness is
a pure function of the allocation, so the hall of fame is the same as a single-process run's with the
same seed (bit-identical where the workers compute like the single process: same device type, dtype and
thread count; CPU actors run single-threaded). An actor that dies mid-evaluation is replaced and its
allocation re-queued.

Ray is an optional extra (``pip install -e .[ray]``): nothing here imports it until a pool is opened.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections import deque
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import UserError

INSTALL_HINT = "pip install -e .[ray]"
FLAGS = "--workers/--ray-address"
# On Linux, Ray replaces 127.0.0.1 by the machine's routable address; its single-node mode (meant for
# macOS/Windows, read when Ray is imported) keeps a local instance's services and workers on loopback.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(local: bool = False):
    """The ``ray`` module, or a one-line :class:`UserError` naming the extra to install. ``local``: a
    local instance is to be started; if Ray is not imported yet, keep it on loopback (unless the
    environment already says otherwise)."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise UserError(f"{FLAGS} need Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def _absolute(value: str | None) -> str | None:
    """A path that exists here, made absolute (workers may start elsewhere); names are kept as given."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else str(value)


@dataclass(frozen=True)
class Recipe:
    """What a worker needs to rebuild the search's evaluator: the CLI arguments behind
    :func:`dsa.llm.build_evaluator`, picklable and small. Sizes (``seqlen``, ``nsamples``,
    ``calib_seqlen``) are the driver's, already filled in, so every worker uses the same ones.

    Local paths are made absolute and ``cwd`` is the driver's working directory (a worker changes into
    it when it exists there); on a remote cluster, model and data paths must exist on the worker nodes,
    and the workers need this package installed."""

    model: str | None
    dtype: str
    device: str
    data: str
    calib: str
    data_dir: str | None
    seqlen: int
    val_windows: int
    nsamples: int | None
    calib_seqlen: int | None
    batch_size: int
    method: str
    max_scores_per_layer: int | None
    seed: int
    low_fidelity_windows: int | None = None
    masking: str = "inplace"
    cwd: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Recipe":
        values = {f.name: getattr(args, f.name, None if f.default is MISSING else f.default) for f in fields(cls)}
        for key in ("model", "data", "calib", "data_dir"):
            values[key] = _absolute(values[key])
        if str(values["device"]).startswith("cuda:"):  # Ray shows each GPU actor its own GPU as cuda:0
            values["device"] = "cuda"
        values["cwd"] = os.getcwd()
        return cls(**values)

    def args(self) -> argparse.Namespace:
        values = asdict(self)
        values.pop("cwd")
        return argparse.Namespace(**values)


class EvaluatorActor:
    """One worker: builds the evaluator from a :class:`Recipe` once (model, calibration statistics,
    scores and ranks), then scores allocations. :class:`RayMap` runs it as a Ray actor.

    A bad recipe (missing model, unknown method …) does not kill the actor: every method then raises
    the same :class:`UserError`, which the driver reports as the CLI's one-line error."""

    def __init__(self, recipe: Recipe):
        if recipe.cwd and Path(recipe.cwd).is_dir():
            os.chdir(recipe.cwd)
        import transformers
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        from .llm import build_evaluator
        self.error: str | None = None
        self.evaluator, self.info = None, {}
        try:
            self.evaluator, self.info = build_evaluator(recipe.args())
        except UserError as exc:
            self.error = str(exc)

    def _check(self) -> None:
        if self.error is not None:
            raise UserError(self.error)

    def ready(self) -> int:
        """The worker's process id, once its evaluator is built."""
        self._check()
        return os.getpid()

    def setup(self) -> dict:
        """What the driver's allocator reads: block scores, parameter counts, and the run's ``info``."""
        self._check()
        return {"block_scores": self.evaluator.block_scores(), "param_counts": self.evaluator.param_counts(),
                "info": self.info}

    def evaluate(self, sparsities: list[float]) -> float:
        """The fitness of one allocation: validation perplexity of the pruned model."""
        self._check()
        return self.evaluator(sparsities)


@dataclass
class ScoreSummary:
    """The two things the driver's :class:`~primitives.LayerAllocator` needs from an evaluator."""

    scores: list
    counts: list[int]

    def block_scores(self) -> list:
        return self.scores

    def param_counts(self) -> list[int]:
        return self.counts


class RemoteFitness:
    """The search's fitness callable when the workers hold the evaluator: ``fitness(sparsities)``
    scores one allocation on a worker (used for the baselines). The engine's batches do not go
    through it: they go to :class:`RayMap` as a whole."""

    def __init__(self, pool: "RayMap"):
        self.pool = pool

    def __call__(self, sparsities) -> float:
        return self.pool(self, [sparsities])[0]


class WorkerError(RuntimeError):
    """An allocation whose evaluation killed its worker more than ``max_retries`` times."""


def plain(sparsities: Any) -> list[float]:
    """An allocation as a plain list of Python floats (exact for float64 tensors)."""
    if hasattr(sparsities, "flatten"):
        sparsities = sparsities.flatten().tolist()
    return [float(v) for v in sparsities]


class RayMap:
    """The engine's map (``Search(..., map_fn=RayMap(...))``) on Ray actors holding the evaluator.

    ``pool(fn, outputs)`` sends each allocation to an idle actor and returns the fitness values in the
    order of ``outputs``. ``fn`` is ignored: the fitness is the one the :class:`Recipe` defines, held by
    the actors (the engine passes its problem's fitness, which for ``dsa search`` is this pool's
    :class:`RemoteFitness`). When an actor dies (``RayActorError``: process killed, node lost, out of
    memory) it is replaced by a new one built from the same recipe and its allocation is re-queued; an
    allocation that has killed ``max_retries + 1`` workers raises :class:`WorkerError`. A replacement that
    can never be scheduled (a GPU node gone for good) waits for resources like any Ray actor.

    ``workers``: the number of actors (default with ``address``: one per GPU of the cluster, else one per
    CPU). Without ``address`` a local Ray instance with ``workers`` CPUs is started, on loopback when
    Ray is first imported here (:data:`LOOPBACK_ENV`). If Ray is already initialised in this process,
    that instance is used and left running by :meth:`close`.
    """

    def __init__(self, recipe: Recipe, workers: int | None = None, address: str | None = None, *,
                 max_retries: int = 3, actor_cls: type = EvaluatorActor):
        if workers is None and address is None:
            raise ValueError("RayMap needs workers or an address")
        ray = import_ray(local=address is None)
        self.recipe, self.max_retries = recipe, max_retries
        self.replacements = 0
        self.actors: list = []
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            try:
                if address is not None:
                    ray.init(address=address, logging_level=logging.WARNING)
                else:
                    ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"cannot start Ray ({FLAGS}): {' '.join(str(exc).split())[:300]}") from None
        try:
            resources = ray.cluster_resources()
            gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
            self.use_gpu = gpus > 0 and recipe.device != "cpu"
            available = gpus if self.use_gpu else cpus
            n = workers if workers is not None else available
            if not 1 <= n <= available:
                what = "GPUs" if self.use_gpu else "CPUs"
                raise UserError(f"{n} workers asked for, but the Ray cluster has {available} {what}")
            options = {"num_gpus": 1} if self.use_gpu else {"num_cpus": 1}
            self._actor_class = ray.remote(**options)(actor_cls)
            self.actors = [self._actor_class.remote(recipe) for _ in range(n)]
            self.pids = self._get([a.ready.remote() for a in self.actors])
        except BaseException:
            self.close()
            raise

    # --- Ray plumbing --------------------------------------------------------------------------
    @staticmethod
    def _get(refs):
        """``ray.get``, with a worker's :class:`UserError` re-raised as the driver's one-line error."""
        import ray
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UserError):
                raise UserError(str(exc.cause)) from None
            raise

    def _replace(self, slot: int) -> None:
        import ray
        with contextlib.suppress(Exception):
            ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._actor_class.remote(self.recipe)
        self.replacements += 1

    # --- the map -------------------------------------------------------------------------------
    def __call__(self, fn: Callable | None, outputs: Iterable) -> list[float]:
        import ray
        from tqdm.std import tqdm
        bar = outputs if isinstance(outputs, tqdm) else None  # the engine's progress bar: advanced per result
        items = [plain(o) for o in (bar.iterable if bar is not None else outputs)]
        results: list[float | None] = [None] * len(items)
        queue, tries = deque(range(len(items))), [0] * len(items)
        idle, running = deque(range(len(self.actors))), {}
        try:
            while queue or running:
                while queue and idle:
                    slot, i = idle.popleft(), queue.popleft()
                    running[self.actors[slot].evaluate.remote(items[i])] = (i, slot)
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i, slot = running.pop(ref)
                    try:
                        results[i] = float(self._get(ref))
                    except ray.exceptions.RayActorError as exc:
                        tries[i] += 1
                        if tries[i] > self.max_retries:
                            raise WorkerError(f"allocation {i} killed {tries[i]} workers; last: "
                                              f"{' '.join(str(exc).split())[:300]}") from exc
                        self._replace(slot)
                        queue.appendleft(i)
                    else:
                        if bar is not None:
                            bar.update(1)
                    idle.append(slot)
        finally:
            if bar is not None:
                bar.close()
        return results

    def map(self, fn: Callable | None, outputs: Iterable) -> list[float]:
        return self(fn, outputs)

    def setup(self) -> dict:
        """Block scores, parameter counts and ``info`` from one worker."""
        return self._get(self.actors[0].setup.remote())

    def llm_task(self, args: argparse.Namespace):
        """(allocator, fitness, info) like :func:`dsa.llm.llm_task`, with the evaluator on the workers."""
        from .llm import allocation_task, model_name
        setup = self.setup()
        info = {**setup["info"], "model": model_name(args),  # as given (the recipe's path is absolute)
                "workers": len(self.actors), "worker": "gpu" if self.use_gpu else "cpu"}
        return allocation_task(args, ScoreSummary(setup["block_scores"], setup["param_counts"]),
                               RemoteFitness(self), info)

    # --- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the actors, and the Ray instance if this pool started it."""
        import ray
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = []
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()
        self.owns_ray = False

    def __enter__(self) -> "RayMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def worker_pool(args: argparse.Namespace):
    """The search's map: the builtin ``map`` (nothing imports Ray), or with ``--workers`` /
    ``--ray-address`` a :class:`RayMap` closed on exit."""
    workers, address = getattr(args, "workers", None), getattr(args, "ray_address", None)
    if workers is None and address is None:
        yield map
        return
    import_ray(local=address is None)
    from evaluators.scores import get_scorer
    get_scorer(args.method)  # an unknown method fails here, before Ray starts
    if args.task != "llm":
        raise UserError(f"{FLAGS} distribute the llm task's evaluations; --task {args.task} runs in this process")
    if args.low_fidelity_windows:
        raise UserError(f"--low-fidelity-windows keeps a running best that depends on evaluation order; "
                        f"it cannot be combined with {FLAGS}")
    with RayMap(Recipe.from_args(args), workers, address) as pool:
        yield pool
