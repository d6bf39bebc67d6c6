"""Diff planning without HTTP: MembershipStore on SQLite and on PostgreSQL, and planning.py.

The `store` fixture runs each store test on both backends; tests of SQLite's file handling open
a SQLite store directly (their PostgreSQL counterparts are in test_store_postgres.py).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from target_tiktok_audiences.errors import ConfigError, StoreError
from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.store import (
    SCHEMA_VERSION,
    MembershipStore,
    PlanSummary,
    Staged,
)
from target_tiktok_audiences.sync import removal_refusal, should_hold
from target_tiktok_audiences.tiktok.mapping import Batch, batch_json, mapping_body, mapping_json
from target_tiktok_audiences.workers import Workers
from tests.conftest import downgrade_sql
from tests.store_sql import confirm_rows, member_hashes, plan_rows

N = len(SLOTS)
SLOT = {name: i for i, name in enumerate(SLOTS)}
ADVERTISER = "7000000000000000001"
NONE = (None,) * N


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def md5(text: str) -> bytes:
    return hashlib.md5(text.encode()).digest()  # TikTok's IDFA_MD5 / AAID_MD5


def slots(email=None, phone=None, idfa=None, aaid=None):
    """A slots tuple in SLOTS order, hashed like the target hashes normalised identifiers."""
    out = [None] * N
    if email is not None:
        out[SLOT["EMAIL_SHA256"]] = sha(email)
    if phone is not None:
        out[SLOT["PHONE_SHA256"]] = sha(phone)
    if idfa is not None:
        out[SLOT["IDFA_SHA256"]] = sha(idfa)
        out[SLOT["IDFA_MD5"]] = md5(idfa)
    if aaid is not None:
        out[SLOT["AAID_SHA256"]] = sha(aaid)
        out[SLOT["AAID_MD5"]] = md5(aaid)
    return tuple(out)


def only(index_name: str, digest: bytes):
    out = [None] * N
    out[SLOT[index_name]] = digest
    return tuple(out)


def person(key: str) -> bytes:
    """A 16-byte digest of a record key, as the store keeps persons."""
    return hashlib.blake2b(f"key:{key}".encode(), digest_size=16).digest()


def planned(store, aud, action):
    """{person: (store slots, api slots)} of the planned rows of one action."""
    out = {}
    for _, who, store_slots, api_slots in plan_rows(store, aud, action):
        assert who not in out, "one planned row per person and action"
        out[who] = (store_slots, api_slots)
    return out


def members(store, aud):
    return {row[0]: tuple(row[1:]) for row in member_hashes(store, aud)}


def confirm_plan(store, aud):
    """Confirm every planned row as TikTok would (deletes first), with the store slots."""
    for action in ("delete", "add"):
        rows = [(who, s) for _, who, s, _ in plan_rows(store, aud, action)]
        if rows:
            confirm_rows(store, aud, action, rows)
    store.clear_staged(aud)


def stage(store, aud, people, remove=()):
    rows = [(person(k), 0, s) for k, s in people.items()]
    rows += [(person(k), 1, NONE) for k in remove]
    store.stage(aud, Staged.pack(rows))


def store_location(kind, request, tmp_path=None):
    """A new store's location: a SQLite file (":memory:" without tmp_path), or a fresh schema."""
    if kind == "postgresql":
        return request.getfixturevalue("postgres_server").new_url()
    return str(tmp_path / "store" / "membership.sqlite") if tmp_path else ":memory:"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    s = MembershipStore(store_location(request.param, request, tmp_path))
    yield s
    s.close()


@pytest.fixture
def aud(store):
    return store.audience("contacts", "name:Customers", [ADVERTISER]).id


# The five people of the first snapshot, and what the second one says about them.
FIRST = {
    "leaver": slots(email="leaver@example.com", phone="+14155550101"),
    "email": slots(email="old@example.com", phone="+14155550102"),
    "addphone": slots(email="addphone@example.com"),
    "dropphone": slots(email="dropphone@example.com", phone="+14155550104"),
    "same": slots(email="same@example.com", phone="+14155550105", idfa="idfa-same"),
}
SECOND = {
    "email": slots(email="new@example.com", phone="+14155550102"),
    "addphone": slots(email="addphone@example.com", phone="+14155550103"),
    "dropphone": slots(email="dropphone@example.com"),
    "same": FIRST["same"],
    "newcomer": slots(phone="+14155550106", aaid="aaid-new"),
}


def first_sync(store, aud, people=FIRST):
    stage(store, aud, people)
    summary = store.plan(aud, snapshot=True, complete=True)
    confirm_plan(store, aud)
    store.finish_upload(aud)
    return summary


# First snapshot


def test_first_snapshot_plans_everyone_as_add_with_all_slots(store, aud):
    stage(store, aud, FIRST)
    summary = store.plan(aud, snapshot=True, complete=True)
    assert summary == PlanSummary(
        joined=5,
        left=0,
        changed=0,
        unchanged=0,
        people=5,
        confirmed=0,
        held=0,
        add_rows=5,
        delete_rows=0,
    )
    adds = planned(store, aud, "add")
    assert adds == {person(k): (s, s) for k, s in FIRST.items()}
    assert planned(store, aud, "delete") == {}


