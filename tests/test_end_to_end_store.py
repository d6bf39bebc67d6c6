"""End to end through the console script: a store that stops answering, a worker that dies.

The PostgreSQL tests use the suite's own server (tests/postgres.py); the backend process of a
run is found in pg_stat_activity and stopped with SIGSTOP (the tests run as root, the server as
another user), then always continued again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import _SCRIPT, TargetRunner, record, schema, state
from tests.test_end_to_end_postgres import PostgresTargetRunner
from tests.test_faults import _start, _wait_for_mappings, people
from tests.test_store_refusals import PASSWORD


def start(target: TargetRunner, **overrides) -> subprocess.Popen:
    """The console script reading stdin from a pipe the test writes at its own pace."""
    config = {**target.config, **overrides}
    config_path = target.tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    return subprocess.Popen(
        [_SCRIPT, "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=target.tmp_path,
    )


def lines(messages: list[dict]) -> str:
    return "".join(json.dumps(m) + "\n" for m in messages)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "| ERROR" in line]


# A worker process that dies


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def worker_pids(pid: int) -> list[int]:
    """The run's pool workers: children of its forkserver, itself a child of the run."""
    workers = []
    for child in children(pid):
        with contextlib.suppress(OSError):
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers += children(child)
    return workers


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the run starts no worker")
def test_a_worker_killed_mid_run_is_one_line_and_no_state(target, fake):
    proc = start(target)
    try:
        proc.stdin.write(lines([schema(), *people(20000)]))
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not (workers := worker_pids(proc.pid)):
            assert time.monotonic() < deadline, "the run never started a worker"
            time.sleep(0.05)
        os.kill(workers[0], signal.SIGKILL)
        with contextlib.suppress(BrokenPipeError):  # the run may end before it reads on
            proc.stdin.write(lines([*people(5000, start=20001), state({"done": 1})]))
            proc.stdin.close()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert out == ""
    assert "Traceback" not in err and "BrokenProcessPool" not in err
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert "a worker process died" in errors[0] and "out of memory" in errors[0]
    assert not fake.requests_log("segment/mapping/", bodies=False)


# A PostgreSQL backend that stops answering


@pytest.fixture
def pg_target(tmp_path, fake, postgres_server) -> PostgresTargetRunner:
    runner = PostgresTargetRunner(tmp_path, fake, postgres_server)
    url = runner.config["membership_store"]
    runner.config["membership_store"] = url.replace(
        "postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@"
    )
    return runner


def backend_pids(server) -> list[int]:
    with server.connect() as db:
        return [
            row[0]
            for row in db.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = "
                "'target-tiktok-audiences' AND pid <> pg_backend_pid()"
            )
        ]


def test_a_stopped_postgres_backend_ends_the_run_after_store_timeout(pg_target, fake):
    server = pg_target.server
    fake.inject(latency=0.2)
    messages = [schema(), *people(60), state({"done": 1})]
    proc = _start(
        pg_target, messages, "stop.json", store_timeout=3, batch_size=5, max_parallel_requests=1
    )
    stopped: list[int] = []
    try:
        _wait_for_mappings(fake, 2)
        stopped = backend_pids(server)
        assert len(stopped) == 1, stopped
        os.kill(stopped[0], signal.SIGSTOP)
        started = time.monotonic()
        out, err = proc.communicate(timeout=120)
        waited = time.monotonic() - started
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert waited < 60, waited
    assert out == ""
    assert "Traceback" not in err
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert "store_timeout" in errors[0] and "did not answer" in errors[0]
    assert "postgresql://postgres:***@127.0.0.1" in errors[0]
    assert PASSWORD not in err


@pytest.mark.parametrize("where", ["user-info", "parameter"])
def test_a_server_that_never_answers_the_connection_ends_the_run(pg_target, where):
    """Connecting is bounded too: a listener that accepts and never says a word."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/tests?schema=t_silent"
        if where == "parameter":
            url = (
                f"postgresql://postgres@127.0.0.1:{port}/tests?schema=t_silent&password={PASSWORD}"
            )
        started = time.monotonic()
        run = pg_target.run(
            [schema(), record(id=1, email="a@example.com"), state({"done": 1})],
            membership_store=url,
            store_timeout=3,
        )
        waited = time.monotonic() - started
    assert run.returncode == 1, run.stderr
    assert waited < 60
    assert run.states == []
    assert len(run.errors) == 1, run.stderr
    assert "did not answer" in run.errors[0] and "store_timeout" in run.errors[0]
    assert "***" in run.errors[0]
    assert PASSWORD not in run.stderr


def test_a_sqlite_store_locked_by_another_process_ends_the_run_after_store_timeout(target):
    first = target.run([schema(), record(id=1, email="a@example.com")])
    assert first.returncode == 0, first.stderr
    holder = sqlite3.connect(target.store_path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        run = target.run(
            [
                schema(),
                record(id=1, email="a@example.com"),
                record(id=2, email="b@example.com"),
                state({"done": 1}),
            ],
            store_timeout=2,
        )
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert run.returncode == 1, run.stderr
    assert 2 <= waited < 60
    assert run.states == []
    assert len(run.errors) == 1, run.stderr
    assert "did not answer within 2 s (`store_timeout`)" in run.errors[0]
    assert str(target.store_path) in run.errors[0]
