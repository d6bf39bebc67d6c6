"""`tiktok-audiences history`: every run recorded per audience, with TikTok's receipts.

End to end through both console scripts against the fake TikTok on 127.0.0.1, on SQLite and on
PostgreSQL: the receipts are the `request_id`s the fake answered for exactly the requests that
were confirmed (an answer lost on the wire, or a failed request, leaves none), a failed run
shows its one-line cause, `--limit` counts runs and `--audience` keeps one key, runs older
than `history_days` are pruned by the next run, a dry run records nothing, a store of schema 4
is migrated, and `store copy` carries the history across.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from target_tiktok_audiences.cli.history import HISTORY_KEYS
from target_tiktok_audiences.store.postgres import split_schema
from target_tiktok_audiences.store.schema import SCHEMA_VERSION
from tests.conftest import TargetRunner, downgrade_sql, record, schema, state
from tests.fake_tiktok import FakeTikTok
from tests.postgres import PostgresServer
from tests.test_cli import ISO_UTC, cli, write_config

MAPPING = "segment/mapping/"
NO_PERMISSION = 40001
DAY = 86400


def people(stream: str, ids: range) -> list[dict]:
    return [schema(stream)] + [record(stream, id=i, email=f"{stream}{i}@example.com") for i in ids]


class Store:
    """The test's membership store, SQLite or PostgreSQL, and raw SQL on it."""

    def __init__(self, location: str, server: PostgresServer | None) -> None:
        self.location = location
        self.server = server

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple]:
        if self.server is None:
            db = sqlite3.connect(self.location)
            try:
                rows = db.execute(statement, params).fetchall()
                db.commit()
                return rows
            finally:
                db.close()
        with psycopg.connect(self.server.url(), autocommit=True) as db:
            db.execute(f"SET search_path TO {split_schema(self.location)[1]}")
            cursor = db.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        path = tmp_path / "store" / "membership.sqlite"
        return Store(str(path), None)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Store(server.new_url(), server)


@pytest.fixture
def runner(tmp_path: Path, fake: FakeTikTok, store: Store) -> TargetRunner:
    target = TargetRunner(tmp_path, fake)
    target.config["membership_store"] = store.location
    return target