def test_confirmed_adds_become_members(store, aud):
    first_sync(store, aud)
    assert members(store, aud) == {person(k): s for k, s in FIRST.items()}
    assert store.count_members(aud) == 5
    assert store.get_audience(aud).uploaded_at is not None


def stage_repeats(store, aud):
    """Stage, over three chunks, people some of whom come more than once; return who stays.

    Each person's last row wins: a later email replaces an earlier one, a later leaving row
    removes someone staged before, and a later row brings back someone who left.
    """
    stage(store, aud, {"changes-twice": slots(email="one@example.com"), "plain": FIRST["same"]})
    stage(
        store,
        aud,
        {"changes-twice": slots(email="two@example.com"), "comes-back": FIRST["leaver"]},
        remove=["leaves-later"],
    )
    stage(store, aud, {"leaves-later": FIRST["addphone"]})  # back again after leaving
    stage(
        store,
        aud,
        {"changes-twice": slots(email="three@example.com", phone="+14155550100")},
        remove=["comes-back"],
    )
    return {
        person("changes-twice"): slots(email="three@example.com", phone="+14155550100"),
        person("plain"): FIRST["same"],
        person("leaves-later"): FIRST["addphone"],
    }


def test_first_sync_plans_each_persons_last_row_only(store, aud):
    stays = stage_repeats(store, aud)
    summary = store.plan(aud, snapshot=True, complete=True)
    assert (summary.joined, summary.add_rows, summary.people) == (3, 3, 3)
    assert planned(store, aud, "add") == {who: (s, s) for who, s in stays.items()}
    assert planned(store, aud, "delete") == {}
    confirm_plan(store, aud)
    assert members(store, aud) == stays


def test_rerun_plans_each_persons_last_row_only(store, aud):
    first_sync(store, aud, {"plain": FIRST["same"], "changes-twice": FIRST["addphone"]})
    stays = stage_repeats(store, aud)
    summary = store.plan(aud, snapshot=True, complete=True)
    assert (summary.joined, summary.changed, summary.unchanged) == (1, 1, 1)
    confirm_plan(store, aud)
    assert members(store, aud) == stays


def test_same_snapshot_again_plans_nothing(store, aud):
    first_sync(store, aud)
    stage(store, aud, FIRST)
    summary = store.plan(aud, snapshot=True, complete=True)
    assert summary == PlanSummary(unchanged=5, people=5, confirmed=5)
    assert planned(store, aud, "add") == planned(store, aud, "delete") == {}


# Second snapshot: the difference


def test_second_snapshot_plans_exact_deletes_and_adds(store, aud):
    first_sync(store, aud)
    stage(store, aud, SECOND)
    summary = store.plan(aud, snapshot=True, complete=True)
    assert summary == PlanSummary(
        joined=1,
        left=1,
        changed=3,
        unchanged=1,
        people=5,
        confirmed=5,
        held=0,
        add_rows=3,
        delete_rows=3,
    )
    deletes = planned(store, aud, "delete")
    old_email = only("EMAIL_SHA256", sha("old@example.com"))
    dropped_phone = only("PHONE_SHA256", sha("+14155550104"))
    assert deletes == {
        person("leaver"): (FIRST["leaver"], FIRST["leaver"]),
        person("email"): (old_email, old_email),
        person("dropphone"): (dropped_phone, dropped_phone),
    }
    adds = planned(store, aud, "add")
    new_email = only("EMAIL_SHA256", sha("new@example.com"))
    new_phone = only("PHONE_SHA256", sha("+14155550103"))
    assert adds == {
        person("email"): (new_email, new_email),
        person("addphone"): (new_phone, new_phone),
        person("newcomer"): (SECOND["newcomer"], SECOND["newcomer"]),
    }


def test_second_snapshot_confirmed_leaves_exactly_the_new_membership(store, aud):
    first_sync(store, aud)
    stage(store, aud, SECOND)
    store.plan(aud, snapshot=True, complete=True)
    confirm_plan(store, aud)
    assert members(store, aud) == {person(k): s for k, s in SECOND.items()}


def test_deletes_are_planned_before_adds(store, aud):
    first_sync(store, aud)
    stage(store, aud, SECOND)
    store.plan(aud, snapshot=True, complete=True)
    delete_seqs = [seq for seq, *_ in plan_rows(store, aud, "delete")]
    add_seqs = [seq for seq, *_ in plan_rows(store, aud, "add")]
    assert max(delete_seqs) < min(add_seqs)


def test_incomplete_snapshot_plans_no_leavers(store, aud):
    first_sync(store, aud)
    stage(store, aud, SECOND)
    summary = store.plan(aud, snapshot=True, complete=False)
    assert summary.left == 0
    deletes = planned(store, aud, "delete")
    assert person("leaver") not in deletes
    # Changes of staged people still apply.
    assert set(deletes) == {person("email"), person("dropphone")}
    assert set(planned(store, aud, "add")) == {
        person("email"),
        person("addphone"),
        person("newcomer"),
    }
    # The leaver stays counted: 5 confirmed - nobody + 1 newcomer.
    assert summary.people == 6


def test_empty_complete_snapshot_plans_everyone_out(store, aud):
    first_sync(store, aud)
    summary = store.plan(aud, snapshot=True, complete=True)
    assert summary.left == summary.confirmed == 5
    assert summary.people == 0
    assert removal_refusal(summary, 0.5, first_sync=False, label="Customers") is not None


