"""`tiktok-audiences status` watching runs: SYNCING, STALE, streams that stopped, `--fail-on`.

Everything through the installed console scripts against the fake TikTok: the syncs are real
runs of the target, slowed down by the fake where a run must still hold its lock.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from typing import Any

import pytest

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.store import MembershipStore
from tests.conftest import ADVERTISER, TargetRunner, record, schema
from tests.test_cli import (  # noqa: F401  (the `synced` fixture)
    people,
    status,
    synced,
)
from tests.test_end_to_end_postgres import PostgresTargetRunner
from tests.test_faults import _start, _wait_for_mappings

WORDS = ("FAILED", "SYNCING", "PENDING", "CALCULATING", "TOO_SMALL", "EXPIRING", "STALE", "ACTIVE")


def age(target: TargetRunner, hours: float, sources: float | None = None) -> None:
    """Move every sync the SQLite store remembers `hours` into the past, its snapshots too
    (by `sources` hours when given)."""
    sources = hours if sources is None else sources
    db = sqlite3.connect(target.store_path)
    try:
        with db:
            db.execute("UPDATE audiences SET last_sync_at = last_sync_at - ?", (hours * 3600,))
            db.execute("UPDATE sources SET snapshot_at = snapshot_at - ?", (sources * 3600,))
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request, tmp_path, fake) -> TargetRunner:
    """The target runner on a SQLite file, then on a schema of the PostgreSQL test server."""
    if request.param == "sqlite":
        return TargetRunner(tmp_path, fake)
    return PostgresTargetRunner(tmp_path, fake, request.getfixturevalue("postgres_server"))


def slow_sync(target: TargetRunner, stream: str, **overrides: Any):
    """A real sync of `stream`, started and holding its audience's lock until the fake speeds up.

    The fake answers each mapping request after half a second, and the run sends 50 of them;
    `fake.inject()` lets it finish at once.
    """
    target.fake.inject(latency=0.5)
    target.fake.reset_log()
    messages = [
        schema(stream),
        *(record(stream, id=i, email=f"p{i}@example.com") for i in range(100)),
    ]
    proc = _start(
        target, messages, f"{stream}.json", batch_size=2, max_parallel_requests=1, **overrides
    )
    _wait_for_mappings(target.fake, 1)
    return proc


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path) -> str:
    """A new store's `membership_store`: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("pg_url")


def test_looking_at_the_lock_takes_nothing(tmp_path, location):
    looking = MembershipStore.open(location)
    syncing = MembershipStore.open(location)
    try:
        audience = looking.audience("contacts", "name:Contacts", [ADVERTISER]).id
        assert not looking.syncing(audience)
        assert not list(tmp_path.glob("*.locks/*")), "no lock file made by looking"
        syncing.lock_audience(audience, "contacts", 0)  # free: looking kept nothing
        assert looking.syncing(audience)
        assert looking.syncing(audience), "a second look sees the same"
        syncing.close()  # PostgreSQL frees the lock once the server has seen the session end
        deadline = time.monotonic() + 10
        while looking.syncing(audience) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not looking.syncing(audience)
        looking.lock_audience(audience, "contacts", 0)  # and the look left it free
        assert not looking.syncing(audience), "its own lock is no other run's"
        other = MembershipStore.open(location)
        try:
            with pytest.raises(StoreError, match="is being synced by another run"):
                other.lock_audience(audience, "contacts", 0)
        finally:
            other.close()
    finally:
        syncing.close()
        looking.close()


def rows_of(result) -> dict[str, dict]:
    return {r["stream"]: r for r in json.loads(result.stdout)}


def test_syncing_while_a_real_sync_holds_the_audience(tmp_path, store_target, fake):
    target = store_target
    assert target.run(people("contacts", 5)).returncode == 0
    proc = slow_sync(target, "contacts")
    try:
        during = status(tmp_path, target.config, "--format", "json", "--fail-on", "SYNCING")
        table = status(tmp_path, target.config)
    finally:
        fake.inject()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # looking at the lock kept nothing from the run
    assert during.returncode == 2, during.output
    assert rows_of(during)["contacts"]["status"] == "SYNCING"
    assert during.stderr == "tiktok-audiences: --fail-on SYNCING: 1 audience(s): contacts SYNCING\n"
    assert table.returncode == 0 and " SYNCING" in table.stdout.splitlines()[1]
    after = status(tmp_path, target.config, "--format", "json", "--fail-on", "SYNCING")
    assert after.returncode == 0, after.output
    assert rows_of(after)["contacts"]["status"] == "TOO_SMALL"  # 100 people, 60 matched


def test_stale_after_the_last_successful_sync_is_too_old(tmp_path, target, fake):
    assert target.run(people("contacts", 5)).returncode == 0
    [audience] = fake.audiences()
    fake.set_audience_details(audience["audience_id"], cover_num=5000)
    stale_config = {**target.config, "stale_after_hours": 2}
    fresh = status(tmp_path, stale_config, "--format", "json", "--fail-on", "STALE")
    age(target, 3)
    never = status(tmp_path, target.config, "--format", "json")
    stale = status(tmp_path, stale_config, "--format", "json", "--fail-on", "STALE")
    later = status(tmp_path, {**target.config, "stale_after_hours": 3.5}, "--format", "json")

    assert fresh.returncode == 0, fresh.output
    [row] = json.loads(fresh.stdout)
    assert (row["status"], row["stale_streams"]) == ("ACTIVE", [])
    [row] = json.loads(never.stdout)
    assert (row["status"], row["stale_streams"]) == ("ACTIVE", None)  # 0: never stale
    assert stale.returncode == 2, stale.output
    [row] = json.loads(stale.stdout)
    assert row["status"] == "STALE"
    assert row["stale_streams"] == [{"stream": "contacts", "last_snapshot_at": row["last_sync_at"]}]
    [row] = json.loads(later.stdout)
    assert (row["status"], row["stale_streams"]) == ("ACTIVE", [])
    # A new successful sync makes it fresh again.
    assert target.run(people("contacts", 5)).returncode == 0
    [row] = json.loads(status(tmp_path, stale_config, "--format", "json").stdout)
    assert row["status"] == "ACTIVE"


