"""Shared fixtures: a fake TikTok server on 127.0.0.1 and a runner for the real console script."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from target_tiktok_audiences.settings import RunSettings
from target_tiktok_audiences.tiktok.http import ClientOptions
from tests.fake_tiktok import FakeTikTok

# A real PostgreSQL server (session-scoped `postgres_server`, per-test `pg_url`) for store tests.
pytest_plugins = ("tests.postgres",)

ADVERTISER = "7000000000000000001"
OTHER_ADVERTISER = "7000000000000000002"
TOKEN = "test-token-5f0c8a1e9b7d"

_SCRIPT = shutil.which("target-tiktok-audiences") or str(
    Path(sys.executable).parent / "target-tiktok-audiences"
)


def sha(value: str) -> str:
    """SHA-256 hex, as TikTok wants identifiers."""
    return hashlib.sha256(value.encode()).hexdigest()


def schema(stream: str = "contacts", key_properties: list[str] | None = None) -> dict:
    props = {
        name: {"type": ["string", "null"]} for name in ("email", "phone", "idfa", "aaid", "name")
    }
    props["id"] = {"type": ["integer", "string"]}
    props["consent"] = {"type": ["boolean", "null"]}
    props["member"] = {"type": ["boolean", "null"]}
    props["_sdc_deleted_at"] = {"type": ["string", "null"]}
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": props},
        "key_properties": ["id"] if key_properties is None else key_properties,
    }


def record(stream: str = "contacts", **fields: Any) -> dict:
    return {"type": "RECORD", "stream": stream, "record": fields}


def state(value: Any) -> dict:
    return {"type": "STATE", "value": value}


def activate(stream: str = "contacts", version: int = 1) -> dict:
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}


@dataclass
class Run:
    """One finished run of the console script."""

    returncode: int
    stdout: str
    stderr: str
    states: list[Any] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "| ERROR" in line]


class TargetRunner:
    """Runs `target-tiktok-audiences` as a subprocess against the fake server."""

    def __init__(self, tmp_path: Path, fake: FakeTikTok) -> None:
        self.tmp_path = tmp_path
        self.fake = fake
        self.store_path = tmp_path / "store" / "membership.sqlite"
        self.config: dict[str, Any] = {
            "access_token": TOKEN,
            "advertiser_ids": [ADVERTISER],
            "api_url": fake.url,
            "membership_store": str(self.store_path),
            "min_audience_size": 0,
            "max_requests_per_second": 200,
            "request_timeout": 5,
            "max_retries": 3,
        }

    def run(
        self,
        messages: list[dict | str],
        *,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Run:
        config = {**self.config, **overrides}
        config = {k: v for k, v in config.items() if v is not None}
        config_path = self.tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
        proc = subprocess.run(
            [_SCRIPT, "--config", str(config_path)],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp_path,
            env={**os.environ, **(env or {})},
            check=False,
        )
        states = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return Run(proc.returncode, proc.stdout, proc.stderr, states)

    def store_rows(self, table: str) -> list[tuple]:
        db = sqlite3.connect(self.store_path)
        try:
            return db.execute(f"SELECT * FROM {table}").fetchall()
        finally:
            db.close()


@pytest.fixture
def fake() -> FakeTikTok:
    server = FakeTikTok()
    server.start()
    server.add_advertiser(ADVERTISER, name="Main account")
    server.add_advertiser(OTHER_ADVERTISER, name="Other account")
    server.add_token(TOKEN, [ADVERTISER, OTHER_ADVERTISER])
    yield server
    server.stop()


@pytest.fixture
def target(tmp_path: Path, fake: FakeTikTok) -> TargetRunner:
    return TargetRunner(tmp_path, fake)


def downgrade_sql(version: int, prefix: str = "") -> list[str]:
    """SQL that turns a store of the current schema into one written at schema `version`.

    `prefix`: a PostgreSQL schema and a dot. Tables and columns added since go, newest first.
    """
    from target_tiktok_audiences.store import schema

    statements = []
    for step in range(schema.SCHEMA_VERSION, version, -1):
        for table in sorted(schema._TABLES_ADDED.get(step, ())):
            statements.append(f"DROP TABLE {prefix}{table}")
        for table, columns in schema._COLUMNS_ADDED.get(step, {}).items():
            for column in sorted(columns):
                statements.append(f"ALTER TABLE {prefix}{table} DROP COLUMN {column}")
    statements.append(f"UPDATE {prefix}meta SET value = '{version}' WHERE key = 'schema_version'")
    return statements


def client_options(**changes: Any) -> ClientOptions:
    """The client options the settings give by default, with `changes`."""
    return replace(RunSettings.from_config({}).client_options(), **changes)