# Incremental


def test_incremental_removals_delete_stored_slots_and_leave_others(store, aud):
    first_sync(store, aud)
    stage(store, aud, {"newcomer": SECOND["newcomer"]}, remove=["leaver", "nobody"])
    summary = store.plan(aud, snapshot=False, complete=True)
    assert summary.left == 1
    assert summary.joined == 1
    assert summary.changed == 0
    assert summary.confirmed == 5
    assert summary.people == 5  # 4 untouched + 1 newcomer
    assert planned(store, aud, "delete") == {person("leaver"): (FIRST["leaver"], FIRST["leaver"])}
    assert set(planned(store, aud, "add")) == {person("newcomer")}
    confirm_plan(store, aud)
    expected = {person(k): s for k, s in FIRST.items() if k != "leaver"}
    expected[person("newcomer")] = SECOND["newcomer"]
    assert members(store, aud) == expected


def test_incremental_update_replaces_a_persons_slots(store, aud):
    first_sync(store, aud)
    stage(store, aud, {"email": SECOND["email"]})
    summary = store.plan(aud, snapshot=False, complete=True)
    assert (summary.changed, summary.left, summary.joined) == (1, 0, 0)
    old_email = only("EMAIL_SHA256", sha("old@example.com"))
    new_email = only("EMAIL_SHA256", sha("new@example.com"))
    assert planned(store, aud, "delete") == {person("email"): (old_email, old_email)}
    assert planned(store, aud, "add") == {person("email"): (new_email, new_email)}


# Shared hashes


HOUSEHOLD = "+14155550199"


def plan_household_leavers(store, aud):
    """Three people share a phone; the snapshot keeps one: two leave, one of them phone-only."""
    first_sync(
        store,
        aud,
        {
            "leaver": slots(email="a@example.com", phone=HOUSEHOLD),
            "stays": slots(email="b@example.com", phone=HOUSEHOLD),
            "phone-only-leaver": slots(phone=HOUSEHOLD),
        },
    )
    stage(store, aud, {"stays": slots(email="b@example.com", phone=HOUSEHOLD)})
    return store.plan(aud, snapshot=True, complete=True)


def test_leavers_shared_phone_is_not_sent_but_the_row_still_goes(store, aud):
    household = HOUSEHOLD
    summary = plan_household_leavers(store, aud)
    assert summary.left == 2
    deletes = planned(store, aud, "delete")
    leaver_store, leaver_api = deletes[person("leaver")]
    assert leaver_store == slots(email="a@example.com", phone=household)
    assert leaver_api == slots(email="a@example.com")  # phone slot NULL: not sent
    only_store, only_api = deletes[person("phone-only-leaver")]
    assert only_store == slots(phone=household)
    assert only_api == NONE
    assert summary.delete_rows == 1  # the phone-only leaver sends nothing at all
    confirm_plan(store, aud)
    assert members(store, aud) == {person("stays"): slots(email="b@example.com", phone=household)}


def test_changed_persons_old_hash_kept_by_another_is_not_sent(store, aud):
    first_sync(
        store,
        aud,
        {
            "a": slots(email="a@example.com", phone="+14155550111"),
            "b": slots(email="b@example.com"),
        },
    )
    # a's phone moves to b; a drops it.
    stage(
        store,
        aud,
        {
            "a": slots(email="a@example.com"),
            "b": slots(email="b@example.com", phone="+14155550111"),
        },
    )
    store.plan(aud, snapshot=True, complete=True)
    deletes = planned(store, aud, "delete")
    assert deletes == {person("a"): (slots(phone="+14155550111"), NONE)}


def test_incremental_hash_kept_by_unstaged_member_is_not_sent(store, aud):
    shared = "shared@example.com"
    first_sync(
        store,
        aud,
        {
            "leaver": slots(email=shared, phone="+14155550121"),
            "unstaged": slots(email=shared),
        },
    )
    stage(store, aud, {}, remove=["leaver"])
    store.plan(aud, snapshot=False, complete=True)
    deletes = planned(store, aud, "delete")
    assert deletes == {
        person("leaver"): (
            slots(email=shared, phone="+14155550121"),
            slots(phone="+14155550121"),
        )
    }
    confirm_plan(store, aud)
    assert members(store, aud) == {person("unstaged"): slots(email=shared)}


def test_incremental_hash_of_another_leaver_is_sent(store, aud):
    shared = "shared@example.com"
    first_sync(store, aud, {"a": slots(email=shared), "b": slots(email=shared)})
    stage(store, aud, {}, remove=["a", "b"])
    store.plan(aud, snapshot=False, complete=True)
    deletes = planned(store, aud, "delete")
    assert {api for _, api in deletes.values()} == {slots(email=shared)}


# Confirmation


def test_confirm_delete_then_add_leaves_exactly_the_new_slots(store, aud):
    old = slots(email="old@example.com", phone="+14155550131")
    new = slots(email="new@example.com", phone="+14155550131")
    who = person("p")
    confirm_rows(store, aud, "add", [(who, old)])
    confirm_rows(store, aud, "delete", [(who, only("EMAIL_SHA256", sha("old@example.com")))])
    assert members(store, aud) == {who: slots(phone="+14155550131")}
    confirm_rows(store, aud, "add", [(who, only("EMAIL_SHA256", sha("new@example.com")))])
    assert members(store, aud) == {who: new}


