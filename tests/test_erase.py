"""`tiktok-audiences erase` and the suppression list, end to end on SQLite and PostgreSQL.

Stores are filled by real syncs of the target against the fake TikTok; `erase` is the
installed console script. Two streams feed a simple audience each and a composed audience of
both, so one person sits in three audiences and two sources; a third stream feeds only a
composed audience of its own.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.store.postgres import split_schema
from tests.conftest import TargetRunner, downgrade_sql, record, schema, sha
from tests.fake_tiktok import FakeTikTok
from tests.test_cli import cli, write_config
from tests.test_end_to_end_postgres import PostgresTargetRunner
from tests.test_faults import _start, _wait_for_mappings

# The person erased, as the tap writes her (mixed case, padded) and as the operator types her.
ALICE_RECORD = "  Alice.Erased@Example.COM "
ALICE = "alice.erased@example.com"
ALICE_TYPED = "Alice.Erased@example.com"
ALICE_PHONE = "+14155550123"
ALICE_IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
# Bob shares Alice's phone (a household) in the contacts stream.
BOB = "bob.stays@example.com"
AUDIENCES = {
    "contacts": {"audience_name": "Contacts"},
    "crm": {"audience_name": "CRM"},
    "union": {"audience_name": "Union", "streams": ["contacts", "crm"]},
    # Its stream feeds no simple audience: only its source remembers it.
    "prospects": {"audience_name": "Prospects", "streams": ["leads"]},
}
FAKE_REQUEST_ID = re.compile(r"^\d{14}fake\d{10}$")


def contacts(*, alice: bool = True) -> list[dict]:
    rows = [record(id=i, email=f"c{i}@example.com") for i in range(1, 4)]
    rows.append(record(id=10, email=BOB, phone=ALICE_PHONE))
    if alice:
        rows.append(record(id=11, email=ALICE_RECORD, phone="(415) 555-0123"))
    return [schema("contacts"), *rows]


def crm(*, alice: bool = True) -> list[dict]:
    rows = [record("crm", id=i, email=f"r{i}@example.com") for i in range(1, 3)]
    if alice:
        rows.append(record("crm", id=7, email=ALICE, idfa=ALICE_IDFA.upper()))
    return [schema("crm"), *rows]


def leads() -> list[dict]:
    """Alice again, by her phone alone."""
    return [
        schema("leads"),
        record("leads", id=1, email="l1@example.com"),
        record("leads", id=2, phone="415.555.0123"),
    ]


def on_tiktok(fake: FakeTikTok, name: str) -> set[str]:
    [audience] = [a for a in fake.audiences() if a["name"] == name]
    return set().union(*fake.members(str(audience["audience_id"])).values())


def alice_hashes() -> set[str]:
    return {sha(ALICE), sha(ALICE_PHONE), sha(ALICE_IDFA)}


@pytest.fixture(params=["sqlite", "postgres"])
def runner(request, tmp_path: Path, fake: FakeTikTok) -> TargetRunner:
    if request.param == "sqlite":
        return TargetRunner(tmp_path, fake)
    return PostgresTargetRunner(tmp_path, fake, request.getfixturevalue("postgres_server"))


def sync(runner: TargetRunner, *, alice: bool = True) -> str:
    run = runner.run([*contacts(alice=alice), *crm(alice=alice), *leads()], audiences=AUDIENCES)
    assert run.returncode == 0, run.stderr
    return run.stderr


def erase(runner: TargetRunner, *args: str) -> Any:
    config = write_config(runner.tmp_path, {**runner.config, "audiences": AUDIENCES})
    return cli("erase", "--config", config, *args, cwd=runner.tmp_path)


def assert_no_raw_value(runner: TargetRunner, *outputs: str, spared: tuple[Path, ...] = ()) -> None:
    """Neither Alice's email nor her phone or device id, in any form, in a file or an output."""
    raw = [ALICE, ALICE_PHONE, ALICE_IDFA, "555-0123", "5550123"]
    files = [p for p in runner.tmp_path.rglob("*") if p.is_file() and p not in spared]
    texts = [p.read_bytes().decode("latin-1").lower() for p in files]
    texts += [o.lower() for o in outputs]
    if hasattr(runner, "server"):  # PostgreSQL: every table of the store's schema
        for table in ("members", "pending", "source_people", "erasures", "suppressions"):
            texts.append(repr(runner.store_rows(table)).lower())
    for text in texts:
        for value in raw:
            assert value.lower() not in text


