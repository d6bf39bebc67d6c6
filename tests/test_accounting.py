"""Every record read is accounted for: the flag rules, and the report's sums through the pipeline.

The report's rule (`AudienceSink.report_counts`):

    records = added + changed + unchanged + held + removed + skipped - absent - carried

The property test feeds random runs (duplicates, bad values, flags, consent, leavers; snapshot
and incremental; held first uploads) to the real target in this process, against the fake
TikTok server, and checks each count against a model worked out record by record.
"""

from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_tiktok_audiences.people import (
    INVALID_FLAG,
    MissingKeyError,
    RecordSpec,
    hash_chunk,
    read_flag,
)
from target_tiktok_audiences.settings import normalization_options
from target_tiktok_audiences.sinks import AudienceSink
from target_tiktok_audiences.store import LEAVES, NO_CONSENT, STAYS
from target_tiktok_audiences.target import TargetTikTokAudiences
from tests.conftest import ADVERTISER, TOKEN, record, schema, sha

# Pure rules: flags


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        (True, True),
        (False, False),
        (None, None),
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("false", False),
        ("FaLsE", False),
    ],
)
def test_booleans_and_their_strings_are_flags(value, flag):
    assert read_flag(value) is flag


@pytest.mark.parametrize("value", ["yes", "no", "1", "0", "", " true", 1, 0, 1.0, [], {}])
def test_anything_else_is_not_a_flag(value):
    assert read_flag(value) not in (True, False, None)


def spec(**fields: Any) -> RecordSpec:
    return RecordSpec(
        "contacts",
        ("id",),
        fields.get("membership_field"),
        fields.get("consent_field"),
        (("email", "email"),),
        normalization_options({}),
    )


FLAGGED = spec(membership_field="member", consent_field="consent")


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"consent": True}, STAYS),
        ({"consent": "TRUE", "member": "true"}, STAYS),
        ({"consent": "false"}, NO_CONSENT),
        ({"consent": None}, NO_CONSENT),
        ({}, NO_CONSENT),  # consent missing
        ({"consent": "yes"}, INVALID_FLAG),
        ({"consent": True, "member": "FALSE"}, LEAVES),
        ({"consent": True, "member": None}, STAYS),  # membership missing or null: a member
        ({"consent": True, "member": 0}, INVALID_FLAG),
        ({"consent": "maybe", "member": False}, LEAVES),  # leaving needs no consent
        ({"consent": True, "_sdc_deleted_at": "2026-01-01"}, LEAVES),
    ],
)
def test_a_records_status_reads_its_flags(fields, status):
    assert FLAGGED.status(fields) == status


def test_an_invalid_flag_is_counted_never_staged():
    read = FLAGGED.reader()
    records = [
        {"id": 1, "email": "a@x.io", "consent": "sure"},
        {"id": 2, "email": "b@x.io", "consent": True, "member": "no"},
        {"id": 3, "email": "c@x.io", "consent": "true"},
    ]
    people, skipped, *_ = hash_chunk(FLAGGED, [read(r) for r in records])
    assert people.count == 1
    assert skipped == Counter(invalid_flag=2)


@pytest.mark.parametrize("key", [None, ""])
def test_a_missing_or_empty_key_is_a_bad_record(key):
    with pytest.raises(MissingKeyError, match="missing, null or empty"):
        spec().key_values({"id": key, "email": "a@x.io"})
    two = RecordSpec("s", ("a", "b"), None, None, (("email", "email"),), normalization_options({}))
    with pytest.raises(MissingKeyError):
        two.key_values({"a": 1, "b": key})


def test_a_key_error_names_the_record_and_line_and_crosses_processes():
    import pickle

    error = MissingKeyError("contacts", ["id"]).at(7, 12)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
    assert "record 7 of stream 'contacts' (input line 12)" in str(error)


# The report adds up, through the real pipeline

ABSENT = object()  # a field the record does not have
FLAG_VALUES = [True, False, None, "true", "FALSE", "True", "yes", 1, 0, "", ABSENT]
EMAILS = [None, "not an email", "a@x.io", "b@x.io", "c@x.io", " C@X.io "]


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {"id": draw(st.integers(0, 5))}
    for name, values in (("email", EMAILS), ("consent", FLAG_VALUES), ("member", FLAG_VALUES)):
        value = draw(st.sampled_from(values))
        if value is not ABSENT:
            fields[name] = value
    if draw(st.integers(0, 5)) == 0:
        fields["_sdc_deleted_at"] = "2026-11-01T00:00:00Z"
    return fields


def model_flag(record: dict, name: str) -> Any:
    value = record.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return "bad"