def history(runner: TargetRunner, *args: str, **config: Any) -> list[dict[str, Any]]:
    """`history --format json` on the runner's config; its rows, keys checked."""
    path = write_config(runner.tmp_path, {**runner.config, **config}, "history.json")
    result = cli("history", "--config", path, "--format", "json", *args, cwd=runner.tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    for row in rows:
        assert list(row) == list(HISTORY_KEYS)
    return rows


def confirmed_ids(fake: FakeTikTok, *, lost: int = 0) -> list[str]:
    """The request ids of the mapping answers with code 0, less the first `lost` of them."""
    answered = [e for e in fake.requests_log(MAPPING, bodies=False) if e["code"] == 0]
    return [e["request_id"] for e in answered[lost:]]


def test_receipts_are_the_request_ids_of_exactly_the_confirmed_requests(
    runner: TargetRunner, fake: FakeTikTok, store: Store
) -> None:
    """One answer is lost on the wire (retried), then TikTok refuses a batch: the run fails.

    The store holds receipts for exactly the batches it holds as confirmed, each with the id
    TikTok gave that answer; the lost answer and the refused request have none.
    """
    settings = {"batch_size": 2, "max_parallel_requests": 1}
    fake.inject(break_next=1, error_rate=0.5, error_codes=(NO_PERMISSION,))
    failed = runner.run(people("contacts", range(1, 13)), **settings)
    assert failed.returncode == 1
    log = fake.requests_log(MAPPING, bodies=False)
    assert [e["code"] for e in log].count(NO_PERMISSION) == 1, "one refusal ends the run"
    assert len(confirmed_ids(fake, lost=1)) >= 1, "some batches were confirmed before it"
    [row] = history(runner)
    assert row["result"].startswith("failed: ")  # with the failure's one-line cause
    assert str(NO_PERMISSION) in row["result"] and "\n" not in row["result"]
    assert row["audience"] == "contacts"
    assert row["request_ids"] == confirmed_ids(fake, lost=1)
    assert row["requests"] == len(fake.requests_log(bodies=False))  # look-up, create, mappings
    assert ISO_UTC.match(row["started_at"]) and ISO_UTC.match(row["finished_at"])
    # Each receipt's rows are the people it confirmed.
    receipts = store.execute("SELECT action, request_id, rows FROM history_receipts ORDER BY id")
    assert [r[1] for r in receipts] == row["request_ids"]
    assert {r[0] for r in receipts} == {"add"}
    assert sum(r[2] for r in receipts) == len(store.execute("SELECT person FROM members"))
    # The failure's one-line cause, in the table too.
    path = write_config(runner.tmp_path, runner.config, "history.json")
    table = cli("history", "--config", path, cwd=runner.tmp_path)
    assert table.returncode == 0, table.stderr
    header, line, cause = table.stdout.splitlines()
    assert header.split()[:3] == ["RUN", "STARTED", "(UTC)"]
    assert "contacts" in line and "failed" in line
    assert cause == f"run {row['run_id']} contacts: {row['result']}"

    fake.inject()
    fake.reset_log()
    again = runner.run(people("contacts", range(1, 13)), **settings)
    assert again.returncode == 0, again.stderr
    newest, oldest = history(runner)
    assert newest["run_id"] > oldest["run_id"] == row["run_id"]
    assert newest["result"] == "ok" and oldest == row
    assert newest["request_ids"] == confirmed_ids(fake)
    assert newest["added"] == 12 - (sum(r[2] for r in receipts))
    assert newest["unchanged"] == sum(r[2] for r in receipts)


def test_limit_counts_runs_audience_keeps_one_key_and_a_dry_run_records_nothing(
    runner: TargetRunner, fake: FakeTikTok
) -> None:
    audiences = {
        "contacts": {"audience_name": "History contacts"},
        "leads": {"audience_name": "History leads"},
    }
    both = [*people("contacts", range(1, 4)), *people("leads", range(1, 3))]
    for extra in (1, 2):
        more = [record("leads", id=10 + i, email=f"more{i}@example.com") for i in range(extra)]
        run = runner.run([*both, *more], audiences=audiences)
        assert run.returncode == 0, run.stderr
    rows = history(runner)
    assert [(r["run_id"], r["audience"]) for r in rows] == [
        (2, "contacts"),
        (2, "leads"),
        (1, "contacts"),
        (1, "leads"),
    ]
    by_run = {(r["run_id"], r["audience"]): r for r in rows}
    assert by_run[(1, "leads")]["added"] == 3
    assert by_run[(2, "leads")]["added"] == 1 and by_run[(2, "leads")]["unchanged"] == 3
    assert by_run[(2, "contacts")]["request_ids"] == []  # nothing to send, no receipt
    assert by_run[(2, "contacts")]["requests"] == 0
    assert [(r["run_id"], r["audience"]) for r in history(runner, "--limit", "1")] == [
        (2, "contacts"),
        (2, "leads"),
    ]
    leads = history(runner, "--audience", "leads")
    assert [(r["run_id"], r["audience"]) for r in leads] == [(2, "leads"), (1, "leads")]
    assert [r["run_id"] for r in history(runner, "--audience", "leads", "--limit", "1")] == [2]
    assert history(runner, "--audience", "nobody") == []

    dry = runner.run(
        [*both, record("leads", id=99, email="dry@example.com")], audiences=audiences, dry_run=True
    )
    assert dry.returncode == 0, dry.stderr
    assert history(runner) == rows


def test_runs_older_than_history_days_are_pruned_by_the_next_run(
    runner: TargetRunner, store: Store
) -> None:
    assert runner.run(people("contacts", range(1, 4))).returncode == 0
    [first] = history(runner)
    assert first["request_ids"]

    def age_first_run(days: int) -> None:
        store.execute(
            "UPDATE history_runs SET started_at = started_at - ? WHERE id = ?", (days * DAY, 1)
        )

    age_first_run(100)
    assert runner.run(people("contacts", range(1, 5)), history_days=150).returncode == 0
    assert [r["run_id"] for r in history(runner)] == [2, 1], "100 days is within 150"
    assert runner.run(people("contacts", range(1, 6))).returncode == 0  # 90 days by default
    assert [r["run_id"] for r in history(runner)] == [3, 2]
    assert store.execute("SELECT DISTINCT run FROM history_receipts ORDER BY run") == [(2,), (3,)]
    assert store.execute("SELECT DISTINCT run FROM history_audiences ORDER BY run") == [(2,), (3,)]


def test_a_store_of_schema_4_is_migrated_and_its_runs_recorded(
    runner: TargetRunner, store: Store
) -> None:
    assert runner.run(people("contacts", range(1, 4))).returncode == 0
    for statement in downgrade_sql(4):
        store.execute(statement)
    assert store.execute("SELECT value FROM meta WHERE key = 'schema_version'") == [("4",)]
    run = runner.run(people("contacts", range(1, 5)))
    assert run.returncode == 0, run.stderr
    [row] = history(runner)
    assert (row["run_id"], row["added"], row["unchanged"]) == (1, 1, 3)
    version = store.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    assert version == [(str(SCHEMA_VERSION),)]


def test_store_copy_carries_history_and_receipts_across(
    target: TargetRunner, fake: FakeTikTok, tmp_path: Path, pg_url: str
) -> None:
    assert target.run(people("contacts", range(1, 4))).returncode == 0
    assert target.run(people("contacts", range(1, 6))).returncode == 0
    before = history(target)
    assert len(before) == 2 and all(r["request_ids"] for r in before)
    copied = cli("store", "copy", "--from", str(target.store_path), "--to", pg_url, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert history(target, membership_store=pg_url) == before
    back = str(tmp_path / "back.sqlite")
    copied = cli("store", "copy", "--from", pg_url, "--to", back, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert history(target, membership_store=back) == before
    # The copy numbers new runs after the copied ones.
    assert target.run(people("contacts", range(1, 7)), membership_store=pg_url).returncode == 0
    assert [r["run_id"] for r in history(target, membership_store=pg_url)] == [3, 2, 1]


def test_a_run_that_synced_no_audience_is_one_row_without_one(runner: TargetRunner) -> None:
    assert runner.run([state({"bookmark": 1})]).returncode == 0
    [row] = history(runner)
    assert (row["run_id"], row["audience"], row["result"], row["added"]) == (1, None, "ok", None)
    assert ISO_UTC.match(row["finished_at"]), "the run's own end"
    assert history(runner, "--audience", "contacts") == []
