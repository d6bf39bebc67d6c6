"""End to end, on records: flags, keys, device ids, accounting, deep input and STATE as sent.

The installed console script against the fake TikTok server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from tests.conftest import activate, record, schema, sha, state
from tests.test_end_to_end import members, only_audience


def last_counts(target) -> dict:
    """The audience's last-sync counts, as the store keeps them."""
    db = sqlite3.connect(target.store_path)
    try:
        return json.loads(db.execute("SELECT last_counts FROM audiences").fetchone()[0])
    finally:
        db.close()


IDFA = "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"
OK = record(id=100, email="ok@example.com")
CONSENT = {"consent_field": "consent"}


def report_line(run) -> str:
    (line,) = [x for x in run.stderr.splitlines() if "Audience contacts (stream contacts)" in x]
    return line.split("| ")[-1]


# One e2e run per skip reason: the record is counted under it, and its person is not sent.
@pytest.mark.parametrize(
    ("reason", "records", "config"),
    [
        ("missing", [record(id=1, name="no identifier")], {}),
        ("invalid_email", [record(id=1, email="not-an-email")], {}),
        ("invalid_phone", [record(id=1, phone="12")], {}),
        ("invalid_idfa", [record(id=1, idfa="not-a-uuid")], {}),
        ("invalid_aaid", [record(id=1, aaid="0" * 32)], {}),  # an opted-out device
        ("no_consent", [record(id=1, email="a@example.com", consent=False)], CONSENT),
        ("no_consent", [record(id=1, email="a@example.com", consent=None)], CONSENT),
        ("no_consent", [record(id=1, email="a@example.com")], CONSENT),
        ("invalid_flag", [record(id=1, email="a@example.com", consent="yes")], CONSENT),
        (
            "invalid_flag",
            [record(id=1, email="a@example.com", member=1)],
            {"membership_field": "member"},
        ),
        ("duplicate", [record(id=100, email="first@example.com")], {}),
    ],
)
def test_each_skip_reason_is_counted(target, fake, reason, records, config):
    ok = {**OK, "record": {**OK["record"], "consent": True}}
    run = target.run([schema(), *records, ok], **config)
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {("EMAIL_SHA256", sha("ok@example.com"))}
    assert f"added 1, removed 0, changed 0, unchanged 0, skipped 1 ({reason} 1), held 0" in (
        report_line(run)
    )


def test_a_mixed_run_adds_up_to_the_records_read(target, fake):
    first = [record(id=i, email=f"p{i}@example.com", consent=True) for i in range(1, 6)]
    assert target.run([schema(), *first], **CONSENT).returncode == 0
    audience_id = only_audience(fake)
    second = [
        record(id=1, email="p1@example.com", consent="TRUE"),  # unchanged
        record(id=2, email="new2@example.com", consent="true"),  # changed
        record(id=3, email="p3@example.com", consent="False"),  # leaves: no consent
        record(id=6, email="p6@example.com", consent=True),  # added
        record(id=6, email="p6@example.com", consent=True),  # the same person again
        record(id=7, email="p7@example.com", consent="perhaps"),  # invalid flag
        record(id=8, email="bad", consent=True),  # invalid email
        record(id=9, consent=True),  # no identifier
        # 4 and 5 are absent: removed, though no record says so
    ]
    run = target.run([schema(), *second], max_removal_fraction=1.0, **CONSENT)
    assert run.returncode == 0, run.stderr
    assert report_line(run).startswith(
        "Audience contacts (stream contacts): added 1, removed 2, changed 1, unchanged 1, "
        "skipped 5 (duplicate 1, invalid_email 1, invalid_flag 1, missing 1, no_consent 1), "
        "held 0"
    )
    # 8 records = 1 + 1 + 1 + 0 held + (2 removed - 2 absent) + 5 skipped
    assert members(fake, audience_id) == {
        ("EMAIL_SHA256", sha(e)) for e in ("p1@example.com", "new2@example.com", "p6@example.com")
    }
    stored = last_counts(target)
    assert (stored["records"], stored["absent"], stored["carried"]) == (8, 2, 0)