def test_confirm_delete_of_every_slot_removes_the_member(store, aud):
    who, other = person("p"), person("q")
    confirm_rows(store, aud, "add", [(who, FIRST["same"]), (other, FIRST["leaver"])])
    confirm_rows(store, aud, "delete", [(who, FIRST["same"])])
    assert members(store, aud) == {other: FIRST["leaver"]}
    assert store.count_members(aud) == 1


def test_confirm_delete_of_a_hash_the_row_no_longer_has_changes_nothing(store, aud):
    who = person("p")
    current = slots(email="now@example.com", phone="+14155550141")
    confirm_rows(store, aud, "add", [(who, current)])
    confirm_rows(
        store, aud, "delete", [(who, slots(email="then@example.com", phone="+14155550149"))]
    )
    assert members(store, aud) == {who: current}
    confirm_rows(store, aud, "delete", [(person("stranger"), current)])
    assert members(store, aud) == {who: current}


def test_confirm_is_per_audience(store, aud):
    other = store.audience("other", "name:Other", [ADVERTISER]).id
    confirm_rows(store, aud, "add", [(person("p"), FIRST["same"])])
    confirm_rows(store, other, "add", [(person("p"), FIRST["same"])])
    confirm_rows(store, other, "delete", [(person("p"), FIRST["same"])])
    assert store.count_members(aud) == 1
    assert store.count_members(other) == 0


def test_transaction_rolls_back_on_exception(store, aud):
    confirm_rows(store, aud, "add", [(person("before"), FIRST["same"])])
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("DELETE FROM members WHERE audience = ?", (aud,))
        db.execute(
            "INSERT INTO members (audience, person, s0) VALUES (?, ?, ?)",
            (aud, person("half"), sha("half@example.com")),
        )
        raise RuntimeError("dies mid-way")
    assert members(store, aud) == {person("before"): FIRST["same"]}
    # The connection is usable afterwards (no transaction left open).
    confirm_rows(store, aud, "add", [(person("after"), FIRST["leaver"])])
    assert store.count_members(aud) == 2


def test_confirm_that_fails_mid_batch_applies_nothing(store, aud):
    good = (person("good"), FIRST["same"])
    bad = (person("bad"), (sha("x"),))  # wrong number of slots: the insert fails
    with pytest.raises(store.errors):
        confirm_rows(store, aud, "add", [good, bad])
    assert store.count_members(aud) == 0


def test_confirm_planned_applies_the_sent_rows_of_its_range_only(store, aud):
    plan_household_leavers(store, aud)
    seqs = [seq for seq, *_ in plan_rows(store, aud, "delete")]
    # The phone-only leaver's row sends nothing (the phone stays with "stays"): a confirmed
    # batch's range does not apply it, even when the range spans it.
    store.confirm_planned(aud, "delete", min(seqs), max(seqs))
    assert set(members(store, aud)) == {person("stays"), person("phone-only-leaver")}
    confirm_rows(store, aud, "delete", [(person("phone-only-leaver"), slots(phone=HOUSEHOLD))])
    assert set(members(store, aud)) == {person("stays")}


def test_confirm_planned_applies_no_row_outside_its_range(store, aud):
    stage(store, aud, FIRST)
    store.plan(aud, snapshot=True, complete=True)
    rows = list(plan_rows(store, aud, "add"))
    seq, who, store_slots, _ = rows[1]
    store.confirm_planned(aud, "add", seq, seq)
    assert members(store, aud) == {who: store_slots}
    store.confirm_planned(aud, "add", rows[0][0], rows[-1][0])
    assert store.count_members(aud) == len(FIRST)


@pytest.mark.parametrize("swap", [0, 1, 2])
def test_a_snapshot_of_the_same_size_finds_its_leavers(store, aud, swap):
    """As many join as leave: the count of people is unchanged, yet the leavers go."""
    first_sync(store, aud, {f"p{i}": slots(email=f"p{i}@example.com") for i in range(4)})
    again = {f"p{i}": slots(email=f"p{i}@example.com") for i in range(swap, 4)}
    again |= {f"n{i}": slots(email=f"n{i}@example.com") for i in range(swap)}
    stage(store, aud, again)
    summary = store.plan(aud, snapshot=True, complete=True)
    assert (summary.left, summary.joined, summary.unchanged) == (swap, swap, 4 - swap)
    assert set(planned(store, aud, "delete")) == {person(f"p{i}") for i in range(swap)}


def all_batches(store, aud, action, limit):
    batches, after = [], -1
    while (batch := store.next_batch(aud, action, after, limit)) is not None:
        batches.append(batch)
        after = batch.last
    return batches


