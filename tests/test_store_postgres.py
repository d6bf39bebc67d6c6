"""What only the PostgreSQL store has, or has differently: its schema beside other apps' tables,
locks between processes, concurrent creation, crashes mid-transaction, upgrades, dry runs, and
copying a store between SQLite and PostgreSQL. The shared behaviour (diff, hold, confirm) runs on
both backends in test_store.py.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.store import (
    SCHEMA_VERSION,
    MembershipStore,
    StoreMissingError,
    copy_store,
)
from target_tiktok_audiences.store.postgres import split_schema
from tests.conftest import downgrade_sql
from tests.store_sql import confirm_rows, member_hashes, plan_rows
from tests.test_store import ADVERTISER, FIRST, confirm_plan, members, person, sha, slots, stage

TABLES = ("meta", "audiences", "members", "pending", "sources", "source_people")


def schema_of(url: str) -> str:
    return split_schema(url)[1]


def rows(server, url: str, table: str, order: str = "1, 2") -> list[tuple]:
    with server.connect() as db:
        query = sql.SQL("SELECT * FROM {}.{} ORDER BY " + order).format(
            sql.Identifier(schema_of(url)), sql.Identifier(table)
        )
        return db.execute(query).fetchall()


def tables_of(server, schema: str) -> dict[str, list[str]]:
    """Every table of a schema with its columns: what a refused open must leave alone."""
    with server.connect() as db:
        found = db.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in found:
        out.setdefault(table, []).append(column)
    return out


def remember_source(store: MembershipStore, stream: str, selection: str, people: dict) -> None:
    """Give the store a source of a composed audience: `people` split by their first letter."""
    source = store.source(stream, selection)
    rows = [(person(key), 0, 0, key[0], slots_) for key, slots_ in people.items()]
    store.stage_rows(source.group, rows)
    store.remember_staged(source, source.group, whole=True, dirty=[])
    store.clear_staged(source.group)


def populate(location: str) -> str:
    """A store with a bit of everything: ids, names, results, members, held people, sources."""
    store = MembershipStore(location)
    remember_source(store, "crm", "", {"c1": FIRST["same"], "c2": FIRST["leaver"]})
    remember_source(store, "warehouse", "split_by:plan", {"w": slots(email="w@example.com")})
    customers = store.audience("contacts", "name:Customers", [ADVERTISER]).id
    stage(store, customers, FIRST)
    store.plan(customers, snapshot=True, complete=True)
    confirm_plan(store, customers)
    store.finish_upload(customers)
    store.set_tiktok_audience(customers, "1790000000000000001", "Customers")
    store.record_result(customers, "ok", None, {"added": 5, "skipped": {"missing": 1}})
    held = store.audience("leads", "id:1790000000000000002", [ADVERTISER, "7000000000000000002"]).id
    stage(store, held, {"x": slots(email="x@example.com"), "y": slots(phone="+14155550999")})
    store.hold(held, snapshot=True)
    store.clear_staged(held)
    store.record_result(held, "failed", "TikTok said 40001: check the token", None)
    store.close()
    return location


def source_and_used_dest(tmp_path: Path, dest_url: str) -> tuple[str, dict]:
    """A populated SQLite source, and a destination that already holds an audience and a source."""
    source = populate(str(tmp_path / "source.sqlite"))
    dest = MembershipStore(dest_url)
    dest.audience("someone-else", "k", [ADVERTISER])
    remember_source(dest, "someone-elses-crm", "", {"z": slots(email="z@example.com")})
    dest.close()
    return source, everything(dest_url)


def everything(location: str) -> dict[str, list[tuple]]:
    """All rows of all tables of a store, read through the store's own connection."""
    store = MembershipStore(location)
    try:
        out = {}
        for table in TABLES:
            order = {"meta": "key", "audiences": "id", "sources": "id"}.get(table, "1, 2")
            found = store._db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            out[table] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in found
            ]
        return out
    finally:
        store.close()


# Where the store lives


