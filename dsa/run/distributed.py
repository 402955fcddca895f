"""Where the search's candidates are evaluated: in this process, or on Ray actors (``dsa search
--workers N`` on a local Ray instance on loopback, or ``--ray-address ADDR`` on an existing cluster).

Both are an :class:`Evaluation`: ``task()`` gives what the search needs from the model (block scores,
parameter counts, baseline allocations, run info) and ``map(fn, allocations)`` scores allocations in
input order. Each :class:`EvaluatorActor` rebuilds the search's evaluator from the run's
:class:`~dsa.run.settings.EvaluatorSpec` through :func:`dsa.run.llm.build_evaluator`, the same code path as a
single-process search. The driver loads no model. Fitness is a pure function of the allocation, so the
hall of fame is the same as a single-process run's (bit-identical where the workers compute like the
single process: same device type, dtype and thread count; CPU actors run single-threaded).

Ray's own fault tolerance keeps a search going when a worker dies: actors are created with
``max_restarts`` and ``max_task_retries``, so a dead actor is restarted (rebuilding its evaluator) and
its allocation re-run; an allocation that kills its worker more often raises :class:`WorkerError`.
Several actors may share a GPU (``--workers`` larger than the number of GPUs: fractional ``num_gpus``).

Ray is an optional extra (``pip install -e .[ray]``): nothing here imports it until a pool is opened.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from dsa.errors import UserError
from dsa.run.settings import EvaluatorSpec

INSTALL_HINT = "pip install -e .[ray]"
FLAGS = "--workers/--ray-address"
# On Linux, Ray replaces 127.0.0.1 by the machine's routable address; its single-node mode (meant for
# macOS/Windows, read when Ray is imported) keeps a local instance's services and workers on loopback.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PROBE_SECONDS = 5.0


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


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """UserError unless something listens at a ``host:port`` (or ``ray://host:port``) Ray address
    (``ray.init`` waits for good on a dead address). ``auto`` is left to Ray."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not host:port (e.g. head-node:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); is the Ray "
                        f"head node running?") from None


class WorkerError(RuntimeError):
    """An allocation whose evaluation killed its worker more often than the retries allow."""


def plain(sparsities: Any) -> list[float]:
    """An allocation as a plain list of Python floats (exact for float64 tensors)."""
    if hasattr(sparsities, "flatten"):
        sparsities = sparsities.flatten().tolist()
    return [float(v) for v in sparsities]


class EvaluatorActor:
    """One worker: builds the evaluator from the run's spec once (model, calibration statistics,
    scores and ranks), then scores allocations. A bad spec (missing model …) does not kill the actor:
    every method then raises the same :class:`UserError`, which the driver reports in one line."""

    def __init__(self, spec: EvaluatorSpec, cwd: str | None = None):
        if cwd and Path(cwd).is_dir():
            os.chdir(cwd)
        import transformers
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        from dsa.run.llm import build_evaluator
        self.error: str | None = None
        self.evaluator, self.info = None, {}
        try:
            self.evaluator, self.info = build_evaluator(spec)
        except UserError as exc:
            self.error = str(exc)

    def _check(self) -> None:
        if self.error is not None:
            raise UserError(self.error)

    def ready(self) -> int:
        """The worker's process id, once its evaluator is built."""
        self._check()
        return os.getpid()

    def setup(self, target: float, baselines: tuple[str, ...]) -> dict:
        """What the driver needs: block scores and counts, the baselines' candidate allocations, ``info``."""
        from dsa.run.allocations import baseline_candidates
        self._check()
        return {"blocks": self.evaluator.blocks.summary(), "info": self.info,
                "candidates": baseline_candidates(baselines, self.evaluator.blocks, target)}

    def evaluate(self, sparsities: list[float], windows: int | None = None, split: str = "search",
                 per_window: bool = False):
        """The fitness of one allocation (on the first ``windows`` windows of ``split``; ``per_window``: each
        window's log-perplexity, as a list)."""
        self._check()
        return self.evaluator(sparsities, windows=windows, split=split, per_window=per_window)