def test_next_batch_gives_every_row_to_send_once_in_plan_order(store, aud):
    """Batches cover the planned rows with a hash to send, by seq range, kept hashes left out.

    On SQLite a batch carries no rows: they are read from the run's work file, on another
    connection, exactly as the store's own connection sees them.
    """
    stage(store, aud, FIRST)
    store.plan(aud, snapshot=True, complete=True)
    adds = [(seq, sent) for seq, _, _, sent in plan_rows(store, aud, "add")]
    batches = all_batches(store, aud, "add", 2)
    assert [b.size for b in batches] == [2, 2, 1]
    assert [(b.first, b.last) for b in batches] == [
        (adds[i][0], adds[min(i + 1, len(adds) - 1)][0]) for i in range(0, len(adds), 2)
    ]
    assert [tuple(r) for b in batches for r in b.slots()] == [sent for _, sent in adds]
    assert all((b.rows is None) == (store._db.work_path is not None) for b in batches)
    store.clear_staged(aud)

    plan_household_leavers(store, aud)
    deletes = list(plan_rows(store, aud, "delete"))
    assert len(deletes) == 2  # one of them sends nothing: its only hash is kept
    (batch,) = all_batches(store, aud, "delete", 10)
    assert batch.size == 1
    assert list(batch.slots()) == [slots(email="a@example.com")]
    assert all_batches(store, aud, "add", 10) == []


def test_a_worker_process_builds_the_body_from_the_work_file(tmp_path):
    store = MembershipStore(str(tmp_path / "s.sqlite"))
    aud = store.audience("contacts", "name:Customers", [ADVERTISER]).id
    stage(store, aud, {f"p{i}": slots(email=f"p{i}@example.com") for i in range(50)})
    store.plan(aud, snapshot=True, complete=True)
    (batch,) = all_batches(store, aud, "add", 100)
    inline = [sent for _, _, _, sent in plan_rows(store, aud, "add")]
    workers = Workers(2)
    try:
        body = workers.submit(batch_json, "add", [ADVERTISER], "9", batch, parallel=True)
        assert body.result() == mapping_json("add", [ADVERTISER], "9", inline)
    finally:
        workers.close()
        store.close()


def test_the_work_file_is_private_and_gone_after_close(tmp_path):
    store = MembershipStore(str(tmp_path / "s.sqlite"))
    work = Path(store._db.work_path)
    assert work.exists()
    assert work.stat().st_mode & 0o777 == 0o600
    store.close()
    assert not any(work.parent.glob(work.stem + "*"))


def run_files(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("tiktok-audiences-run-*")}


def test_a_killed_runs_files_are_removed_by_a_later_run_never_a_live_runs(tmp_path, monkeypatch):
    """SIGKILL leaves a dry run's copy and work file behind: a later run removes them."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead_store = str(tmp_path / "dead.sqlite")
    code = (
        "import os, signal\n"
        "from target_tiktok_audiences.store import MembershipStore\n"
        f"MembershipStore({dead_store!r}, throwaway=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -signal.SIGKILL
    dead = run_files(tmp_path)
    assert len([name for name in dead if name.endswith(".lock")]) == 2  # the copy, the work file
    live = MembershipStore(str(tmp_path / "live.sqlite"), throwaway=True)
    live_files = run_files(tmp_path) - dead
    assert len(live_files) >= 4
    # A lock file just made may not be held yet: left alone, however it looks.
    MembershipStore(":memory:").close()
    assert dead <= run_files(tmp_path)
    long_ago = time.time() - 3600
    for path in tmp_path.glob("tiktok-audiences-run-*"):
        os.utime(path, (long_ago, long_ago))
    MembershipStore(":memory:").close()
    assert run_files(tmp_path) == live_files
    live.close()
    assert run_files(tmp_path) == set()


def test_a_batch_whose_plan_changed_is_refused():
    batch = Batch(1, 3, 3, source=lambda first, last: [NONE, NONE])
    with pytest.raises(StoreError, match="plan changed under a batch"):
        batch.slots()


def test_staged_people_unpack_exactly(store, aud):
    """Every slot combination and both flags survive packing and the database's unpacking."""
    digests = [sha(f"slot{i}")[: 32 if "SHA256" in name else 16] for i, name in enumerate(SLOTS)]
    rows = []
    for mask in range(1 << N):
        for remove in (0, 1):
            kept = tuple(d if mask >> i & 1 else None for i, d in enumerate(digests))
            rows.append((person(f"{mask}-{remove}"), remove, kept))
    store.stage(aud, Staged.pack(rows))
    got = store._db.execute(
        "SELECT person, remove, s0, s1, s2, s3, s4, s5 FROM staged ORDER BY seq"
    ).fetchall()
    assert [
        (bytes(r[0]), r[1], tuple(None if s is None else bytes(s) for s in r[2:])) for r in got
    ] == rows


@pytest.mark.parametrize(
    ("person_key", "slots_", "fault"),
    [
        (b"short", NONE, "person key"),
        (bytes(16), (b"x" * 31, *NONE[1:]), "EMAIL_SHA256 digest"),
        (bytes(16), NONE[:5], "slots"),
    ],
)
def test_staged_pack_refuses_malformed_rows(person_key, slots_, fault):
    with pytest.raises(ValueError, match=fault):
        Staged.pack([(person_key, 0, slots_)])


def test_staged_refuses_records_of_the_wrong_size():
    packed = Staged.pack([(bytes(16), 0, NONE)]).packed
    with pytest.raises(ValueError, match="records"):
        Staged(packed[:-1], 1)


# Holding a first upload (min_audience_size)


def test_hold_snapshot_replaces_pending(store, aud):
    stage(store, aud, {"a": FIRST["same"], "b": FIRST["leaver"]})
    assert store.hold(aud, snapshot=True) == 2
    store.clear_staged(aud)
    stage(store, aud, {"c": FIRST["email"]})
    assert store.hold(aud, snapshot=True) == 1
    assert store.count_pending(aud) == 1
    assert store.count_members(aud) == 0


