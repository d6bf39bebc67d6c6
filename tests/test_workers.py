"""The worker pool: a worker that dies is one clear error, for its task and every later one."""

from __future__ import annotations

import os
import signal

import pytest

from target_tiktok_audiences.workers import WorkerDiedError, Workers


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail() -> None:
    msg = "a task's own error"
    raise ValueError(msg)


def test_a_killed_worker_fails_its_task_and_later_ones_with_one_line():
    workers = Workers(2)
    try:
        with pytest.raises(WorkerDiedError, match="out of memory") as info:
            workers.submit(die, parallel=True).result(timeout=60)
        assert "\n" not in str(info.value)
        with pytest.raises(WorkerDiedError):
            workers.submit(abs, -1, parallel=True).result(timeout=60)
    finally:
        workers.close()


def test_a_tasks_own_error_and_result_come_back_as_they_are():
    workers = Workers(2)
    try:
        assert workers.submit(abs, -3, parallel=True).result(timeout=60) == 3
        with pytest.raises(ValueError, match="own error"):
            workers.submit(fail, parallel=True).result(timeout=60)
    finally:
        workers.close()
