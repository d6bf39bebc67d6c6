"""End to end: the installed console script, a fake TikTok on 127.0.0.1, a real SQLite store."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.conftest import (
    ADVERTISER,
    OTHER_ADVERTISER,
    TOKEN,
    activate,
    record,
    schema,
    sha,
    state,
)

IDFA = "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"


def members(fake, audience_id: str) -> set[tuple[str, str]]:
    """The fake's audience as (id_schema, hash) pairs."""
    return {(kind, h) for kind, hashes in fake.members(audience_id).items() for h in hashes}


def only_audience(fake) -> str:
    audiences = fake.audiences()
    assert len(audiences) == 1, audiences
    return str(audiences[0]["audience_id"])


def mapping_requests(fake) -> list[dict]:
    return [r["body"] for r in fake.requests_log("segment/mapping/") if r["code"] == 0]


def sent_rows(fake, action: str) -> list[dict[str, str]]:
    """Every row sent with `action`, as {id_schema: hash} (empty slots left out)."""
    rows = []
    for body in mapping_requests(fake):
        if body["action"] != action:
            continue
        for row in body["batch_data"]:
            rows.append({k: e["id"] for k, e in zip(body["id_schema"], row, strict=True) if e})
    return rows


BASE = [
    record(id=1, email=" Jane.Doe@Example.com", phone="(415) 555-0100"),
    record(id=2, phone="+44 20 7946 0958"),
    record(id=3, email="sam@example.org", idfa=IDFA.upper()),
]
BASE_HASHES = {
    ("EMAIL_SHA256", sha("jane.doe@example.com")),
    ("PHONE_SHA256", sha("+14155550100")),
    ("PHONE_SHA256", sha("+442079460958")),
    ("EMAIL_SHA256", sha("sam@example.org")),
    ("IDFA_SHA256", sha(IDFA)),
}


def test_first_sync_creates_audience_and_adds_everyone(target, fake):
    run = target.run([schema(), *BASE, state({"bookmark": 3})])
    assert run.returncode == 0, run.stderr
    audience_id = only_audience(fake)
    assert fake.audience(audience_id)["name"] == "contacts"
    assert members(fake, audience_id) == BASE_HASHES
    assert run.states == [{"bookmark": 3}]
    # The phone-only person is sent, aligned under PHONE_SHA256 with {} elsewhere.
    body = mapping_requests(fake)[0]
    assert body["advertiser_ids"] == [ADVERTISER]
    assert body["id_schema"] == ["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256"]
    assert len(body["batch_data"]) == 3
    assert all(len(row) == 3 for row in body["batch_data"])
    assert "Audience contacts (stream contacts): added 3, removed 0" in run.stderr


def test_second_sync_sends_exactly_joins_leaves_and_changes(target, fake):
    assert target.run([schema(), *BASE]).returncode == 0
    audience_id = only_audience(fake)
    fake.reset_log()
    second = [
        record(id=1, email="jane.new@example.com", phone="(415) 555-0100"),  # email changed
        record(id=3, email="sam@example.org", idfa=IDFA),  # unchanged
        record(id=4, email="new@example.net"),  # joined; id 2 left
    ]
    run = target.run([schema(), *second], max_removal_fraction=1.0)
    assert run.returncode == 0, run.stderr
    assert sorted(sent_rows(fake, "delete"), key=str) == sorted(
        [{"EMAIL_SHA256": sha("jane.doe@example.com")}, {"PHONE_SHA256": sha("+442079460958")}],
        key=str,
    )
    assert sorted(sent_rows(fake, "add"), key=str) == sorted(
        [{"EMAIL_SHA256": sha("jane.new@example.com")}, {"EMAIL_SHA256": sha("new@example.net")}],
        key=str,
    )
    # Deletes go first, so a run that dies between them never leaves a stale hash behind.
    assert [b["action"] for b in mapping_requests(fake)] == ["delete", "add"]
    assert members(fake, audience_id) == {
        ("EMAIL_SHA256", sha("jane.new@example.com")),
        ("PHONE_SHA256", sha("+14155550100")),
        ("EMAIL_SHA256", sha("sam@example.org")),
        ("IDFA_SHA256", sha(IDFA)),
        ("EMAIL_SHA256", sha("new@example.net")),
    }
    assert "added 1, removed 1, changed 1, unchanged 1" in run.stderr

    fake.reset_log()
    third = target.run([schema(), *second])
    assert third.returncode == 0, third.stderr
    assert fake.requests_log() == []
    assert "added 0, removed 0, changed 0, unchanged 3" in third.stderr