def test_hold_incremental_accumulates_and_removes(store, aud):
    stage(store, aud, {"a": FIRST["same"], "b": FIRST["leaver"]})
    assert store.hold(aud, snapshot=False) == 2
    store.clear_staged(aud)
    stage(store, aud, {"c": FIRST["email"], "b": FIRST["addphone"]}, remove=["a"])
    assert store.hold(aud, snapshot=False) == 2  # b (updated) and c
    store.clear_staged(aud)
    store.release_pending(aud)
    assert store.staged_count(aud) == 2
    summary = store.plan(aud, snapshot=False, complete=True)
    assert summary.joined == 2
    assert planned(store, aud, "add") == {
        person("b"): (FIRST["addphone"], FIRST["addphone"]),
        person("c"): (FIRST["email"], FIRST["email"]),
    }


def test_release_pending_then_finish_upload(store, aud):
    stage(store, aud, {"a": FIRST["same"]})
    store.hold(aud, snapshot=True)
    store.clear_staged(aud)
    assert store.staged_count(aud) == 0
    stage(store, aud, {"b": FIRST["leaver"]})
    assert store.hold(aud, snapshot=False) == 2
    store.release_pending(aud)
    assert store.staged_count(aud) == 2
    summary = store.plan(aud, snapshot=True, complete=True)
    assert (summary.joined, summary.add_rows) == (2, 2)
    confirm_plan(store, aud)
    assert store.get_audience(aud).uploaded_at is None
    store.finish_upload(aud)
    assert store.count_pending(aud) == 0
    assert store.count_members(aud) == 2
    uploaded = store.get_audience(aud).uploaded_at
    assert uploaded is not None
    store.finish_upload(aud)
    assert store.get_audience(aud).uploaded_at == uploaded  # first upload time is kept


def test_people_after(store, aud):
    first_sync(store, aud)
    stage(store, aud, {"newcomer": SECOND["newcomer"]}, remove=["leaver"])
    assert store.people_after(aud, snapshot=True) == 1
    assert store.people_after(aud, snapshot=False) == 5


# Opening the store


def test_store_file_is_private(tmp_path):
    path = tmp_path / "deep" / "dir" / "m.sqlite"
    MembershipStore(str(path)).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_throwaway_copy_never_reaches_the_file(tmp_path):
    path = str(tmp_path / "m.sqlite")
    real = MembershipStore.open(path)
    aud = real.audience("contacts", "k", [ADVERTISER]).id
    confirm_rows(real, aud, "add", [(person("a"), FIRST["same"])])
    real.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    copy = MembershipStore.open(path, throwaway=True)
    assert members(copy, aud) == {person("a"): FIRST["same"]}
    confirm_rows(copy, aud, "add", [(person("b"), FIRST["leaver"])])
    confirm_rows(copy, aud, "delete", [(person("a"), FIRST["same"])])
    copy.set_tiktok_audience(aud, "888", "Customers")
    copy.finish_upload(aud)
    assert members(copy, aud) == {person("b"): FIRST["leaver"]}
    copy.close()

    # The file is byte for byte the same; SQLite may leave an empty -wal/-shm pair behind.
    assert (tmp_path / "m.sqlite").read_bytes() == before["m.sqlite"]
    wal = tmp_path / "m.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    again = MembershipStore.open(path)
    assert members(again, aud) == {person("a"): FIRST["same"]}
    assert again.get_audience(aud).audience_id is None
    again.close()


def test_throwaway_of_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "nowhere" / "m.sqlite"
    copy = MembershipStore.open(str(path), throwaway=True)
    assert copy.list_audiences() == []
    copy.close()
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("dirname", ["run#1", "what?", "100%25"])
def test_throwaway_copy_of_a_path_with_uri_characters(tmp_path, dirname):
    directory = tmp_path / dirname
    directory.mkdir()
    path = str(directory / "m.sqlite")
    real = MembershipStore.open(path)
    aud = real.audience("contacts", "k", [ADVERTISER]).id
    confirm_rows(real, aud, "add", [(person("a"), FIRST["same"])])
    real.close()
    copy = MembershipStore.open(path, throwaway=True)
    try:
        assert members(copy, aud) == {person("a"): FIRST["same"]}
    finally:
        copy.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [dirname]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_unreachable_postgres_is_a_store_error_without_the_password(scheme):
    url = f"{scheme}://audiences:s3cret-pw@127.0.0.1:9/audiences?connect_timeout=5"
    with pytest.raises(StoreError, match="cannot be opened") as info:
        MembershipStore.open(url)
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert f"{scheme}://audiences:***@127.0.0.1:9/audiences" in message
    assert "membership_store" in message and "\n" not in message


def test_postgres_schema_must_be_a_plain_name():
    with pytest.raises(ConfigError, match="schema"):
        MembershipStore.open("postgresql://127.0.0.1:9/db?schema=Robert%27%3B%20DROP")


def newer_store(tmp_path) -> Path:
    path = tmp_path / "m.sqlite"
    MembershipStore(str(path)).close()
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 41),)
    )
    db.commit()
    db.close()
    return path