def test_store_has_a_schema_of_its_own_beside_other_apps(postgres_server):
    with postgres_server.connect() as db:
        db.execute("DROP DATABASE IF EXISTS shared_app")
        db.execute("CREATE DATABASE shared_app")
    url = postgres_server.url(database="shared_app")
    with psycopg.connect(url, autocommit=True) as app:
        app.execute("CREATE TABLE public.members (id int PRIMARY KEY, note text)")
        app.execute("INSERT INTO public.members VALUES (1, 'another app')")
        store = MembershipStore(url)
        aud = store.audience("contacts", "k", [ADVERTISER]).id
        confirm_rows(store, aud, "add", [(person("a"), FIRST["same"])])
        store.close()
        assert app.execute("SELECT * FROM public.members").fetchall() == [(1, "another app")]
        assert app.execute("SELECT count(*) FROM tiktok_audiences.members").fetchone() == (1,)
        # A second store in the same database: `?schema=` keeps them apart.
        other = MembershipStore(url + "?schema=team_b")
        assert other.list_audiences() == []
        other.close()


def test_store_holds_only_hashes_as_bytes(pg_url, postgres_server):
    store = MembershipStore(pg_url)
    aud = store.audience("contacts", "name:Customers", [ADVERTISER]).id
    emails = [f"person{i}.secret@example.com" for i in range(50)]
    phones = [f"+1415555{i:04d}" for i in range(50)]
    people = {e: slots(email=e, phone=p) for e, p in zip(emails, phones, strict=True)}
    stage(store, aud, people)
    store.plan(aud, snapshot=True, complete=True)
    confirm_plan(store, aud)
    held = store.audience("held", "k", [ADVERTISER]).id
    stage(store, held, {e: slots(email=e) for e in emails[:5]})
    store.hold(held, snapshot=True)
    store.close()
    raw = [*emails, *phones, "secret", "example.com"]
    for table in TABLES:
        for row in rows(postgres_server, pg_url, table):
            for value in row:
                if isinstance(value, bytes):
                    assert len(value) in (16, 32)
                    assert all(r.encode() not in value for r in raw)
                elif isinstance(value, str):
                    assert all(r not in value for r in raw)
    assert len(rows(postgres_server, pg_url, "members")) == 50
    assert len(rows(postgres_server, pg_url, "pending")) == 5


def test_bulk_paths_make_no_round_trip_per_person(pg_url):
    """3,000 people staged, planned, confirmed and read back: a few dozen statements."""
    store = MembershipStore(pg_url)
    aud = store.audience("contacts", "k", [ADVERTISER]).id
    connection = store._db._db
    calls = []
    real_execute = connection.execute

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real_execute(*args, **kwargs)

    connection.execute = counting
    try:
        people = {f"p{i}": slots(email=f"p{i}@example.com") for i in range(3000)}
        stage(store, aud, people)
        summary = store.plan(aud, snapshot=True, complete=True)
        assert summary.joined == 3000
        planned = [(who, s) for _, who, s, _ in plan_rows(store, aud, "add")]
        for i in range(0, 3000, 1000):
            confirm_rows(store, aud, "add", planned[i : i + 1000])
        assert len(list(member_hashes(store, aud))) == 3000
    finally:
        connection.execute = real_execute
        store.close()
    assert len(calls) < 80, calls


# Dry runs: a transaction that is never committed


def test_throwaway_changes_are_seen_by_nobody_and_gone_on_close(pg_url, postgres_server):
    real = MembershipStore.open(pg_url)
    aud = real.audience("contacts", "k", [ADVERTISER]).id
    confirm_rows(real, aud, "add", [(person("a"), FIRST["same"])])
    real.close()
    before = {t: rows(postgres_server, pg_url, t) for t in TABLES}

    copy = MembershipStore.open(pg_url, throwaway=True)
    assert members(copy, aud) == {person("a"): FIRST["same"]}
    copy.lock_audience(aud, "contacts", 1)
    confirm_rows(copy, aud, "add", [(person("b"), FIRST["leaver"])])
    confirm_rows(copy, aud, "delete", [(person("a"), FIRST["same"])])
    copy.set_tiktok_audience(aud, "888", "Customers")
    copy.finish_upload(aud)
    new = copy.audience("another", "k", [ADVERTISER]).id
    assert members(copy, aud) == {person("b"): FIRST["leaver"]}
    assert {t: rows(postgres_server, pg_url, t) for t in TABLES} == before
    # A real run on that audience waits for the dry run, rather than for its row locks.
    other = MembershipStore.open(pg_url)
    with pytest.raises(StoreError, match="being synced by another run"):
        other.lock_audience(aud, "contacts", 0.3)
    copy.close()
    other.lock_audience(aud, "contacts", 5)
    assert members(other, aud) == {person("a"): FIRST["same"]}
    assert other.get_audience(aud).audience_id is None
    assert [a.id for a in other.list_audiences()] == [aud]
    assert new != aud
    other.close()
    assert {t: rows(postgres_server, pg_url, t) for t in TABLES} == before