def receipts(runner: TargetRunner) -> list[dict[str, Any]]:
    keys = ("receipt", "erased_at", "hashes", "audiences", "request_ids", "complete")
    rows = [dict(zip(keys, row, strict=True)) for row in runner.store_rows("erasures")]
    for row in rows:
        for key in ("hashes", "audiences", "request_ids"):
            row[key] = json.loads(row[key])
    return sorted(rows, key=lambda r: r["erased_at"])


def stored_hashes(runner: TargetRunner, table: str) -> set[str]:
    columns = {"members": 2, "pending": 2, "source_people": 3}[table]
    return {
        bytes(v).hex() for row in runner.store_rows(table) for v in row[columns:] if v is not None
    }


def test_erase_touches_every_audience_and_source_and_keeps_a_shared_phone(runner, fake):
    sync(runner)
    assert alice_hashes() <= on_tiktok(fake, "Union")
    fake.reset_log()
    run = erase(runner, "--email", f"  {ALICE_TYPED}\t")
    assert run.returncode == 0, run.output
    assert on_tiktok(fake, "Contacts") & alice_hashes() == {sha(ALICE_PHONE)}, "Bob's phone"
    assert not on_tiktok(fake, "CRM") & alice_hashes()
    assert on_tiktok(fake, "Union") & alice_hashes() == {sha(ALICE_PHONE)}
    assert sha(BOB) in on_tiktok(fake, "Contacts")
    for table in ("members", "source_people"):
        assert not stored_hashes(runner, table) & {sha(ALICE), sha(ALICE_IDFA)}
    deletes = [e for e in fake.requests_log("segment/mapping/") if e["body"]["action"] == "delete"]
    assert len(deletes) == 3 and all(e["code"] == 0 for e in deletes)
    sent = {i["id"] for e in deletes for column in e["body"]["batch_data"] for i in column if i}
    assert sent == {sha(ALICE), sha(ALICE_IDFA)} | set(), "the shared phone is never deleted"
    [receipt] = receipts(runner)
    assert receipt["complete"] == 1
    assert receipt["hashes"] == [f"{SLOTS[0]}:{sha(ALICE)}"]
    assert len(receipt["request_ids"]) == 3
    assert all(FAKE_REQUEST_ID.match(i) for i in receipt["request_ids"])
    by_name = {a["name"]: a for a in receipt["audiences"]}
    assert {n: a["erased"] for n, a in by_name.items()} == {"Contacts": 1, "CRM": 1, "Union": 2}
    assert by_name["Contacts"]["kept"] == 1
    assert "receipt " in run.stdout and "4 members erased from 3 audiences" in run.stdout
    assert_no_raw_value(runner, run.stdout, run.stderr)
    # The next sync without her: nothing more to do, the audiences stay as they are.
    fake.reset_log()
    again = sync(runner, alice=False)
    assert "removed 0" in again
    assert not [e for e in fake.requests_log("segment/mapping/")]


def test_suppress_keeps_them_out_of_every_audience_counted_excluded(runner, fake):
    sync(runner)
    run = erase(runner, "--phone", "415 555 0123", "--suppress")
    assert run.returncode == 0, run.output
    assert "; 1 hash suppressed" in run.stdout
    # Both people with the phone are gone: Alice and Bob (the phone is what was named); her
    # CRM record holds no phone, and stays.
    assert not on_tiktok(fake, "Contacts") & (alice_hashes() | {sha(BOB)})
    assert sha(ALICE_PHONE) not in on_tiktok(fake, "Prospects")
    assert on_tiktok(fake, "Union") & (alice_hashes() | {sha(BOB)}) == {sha(ALICE), sha(ALICE_IDFA)}
    fake.reset_log()
    stderr = sync(runner)  # the tap still sends them
    assert not on_tiktok(fake, "Contacts") & (alice_hashes() | {sha(BOB)})
    assert sha(ALICE_PHONE) not in on_tiktok(fake, "Prospects")
    assert sha("l1@example.com") in on_tiktok(fake, "Prospects")
    # Her CRM record holds no suppressed hash: it stays, in the union too.
    assert on_tiktok(fake, "Union") & (alice_hashes() | {sha(BOB)}) == {sha(ALICE), sha(ALICE_IDFA)}
    assert sha(ALICE) in on_tiktok(fake, "CRM"), "her CRM record has no suppressed hash"
    names = ("Contacts", "Union", "Prospects")
    lines = {name: line for line in stderr.splitlines() for name in names if name in line}
    assert "added 0" in lines["Contacts"] and "excluded 2" in lines["Contacts"]
    assert "excluded 2" in lines["Union"]
    assert "added 0" in lines["Prospects"] and "excluded 1" in lines["Prospects"]
    assert_no_raw_value(runner, run.stdout, run.stderr, stderr)