def test_streams_that_stopped_sending_show_in_the_rows_they_feed(tmp_path, target, fake):
    target.config.update(
        audiences={
            "contacts": {},
            "vip": {"audience_name": "VIP", "streams": ["contacts", "crm", "events"]},
        },
        exclude_streams=["optouts"],
    )
    first = [*people("contacts", 4), *people("crm", 3, start=10), *people("optouts", 1, start=99)]
    assert target.run(first).returncode == 0, "contacts, crm and the opt-outs"
    age(target, 30)
    # The same contacts again: their source does not change, the audience's sync is fresh.
    assert target.run(people("contacts", 4)).returncode == 0, "contacts alone"
    config = {**target.config, "stale_after_hours": 24}

    run = status(tmp_path, config, "--format", "json")
    table = status(tmp_path, config)

    assert run.returncode == 0, run.output
    rows = rows_of(run)
    assert rows["contacts"]["status"] != "STALE" and rows["vip"]["status"] != "STALE"
    sent = {r["stream"]: r["last_snapshot_at"] for r in rows["vip"]["stale_streams"]}
    assert list(sent) == ["crm", "events", "optouts"]
    assert sent["events"] is None  # never sent anything
    assert sent["crm"] == sent["optouts"] and sent["crm"] < rows["vip"]["last_sync_at"]
    assert [r["stream"] for r in rows["contacts"]["stale_streams"]] == ["optouts"]
    lines = table.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0])[-1] == "STALE STREAMS"
    assert lines[1].endswith("  optouts") and lines[2].endswith("  crm,events,optouts")
    when = sent["crm"].replace("T", " ").rstrip("Z")
    assert lines[3:] == [
        f"stream optouts has sent nothing since {when} UTC (audiences contacts, vip): check "
        "the tap or job that sends it",
        f"stream crm has sent nothing since {when} UTC (audience vip): check the tap or job "
        "that sends it",
        "stream events has sent nothing yet (audience vip): check the tap or job that sends it",
    ]


def test_a_simple_audiences_stream_last_sent_when_it_last_synced(tmp_path, target, fake):
    target.config.update(audiences={"buyers": {}}, exclude_streams=["optouts"])
    assert target.run([*people("buyers", 3), *people("optouts", 1, start=9)]).returncode == 0
    [audience] = fake.audiences()
    fake.set_audience_details(audience["audience_id"], cover_num=5000)
    age(target, 30, sources=31)  # its source was read before the audience synced

    run = status(tmp_path, {**target.config, "stale_after_hours": 24}, "--format", "json")

    [row] = json.loads(run.stdout)
    assert row["status"] == "STALE"
    sent = {r["stream"]: r["last_snapshot_at"] for r in row["stale_streams"]}
    assert sent["buyers"] == row["last_sync_at"] and sent["optouts"] < row["last_sync_at"]


def test_fail_on_each_word(tmp_path, target, fake, synced):  # noqa: F811
    target.config["audiences"]["syncing"] = {}
    config = {**target.config, "stale_after_hours": 1}
    age(target, 2)
    proc = slow_sync(target, "syncing")
    try:
        found = {}
        for word in WORDS:
            run = status(tmp_path, config, "--format", "json", "--fail-on", word)
            having = [s for s, r in rows_of(run).items() if r["status"] == word]
            found[word] = having
            assert run.returncode == (2 if having else 0), (word, run.output)
            if having:
                assert run.stderr.endswith(
                    f"--fail-on {word}: 1 audience(s): {having[0]} {word}\n"
                ), run.stderr
        several = status(tmp_path, config, "--fail-on", "stale, pending")
    finally:
        fake.inject()
        proc.communicate(timeout=120)
    assert found == {
        "FAILED": ["failing"],
        "SYNCING": ["syncing"],
        "PENDING": ["held"],
        "CALCULATING": ["calculating"],
        "TOO_SMALL": ["small"],
        "EXPIRING": ["expiring"],
        "STALE": ["active"],
        "ACTIVE": [],
    }
    assert several.returncode == 2
    assert several.stderr.splitlines()[-1] == (
        "tiktok-audiences: --fail-on PENDING,STALE: 2 audience(s): active STALE, held PENDING"
    )
    # Without stale_after_hours the STALE audience is ACTIVE, and ACTIVE is a word to fail on.
    active = status(tmp_path, target.config, "--fail-on", "ACTIVE")
    assert active.returncode == 2 and "active ACTIVE" in active.stderr


def test_fail_on_refuses_an_unknown_word_in_one_line(tmp_path, target):
    run = status(tmp_path, target.config, "--fail-on", "FAILED,BROKEN")
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == (
        "tiktok-audiences: status: --fail-on: unknown status word(s) BROKEN: give one or more of "
        "FAILED, SYNCING, PENDING, CALCULATING, TOO_SMALL, EXPIRING, STALE, ACTIVE, separated by "
        "commas\n"
    )