def test_shared_hash_stays_while_another_member_has_it(target, fake):
    household = "+14155550199"
    assert (
        target.run(
            [schema(), record(id=1, phone=household), record(id=2, phone=household, email="b@x.io")]
        ).returncode
        == 0
    )
    audience_id = only_audience(fake)
    run = target.run(
        [schema(), record(id=2, phone=household, email="b@x.io")], max_removal_fraction=1.0
    )
    assert run.returncode == 0, run.stderr
    assert ("PHONE_SHA256", sha(household)) in members(fake, audience_id)
    assert target.store_rows("members").__len__() == 1


def test_dropping_a_shared_hash_is_remembered_for_when_the_other_leaves(target, fake):
    cfg = {"sync_mode": "incremental"}
    household = "+14155550199"
    b = record(id=2, email="b@x.io", phone=household)
    assert (
        target.run([schema(), record(id=1, email="a@x.io", phone=household), b], **cfg).returncode
        == 0
    )
    audience_id = only_audience(fake)
    # 1 drops the household phone; 2 keeps it, so TikTok is not asked to remove it...
    run = target.run([schema(), record(id=1, email="a@x.io")], **cfg)
    assert run.returncode == 0, run.stderr
    assert ("PHONE_SHA256", sha(household)) in members(fake, audience_id)
    # ...but the store knows 1 no longer has it: when 2 leaves, the phone goes too.
    run = target.run([schema(), record(id=2, _sdc_deleted_at="2026-11-20T00:00:00Z")], **cfg)
    assert run.returncode == 0, run.stderr
    assert members(fake, audience_id) == {("EMAIL_SHA256", sha("a@x.io"))}


def test_incremental_mode_adds_updates_and_removes(target, fake):
    cfg = {"sync_mode": "incremental", "membership_field": "member"}
    assert target.run([schema(), *BASE], **cfg).returncode == 0
    audience_id = only_audience(fake)
    run = target.run(
        [
            schema(),
            record(id=4, email="d@example.com"),  # added
            record(id=1, member=False),  # removed by key alone
            record(id=2, _sdc_deleted_at="2026-11-20T00:00:00Z"),  # deleted in the source
            record(id=3, email="sam@example.org", idfa=IDFA, member=None),  # null: still member
        ],
        **cfg,
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, audience_id) == {
        ("EMAIL_SHA256", sha("sam@example.org")),
        ("IDFA_SHA256", sha(IDFA)),
        ("EMAIL_SHA256", sha("d@example.com")),
    }
    # An incremental run is no snapshot: people it does not mention stay.
    assert target.run([schema(), record(id=5, email="e@example.com")], **cfg).returncode == 0
    assert ("EMAIL_SHA256", sha("sam@example.org")) in members(fake, audience_id)


