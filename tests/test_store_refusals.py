"""Opening a location that is not this target's store, and what store errors may show.

A store refuses, in one line and without changing a byte, a SQLite file or PostgreSQL tables
that another application made; an empty or new location is still the store's to initialise.
No store error shows a database password, in a URL's user info or its `password` parameter.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from psycopg import sql

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.store import SCHEMA_VERSION, MembershipStore, copy_store
from target_tiktok_audiences.store.postgres import split_schema
from tests.store_sql import confirm_rows
from tests.test_store import ADVERTISER, FIRST, person
from tests.test_store_postgres import rows, tables_of

PASSWORD = "pw-Zq81-secret"


def foreign_file(tmp_path: Path, *statements: str) -> Path:
    """A SQLite file another application made, its mtime set in the past."""
    path = tmp_path / "app.sqlite"
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    os.utime(path, (1_600_000_000, 1_600_000_000))
    return path


def fingerprint(path: Path) -> tuple[bytes, int, list[str]]:
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message


FOREIGN_FILES = {
    "other-app": ("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)",),
    "other-app-meta": (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('owner', 'crm')",
    ),
    "our-names-other-shape": (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('schema_version', '2')",
        "CREATE TABLE audiences (id INTEGER PRIMARY KEY, title TEXT)",
        "CREATE TABLE members (id INTEGER PRIMARY KEY)",
        "CREATE TABLE pending (id INTEGER PRIMARY KEY)",
    ),
    "word-version": (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('schema_version', 'v2-beta')",
    ),
}


@pytest.mark.parametrize("throwaway", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("kind", sorted(FOREIGN_FILES))
def test_another_applications_sqlite_file_is_refused_untouched(tmp_path, kind, throwaway):
    path = foreign_file(tmp_path, *FOREIGN_FILES[kind])
    before = fingerprint(path)
    with pytest.raises(StoreError, match="is not this target's store") as info:
        MembershipStore.open(str(path), throwaway=throwaway)
    message = str(info.value)
    assert_one_line(message)
    assert str(path) in message
    assert "`membership_store`" in message and "a file of its own" in message
    assert fingerprint(path) == before


def test_a_non_integer_schema_version_is_one_line_naming_it(tmp_path):
    path = tmp_path / "m.sqlite"
    MembershipStore(str(path)).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = 'three' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 'three'") as info:
        MembershipStore(str(path))
    assert_one_line(str(info.value))


def test_an_empty_file_is_still_initialised(tmp_path):
    path = tmp_path / "m.sqlite"
    path.touch()
    store = MembershipStore(str(path))
    try:
        aud = store.audience("contacts", "k", [ADVERTISER]).id
        confirm_rows(store, aud, "add", [(person("a"), FIRST["same"])])
        assert store.count_members(aud) == 1
    finally:
        store.close()


def test_an_empty_sqlite_database_is_still_initialised(tmp_path):
    path = foreign_file(tmp_path, "CREATE TABLE t (x)", "DROP TABLE t")
    MembershipStore(str(path)).close()
    db = sqlite3.connect(path)
    try:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        db.close()
    assert version == (str(SCHEMA_VERSION),)


# PostgreSQL: a schema may hold other applications' tables; the store's own names may not
# hold anything else.


def execute_in(server, url: str, *statements: str) -> None:
    schema = split_schema(url)[1]
    with server.connect() as db:
        db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement in statements:
            db.execute(statement)


@pytest.mark.parametrize(
    "kind",
    ["our-names-other-shape", "other-app-meta", "word-version"],
)
def test_postgres_tables_of_our_names_and_another_shape_are_refused_untouched(
    postgres_server, pg_url, kind
):
    execute_in(postgres_server, pg_url, *FOREIGN_FILES[kind])
    schema = split_schema(pg_url)[1]
    before = tables_of(postgres_server, schema), rows(postgres_server, pg_url, "meta")
    for throwaway in (False, True):
        with pytest.raises(StoreError, match="is not this target's store") as info:
            MembershipStore.open(pg_url, throwaway=throwaway)
        assert_one_line(str(info.value))
        assert "?schema=NAME" in str(info.value)
    assert (tables_of(postgres_server, schema), rows(postgres_server, pg_url, "meta")) == before


def test_postgres_store_sits_beside_other_tables_of_its_schema(postgres_server, pg_url):
    execute_in(postgres_server, pg_url, *FOREIGN_FILES["other-app"])
    store = MembershipStore(pg_url)
    try:
        assert store.audience("contacts", "k", [ADVERTISER]).id == 1
    finally:
        store.close()
    assert {"customers", "meta", "audiences"} <= set(
        tables_of(postgres_server, split_schema(pg_url)[1])
    )


# Passwords in store errors


def secret_urls(url: str) -> list[str]:
    """The store URL with a password in its user info, and with a `password` parameter."""
    with_user_info = url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    return [with_user_info, f"{url}&password={PASSWORD}"]


def unreachable(url: str) -> str:
    return url.replace(url.split("@", 1)[1].split("/", 1)[0], "127.0.0.1:9")


@pytest.mark.parametrize("where", ["user-info", "parameter"])
def test_no_store_error_shows_the_password(tmp_path, postgres_server, pg_url, where):
    url = secret_urls(pg_url)[where == "parameter"]
    messages = []
    # Cannot connect.
    with pytest.raises(StoreError) as info:
        MembershipStore.open(unreachable(url) + "&connect_timeout=3")
    messages.append(str(info.value))
    # Nothing there to read, copy or lock.
    with pytest.raises(StoreError) as info:
        MembershipStore.open(url, create=False)
    messages.append(str(info.value))
    with pytest.raises(StoreError) as info:
        copy_store(url, str(tmp_path / "copy.sqlite"))
    messages.append(str(info.value))
    # A destination that already holds data.
    source = tmp_path / "source.sqlite"
    filled = MembershipStore(str(source))
    aud = filled.audience("contacts", "k", [ADVERTISER]).id
    confirm_rows(filled, aud, "add", [(person("a"), FIRST["same"])])
    filled.close()
    copy_store(str(source), url)
    with pytest.raises(StoreError, match="is not empty") as info:
        copy_store(str(source), url)
    messages.append(str(info.value))
    # A store newer than this program.
    schema = split_schema(url)[1]
    with postgres_server.connect() as db:
        db.execute(f"UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer") as info:
        MembershipStore.open(url)
    messages.append(str(info.value))
    with postgres_server.connect() as db:
        db.execute(f"DROP SCHEMA {schema} CASCADE")
    # Another application's tables there.
    execute_in(postgres_server, url, *FOREIGN_FILES["word-version"])
    with pytest.raises(StoreError) as info:
        MembershipStore.open(url)
    messages.append(str(info.value))
    for message in messages:
        assert PASSWORD not in message, message
        assert "***" in message, message
        assert_one_line(message)


def test_a_lock_wait_and_a_failed_copy_do_not_show_the_password(tmp_path, pg_url):
    url = secret_urls(pg_url)[1]
    holder = MembershipStore(url)
    waiter = MembershipStore(url)
    try:
        aud = holder.audience("contacts", "k", [ADVERTISER]).id
        confirm_rows(holder, aud, "add", [(person("a"), FIRST["same"])])
        holder.lock_audience(aud, "Customers", 1)
        with pytest.raises(StoreError, match="being synced by another run") as info:
            waiter.lock_audience(aud, "Customers", 0.3)
        assert PASSWORD not in str(info.value)
        with pytest.raises(StoreError, match="cannot copy") as info:
            waiter.copy_into(MembershipStore(":memory:"), force=False, lock_timeout=0.3)
        assert PASSWORD not in str(info.value)
    finally:
        waiter.close()
        holder.close()


# A server that stops answering


def test_every_operation_on_a_stopped_backend_ends_after_the_timeout(pg_url):
    store = MembershipStore.open(secret_urls(pg_url)[0], timeout=2)
    aud = store.audience("contacts", "k", [ADVERTISER]).id
    pid = store._db.execute("SELECT pg_backend_pid()").fetchone()[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"did not answer within 2 s") as info:
            confirm_rows(store, aud, "add", [(person("a"), FIRST["same"])])
        assert 1.5 <= time.monotonic() - started < 30
        assert_one_line(str(info.value))
        assert PASSWORD not in str(info.value) and "***" in str(info.value)
        started = time.monotonic()
        with pytest.raises(StoreError, match="did not answer"):
            store.count_members(aud)  # the connection is gone: at once, not another wait
        assert time.monotonic() - started < 1
    finally:
        os.kill(pid, signal.SIGCONT)
        store.close()
