"""End to end on a PostgreSQL store: the console script, the fake TikTok, a real server.

The end-to-end and fault tests that exercise the store are imported and run again here, with
this module's `target` fixture pointing `membership_store` at a fresh schema of the test
server; tests about input parsing, HTTP or SQLite's file are not repeated. Below them, what
only a shared database has: a dry run that leaves it untouched, and two workers at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg import sql

from target_tiktok_audiences.store.postgres import split_schema
from tests.conftest import TargetRunner, record, schema
from tests.fake_tiktok import FakeTikTok
from tests.postgres import PostgresServer
from tests.test_end_to_end import (  # noqa: F401  (collected again, on PostgreSQL)
    BASE,
    members,
    only_audience,
    test_activate_version_closes_snapshot_and_absent_records_leave_audience_alone,
    test_audience_created_by_name_once_and_reused,
    test_dropping_a_shared_hash_is_remembered_for_when_the_other_leaves,
    test_dry_run_writes_what_a_real_run_sends,
    test_existing_audience_id_and_two_streams,
    test_first_sync_creates_audience_and_adds_everyone,
    test_incremental_mode_adds_updates_and_removes,
    test_min_audience_size_counts_people_not_records,
    test_min_audience_size_holds_first_upload,
    test_min_audience_size_holds_incremental_people_across_runs,
    test_records_without_keys_are_identified_by_their_hashes,
    test_removal_guard_refuses_whole_sync,
    test_second_sync_sends_exactly_joins_leaves_and_changes,
    test_shared_hash_stays_while_another_member_has_it,
    test_state_written_only_after_confirmation,
)
from tests.test_faults import (  # noqa: F401
    _start,
    _wait_for_mappings,
    expected,
    people,
    test_converges_under_injected_failures_rate_limits_and_batch_limit,
    test_runs_on_different_audiences_share_a_store,
    test_second_run_on_the_same_audience_waits_then_refuses,
    test_sigkill_mid_sync_then_rerun_converges,
)


class PostgresTargetRunner(TargetRunner):
    """The same runner, its store a schema of the test server (no SQLite file anywhere)."""

    def __init__(self, tmp_path: Path, fake: FakeTikTok, server: PostgresServer) -> None:
        super().__init__(tmp_path, fake)
        self.server = server
        self.config["membership_store"] = server.new_url()
        self.schema = split_schema(self.config["membership_store"])[1]
        self.store_path = tmp_path / "store" / "no-sqlite-file-with-a-postgresql-store"

    def store_rows(self, table: str) -> list[tuple]:
        if not self.schema_exists():
            return []
        with self.server.connect() as db:
            query = sql.SQL("SELECT * FROM {}.{}").format(
                sql.Identifier(self.schema), sql.Identifier(table)
            )
            return db.execute(query).fetchall()

    def schema_exists(self) -> bool:
        with self.server.connect() as db:
            return bool(
                db.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                ).fetchone()
            )


@pytest.fixture
def target(tmp_path: Path, fake: FakeTikTok, postgres_server: PostgresServer) -> TargetRunner:
    return PostgresTargetRunner(tmp_path, fake, postgres_server)


def test_dry_run_leaves_the_database_untouched(target, fake):
    dry = target.run([schema(), *BASE], dry_run=True, access_token=None)
    assert dry.returncode == 0, dry.stderr
    assert not target.schema_exists(), "a dry run on a new store creates nothing"
    assert target.run([schema(), *BASE]).returncode == 0
    before = {t: sorted(target.store_rows(t)) for t in ("audiences", "members", "pending")}
    changed = [*BASE[:2], record(id=9, email="new@example.com")]
    dry = target.run([schema(), *changed], dry_run=True, max_removal_fraction=1.0)
    assert dry.returncode == 0, dry.stderr
    assert "added 1, removed 1" in dry.stderr
    assert {t: sorted(target.store_rows(t)) for t in before} == before
    # A real run after it still sees, and sends, the whole change.
    fake.reset_log()
    run = target.run([schema(), *changed], max_removal_fraction=1.0)
    assert run.returncode == 0, run.stderr
    assert "added 1, removed 1" in run.stderr


def test_first_syncs_of_one_audience_from_two_workers_at_once(target, fake):
    """Both create the audience row: one row, one TikTok audience, the second run waits."""
    cfg = {"audiences": {"contacts": {"audience_name": "Shared"}}, "batch_size": 10}
    fake.inject(latency=0.05)
    procs = [_start(target, [schema(), *people(40)], f"w{i}.json", **cfg) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(target.store_rows("audiences")) == 1
    assert members(fake, only_audience(fake)) == expected(range(1, 41))
    assert len(target.store_rows("members")) == 40


def test_a_run_that_waited_for_the_lock_sees_the_first_upload(target, fake):
    """The waiting run must not take the audience for new: its removal guard applies."""
    fake.inject(latency=0.2)
    first = _start(
        target, [schema(), *people(10)], "first.json", batch_size=2, max_parallel_requests=1
    )
    _wait_for_mappings(fake, 1)
    second = _start(target, [schema(), *people(2)], "second.json")
    _, err = second.communicate(timeout=120)
    first.communicate(timeout=120)
    assert second.returncode == 1, err
    assert "would remove 8 of 10 people" in err
    assert members(fake, only_audience(fake)) == expected(range(1, 11))
