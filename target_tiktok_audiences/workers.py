"""Worker processes for the costly pure parts of a run: reading people, building request bodies.

One process reads the input and keeps the store; on a machine with more cores, the work that
needs neither runs beside it. Raw identifiers go to a worker in memory only and hashes come
back; a worker never writes anywhere, and reads only a run's plan from its work file (a
batch's hashes, `store.PlanRows`). A small run never starts a worker: its work is done
inline, at once.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


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
                ["target_tiktok_audiences.people", "target_tiktok_audiences.planning"]
            )
            self._executor = ProcessPoolExecutor(self.count, mp_context=context)
        return self._executor

    def submit(self, fn: Callable[..., T], /, *args: Any, parallel: bool) -> Future[T]:
        """Run `fn(*args)` in a worker if `parallel` and there is more than one core.

        Otherwise run it here and now: the future returned is already done.
        """
        if parallel and self.count > 1:
            return self._pool().submit(_without_collector, fn, *args)
        done: Future[T] = Future()
        done.set_result(fn(*args))
        return done

    def close(self) -> None:
        """Stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