def test_consent_field_limits_membership(target, fake):
    run = target.run(
        [
            schema(),
            record(id=1, email="yes@example.com", consent=True),
            record(id=2, email="no@example.com", consent=False),
            record(id=3, email="unknown@example.com"),
        ],
        consent_field="consent",
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {("EMAIL_SHA256", sha("yes@example.com"))}
    # Withdrawing consent in a later snapshot removes the person.
    run = target.run(
        [
            schema(),
            record(id=1, email="yes@example.com", consent=False),
            record(id=4, email="new@example.com", consent=True),
        ],
        consent_field="consent",
        max_removal_fraction=1.0,
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {("EMAIL_SHA256", sha("new@example.com"))}


def test_min_audience_size_holds_first_upload(target, fake):
    few = [schema(), record(id=1, email="a@example.com"), record(id=2, email="b@example.com")]
    run = target.run(few, min_audience_size=3)
    assert run.returncode == 0, run.stderr
    assert fake.requests_log() == []
    assert "held 2" in run.stderr
    run = target.run([*few, record(id=3, email="c@example.com")], min_audience_size=3)
    assert run.returncode == 0, run.stderr
    assert len(members(fake, only_audience(fake))) == 3
    # Once uploaded, the audience is never held again, even below the minimum.
    run = target.run(few, min_audience_size=3, max_removal_fraction=1.0)
    assert run.returncode == 0, run.stderr
    assert len(members(fake, only_audience(fake))) == 2


@pytest.mark.parametrize("minimum", [2, 3])
def test_min_audience_size_counts_people_not_records(target, fake, minimum):
    # Four records, two people: id 1 comes twice (its later email wins), id 3 left.
    records = [
        schema(),
        record(id=1, email="a@example.com"),
        record(id=2, email="b@example.com"),
        record(id=1, email="a2@example.com"),
        record(id=3, email="c@example.com", _sdc_deleted_at="2026-11-01T00:00:00Z"),
    ]
    run = target.run(records, min_audience_size=minimum)
    assert run.returncode == 0, run.stderr
    if minimum > 2:
        assert "held 2" in run.stderr
        assert fake.requests_log() == []
        return
    assert members(fake, only_audience(fake)) == {
        ("EMAIL_SHA256", sha("a2@example.com")),
        ("EMAIL_SHA256", sha("b@example.com")),
    }


def test_min_audience_size_holds_incremental_people_across_runs(target, fake):
    cfg = {"sync_mode": "incremental", "min_audience_size": 3}
    assert target.run([schema(), record(id=1, email="a@example.com")], **cfg).returncode == 0
    assert target.run([schema(), record(id=2, email="b@example.com")], **cfg).returncode == 0
    assert fake.audiences() == []
    run = target.run([schema(), record(id=3, email="c@example.com")], **cfg)
    assert run.returncode == 0, run.stderr
    assert len(members(fake, only_audience(fake))) == 3


def test_removal_guard_refuses_whole_sync(target, fake):
    people = [record(id=i, email=f"p{i}@example.com") for i in range(1, 5)]
    assert target.run([schema(), *people]).returncode == 0
    audience_id = only_audience(fake)
    before = members(fake, audience_id)
    fake.reset_log()
    run = target.run([schema(), people[0], record(id=9, email="new@example.com"), state({"s": 1})])
    assert run.returncode == 1
    assert run.states == []
    assert fake.requests_log() == []
    assert members(fake, audience_id) == before
    assert len(run.errors) == 1
    assert "would remove 3 of 4 people" in run.errors[0]
    assert "max_removal_fraction" in run.errors[0]
    assert "Traceback" not in run.stderr
    run = target.run([schema(), people[0]], max_removal_fraction=1.0)
    assert run.returncode == 0, run.stderr
    assert members(fake, audience_id) == {("EMAIL_SHA256", sha("p1@example.com"))}


def test_audience_created_by_name_once_and_reused(target, fake):
    name = "Winter sale - VIP customers who opened at least three newsletters in the last year"
    cfg = {"audiences": {"contacts": {"audience_name": name}}}
    assert target.run([schema(), *BASE], **cfg).returncode == 0
    assert target.run([schema(), *BASE, record(id=7, email="x@example.com")], **cfg).returncode == 0
    audience_id = only_audience(fake)
    assert fake.audience(audience_id)["name"] == name[:67] + "..."
    creates = fake.requests_log("segment/audience/")
    assert len(creates) == 1
    assert creates[0]["body"]["custom_audience_name"] == name[:67] + "..."
    assert len(members(fake, audience_id)) == 6


def test_existing_audience_id_and_two_streams(target, fake):
    existing = fake.add_audience(ADVERTISER, "CRM buyers")
    cfg = {
        "audiences": {
            "buyers": {"audience_id": existing},
            "leads": {"audience_name": "Leads", "advertiser_ids": [OTHER_ADVERTISER]},
        }
    }
    run = target.run(
        [
            schema("buyers"),
            schema("leads"),
            schema("ignored"),
            record("buyers", id=1, email="buyer@example.com"),
            record("leads", id=1, email="lead@example.com"),
            record("ignored", id=1, email="nobody@example.com"),
        ],
        **cfg,
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, existing) == {("EMAIL_SHA256", sha("buyer@example.com"))}
    leads = [a for a in fake.audiences() if a["name"] == "Leads"]
    assert len(leads) == 1
    assert str(leads[0]["advertiser_id"]) == OTHER_ADVERTISER
    assert members(fake, str(leads[0]["audience_id"])) == {
        ("EMAIL_SHA256", sha("lead@example.com"))
    }
    assert "Stream ignored is not listed in `audiences`" in run.stderr
    assert all(sha("nobody@example.com") not in json.dumps(b) for b in mapping_requests(fake))


def test_dry_run_writes_what_a_real_run_sends(target, fake, tmp_path):
    messages = [schema(), *BASE]
    dry = target.run(messages, dry_run=True, access_token=None, api_url="http://127.0.0.1:9/")
    assert dry.returncode == 0, dry.stderr
    planned = [json.loads(x) for x in (tmp_path / "tiktok-audiences-dry-run.jsonl").open()]
    assert not target.store_path.exists() or target.store_rows("members") == []
    assert [p["path"] for p in planned] == ["segment/audience/", "segment/mapping/"]
    assert planned[1]["body"]["batch_data"][0][0]["audience_ids"] == ["dry-run:contacts"]
    # The real run sends the same bodies, with the real audience id.
    assert target.run(messages).returncode == 0
    audience_id = only_audience(fake)
    sent = [
        {"method": r["method"], "path": r["path"], "body": r["body"]}
        for r in fake.requests_log()
        if r["method"] == "POST"  # the real run also looks the name up first
    ]
    expected = json.loads(json.dumps(planned).replace("dry-run:contacts", audience_id))
    assert sent == expected
    # A dry run after a real one plans nothing and changes nothing.
    fake.reset_log()
    again = target.run(messages, dry_run=True)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "tiktok-audiences-dry-run.jsonl").read_text() == ""
    assert fake.requests_log() == []


def test_state_written_only_after_confirmation(target, fake):
    fake.inject(error_rate=1.0, error_codes=(40001,))
    run = target.run([schema(), *BASE, state({"bookmark": 3})])
    assert run.returncode == 1
    assert run.states == []
    assert len(run.errors) == 1 and "40001" in run.errors[0]
    assert "Traceback" not in run.stderr
    assert target.store_rows("members") == []
    fake.inject(error_rate=0.0)
    run = target.run([schema(), *BASE, state({"bookmark": 3})])
    assert run.returncode == 0
    assert run.states == [{"bookmark": 3}]


def test_state_keeps_decimal_bookmarks_exact(target, fake):
    line = (
        '{"type":"STATE","value":{"bookmarks":{"contacts":{"v":12345678901234567890.123456789}}}}'
    )
    run = target.run([schema(), *BASE, line])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == line[len('{"type":"STATE","value":') : -1]
    assert json.loads(run.stdout, parse_float=Decimal)["bookmarks"]["contacts"]["v"] == Decimal(
        "12345678901234567890.123456789"
    )


def test_activate_version_closes_snapshot_and_absent_records_leave_audience_alone(target, fake):
    people = [record(id=i, email=f"p{i}@example.com") for i in range(1, 4)]
    assert target.run([schema(), activate(), *people, activate()]).returncode == 0
    audience_id = only_audience(fake)
    # A stream with no records and no closing ACTIVATE_VERSION is left alone, with a warning.
    run = target.run([schema(), activate(version=2)])
    assert run.returncode == 0, run.stderr
    assert len(members(fake, audience_id)) == 3
    assert "left alone" in run.stderr
    # The same version twice with no record between: an empty snapshot, refused by the guard.
    run = target.run([schema(), activate(version=3), activate(version=3)])
    assert run.returncode == 1
    assert "would remove 3 of 3" in run.stderr
    run = target.run([schema(), activate(version=3), activate(version=3)], max_removal_fraction=1.0)
    assert run.returncode == 0, run.stderr
    assert members(fake, audience_id) == set()


def test_activate_version_drains_pending_records_first(target, fake):
    # Records still buffered when ACTIVATE_VERSION arrives belong to the snapshot it closes.
    people = [record(id=i, email=f"p{i}@example.com") for i in range(1, 6)]
    assert target.run([schema(), *people, activate()], batch_size_rows=1000).returncode == 0
    assert len(members(fake, only_audience(fake))) == 5


def test_snapshot_end_activate_version_never_removes_on_bare_end_of_input(target, fake):
    people = [record(id=i, email=f"p{i}@example.com") for i in range(1, 4)]
    assert target.run([schema(), *people]).returncode == 0
    audience_id = only_audience(fake)
    run = target.run(
        [schema(), people[0], record(id=7, email="new@example.com")],
        snapshot_end="activate_version",
    )
    assert run.returncode == 0, run.stderr
    assert len(members(fake, audience_id)) == 4
    run = target.run(
        [schema(), people[0], activate()], snapshot_end="activate_version", max_removal_fraction=1.0
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, audience_id) == {("EMAIL_SHA256", sha("p1@example.com"))}


def test_batches_split_when_tiktok_says_too_many(target, fake):
    fake.max_batch = 3
    people = [record(id=i, email=f"p{i}@example.com") for i in range(1, 12)]
    run = target.run([schema(), *people], batch_size=8)
    assert run.returncode == 0, run.stderr
    assert len(members(fake, only_audience(fake))) == 11
    sizes = [len(b["batch_data"]) for b in mapping_requests(fake)]
    assert max(sizes) <= 3 and sum(sizes) == 11
    assert "batch size is now 4" in run.stderr


def test_batch_size_sets_requests(target, fake):
    people = [record(id=i, email=f"p{i}@example.com") for i in range(1, 11)]
    run = target.run([schema(), *people], batch_size=4)
    assert run.returncode == 0, run.stderr
    # Sent in parallel: they may arrive in any order.
    assert sorted(len(b["batch_data"]) for b in mapping_requests(fake)) == [2, 4, 4]


def test_records_without_keys_are_identified_by_their_hashes(target, fake):
    no_key = schema(key_properties=[])
    assert (
        target.run([no_key, record(email="a@example.com"), record(phone="+14155550123")]).returncode
        == 0
    )
    audience_id = only_audience(fake)
    run = target.run([no_key, record(email="a@example.com")], max_removal_fraction=1.0)
    assert run.returncode == 0, run.stderr
    assert members(fake, audience_id) == {("EMAIL_SHA256", sha("a@example.com"))}


def test_invalid_identifiers_are_skipped_and_counted(target, fake):
    run = target.run(
        [
            schema(),
            record(id=1, email="not-an-email"),
            record(id=2, phone="12"),
            record(id=3),
            record(id=4, email="ok@example.com", phone="nonsense"),
            record(id=5, idfa="00000000-0000-0000-0000-000000000000"),
        ]
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {("EMAIL_SHA256", sha("ok@example.com"))}
    assert "skipped 4 (invalid_email 1, invalid_idfa 1, invalid_phone 1, missing 1)" in run.stderr


def test_nested_identifier_fields(target, fake):
    run = target.run(
        [schema(), record(id=1, contact={"work": {"mail": "Nested@Example.com"}})],
        identifier_fields={"email": "contact.work.mail", "phone": None},
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {("EMAIL_SHA256", sha("nested@example.com"))}


def test_store_and_logs_hold_no_raw_identifiers_or_token(target, fake):
    run = target.run([schema(), *BASE, '{"type": "RECORD", "stream": "contacts", "record": {'])
    assert run.returncode == 1
    assert "input line 5 is not valid JSON" in run.stderr
    run = target.run([schema(), *BASE])
    assert run.returncode == 0
    raw = target.store_path.read_bytes()
    wal = target.store_path.with_name(target.store_path.name + "-wal")
    if wal.exists():
        raw += wal.read_bytes()
    for secret in (
        "jane.doe",
        "Jane.Doe",
        "sam@example.org",
        "4155550100",
        "7946",
        IDFA,
        IDFA.upper(),
        TOKEN,
    ):
        assert secret.encode() not in raw
        assert secret not in run.stderr
        assert secret not in run.stdout


def test_bad_settings_fail_fast_with_one_line(target, fake):
    cases = {
        "sync_mode": ({"sync_mode": "sometimes"}, "sync_mode"),
        "batch_size": ({"batch_size": 0}, "batch_size"),
        "advertiser_ids": ({"advertiser_ids": []}, "advertiser_ids"),
        "token": ({"access_token": None}, "access_token"),
        "region": ({"phone_default_region": "XX"}, "phone_default_region"),
    }
    for overrides, setting in cases.values():
        run = target.run([schema(), *BASE], **overrides)
        assert run.returncode != 0, setting
        assert len(run.errors) == 1, run.stderr
        assert setting in run.errors[0]
        assert "Traceback" not in run.stderr
        assert run.states == []
    assert fake.requests_log() == []


def test_invalid_token_is_a_clear_error(target, fake):
    run = target.run([schema(), *BASE], access_token="wrong-token")
    assert run.returncode == 1
    assert len(run.errors) == 1
    assert "40105" in run.errors[0] and "tiktok-audiences auth" in run.errors[0]
    assert "wrong-token" not in run.stderr
    assert TOKEN not in run.stderr


def lose_store(target) -> None:
    for suffix in ("", "-wal", "-shm"):
        target.store_path.with_name(target.store_path.name + suffix).unlink(missing_ok=True)


def test_lost_store_adopts_the_named_audience_and_warns(target, fake):
    assert target.run([schema(), *BASE]).returncode == 0
    audience_id = only_audience(fake)
    lose_store(target)  # a new worker, a lost file
    run = target.run([schema(), *BASE[:2]])
    assert run.returncode == 0, run.stderr
    assert only_audience(fake) == audience_id  # not created twice
    assert "already exists on TikTok" in run.stderr
    assert "never be removed" in run.stderr and "rebuild_when_store_empty" in run.stderr
    # The store knows the audience again: later syncs are ordinary ones.
    run = target.run([schema(), *BASE[:2]])
    assert run.returncode == 0, run.stderr
    assert "already" not in run.stderr


def test_lost_store_rebuilds_into_a_fresh_audience_when_asked(target, fake):
    assert target.run([schema(), *BASE]).returncode == 0
    old = only_audience(fake)
    before = members(fake, old)
    lose_store(target)
    run = target.run([schema(), *BASE[:2]], rebuild_when_store_empty=True)
    assert run.returncode == 0, run.stderr
    fresh = [a for a in fake.audiences() if str(a["audience_id"]) != old]
    assert len(fresh) == 1
    assert fresh[0]["name"].startswith("contacts (rebuilt ")
    assert members(fake, str(fresh[0]["audience_id"])) == {
        ("EMAIL_SHA256", sha("jane.doe@example.com")),
        ("PHONE_SHA256", sha("+14155550100")),
        ("PHONE_SHA256", sha("+442079460958")),
    }
    assert members(fake, old) == before  # left for the user to retire
    assert "rebuilding it as a new audience" in run.stderr


def test_lost_store_with_an_audience_id_warns(target, fake):
    existing = fake.add_audience(ADVERTISER, "CRM buyers")
    cfg = {"audiences": {"contacts": {"audience_id": existing}}}
    assert target.run([schema(), *BASE], **cfg).returncode == 0
    lose_store(target)
    run = target.run([schema(), *BASE], **cfg)
    assert run.returncode == 0, run.stderr
    assert f"Audience {existing} already has" in run.stderr


def test_two_audiences_of_the_configured_name_and_no_store_is_an_error(target, fake):
    fake.add_audience(ADVERTISER, "contacts")
    fake.add_audience(ADVERTISER, "contacts")
    run = target.run([schema(), *BASE])
    assert run.returncode == 1
    assert len(run.errors) == 1
    assert "2 TikTok audiences are named 'contacts'" in run.errors[0]
    assert "audience_id" in run.errors[0]


def test_settings_from_environment_variables_only(target, fake, tmp_path):
    import os
    import subprocess

    from tests.conftest import _SCRIPT

    env = {
        **os.environ,
        "TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN,
        "TARGET_TIKTOK_AUDIENCES_ADVERTISER_IDS": json.dumps([ADVERTISER]),
        "TARGET_TIKTOK_AUDIENCES_API_URL": fake.url,
        "TARGET_TIKTOK_AUDIENCES_MEMBERSHIP_STORE": str(tmp_path / "env.sqlite"),
        "TARGET_TIKTOK_AUDIENCES_MIN_AUDIENCE_SIZE": "0",
        "TARGET_TIKTOK_AUDIENCES_MAX_REMOVAL_FRACTION": "0.3",  # a number, as Meltano writes it
        # Meltano flattens object settings into dotted keys:
        "TARGET_TIKTOK_AUDIENCES_AUDIENCES": json.dumps({"contacts.audience_name": "From env"}),
    }
    lines = "\n".join(json.dumps(m) for m in [schema(), *BASE]) + "\n"
    proc = subprocess.run(
        [_SCRIPT, "--config", "ENV"],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert fake.audiences()[0]["name"] == "From env"
    assert members(fake, only_audience(fake)) == BASE_HASHES