def test_from_file_and_hash(runner, fake, tmp_path):
    sync(runner)
    listing = tmp_path / "requests" / "erase.txt"
    listing.parent.mkdir()
    listing.write_text(f"# one request\n\nemail:{ALICE_TYPED}\nidfa: {ALICE_IDFA}\n")
    run = erase(runner, "--from-file", str(listing), "--hash", f"EMAIL_SHA256:{sha(BOB).upper()}")
    assert run.returncode == 0, run.output
    for name in ("Contacts", "CRM", "Union"):
        assert not on_tiktok(fake, name) & (alice_hashes() | {sha(BOB)})
    [receipt] = receipts(runner)
    assert sorted(receipt["hashes"]) == sorted(
        [f"EMAIL_SHA256:{sha(ALICE)}", f"IDFA_SHA256:{sha(ALICE_IDFA)}", f"EMAIL_SHA256:{sha(BOB)}"]
    )
    assert_no_raw_value(runner, run.stdout, run.stderr, spared=(listing,))


def test_a_bad_line_is_named_by_number_and_erases_nothing(runner, fake, tmp_path):
    sync(runner)
    listing = tmp_path / "erase.txt"
    listing.write_text(f"email:{ALICE}\nphone:{ALICE}\n")
    run = erase(runner, "--from-file", str(listing))
    assert run.returncode == 1
    assert run.stderr == (
        f"tiktok-audiences: erase: --from-file {listing} line 2 is not a valid phone once "
        "normalised as records are: fix it; nothing was erased\n"
    )
    assert alice_hashes() <= on_tiktok(fake, "Union")
    assert_no_raw_value(runner, run.stdout, run.stderr, spared=(listing,))


def test_dry_run_sends_nothing_and_changes_nothing(runner, fake):
    sync(runner)
    before = {t: sorted(runner.store_rows(t)) for t in ("members", "pending", "source_people")}
    fake.reset_log()
    run = erase(runner, "--email", ALICE, "--suppress", "--dry-run")
    assert run.returncode == 0, run.output
    assert fake.requests_log() == []
    assert {t: sorted(runner.store_rows(t)) for t in before} == before
    assert runner.store_rows("erasures") == [] and runner.store_rows("suppressions") == []
    assert "would erase 1 member and 0 held people; would delete 2 hashes" in run.stdout
    assert "dry run: nothing sent, nothing changed" in run.stdout


def test_a_failed_delete_exits_1_and_a_rerun_finishes(runner, fake):
    sync(runner)
    runner.config["max_retries"] = 0
    fake.inject(error_rate=1.0, error_codes=(40001,))
    run = erase(runner, "--email", ALICE)
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert line.startswith("tiktok-audiences: erase: 4 members not erased")
    assert line.endswith("they stay in the store; re-run the same erase to finish")
    assert alice_hashes() - {sha(ALICE_PHONE)} <= on_tiktok(fake, "Union")
    assert sha(ALICE) in stored_hashes(runner, "members"), "nothing dropped unconfirmed"
    fake.inject()
    rerun = erase(runner, "--email", ALICE)
    assert rerun.returncode == 0, rerun.output
    assert not on_tiktok(fake, "CRM") & alice_hashes()
    assert on_tiktok(fake, "Union") & alice_hashes() == {sha(ALICE_PHONE)}
    assert sha(ALICE) not in stored_hashes(runner, "members")
    first, second = receipts(runner)
    assert (first["complete"], second["complete"]) == (0, 1)
    assert_no_raw_value(runner, run.stdout, run.stderr, rerun.stdout)