def test_throwaway_of_a_new_store_creates_nothing(pg_url, postgres_server):
    copy = MembershipStore.open(pg_url, throwaway=True)
    aud = copy.audience("contacts", "k", [ADVERTISER]).id
    confirm_rows(copy, aud, "add", [(person("a"), FIRST["same"])])
    copy.close()
    assert tables_of(postgres_server, schema_of(pg_url)) == {}


# Locks between processes

HOLDER = """
import sys, time
from target_tiktok_audiences.store import MembershipStore
store = MembershipStore(sys.argv[1])
aud = store.audience("contacts", "k", ["1"]).id
store.lock_audience(aud, "contacts", 10)
if sys.argv[2] == "transaction":
    with store.transaction() as db:
        db.execute("DELETE FROM members WHERE audience = ?", (aud,))
        db.execute("INSERT INTO members (audience, person, s0) VALUES (?, ?, ?)",
                   (aud, b"half-written-row", b"x" * 32))
        print("ready", flush=True)
        time.sleep(120)
print("ready", flush=True)
time.sleep(120)
"""


def start_holder(url: str, mode: str = "lock") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_lock_is_per_audience_across_processes_and_freed_when_the_holder_dies(pg_url):
    store = MembershipStore(pg_url)
    aud = store.audience("contacts", "k", ["1"]).id
    other = store.audience("other", "k", ["1"]).id
    holder = start_holder(pg_url)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.lock_audience(aud, "Customers (1790)", 0.6)
        waited = time.monotonic() - started
        assert 0.5 <= waited < 5
        message = str(info.value)
        assert "audience Customers (1790) is being synced by another run" in message
        assert "store_lock_timeout" in message and "\n" not in message
        store.lock_audience(other, "other", 0)  # another audience: no wait at all
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        store.lock_audience(aud, "Customers (1790)", 10)  # the dead run's lock is gone
    finally:
        holder.kill()
        holder.wait()
        store.close()


def test_same_audience_id_in_two_schemas_are_two_locks(postgres_server):
    first, second = postgres_server.new_url(), postgres_server.new_url()
    holder = start_holder(first)
    try:
        store = MembershipStore(second)
        aud = store.audience("contacts", "k", ["1"]).id
        store.lock_audience(aud, "contacts", 0)
        store.close()
    finally:
        holder.kill()
        holder.wait()


def test_killed_mid_transaction_leaves_nothing_half_applied(pg_url, postgres_server):
    store = MembershipStore(pg_url)
    aud = store.audience("contacts", "k", ["1"]).id
    confirm_rows(store, aud, "add", [(person("a"), FIRST["same"]), (person("b"), FIRST["leaver"])])
    before = rows(postgres_server, pg_url, "members")
    holder = start_holder(pg_url, "transaction")  # deleted everyone, wrote half a row
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert rows(postgres_server, pg_url, "members") == before
    store.lock_audience(aud, "contacts", 10)
    store.close()


def test_failure_between_the_statements_of_a_confirmation_applies_nothing(pg_url):
    store = MembershipStore(pg_url)
    aud = store.audience("contacts", "k", ["1"]).id
    confirm_rows(store, aud, "add", [(person("a"), FIRST["same"]), (person("b"), FIRST["leaver"])])
    real_execute = store._db.execute

    def dies_before_the_delete(statement, params=()):
        if statement.startswith("DELETE FROM members"):
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real_execute(statement, params)

    store._db.execute = dies_before_the_delete
    with pytest.raises(psycopg.OperationalError):
        confirm_rows(store, aud, "delete", [(person("a"), FIRST["same"])])  # hashes cleared by now
    store._db.execute = real_execute
    assert members(store, aud) == {person("a"): FIRST["same"], person("b"): FIRST["leaver"]}
    confirm_rows(store, aud, "delete", [(person("a"), FIRST["same"])])
    assert members(store, aud) == {person("b"): FIRST["leaver"]}
    store.close()


# Two workers at once