class LocalEvaluation:
    """The search's evaluator in this process; ``map`` is the builtin. ``built``: an (evaluator, info) of
    :func:`dsa.run.llm.build_evaluator` already in memory (``dsa compare`` runs several searches on it);
    None: each :meth:`task` builds its own."""

    map = staticmethod(map)

    def __init__(self, built: tuple | None = None):
        self.built = built

    def task(self, spec: EvaluatorSpec, baselines: tuple[str, ...]):
        from dsa.run.llm import llm_task
        return llm_task(spec, baselines, self.built)

    def close(self) -> None:
        pass


class RayEvaluation:
    """Ray actors holding the evaluator, as a ``ray.util.ActorPool``.

    ``workers``: the number of actors (default with ``address``: one per GPU of the cluster, else one per
    CPU). Without ``address`` a local Ray instance with ``workers`` CPUs is started, on loopback when Ray
    is first imported here (:data:`LOOPBACK_ENV`). If Ray is already initialised in this process, that
    instance is used and left running by :meth:`close`."""

    def __init__(self, spec: EvaluatorSpec, workers: int | None = None, address: str | None = None, *,
                 max_retries: int = 3, actor_cls: type = EvaluatorActor):
        if workers is None and address is None:
            raise ValueError("RayEvaluation needs workers or an address")
        ray = import_ray(local=address is None)
        self.spec = spec.portable()
        self.actors: list = []
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            if address is not None:
                probe(address)
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
            self.use_gpu = gpus > 0 and spec.model.device != "cpu"
            n = workers if workers is not None else (gpus if self.use_gpu else cpus)
            if self.use_gpu:  # more workers than GPUs: they share the cards
                options = {"num_gpus": 1 if n <= gpus else gpus / n}
            else:
                if not 1 <= n <= cpus:
                    raise UserError(f"{n} workers asked for, but the Ray cluster has {cpus} CPUs")
                options = {"num_cpus": 1}
            actor = ray.remote(max_restarts=max_retries, max_task_retries=max_retries, **options)(actor_cls)
            self.actors = [actor.remote(self.spec, os.getcwd()) for _ in range(n)]
            self.pids = self._get([a.ready.remote() for a in self.actors])
            self.pool = ray.util.ActorPool(self.actors)
        except BaseException:
            self.close()
            raise

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

    def map(self, fn: Callable | None, outputs: Iterable) -> list:
        """Fitness of each allocation (or its per-window list), in input order. The actors hold the fitness: ``fn`` only passes its
        keyword arguments on (``functools.partial(fitness, windows=n, split=…)``)."""
        import ray
        items = [plain(o) for o in outputs]
        kwargs = getattr(fn, "keywords", None) or {}
        try:
            return [v if isinstance(v, list) else float(v)
                    for v in self.pool.map(lambda actor, item: actor.evaluate.remote(item, **kwargs), items)]
        except ray.exceptions.RayActorError as exc:
            raise WorkerError(f"an allocation killed its worker more often than the {FLAGS} retries allow: "
                              f"{' '.join(str(exc).split())[:300]}") from None
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UserError):
                raise UserError(str(exc.cause)) from None
            raise

    def task(self, spec: EvaluatorSpec, baselines: tuple[str, ...]):
        """(allocator, fitness, info, baseline candidates) like :func:`dsa.run.llm.llm_task`, with the
        evaluator on the workers."""
        from dsa.run.llm import allocation_task, model_name
        setup = self._get(self.actors[0].setup.remote(spec.prune.sparsity, tuple(baselines)))
        info = {**setup["info"], "model": model_name(spec.model),  # its label, as a single process records it
                "workers": len(self.actors), "worker": "gpu" if self.use_gpu else "cpu"}
        fitness = lambda sparsities: self.map(None, [sparsities])[0]  # noqa: E731 (baselines, one at a time)
        return allocation_task(spec, setup["blocks"], fitness, info, setup["candidates"])

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

    def __enter__(self) -> "RayEvaluation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def evaluation(task: str, spec: EvaluatorSpec, workers: int | None = None, address: str | None = None):
    """The search's :class:`LocalEvaluation`, or with ``workers``/``address`` a :class:`RayEvaluation`
    closed on exit."""
    if workers is None and address is None:
        yield LocalEvaluation()
        return
    import_ray(local=address is None)
    if task != "llm":
        raise UserError(f"{FLAGS} distribute the llm task's evaluations; --task {task} runs in this process")
    with RayEvaluation(spec, workers, address) as pool:
        yield pool
