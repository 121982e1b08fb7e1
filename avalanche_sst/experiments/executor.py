"""Where a sweep's runs execute: one after another in this process, or as Ray tasks.

A sweep is many independent runs (method x seed [x cell]); each is one call
``fn(item, shared, run)`` that writes its own folder and returns its result.
:func:`make_executor` picks the executor:

* ``workers=1`` (and no ``address``): :class:`LocalExecutor`, in this process,
  without importing Ray (no start-up cost, plain tracebacks, debuggers work);
* ``workers=N``: :class:`RayExecutor` on a local Ray instance that runs N at once;
* ``address="host:port"`` (or ``"auto"``): joins an existing Ray cluster, whose
  machines must see the output folder at the same path (a shared filesystem).

Both give the same numbers: each run sets the same torch thread count
(``threads_per_run``) before it starts, every run seeds its own RNG, and the
results come back in the order of ``items`` whatever order the runs finish in.
A Ray worker that dies (killed, out of memory) has its run retried up to
``max_retries`` times; the run then resumes after its last checkpointed step.
Progress and result lines reach the driver as events (see
:mod:`avalanche_sst.experiments.progress`) through a small Ray actor.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

# No torch, Avalanche or Ray at import: the Ray actor that collects progress events
# imports only this module, and a one-worker sweep never imports Ray.
RunFn = Callable[[Any, Any, "RunContext"], Any]
Report = Callable[[tuple], None]  # receives the events of avalanche_sst.experiments.progress


def _ignore(event) -> None:
    pass


@dataclass(frozen=True)
class RunContext:
    """What a run gets from its executor: its name and where to report to."""

    key: str
    report: Report = _ignore

    def log(self, line: str) -> None:
        """A result line, printed by the driver above the progress bars."""
        self.report(("log", line))

    def progress_plugin(self, n_steps: int):
        """The Avalanche plugin that reports this run's phase, epoch and iterations."""
        from avalanche_sst.experiments.progress import ProgressPlugin

        return ProgressPlugin(self.report, self.key, n_steps)