def run_together(count: int, work) -> list:
    """Start `count` threads, each with its own connection, released at the same instant."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_workers_opening_a_new_store_at_once_create_it_once(pg_url, postgres_server):
    def open_and_create() -> int:
        store = MembershipStore(pg_url)
        try:
            return store.audience("contacts", "name:Customers", [ADVERTISER]).id
        finally:
            store.close()

    ids = run_together(6, open_and_create)
    assert all(isinstance(i, int) for i in ids), ids
    assert len(set(ids)) == 1
    assert len(rows(postgres_server, pg_url, "audiences")) == 1
    assert rows(postgres_server, pg_url, "meta") == [("schema_version", str(SCHEMA_VERSION))]


# Schema versions


def test_older_schema_is_upgraded_in_place(pg_url, postgres_server):
    populate(pg_url)
    schema = schema_of(pg_url)
    with postgres_server.connect() as db:  # the first release had neither column
        for statement in downgrade_sql(1, f"{schema}."):
            db.execute(statement)
    kept = rows(postgres_server, pg_url, "members")
    store = MembershipStore(pg_url)
    try:
        assert "last_change_at" in tables_of(postgres_server, schema)["audiences"]
        assert rows(postgres_server, pg_url, "meta") == [("schema_version", str(SCHEMA_VERSION))]
        assert rows(postgres_server, pg_url, "members") == kept
        aud = store.list_audiences()[0].id
        confirm_rows(store, aud, "add", [(person("new"), FIRST["same"])])
        assert store.get_audience(aud).last_change_at is not None
    finally:
        store.close()


def test_newer_schema_is_refused_untouched(pg_url, postgres_server):
    populate(pg_url)
    schema = schema_of(pg_url)
    with postgres_server.connect() as db:
        db.execute(f"UPDATE {schema}.meta SET value = %s", (str(SCHEMA_VERSION + 41),))
        db.execute(f"DROP TABLE {schema}.pending")  # say version 43 renamed it
    before = tables_of(postgres_server, schema)
    for throwaway in (False, True):
        with pytest.raises(StoreError, match=str(SCHEMA_VERSION + 41)) as info:
            MembershipStore.open(pg_url, throwaway=throwaway)
        assert "upgrade target-tiktok-audiences" in str(info.value)
    assert tables_of(postgres_server, schema) == before
    assert rows(postgres_server, pg_url, "meta") == [("schema_version", str(SCHEMA_VERSION + 41))]


def test_missing_store_is_not_created_when_asked_not_to(pg_url, postgres_server, tmp_path):
    with pytest.raises(StoreMissingError, match="no membership store"):
        MembershipStore.open(pg_url, create=False)
    assert tables_of(postgres_server, schema_of(pg_url)) == {}
    path = tmp_path / "none" / "m.sqlite"
    with pytest.raises(StoreMissingError):
        MembershipStore.open(str(path), create=False)
    assert not path.parent.exists()


# Copying a store


def test_copy_sqlite_to_postgres_and_back_loses_nothing(tmp_path, pg_url):
    source = populate(str(tmp_path / "source.sqlite"))
    original = everything(source)
    counts = {"audiences": 2, "members": 5, "pending": 2, "sources": 2, "source_people": 3}
    counts |= {"suppressions": 0, "erasures": 0}
    counts |= dict.fromkeys(("history_runs", "history_audiences", "history_receipts"), 0)
    assert copy_store(source, pg_url) == counts
    assert everything(pg_url) == original
    back = str(tmp_path / "back" / "membership.sqlite")
    assert copy_store(pg_url, back) == counts
    assert everything(back) == original
    # The copy carries on as the store: a new audience or source gets the next id, on both.
    for location in (pg_url, back):
        store = MembershipStore(location)
        assert store.audience("new", "k", [ADVERTISER]).id == 3
        assert store.source("new").id == 3
        assert store.split_values(store.source("warehouse", "split_by:plan")) == ["w"]
        store.close()


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_copy_refuses_a_destination_with_data_unless_forced(tmp_path, pg_url, kind):
    dest = pg_url if kind == "postgres" else str(tmp_path / "dest.sqlite")
    source, before = source_and_used_dest(tmp_path, dest)
    with pytest.raises(StoreError, match="--force") as info:
        copy_store(source, dest)
    assert "not empty (1 audiences)" in str(info.value)
    assert everything(dest) == before
    copy_store(source, dest, force=True)
    assert everything(dest) == everything(source)


def test_copy_refuses_a_destination_that_holds_only_sources(tmp_path):
    source = populate(str(tmp_path / "source.sqlite"))
    dest = str(tmp_path / "dest.sqlite")
    store = MembershipStore(dest)
    remember_source(store, "someone-elses-crm", "", {"z": slots(email="z@example.com")})
    store.close()
    before = everything(dest)
    with pytest.raises(StoreError, match="--force"):
        copy_store(source, dest)
    assert everything(dest) == before


def test_copy_is_one_transaction_on_the_destination(tmp_path, pg_url, monkeypatch):
    from target_tiktok_audiences.store.postgres import PostgresBackend

    source, before = source_and_used_dest(tmp_path, pg_url)

    def fails(self, table):
        raise psycopg.OperationalError("connection lost after the rows were loaded")

    monkeypatch.setattr(PostgresBackend, "reset_ids", fails)
    with pytest.raises(StoreError, match="nothing was written to the destination") as info:
        copy_store(source, pg_url, force=True)
    assert "connection lost" in str(info.value) and "\n" not in str(info.value)
    assert everything(pg_url) == before


def test_copy_out_of_postgres_that_fails_midway_writes_nothing(tmp_path, pg_url, monkeypatch):
    from target_tiktok_audiences.store.sqlite import SQLiteBackend

    populate(pg_url)
    dest = str(tmp_path / "back.sqlite")
    real_load = SQLiteBackend.load

    def dies_after_two_rows(self, table, columns, rows):
        if table == "members":
            rows = iter(rows)
            real_load(self, table, columns, [next(rows), next(rows)])
            raise OSError("disk full")
        real_load(self, table, columns, rows)

    monkeypatch.setattr(SQLiteBackend, "load", dies_after_two_rows)
    with pytest.raises(OSError, match="disk full"):
        copy_store(pg_url, dest)
    monkeypatch.undo()
    assert everything(dest) == {
        "meta": [("schema_version", str(SCHEMA_VERSION))],
        "audiences": [],
        "members": [],
        "pending": [],
        "sources": [],
        "source_people": [],
    }
    assert copy_store(pg_url, dest)["members"] == 5


def test_copy_refuses_what_makes_no_sense(tmp_path, pg_url):
    with pytest.raises(StoreMissingError, match="to copy from: check --from"):
        copy_store(str(tmp_path / "missing.sqlite"), pg_url)
    with pytest.raises(StoreMissingError, match="copy from") as info:
        copy_store(pg_url.replace("postgres@", "postgres:pw@"), str(tmp_path / "m.sqlite"))
    assert "pw" not in str(info.value)
    with pytest.raises(StoreError, match="same membership store"):
        copy_store(pg_url, pg_url.replace("postgresql://", "postgres://"))
    MembershipStore(str(tmp_path / "empty.sqlite")).close()
    with pytest.raises(StoreError, match="holds no audience"):
        copy_store(str(tmp_path / "empty.sqlite"), pg_url)


def test_copy_waits_for_a_run_in_progress_then_refuses(tmp_path, pg_url):
    holder = start_holder(pg_url)
    try:
        with pytest.raises(StoreError, match="cannot copy: audience contacts"):
            copy_store(pg_url, str(tmp_path / "m.sqlite"), lock_timeout=0.3)
    finally:
        holder.kill()
        holder.wait()


def test_copy_from_the_command_line(tmp_path, pg_url):
    """As `tiktok-audiences store copy` will call it, in a process of its own."""
    source = populate(str(tmp_path / "source.sqlite"))
    code = (
        "import json, sys\n"
        "from target_tiktok_audiences.store import copy_store\n"
        "print(json.dumps(copy_store(sys.argv[1], sys.argv[2], force=sys.argv[3] == 'force')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, source, pg_url, "no"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {
        "audiences": 2,
        "members": 5,
        "pending": 2,
        "sources": 2,
        "source_people": 3,
        "suppressions": 0,
        "erasures": 0,
        "history_runs": 0,
        "history_audiences": 0,
        "history_receipts": 0,
    }
    back = tmp_path / "back.sqlite"
    subprocess.run([sys.executable, "-c", code, pg_url, str(back), "no"], check=True, timeout=60)
    assert everything(str(back)) == everything(source)
    assert Path(back).stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(back)
    assert db.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    db.close()
    assert sha("x@example.com")  # the copy holds digests only, as the source did