@dataclass
class Model:
    """What the store and TikTok hold, by record id, as the rules say they should."""

    snapshot: bool
    consent: bool
    membership: bool
    min_size: int
    confirmed: dict[int, str] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)
    uploaded: bool = False

    def status(self, r: dict) -> str:
        if r.get("_sdc_deleted_at"):
            return "leaves"
        if self.membership:
            member = model_flag(r, "member")
            if member is False:
                return "leaves"
            if member == "bad":
                return "invalid"
        if self.consent:
            consent = model_flag(r, "consent")
            if consent is True:
                return "stays"
            return "invalid" if consent == "bad" else "no_consent"
        return "stays"

    def run(self, batch: list[dict]) -> dict[str, Any]:
        """The counts one run of `batch` reports, and the model moved on past it."""
        skipped: Counter[str] = Counter()
        last: dict[int, tuple[str, str | None]] = {}
        for r in batch:
            status = self.status(r)
            if status == "invalid":
                skipped["invalid_flag"] += 1
                continue
            email = r.get("email")
            norm = email.strip().lower() if email and "@" in email else None
            if status == "stays" and norm is None:
                skipped["missing" if email is None else "invalid_email"] += 1
                continue
            if r["id"] in last:
                skipped["duplicate"] += 1
            last[r["id"]] = (status, norm)
        stays = {i: e for i, (s, e) in last.items() if s == "stays"}
        leaving = {i for i, (s, _) in last.items() if s != "stays"}
        statuses = Counter(s for s, _ in last.values())
        skipped["no_consent"] += statuses["no_consent"]
        counts = Counter(records=len(batch), removed=statuses["leaves"])
        if not last and not self.snapshot:  # nothing staged: an incremental run applies nothing
            return {**counts, "skipped": +skipped}
        sent = stays
        if not self.uploaded and self.min_size:
            if self.snapshot:
                self.pending = dict(stays)
            else:
                self.pending = {i: e for i, e in self.pending.items() if i not in leaving}
                self.pending.update(stays)
            counts["carried"] = len(self.pending) - len(stays)
            if len(self.pending) < self.min_size:
                counts["held"] = len(self.pending)
                return {**counts, "skipped": +skipped}
            sent, self.pending = self.pending, {}
        for i, e in sent.items():
            old = self.confirmed.get(i)
            counts["added" if old is None else "unchanged" if old == e else "changed"] += 1
        if self.snapshot:
            counts["absent"] = sum(1 for i in self.confirmed if i not in last)
            counts["removed"] += counts["absent"]
            self.confirmed = dict(sent)
        else:
            self.confirmed = {i: e for i, e in self.confirmed.items() if i not in leaving}
            self.confirmed.update(sent)
        self.uploaded = True
        return {**counts, "skipped": +skipped}


COUNTED = ("records", "added", "removed", "changed", "unchanged", "held", "absent", "carried")


def run_in_process(config: dict, stream: str, batch: list[dict]) -> dict[str, Any]:
    """One run of the target on `batch`; the counts its report line was made of."""
    messages = [schema(stream), *(record(stream, **r) for r in batch)]
    target = TargetTikTokAudiences(config=config)
    target.listen(io.StringIO("\n".join(json.dumps(m) for m in messages) + "\n"))
    (sink,) = [s for s in target._sinks_active.values() if isinstance(s, AudienceSink)]
    counts = sink.sync.report_counts()
    return {**{k: counts[k] for k in COUNTED}, "skipped": Counter(counts["skipped"])}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    snapshot=st.booleans(),
    consent=st.booleans(),
    membership=st.booleans(),
    min_size=st.sampled_from([0, 0, 3]),
    runs=st.lists(st.lists(records(), min_size=1, max_size=12), min_size=1, max_size=3),
)
def test_every_record_is_counted_once(
    fake, tmp_path, snapshot, consent, membership, min_size, runs
):
    stream = f"s{uuid.uuid4().hex[:12]}"
    config = {
        "access_token": TOKEN,
        "advertiser_ids": [ADVERTISER],
        "api_url": fake.url,
        "membership_store": str(tmp_path / f"{stream}.sqlite"),
        "min_audience_size": min_size,
        "max_removal_fraction": 1.0,
        "max_requests_per_second": 500,
        "sync_mode": "snapshot" if snapshot else "incremental",
        "identifier_fields": {"phone": None, "idfa": None, "aaid": None},
        **({"consent_field": "consent"} if consent else {}),
        **({"membership_field": "member"} if membership else {}),
    }
    model = Model(snapshot, consent, membership, min_size)
    for batch in runs:
        counts = run_in_process(config, stream, batch)
        expected = model.run(batch)
        assert counts == {
            **{k: expected.get(k, 0) for k in COUNTED},
            "skipped": expected["skipped"],
        }
        made_of_records = (
            counts["added"]
            + counts["changed"]
            + counts["unchanged"]
            + counts["held"]
            + counts["removed"]
            + counts["skipped"].total()
            - counts["absent"]
            - counts["carried"]
        )
        assert made_of_records == counts["records"] == len(batch)
    on_tiktok = {
        h
        for a in fake.audiences()
        if a["name"] == stream
        for h in fake.members(str(a["audience_id"])).get("EMAIL_SHA256", ())
    }
    assert on_tiktok == {sha(e) for e in model.confirmed.values()}
