"""Worker processes for the costly pure parts of a run: reading people, building request bodies.

One process reads the input and keeps the store; on a machine with more cores, the work that
needs neither runs beside it. Raw identifiers go to a worker in memory only and hashes come
back; a worker never writes anywhere. It reads the store only read-only, on a SQLite
connection of its own: a run's plan from its work file (a batch's hashes, `store.PlanRows`),
and a composed plan's long look-ups (`store.sqlite.FileReader`). A small run never starts a
worker: its work is done inline, at once.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from target_tiktok_audiences.errors import TargetError

T = TypeVar("T")


class WorkerDiedError(TargetError):
    """A worker process ended without finishing its task: killed, most often for memory."""

    def __init__(self) -> None:
        super().__init__(
            "a worker process died in the middle of the run (killed by the system: out of "
            "memory?): nothing unconfirmed was recorded and no STATE was written "
            "for it; give the run more memory (or lower `batch_size`) and run it again"
        )


def _relay(source: Future[T], dest: Future[T]) -> None:
    """Pass a pool task's outcome on, a broken pool as WorkerDiedError."""
    if source.cancelled():
        dest.cancel()
        return
    exc = source.exception()
    if isinstance(exc, BrokenProcessPool):
        dest.set_exception(WorkerDiedError())
    elif exc is not None:
        dest.set_exception(exc)
    else:
        dest.set_result(source.result())


def _without_collector(fn: Callable[..., T], *args: Any) -> T:
    """Run a task with the cycle collector off.

    A task makes no cycles, yet allocates enough short-lived objects to set the collector
    walking them again and again.
    """
    gc.disable()
    try:
        return fn(*args)
    finally:
        gc.enable()


class Workers:
    """A lazily started pool of worker processes, or inline work where it is not worth one."""

    def __init__(self, count: int | None = None) -> None:
        self.count = count if count is not None else min(os.cpu_count() or 1, 4)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # forkserver: workers never inherit a lock held by another thread of this process.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(
                ["target_tiktok_audiences.people", "target_tiktok_audiences.tiktok.mapping"]
            )
            self._executor = ProcessPoolExecutor(self.count, mp_context=context)
        return self._executor

    def submit(self, fn: Callable[..., T], /, *args: Any, parallel: bool) -> Future[T]:
        """Run `fn(*args)` in a worker if `parallel` and there is more than one core.

        Otherwise run it here and now: the future returned is already done. A worker that
        dies (its pool is then broken) fails this task and every later one with
        WorkerDiedError, a one-line error rather than the pool's traceback.
        """
        if parallel and self.count > 1:
            try:
                task = self._pool().submit(_without_collector, fn, *args)
            except BrokenProcessPool:
                raise WorkerDiedError from None
            relayed: Future[T] = Future()
            task.add_done_callback(lambda done: _relay(done, relayed))
            return relayed
        done: Future[T] = Future()
        done.set_result(fn(*args))
        return done

    def close(self) -> None:
        """Stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
