"""A real PostgreSQL server for the tests, started by the suite itself in a temporary directory.

Loaded as a pytest plugin by conftest.py. The server is started once per session, on the first
test that asks for it: `initdb` into a fresh directory, listening on 127.0.0.1 on a free port,
trust authentication, durability off (a test server: speed over crash safety). `initdb` and the
server refuse to run as root, so as root they run as an unprivileged user (`nobody`, or
$TIKTOK_AUDIENCES_TEST_PG_USER) through `runuser`. Binaries: $TIKTOK_AUDIENCES_TEST_PG_BIN, else
`pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.

When no server can be started, PostgreSQL tests are skipped on a developer's machine and fail
in CI (CI=true): there, a skipped store is an untested store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


class PostgresUnavailable(Exception):
    """No PostgreSQL server could be started here."""


def _bin_dir() -> Path:
    candidates: list[Path] = []
    if os.environ.get("TIKTOK_AUDIENCES_TEST_PG_BIN"):
        candidates.append(Path(os.environ["TIKTOK_AUDIENCES_TEST_PG_BIN"]))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    msg = (
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install postgresql "
        "(Debian: apt-get install postgresql) or set TIKTOK_AUDIENCES_TEST_PG_BIN"
    )
    raise PostgresUnavailable(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster; `url(schema)` gives each test a store of its own."""

    database = "tests"

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.user = os.environ.get("TIKTOK_AUDIENCES_TEST_PG_USER", "nobody")
        self.root = Path(tempfile.mkdtemp(prefix="tiktok-audiences-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        if os.geteuid() == 0:
            shutil.chown(self.root, self.user)

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            msg = f"{' '.join(args[:1])} failed ({proc.returncode}): {proc.stderr[-2000:]}{log}"
            raise PostgresUnavailable(msg)

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(3):
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.root} -c max_connections=200 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    "start",
                )
                break
            except PostgresUnavailable:
                if attempt == 2:
                    raise
        with psycopg.connect(self.url(database="postgres"), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {self.database}")

    def stop(self) -> None:
        with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, schema: str | None = None, *, database: str | None = None) -> str:
        base = f"postgresql://postgres@127.0.0.1:{self.port}/{database or self.database}"
        return f"{base}?schema={schema}" if schema else base

    def new_url(self) -> str:
        """A store URL with a schema nobody else uses: one per test."""
        return self.url(f"t_{uuid.uuid4().hex[:16]}")

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server: PostgresServer | None = None
    try:
        server = PostgresServer()
        server.start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError, psycopg.Error) as exc:
        if server is not None:
            server.stop()
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a PostgreSQL server for the store tests: {exc}")
        pytest.skip(f"no PostgreSQL server here: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A PostgreSQL membership store URL of this test's own (a fresh schema)."""
    return postgres_server.new_url()