def default_workers(threads_per_run: int = 1) -> int:
    """One run per core this process may use (``threads_per_run`` cores each), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads_per_run))


def _check_positive_int(value, name: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}; {fix}")
    return value


def execute_run(fn: RunFn, item, shared, key: str, report: Report, threads: int):
    """One run, the same way in every executor: fix the thread count, then report start and end."""
    import torch

    torch.set_num_threads(threads)
    report(("start", key))
    try:
        return fn(item, shared, RunContext(key, report))
    finally:
        report(("end", key))


class LocalExecutor:
    """Runs one after another in this process; the first failure stops the sweep."""

    workers = 1

    def __init__(self, threads_per_run: int = 1):
        self.threads_per_run = _check_positive_int(threads_per_run, "threads_per_run", "pass 1 or more")

    def map(self, fn: RunFn, items: Sequence, keys: Sequence[str], shared=None,
            report: Report = _ignore, order: Optional[Sequence[int]] = None) -> list:
        """``fn(item, shared, RunContext)`` for each item, in the order of ``items`` (``order`` is
        only a hint for executors that run several at once)."""
        if len(items) != len(keys):
            raise ValueError(f"keys must name every item: {len(keys)} keys for {len(items)} items")
        return [execute_run(fn, item, shared, key, report, self.threads_per_run)
                for item, key in zip(items, keys)]


class _Inbox:
    """The driver's mailbox for the workers' progress events (becomes a Ray actor)."""

    def __init__(self):
        self.events: list = []

    def put(self, event) -> None:
        self.events.append(event)

    def drain(self) -> list:
        events, self.events = self.events, []
        return events


def _ray_run(fn: RunFn, item, shared, key: str, inbox, threads: int):
    """A Ray task: one run, its events sent to ``inbox`` without waiting for each."""
    import ray

    try:
        return execute_run(fn, item, shared, key, lambda event: inbox.put.remote(event), threads)
    finally:
        # Calls from one caller reach an actor in order: waiting on the last one
        # means every earlier event has arrived before the driver sees the result.
        ray.get(inbox.put.remote(("flush", key)))


class RayExecutor:
    """Runs as Ray tasks, ``workers`` at a time on a local instance or on the cluster at ``address``.

    ``gpus_per_run`` (e.g. 0.25: four runs share a GPU) and ``threads_per_run`` are the
    resources each task asks for. A local instance started here is shut down after
    :meth:`map`; one already running (``ray.init`` by the caller) is used as it is.
    """

    def __init__(self, workers: Optional[int] = None, address: Optional[str] = None,
                 gpus_per_run: float = 0.0, threads_per_run: int = 1, max_retries: int = 2,
                 poll_seconds: float = 0.25):
        self.threads_per_run = _check_positive_int(threads_per_run, "threads_per_run", "pass 1 or more")
        self.workers = default_workers(threads_per_run) if workers is None else _check_positive_int(
            workers, "workers", "pass 1 to run in this process, or more to run that many at once")
        if isinstance(gpus_per_run, bool) or not isinstance(gpus_per_run, (int, float)):
            raise TypeError(f"gpus_per_run must be a number, got {type(gpus_per_run).__name__}")
        if gpus_per_run < 0:
            raise ValueError(f"gpus_per_run must be >= 0 (e.g. 0.25 to share a GPU by 4), got {gpus_per_run}")
        if address is None and gpus_per_run > 0 and not _local_gpus():
            raise ValueError(f"gpus_per_run={gpus_per_run} but this machine has no GPU that torch can see; "
                             "pass gpus_per_run=0, or address= of a cluster with GPUs")
        self.address, self.gpus_per_run = address, float(gpus_per_run)
        self.max_retries, self.poll_seconds = int(max_retries), float(poll_seconds)

    def _start(self, ray) -> bool:
        if ray.is_initialized():
            return False
        # Ray reports usage statistics over the network unless told not to; a sweep never should.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        if self.address is not None:
            ray.init(address=self.address, **options)
            return True
        # Local workers import this package and whatever the caller could import (a
        # checkout run without installing it, a test module): hand them our sys.path.
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        try:
            # "local": a new instance of our own size, even where `ray start` left one running
            ray.init(address="local", num_cpus=self.workers * self.threads_per_run, **options)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        return True

    def map(self, fn: RunFn, items: Sequence, keys: Sequence[str], shared=None,
            report: Report = _ignore, order: Optional[Sequence[int]] = None) -> list:
        """``fn(item, shared, RunContext)`` for each item as Ray tasks, submitted in ``order``
        (indices into ``items``; longest first shortens the sweep), results in the order of ``items``."""
        import ray

        if len(items) != len(keys):
            raise ValueError(f"keys must name every item: {len(keys)} keys for {len(items)} items")
        order = list(range(len(items))) if order is None else list(order)
        if sorted(order) != list(range(len(items))):
            raise ValueError(f"order must list every index of items once, got {order}")
        started_here = self._start(ray)
        try:
            inbox = ray.remote(num_cpus=0)(_Inbox).remote()
            task = ray.remote(num_cpus=self.threads_per_run, num_gpus=self.gpus_per_run,
                              max_retries=self.max_retries, retry_exceptions=False)(_ray_run)
            shared_ref = ray.put(shared)  # stored once, not once per run
            submitted = {i: task.remote(fn, items[i], shared_ref, keys[i], inbox, self.threads_per_run)
                         for i in order}
            refs = [submitted[i] for i in range(len(items))]

            def forward() -> None:
                for event in ray.get(inbox.drain.remote()):
                    if event[0] != "flush":
                        report(event)

            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_seconds)
                forward()
                for ref in ready:
                    try:
                        ray.get(ref)
                    except BaseException:
                        for other in pending:  # fail fast, as in-process: finished steps are checkpointed
                            ray.cancel(other)
                        forward()
                        raise
            forward()
            return ray.get(refs)  # in the order of items, whatever order they finished in
        finally:
            if started_here:
                ray.shutdown()


def longest_first(preset, methods: Sequence[str]) -> list[int]:
    """Indices of ``methods`` (one run each) from the costliest to the cheapest, by the paper
    tables' CPU-time model; the given order where that model does not know a method.

    Several workers finish a sweep sooner when its long runs (the SST framework, Cumulative)
    start first instead of last.
    """
    try:
        from avalanche_sst.experiments.paper.cost import _method_units

        total = float(sum(preset.ratios))
        parts = [r / total * (1 - preset.validation_fraction) for r in preset.ratios]
        valid = [r / total * preset.validation_fraction for r in preset.ratios]
        cost = [_method_units(m, preset, parts, valid, 0.0) for m in methods]
    except Exception:  # an estimate only: never let it stop a sweep
        return list(range(len(methods)))
    return sorted(range(len(methods)), key=lambda i: -cost[i])  # stable: ties keep their order


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def make_executor(workers: Optional[int] = None, address: Optional[str] = None, gpus_per_run: float = 0.0,
                  threads_per_run: int = 1):
    """:class:`LocalExecutor` for ``workers=1`` without ``address``, else :class:`RayExecutor`.

    ``workers=None`` means one run per core (:func:`default_workers`).
    """
    threads_per_run = _check_positive_int(threads_per_run, "threads_per_run", "pass 1 or more")
    if workers is None:
        workers = default_workers(threads_per_run)
    workers = _check_positive_int(workers, "workers",
                                  "pass 1 to run in this process, or more to run that many at once")
    if workers == 1 and address is None:
        return LocalExecutor(threads_per_run)
    return RayExecutor(workers, address, gpus_per_run, threads_per_run)


def add_executor_arguments(parser) -> None:
    """``--workers``, ``--address``, ``--gpus-per-run``, ``--threads-per-run`` for a sweep command."""
    group = parser.add_argument_group("where the runs execute")
    group.add_argument("--workers", type=int, default=None,
                       help="runs at once (default: one per core); 1 runs them in this process without Ray")
    group.add_argument("--address", default=None,
                       help="join this Ray cluster ('auto', or host:port of its head) instead of starting one; "
                            "its machines must see the output folder at the same path")
    group.add_argument("--gpus-per-run", type=float, default=0.0,
                       help="GPUs each run asks Ray for, e.g. 0.25: four runs share a GPU (default 0)")
    group.add_argument("--threads-per-run", type=int, default=None,
                       help="torch threads per run (default: the preset's num_threads, else 1); "
                            "the same number gives the same table with any --workers")


def executor_options(args) -> dict:
    """The keyword arguments of ``run_sweep`` that :func:`add_executor_arguments` parsed."""
    return dict(workers=args.workers, address=args.address, gpus_per_run=args.gpus_per_run,
                threads_per_run=args.threads_per_run)


@contextmanager
def ray_session(workers: Optional[int] = None, address: Optional[str] = None, gpus_per_run: float = 0.0,
                threads_per_run: Optional[int] = None):
    """Keeps one Ray instance for several sweeps (``with ray_session(...): run_sweep(...); ...``).

    Without it each :meth:`RayExecutor.map` starts and stops its own, a few seconds each.
    Nothing happens when the arguments select :class:`LocalExecutor`.
    """
    executor = make_executor(workers, address, gpus_per_run, threads_per_run or 1)
    if not isinstance(executor, RayExecutor):
        yield executor
        return
    import ray

    started_here = executor._start(ray)
    try:
        yield executor
    finally:
        if started_here:
            ray.shutdown()