def test_newer_schema_version_is_refused(tmp_path):
    path = newer_store(tmp_path)
    version = str(SCHEMA_VERSION + 41)
    with pytest.raises(StoreError, match=version) as info:
        MembershipStore(str(path))
    assert "upgrade" in str(info.value)
    with pytest.raises(StoreError, match=version):
        MembershipStore.open(str(path), throwaway=True)


def test_refused_newer_store_is_left_untouched(tmp_path):
    path = newer_store(tmp_path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("DROP TABLE pending")  # say version 42 renamed it
    db.commit()
    db.close()
    with pytest.raises(StoreError):
        MembershipStore(str(path))
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()
    assert "pending" not in tables
    assert journal == "delete"


def test_store_written_before_last_change_at_still_works(tmp_path):
    path = tmp_path / "m.sqlite"
    MembershipStore(str(path)).close()
    db = sqlite3.connect(path)
    for statement in downgrade_sql(1):
        db.execute(statement)
    db.commit()
    db.close()
    store = MembershipStore(str(path))
    try:
        aud = store.audience("contacts", "k", [ADVERTISER]).id
        confirm_rows(store, aud, "add", [(person("a"), FIRST["same"])])
        assert store.count_members(aud) == 1
        assert store.list_audiences()[0].stream == "contacts"
    finally:
        store.close()


def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path):
    path = tmp_path / "m.sqlite"
    path.write_bytes(b"this is not a database, just a text file\n" * 100)
    with pytest.raises(StoreError, match=r"m\.sqlite"):
        MembershipStore(str(path))


def test_throwaway_store_error_names_the_file(tmp_path):
    path = tmp_path / "m.sqlite"
    path.write_bytes(b"this is not a database, just a text file\n" * 100)
    with pytest.raises(StoreError, match=r"m\.sqlite"):
        MembershipStore.open(str(path), throwaway=True)


def test_store_file_holds_no_raw_identifier(tmp_path):
    path = tmp_path / "m.sqlite"
    store = MembershipStore(str(path))
    aud = store.audience("contacts", "name:Customers", [ADVERTISER]).id
    emails = [f"person{i}.secret@example.com" for i in range(50)]
    phones = [f"+1415555{i:04d}" for i in range(50)]
    people = {e: slots(email=e, phone=p) for e, p in zip(emails, phones, strict=True)}
    stage(store, aud, people)
    store.hold(aud, snapshot=True)
    store.release_pending(aud)
    store.plan(aud, snapshot=True, complete=True)
    confirm_plan(store, aud)
    assert store.count_members(aud) == 50
    store.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert data
    for raw in [*emails, *phones, "secret@example.com", "example.com"]:
        assert raw.encode() not in data
    for e in emails[:5]:
        assert sha(e).hex().encode() not in data  # digests are stored as bytes, not hex


# Property: planning and confirming converge on the new membership, in the store and at TikTok


EMAILS = st.sampled_from([None, "e0", "e1", "e2"])
PHONES = st.sampled_from([None, "p0", "p1"])
IDFAS = st.sampled_from([None, "i0"])
SLOTS_ST = (
    st.tuples(EMAILS, PHONES, IDFAS)
    .filter(lambda t: any(x is not None for x in t))
    .map(lambda t: slots(email=t[0], phone=t[1], idfa=t[2]))
)
PEOPLE = st.dictionaries(st.sampled_from("abcdef"), SLOTS_ST, max_size=6)


_SHARED: dict[str, str] = {}


def shared_location(kind, request):
    """Hypothesis examples share one PostgreSQL schema (each uses an audience of its own)."""
    if kind == "sqlite":
        return ":memory:"
    if "pg" not in _SHARED:
        _SHARED["pg"] = store_location(kind, request)
    return _SHARED["pg"]


def hashes(people):
    return {(i, h) for s in people.values() for i, h in enumerate(s) if h is not None}


def run_plan(store, aud, tiktok):
    """Send the planned API slots to a set-like fake audience and confirm the store slots."""
    for action in ("delete", "add"):
        rows = list(plan_rows(store, aud, action))
        sent = {(i, h) for *_, api in rows for i, h in enumerate(api) if h is not None}
        if action == "delete":
            tiktok -= sent
        else:
            tiktok |= sent
        if rows:
            confirm_rows(store, aud, action, [(who, s) for _, who, s, _ in rows])
    store.clear_staged(aud)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@settings(max_examples=60, deadline=None)
@given(old=PEOPLE, new=PEOPLE)
def test_snapshot_plan_converges(kind, request, old, new):
    store = MembershipStore(shared_location(kind, request))
    try:
        aud = store.audience(uuid.uuid4().hex, "k", [ADVERTISER]).id
        tiktok: set = set()
        stage(store, aud, old)
        store.plan(aud, snapshot=True, complete=True)
        run_plan(store, aud, tiktok)
        assert tiktok == hashes(old)

        stage(store, aud, new)
        summary = store.plan(aud, snapshot=True, complete=True)
        assert summary.joined == len(new.keys() - old.keys())
        assert summary.left == len(old.keys() - new.keys())
        assert summary.changed == sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
        assert summary.unchanged == sum(1 for k in new.keys() & old.keys() if new[k] == old[k])
        assert (summary.people, summary.confirmed) == (len(new), len(old))
        run_plan(store, aud, tiktok)
        assert members(store, aud) == {person(k): s for k, s in new.items()}
        assert tiktok == hashes(new)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("snapshot", [False, True], ids=["incremental", "open-snapshot"])