def test_incremental_removals_count_in_removed_and_csv_flags_are_read(target, fake):
    cfg = {"sync_mode": "incremental", "membership_field": "member"}
    people = [record(id=i, email=f"p{i}@example.com", member="TRUE") for i in range(1, 4)]
    assert target.run([schema(), *people], **cfg).returncode == 0
    audience_id = only_audience(fake)
    run = target.run(
        [
            schema(),
            record(id=1, member="false"),  # a removal needs only the key
            record(id=2, email="p2@example.com", _sdc_deleted_at="2026-11-01T00:00:00Z"),
            record(id=9, member="False"),  # never a member: still a removal record
            record(id=3, email="p3@example.com", member="True"),
        ],
        **cfg,
    )
    assert run.returncode == 0, run.stderr
    assert "added 0, removed 3, changed 0, unchanged 1, skipped 0 (none)" in report_line(run)
    assert members(fake, audience_id) == {("EMAIL_SHA256", sha("p3@example.com"))}


def test_a_membership_string_is_never_taken_as_true(target, fake):
    """Before: "false" from a CSV tap was not `False`, so the person stayed a member."""
    cfg = {"sync_mode": "incremental", "membership_field": "member"}
    assert target.run([schema(), record(id=1, email="a@example.com")], **cfg).returncode == 0
    audience_id = only_audience(fake)
    assert target.run([schema(), record(id=1, member="FALSE")], **cfg).returncode == 0
    assert members(fake, audience_id) == set()


def test_consent_strings_are_read_in_any_case(target, fake):
    run = target.run(
        [
            schema(),
            record(id=1, email="yes@example.com", consent="TRUE"),
            record(id=2, email="no@example.com", consent="false"),
        ],
        **CONSENT,
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {("EMAIL_SHA256", sha("yes@example.com"))}
    assert "skipped 1 (no_consent 1)" in report_line(run)


def test_held_people_of_an_earlier_run_are_carried_not_records(target, fake):
    cfg = {"sync_mode": "incremental", "min_audience_size": 3}
    assert target.run([schema(), record(id=1, email="a@example.com")], **cfg).returncode == 0
    run = target.run([schema(), record(id=2, email="b@example.com")], **cfg)
    assert "added 0, removed 0, changed 0, unchanged 0, skipped 0 (none), held 2" in (
        report_line(run)
    )
    run = target.run([schema(), record(id=3, email="c@example.com")], **cfg)
    assert "added 3, removed 0" in report_line(run)
    stored = last_counts(target)
    assert (stored["records"], stored["carried"], stored["held"]) == (1, 2, 0)


# A key property that is an empty string


def reordered(message: dict) -> str:
    """A RECORD line that does not begin as taps usually write one: the reader parses it."""
    return json.dumps({"stream": message["stream"], "type": "RECORD", "record": message["record"]})


@pytest.mark.parametrize("write", [json.dumps, reordered], ids=["unparsed", "parsed"])
@pytest.mark.parametrize("key", ["", None])
def test_an_empty_or_null_key_stops_the_run_naming_the_record(target, fake, write, key):
    lines = [
        json.dumps(schema()),
        write(record(id="a", email="a@example.com")),
        write(record(id="b", email="b@example.com")),
        write(record(id=key, email="secret@example.com")),
        json.dumps(state({"s": 1})),
    ]
    run = target.run(lines)
    assert run.returncode == 1
    assert len(run.errors) == 1, run.stderr
    assert "record 3 of stream 'contacts' (input line 4)" in run.errors[0]
    assert "key properties id" in run.errors[0]
    assert "Traceback" not in run.stderr
    assert "secret@example.com" not in run.stderr
    assert run.states == []
    assert fake.requests_log() == []  # nothing sent, not even a look-up


def test_empty_keys_are_not_merged_into_one_person(target, fake):
    """Before: every record with id "" was one person, the last one winning."""
    run = target.run([schema(), record(id="", email="a@example.com"), record(id="", phone="12")])
    assert run.returncode == 1
    assert "record 1 of stream 'contacts'" in run.errors[0]
    assert fake.audiences() == []


def test_record_numbers_go_on_past_a_new_schema(target, fake):
    run = target.run(
        [schema(), record(id=1, email="a@example.com"), schema(), record(id="", email="b@x.io")]
    )
    assert run.returncode == 1
    assert "record 2 of stream 'contacts' (input line 4)" in run.errors[0]


# Device ids: a UUID without hyphens is a UUID; MD5 only from the *_md5 fields


def test_device_ids_sent_as_tiktok_wants_them(target, fake):
    bare = IDFA.replace("-", "").upper()
    aaid = "0c6c3f38-5f4e-4b3e-9a39-0f0a7a0c6e4d"
    aaid_md5 = hashlib.md5(aaid.encode(), usedforsecurity=False).hexdigest()
    run = target.run(
        [
            schema(),
            record(id=1, idfa=bare),  # 32 hex: a UUID without hyphens, never an MD5
            record(id=2, aaid_md5=aaid_md5.upper()),
            record(id=3, idfa_md5=IDFA),  # not an MD5: invalid
            record(id=4, aaid=sha(aaid)),  # 64 hex: a SHA-256, passed through
        ],
        identifier_fields={"idfa_md5": "idfa_md5", "aaid_md5": "aaid_md5"},
    )
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {
        ("IDFA_SHA256", sha(IDFA)),
        ("AAID_MD5", aaid_md5),
        ("AAID_SHA256", sha(aaid)),
    }
    assert "skipped 1 (invalid_idfa 1)" in report_line(run)
    sent = json.dumps([r["body"] for r in fake.requests_log("segment/mapping/")])
    assert bare.lower() not in sent and IDFA not in sent  # no raw device id on the wire


def test_an_unknown_identifier_field_is_still_refused(target, fake):
    run = target.run([schema(), OK], identifier_fields={"idfa_sha1": "x"})
    assert run.returncode != 0
    assert "idfa_sha1" in run.stderr and "Traceback" not in run.stderr


# Input nested too deep


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"RECORD","stream":"contacts","record":{"id":9,"x":'
        + "[" * 10000
        + "]" * 10000
        + "}}",
        '{"type":"STATE","value":' + "[" * 10000 + "]" * 10000 + "}",
        '{"type":"STATE","value":' + "[" * 1020 + "]" * 1020 + "}",  # orjson reads it; json not
        "[" * 10000 + "]" * 10000,
    ],
    ids=["record", "state", "state-1020", "top-level"],
)
def test_input_nested_too_deep_is_one_line_naming_it(target, fake, line):
    run = target.run([schema(), OK, line, state({"s": 1})])
    assert run.returncode == 1
    assert len(run.errors) == 1, run.stderr[-2000:]
    assert "input line 3 is nested too deep" in run.errors[0]
    assert "Traceback" not in run.stderr
    assert run.states == []