def test_a_store_of_schema_4_gets_the_suppression_list_and_receipts(runner, fake):
    """Synced by the previous schema: the first `erase` migrates it, and works."""
    sync(runner)
    if not hasattr(runner, "server"):
        db = sqlite3.connect(runner.store_path)
        with db:
            for statement in downgrade_sql(4):
                db.execute(statement)
        db.close()
    else:
        with runner.server.connect() as pg:
            for statement in downgrade_sql(4, f"{runner.schema}."):
                pg.execute(statement)
    assert dict(runner.store_rows("meta"))["schema_version"] == "4"
    run = erase(runner, "--email", ALICE, "--suppress")
    assert run.returncode == 0, run.output
    assert dict(runner.store_rows("meta"))["schema_version"] == "5"
    assert len(receipts(runner)) == 1 and len(runner.store_rows("suppressions")) == 1
    assert not on_tiktok(fake, "CRM") & alice_hashes()


def test_erase_waits_for_a_sync_of_the_same_audience_as_a_sync_would(runner, fake):
    sync(runner)
    fake.reset_log()
    fake.inject(latency=0.1)
    many = [record(id=100 + i, email=f"new{i}@example.com") for i in range(300)]
    busy = _start(
        runner,
        [*contacts(), *many],
        "busy.json",
        audiences=AUDIENCES,
        batch_size=10,
        max_parallel_requests=1,
    )
    try:
        _wait_for_mappings(fake, 1)
        runner.config["store_lock_timeout"] = 1
        run = erase(runner, "--email", ALICE)
        assert run.returncode == 1
        [line] = run.stderr.splitlines()
        assert line.startswith("tiktok-audiences: erase: audience ")
        assert "is being synced by another run" in line
        assert runner.store_rows("erasures") == []
    finally:
        busy.communicate(timeout=120)
    fake.inject()
    run = erase(runner, "--email", ALICE)
    assert run.returncode == 0, run.output
    assert not on_tiktok(fake, "Contacts") & {sha(ALICE)}


def test_held_people_are_dropped_without_a_request(runner, fake):
    run = runner.run([*contacts(), *crm(), *leads()], audiences=AUDIENCES, min_audience_size=100)
    assert run.returncode == 0, run.stderr
    assert sha(ALICE) in stored_hashes(runner, "pending")
    fake.reset_log()
    run = erase(runner, "--email", ALICE)
    assert run.returncode == 0, run.output
    assert fake.requests_log() == []
    assert not stored_hashes(runner, "pending") & {sha(ALICE), sha(ALICE_IDFA)}
    assert {sha(BOB), sha(ALICE_PHONE)} <= stored_hashes(runner, "pending"), "Bob keeps it"
    assert "Contacts (not on TikTok, stream contacts): erasing 0 members and 1 held person" in (
        run.stdout
    )


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((), "name someone to erase: --email, --phone, --idfa, --aaid, --hash or --from-file"),
        (
            ("--hash", "EMAIL_SHA256:abc"),
            "--hash value 1 is not TYPE:HEX with TYPE one of EMAIL_SHA256, PHONE_SHA256, "
            "IDFA_SHA256, IDFA_MD5, AAID_SHA256, AAID_MD5 and HEX its 64 hex digits (32 for the "
            "MD5 types): fix it; nothing was erased",
        ),
        (
            ("--email", ALICE, "--idfa", "not-a-device-id"),
            "--idfa value 1 is not a valid idfa once normalised as records are: fix it; "
            "nothing was erased",
        ),
    ],
)
def test_what_cannot_be_erased_is_one_line_naming_no_value(tmp_path, fake, args, why):
    runner = TargetRunner(tmp_path, fake)
    run = erase(runner, *args)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == f"tiktok-audiences: erase: {why}\n"


def test_a_store_copy_carries_the_suppression_list_and_receipts(tmp_path, fake, postgres_server):
    runner = TargetRunner(tmp_path, fake)
    sync(runner)
    assert erase(runner, "--email", ALICE, "--suppress").returncode == 0
    url = postgres_server.new_url()
    copied = cli("store", "copy", "--from", str(runner.store_path), "--to", url, cwd=tmp_path)
    assert copied.returncode == 0, copied.output
    moved = PostgresTargetRunner(tmp_path, fake, postgres_server)
    moved.config["membership_store"] = url
    moved.schema = split_schema(url)[1]
    for table in ("suppressions", "erasures"):
        assert [tuple(r) for r in moved.store_rows(table)] == [
            tuple(r) for r in runner.store_rows(table)
        ]
    # The copy keeps her out as the original did.
    fake.reset_log()
    run = moved.run([*contacts(), *crm(), *leads()], audiences=AUDIENCES)
    assert run.returncode == 0, run.stderr
    assert not on_tiktok(fake, "CRM") & alice_hashes()