@settings(max_examples=50, deadline=None)
@given(old=PEOPLE, updates=PEOPLE, removals=st.sets(st.sampled_from("abcdefg")))
def test_incremental_plan_converges(kind, request, snapshot, old, updates, removals):
    """Incremental changes, or an incomplete snapshot: only explicit removals leave."""
    removals -= updates.keys()
    store = MembershipStore(shared_location(kind, request))
    try:
        aud = store.audience(uuid.uuid4().hex, "k", [ADVERTISER]).id
        tiktok: set = set()
        stage(store, aud, old)
        store.plan(aud, snapshot=False, complete=True)
        run_plan(store, aud, tiktok)

        stage(store, aud, updates, remove=removals)
        summary = store.plan(aud, snapshot=snapshot, complete=not snapshot)
        expected = {k: s for k, s in old.items() if k not in removals}
        expected.update(updates)
        assert summary.left == len(old.keys() & removals)
        assert summary.people == len(expected)
        run_plan(store, aud, tiktok)
        assert members(store, aud) == {person(k): s for k, s in expected.items()}
        assert tiktok == hashes(expected)
    finally:
        store.close()


# planning.py


def summary(left, confirmed):
    return PlanSummary(left=left, confirmed=confirmed, people=confirmed - left)


@pytest.mark.parametrize(
    ("left", "confirmed", "fraction", "first"),
    [
        (10, 10, 0.5, True),  # first sync of an audience
        (0, 0, 0.5, False),  # nobody confirmed
        (0, 10, 0.0, False),  # nobody leaves
        (4, 10, 0.5, False),  # under
        (5, 10, 0.5, False),  # at
        (10, 10, 1.0, False),  # guard off
    ],
)
def test_removal_refusal_allows(left, confirmed, fraction, first):
    assert removal_refusal(summary(left, confirmed), fraction, first_sync=first, label="X") is None


def test_removal_refusal_names_counts_percent_and_setting():
    message = removal_refusal(summary(6, 10), 0.5, first_sync=False, label="Customers (888)")
    assert message is not None
    assert "Customers (888)" in message
    assert "6 of 10" in message
    assert "60.0%" in message
    assert "max_removal_fraction" in message
    assert "\n" not in message
    assert removal_refusal(summary(1, 1000), 0.0, first_sync=False, label="X") is not None


def test_removal_refusal_percent_is_over_the_limit_it_names():
    message = removal_refusal(summary(501, 1000), 0.5, first_sync=False, label="X")
    assert message is not None
    assert "(50%)" not in message


@pytest.mark.parametrize(
    ("people", "minimum", "uploaded", "hold"),
    [
        (0, 1000, False, True),
        (999, 1000, False, True),
        (1000, 1000, False, False),
        (1001, 1000, False, False),
        (0, 1000, True, False),
        (999, 1000, True, False),
        (0, 0, False, False),
        (5, 0, False, False),
    ],
)
def test_should_hold(people, minimum, uploaded, hold):
    assert should_hold(people, minimum, uploaded=uploaded) is hold


def test_mapping_body_aligns_used_slots():
    email_only = slots(email="a@example.com")
    phone_idfa = slots(phone="+14155550100", idfa="5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25")
    body = mapping_body("add", [ADVERTISER, "7000000000000000002"], "888", [email_only, phone_idfa])
    assert body["action"] == "add"
    assert body["advertiser_ids"] == [ADVERTISER, "7000000000000000002"]
    assert body["id_schema"] == ["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "IDFA_MD5"]
    entry = lambda digest: {"id": digest.hex(), "audience_ids": ["888"]}  # noqa: E731
    assert body["batch_data"] == [
        [entry(sha("a@example.com")), {}, {}, {}],
        [
            {},
            entry(sha("+14155550100")),
            entry(sha("5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25")),
            entry(md5("5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25")),
        ],
    ]
    for row in body["batch_data"]:
        assert len(row) == len(body["id_schema"])
        for cell in row:
            if cell:
                assert cell["id"] == cell["id"].lower()
                assert len(cell["id"]) in (32, 64)


def test_mapping_body_follows_slots_order_whatever_the_row_order():
    aaid = slots(aaid="aaid-1")
    email = slots(email="b@example.com")
    body = mapping_body("delete", (ADVERTISER,), "999", [aaid, email])
    assert body["action"] == "delete"
    assert body["advertiser_ids"] == [ADVERTISER]
    assert body["id_schema"] == ["EMAIL_SHA256", "AAID_SHA256", "AAID_MD5"]
    assert [s for s in SLOTS if s in body["id_schema"]] == body["id_schema"]
    assert body["batch_data"][0][0] == {}
    assert body["batch_data"][1][1:] == [{}, {}]
    assert all(
        cell["audience_ids"] == ["999"] for row in body["batch_data"] for cell in row if cell
    )


def test_mapping_body_all_slots():
    full = slots(email="e", phone="p", idfa="i", aaid="a")
    body = mapping_body("add", [ADVERTISER], "1", [full])
    assert body["id_schema"] == list(SLOTS)
    assert [cell["id"] for cell in body["batch_data"][0]] == [h.hex() for h in full]