def test_a_schema_too_deep_for_the_sdk_is_one_line(target, fake):
    """It reads, but the SDK copies a SCHEMA recursively: before, a RecursionError traceback."""
    deep = '{"type":"object","properties":{"x":' * 450 + '{"type":"string"}' + "}}" * 450
    message = schema()
    message["schema"]["properties"]["deep"] = "DEEP"
    run = target.run([json.dumps(message).replace('"DEEP"', deep), OK])
    assert run.returncode == 1
    assert len(run.errors) == 1, run.stderr[-2000:]
    assert "input line 1 is nested too deep" in run.errors[0]
    assert "Traceback" not in run.stderr


# STATE as the tap sent it


def test_state_is_written_back_exactly_nan_and_infinities_included(target, fake):
    value = '{"a":NaN,"b":Infinity,"c":-Infinity,"d":1.50,"e":12345678901234567890.0123456789}'
    run = target.run([schema(), OK, '{"type":"STATE","value":' + value + "}"])
    assert run.returncode == 0, run.stderr
    assert run.stdout == value + "\n"


def test_a_deep_state_that_reads_is_written_back(target, fake):
    """Before: the SDK's copy of it, at the end of input, ended in a RecursionError traceback."""
    value = '{"a":' + "[" * 600 + "]" * 600 + "}"
    run = target.run([schema(), OK, '{"type":"STATE","value":' + value + "}"])
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout == value + "\n"


# A dry run confirms nothing: no STATE


def test_a_dry_run_writes_no_state(target, fake):
    messages = [schema(), OK, state({"bookmark": 1}), activate(), state({"bookmark": 2})]
    run = target.run(messages, dry_run=True, sync_mode="incremental")
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    notes = [x for x in run.stderr.splitlines() if "STATE is not written" in x]
    assert len(notes) == 1
    real = target.run(messages, sync_mode="incremental")
    assert real.states[-1] == {"bookmark": 2}
