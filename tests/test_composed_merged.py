"""Composed audiences of the same advertisers send their changes together (issue 17).

A person planned in several audiences of one run is one row of a mapping request, each entry
naming the audiences its hash is sent to. End to end through the console script against the
fake TikTok (the helpers of test_composed_end_to_end.py), then the pure grouping of planned
rows into merged rows, and the store's side of it on both databases.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from target_tiktok_audiences.store.merging import merge_rows
from target_tiktok_audiences.tiktok.mapping import MergedRow, mapping_body
from tests.conftest import ADVERTISER, OTHER_ADVERTISER, TOKEN, sha
from tests.fake_tiktok import FakeTikTok
from tests.test_composed_end_to_end import (
    BOTH_STORES,
    MAPPING,
    POSTGRESQL,
    SQLITE,
    Hash,
    StoreRunner,
    audience_named,
    bodies,
    em,
    held,
    person,
    ph,
    reports,
    streams,
    succeeded,
)
from tests.test_history import history


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeTikTok) -> StoreRunner:
    """On SQLite; on a fresh PostgreSQL schema where `BOTH_STORES` asks for it."""
    on_postgres = getattr(request, "param", SQLITE) == POSTGRESQL
    pg = request.getfixturevalue("postgres_server") if on_postgres else None
    return StoreRunner(tmp_path, fake, pg)


def all_and_vip(**spec: Any) -> dict[str, Any]:
    """Everyone of stream `a`, and its VIPs: two composed audiences of the same people."""
    return {
        "audiences": {
            "all": {"audience_name": "All", "streams": ["a"], **spec},
            "vip": {"audience_name": "VIP", "streams": ["a"], "where": {"tier": "vip"}, **spec},
        }
    }


def mapping_bodies(fake: FakeTikTok, action: str | None = None) -> list[dict]:
    return [b for b in bodies(fake, MAPPING) if action is None or b["action"] == action]


def sent_to(fake: FakeTikTok, action: str) -> Counter[tuple[str, Hash]]:
    """Each (audience id, hash) sent with `action` in accepted requests, counted per sending."""
    out: Counter[tuple[str, Hash]] = Counter()
    for body in mapping_bodies(fake, action):
        for row in body["batch_data"]:
            for kind, entry in zip(body["id_schema"], row, strict=True):
                for audience in entry.get("audience_ids", ()):
                    out[(audience, (kind, entry["id"]))] += 1
    return out


def audiences_in(body: dict) -> set[str]:
    """Every audience id a mapping body's entries name."""
    return {a for row in body["batch_data"] for e in row for a in e.get("audience_ids", ())}


def rows_of(fake: FakeTikTok, action: str) -> list[dict[Hash, list[str]]]:
    """Each row sent with `action`: its entries' audience ids by hash."""
    return [
        {(kind, e["id"]): e["audience_ids"] for kind, e in zip(b["id_schema"], row) if e}
        for b in mapping_bodies(fake, action)
        for row in b["batch_data"]
    ]


PEOPLE = {
    1: ("p1@x.io", "+14155550101", "vip"),
    2: ("p2@x.io", None, "vip"),
    3: ("p3@x.io", "+14155550103", "regular"),
    4: ("p4@x.io", None, "regular"),
    5: ("p5@x.io", "+14155550105", "vip"),
}


def records(people: dict[int, tuple[str, str | None, str]]) -> list[dict]:
    return [
        person("a", key, email, phone, tier=tier) for key, (email, phone, tier) in people.items()
    ]


def hashes(people: dict[int, tuple[str, str | None, str]], tier: str | None = None) -> set[Hash]:
    out = set()
    for email, phone, of in people.values():
        if tier is None or of == tier:
            out |= {em(email)} | ({ph(phone)} if phone else set())
    return out


@BOTH_STORES
def test_two_composed_audiences_send_a_shared_person_once_naming_both(target, fake):
    run = succeeded(target.run([*streams("a"), *records(PEOPLE)], **all_and_vip()))
    every, vip = audience_named(fake, "All"), audience_named(fake, "VIP")
    assert held(fake, "All") == hashes(PEOPLE)
    assert held(fake, "VIP") == hashes(PEOPLE, "vip")
    # One request of five rows, where one audience at a time took two requests of 5 + 3 rows.
    (body,) = mapping_bodies(fake)
    assert len(body["batch_data"]) == 5
    vips = {em(PEOPLE[k][0]) for k in (1, 2, 5)}
    for row in rows_of(fake, "add"):
        email = next(h for h in row if h[0] == "EMAIL_SHA256")
        expected = [every, vip] if email in vips else [every]
        assert all(ids == expected for ids in row.values()), row
    assert Counter(sent_to(fake, "add").values()) == {1: len(hashes(PEOPLE)) + 5}
    lines = reports(run)
    assert (lines["All"].added, lines["VIP"].added) == (5, 3)
    assert (
        "8 planned add rows of audiences All, VIP, as 5 rows in 1 request(s) (2 if sent "
        in run.stderr
    )

    # A VIP leaves, a regular becomes a VIP, a VIP's email changes.
    fake.reset_log()
    now = {k: v for k, v in PEOPLE.items() if k != 1}
    now[3] = ("p3@x.io", "+14155550103", "vip")
    now[5] = ("p5-new@x.io", "+14155550105", "vip")
    run = succeeded(target.run([*streams("a"), *records(now)], **all_and_vip()))
    assert held(fake, "All") == hashes(now)
    assert held(fake, "VIP") == hashes(now, "vip")
    assert [b["action"] for b in mapping_bodies(fake)] == ["delete", "add"]
    deletes = {em("p1@x.io"): [every, vip], ph("+14155550101"): [every, vip]}
    assert rows_of(fake, "delete") == [deletes, {em("p5@x.io"): [every, vip]}]
    assert sorted(rows_of(fake, "add"), key=str) == sorted(
        [
            {em("p3@x.io"): [vip], ph("+14155550103"): [vip]},
            {em("p5-new@x.io"): [every, vip]},
        ],
        key=str,
    )
    lines = reports(run)
    assert (lines["All"].removed, lines["All"].changed, lines["All"].unchanged) == (1, 1, 3)
    assert (lines["VIP"].removed, lines["VIP"].added, lines["VIP"].changed) == (1, 1, 1)

    # The same input again sends nothing.
    fake.reset_log()
    succeeded(target.run([*streams("a"), *records(now)], **all_and_vip()))
    assert mapping_bodies(fake) == []


def test_a_hash_one_audience_keeps_is_sent_only_to_the_other(target, fake):
    # Households: a regular and a VIP share a phone. In All the phone goes once, with one of
    # the two; in VIP with the VIP. Where All sends it with the regular, the VIP's row names
    # VIP alone for the phone and both audiences for the email.
    people = {}
    for house in range(6):
        phone = f"+1415555{house:04d}"
        people[2 * house] = (f"r{house}@x.io", phone, "regular")
        people[2 * house + 1] = (f"v{house}@x.io", phone, "vip")
    succeeded(target.run([*streams("a"), *records(people)], **all_and_vip()))
    every, vip = audience_named(fake, "All"), audience_named(fake, "VIP")
    assert held(fake, "All") == hashes(people)
    assert held(fake, "VIP") == hashes(people, "vip")
    sent = sent_to(fake, "add")
    for _, phone, _ in people.values():
        assert (sent[(every, ph(phone))], sent[(vip, ph(phone))]) == (1, 1)
    split = [row for row in rows_of(fake, "add") if len({tuple(v) for v in row.values()}) > 1]
    assert split, "no row whose entries name different audiences"
    for row in split:
        assert sorted(row.values()) == [[every, vip], [vip]], row


def test_audiences_of_different_advertisers_are_not_merged(target, fake):
    cfg = all_and_vip()
    cfg["audiences"]["other"] = {
        "audience_name": "Other",
        "streams": ["a"],
        "advertiser_ids": [OTHER_ADVERTISER],
    }
    succeeded(target.run([*streams("a"), *records(PEOPLE)], **cfg))
    every, vip, other = (audience_named(fake, n) for n in ("All", "VIP", "Other"))
    assert held(fake, "Other") == held(fake, "All") == hashes(PEOPLE)
    by_advertisers = {tuple(b["advertiser_ids"]): b for b in mapping_bodies(fake)}
    assert sorted(by_advertisers) == [(ADVERTISER,), (OTHER_ADVERTISER,)]
    named = {advertisers: audiences_in(body) for advertisers, body in by_advertisers.items()}
    assert named == {(ADVERTISER,): {every, vip}, (OTHER_ADVERTISER,): {other}}


def test_a_dry_run_writes_the_merged_bodies_the_real_run_sends(target, fake):
    messages = [*streams("a"), *records(PEOPLE)]
    output = target.tmp_path / "dry-run.jsonl"
    succeeded(target.run(messages, **all_and_vip(), dry_run=True, dry_run_output=str(output)))
    assert fake.requests_log() == []
    written = [json.loads(line) for line in output.read_text().splitlines()]
    dry = [r["body"] for r in written if r["path"] == MAPPING]
    succeeded(target.run(messages, **all_and_vip()))
    real = json.dumps(mapping_bodies(fake))
    for name in ("All", "VIP"):
        real = real.replace(audience_named(fake, name), f"dry-run:{name}")
    assert len(dry) == 1
    assert json.loads(real) == dry


def confirmed(target: StoreRunner) -> dict[str, set[str]]:
    """The hashes the store holds as confirmed, hex, by audience name."""
    db = sqlite3.connect(target.store_path)
    try:
        names = dict(db.execute("SELECT id, name FROM audiences"))
        out: dict[str, set[str]] = {name: set() for name in names.values()}
        for audience, _, *slots in db.execute("SELECT * FROM members"):
            out[names[audience]] |= {s.hex() for s in slots if s is not None}
        return out
    finally:
        db.close()


def test_a_failed_merged_batch_leaves_both_audiences_unconfirmed_and_a_rerun_finishes(target, fake):
    cfg = {**all_and_vip(), "batch_size": 2, "max_parallel_requests": 1, "max_retries": 0}
    succeeded(target.run([*streams("a"), *records(PEOPLE)], **cfg))
    before = confirmed(target)
    every, vip = audience_named(fake, "All"), audience_named(fake, "VIP")
    # Everyone's email changes; the first merged delete is only half applied (20001).
    now = {k: (f"new{k}@x.io", phone, tier) for k, (_, phone, tier) in PEOPLE.items()}
    fake.reset_log()
    fake.inject(partial_next=1)
    run = target.run([*streams("a"), *records(now)], **cfg)
    assert run.returncode == 1
    assert run.states == []
    assert confirmed(target) == before
    history = target.store_rows("history_audiences")
    assert sorted(row[4] for row in history[-2:]) == ["failed", "failed"]

    fake.inject()
    fake.reset_log()
    succeeded(target.run([*streams("a"), *records(now)], **cfg))
    assert held(fake, "All") == hashes(now)
    assert held(fake, "VIP") == hashes(now, "vip")
    assert all(len(b["batch_data"]) <= 2 for b in mapping_bodies(fake))
    # Each change went once to each audience in accepted requests: nothing was confirmed
    # in one audience and not in the other.
    assert set(sent_to(fake, "add").values()) == {1}
    assert {a for a, _ in sent_to(fake, "delete")} == {every, vip}
    assert confirmed(target)["All"] == {h for _, h in hashes(now)}


def test_each_audience_keeps_the_receipt_of_every_request_that_carried_its_rows(target, fake):
    cfg = {**all_and_vip(), "batch_size": 2}
    succeeded(target.run([*streams("a"), *records(PEOPLE)], **cfg))
    log = fake.requests_log(MAPPING)
    every, vip = audience_named(fake, "All"), audience_named(fake, "VIP")
    carried: dict[str, list[str]] = {every: [], vip: []}
    for request in log:
        named = audiences_in(request["body"])
        for audience in sorted(named):
            carried[audience].append(request["request_id"])
    assert len(log) == 3  # five people, two a request
    receipts = {entry["audience_id"]: sorted(entry["request_ids"]) for entry in history(target)}
    assert receipts == {audience: sorted(ids) for audience, ids in carried.items()}


def test_a_merged_batch_too_large_for_tiktok_is_halved_and_each_part_is_a_receipt(target, fake):
    fake.max_batch = 2  # "Too many ids" above two rows: five people go in parts of 2, 1, 2
    run = succeeded(target.run([*streams("a"), *records(PEOPLE)], **all_and_vip()))
    every, vip = audience_named(fake, "All"), audience_named(fake, "VIP")
    assert held(fake, "All") == hashes(PEOPLE)
    assert held(fake, "VIP") == hashes(PEOPLE, "vip")
    accepted = [r for r in fake.requests_log(MAPPING) if r["code"] == 0]
    assert [len(r["body"]["batch_data"]) for r in accepted] == [2, 1, 2]
    assert Counter(sent_to(fake, "add").values()) == {1: len(hashes(PEOPLE)) + 5}
    receipts = {entry["audience_id"]: sorted(entry["request_ids"]) for entry in history(target)}
    assert receipts == {
        audience: sorted(r["request_id"] for r in accepted if audience in audiences_in(r["body"]))
        for audience in (every, vip)
    }
    assert "batch size is now 2" in run.stderr


def test_a_refused_audience_sends_nothing_while_the_others_are_sent_then_the_run_fails(
    target, fake
):
    succeeded(target.run([*streams("a"), *records(PEOPLE)], **all_and_vip()))
    # Two of the three VIPs become regulars: VIP would lose 2 of 3, over 0.5.
    now = {**PEOPLE, 1: (*PEOPLE[1][:2], "regular"), 2: (*PEOPLE[2][:2], "regular")}
    now[6] = ("p6@x.io", None, "regular")
    fake.reset_log()
    run = target.run([*streams("a"), *records(now)], **all_and_vip())
    assert run.returncode == 1
    assert len(run.errors) == 1 and "refusing to sync audience VIP" in run.errors[0]
    assert run.states == []
    assert held(fake, "VIP") == hashes(PEOPLE, "vip")
    assert held(fake, "All") == hashes(now)
    vip = audience_named(fake, "VIP")
    assert all(vip not in audiences_in(body) for body in mapping_bodies(fake))


def test_an_audience_deleted_on_tiktok_is_made_again_and_the_others_sync_alone(target, fake):
    succeeded(target.run([*streams("a"), *records(PEOPLE)], **all_and_vip()))
    every, vip = audience_named(fake, "All"), audience_named(fake, "VIP")
    fake.delete_audience(vip)
    now = {**PEOPLE, 6: ("p6@x.io", None, "vip")}
    fake.reset_log()
    run = succeeded(target.run([*streams("a"), *records(now)], **all_and_vip()))
    assert "no longer exists on TikTok" in run.stderr
    # The merged request met the deleted audience, without TikTok saying which of the two it
    # was; each then synced alone, and VIP's own request found out.
    gone = [audiences_in(r["body"]) for r in fake.requests_log(MAPPING) if r["code"] == 40007]
    assert gone == [{every, vip}, {vip}]
    assert held(fake, "All") == hashes(now)
    assert held(fake, "VIP") == hashes(now, "vip")
    lines = reports(run)
    assert (lines["All"].added, lines["All"].unchanged) == (1, 5)
    assert lines["VIP"].added == 4  # the new audience: everyone is added to it


# The fake TikTok: an entry of several audiences, each of the request's advertisers


def test_the_fake_takes_an_entry_of_several_audiences_each_of_the_requests_advertisers(fake):
    first = fake.add_audience(ADVERTISER, "first")
    second = fake.add_audience(ADVERTISER, "second")
    foreign = fake.add_audience(OTHER_ADVERTISER, "foreign")
    email, phone = sha("a@x.io"), sha("+14155550100")

    def send(audience_ids: list[str], phone_to: list[str]) -> int:
        body = {
            "advertiser_ids": [ADVERTISER],
            "action": "add",
            "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
            "batch_data": [
                [
                    {"id": email, "audience_ids": audience_ids},
                    {"id": phone, "audience_ids": phone_to},
                ]
            ],
        }
        headers = {"Access-Token": TOKEN, "Content-Type": "application/json"}
        answer = requests.post(fake.url + MAPPING, json=body, headers=headers, timeout=10)
        return answer.json()["code"]

    assert send([first, foreign], [first]) == 40001  # not an audience of the request's advertisers
    assert fake.members(first) == {} and fake.members(foreign) == {}
    assert send([first, second], [second]) == 0
    assert fake.members(first) == {"EMAIL_SHA256": {email}}
    assert fake.members(second) == {"EMAIL_SHA256": {email}, "PHONE_SHA256": {phone}}


# The pure grouping


def test_merge_rows_groups_neighbours_and_names_the_audiences_each_entry_goes_to():
    e, p = b"e" * 32, b"p" * 32
    planned = [
        (7, 1, 0b00, e, p),  # audience 1 sends both hashes
        (7, 2, 0b10, e, p),  # audience 2 keeps the phone: another of its people sends it
        (9, 2, 0b00, b"f" * 32, None),
        (11, 1, 0b11, e, p),  # every hash kept: an entry for nobody
        (11, 1, 0b00, e, p),  # the same audience twice: named once
    ]
    rows = merge_rows(planned, {1: "A", 2: "B"})
    assert rows == [
        MergedRow([(e, ("A", "B")), (p, ("A",))]),
        MergedRow([(b"f" * 32, ("B",)), None]),
        MergedRow([(e, ("A",)), (p, ("A",))]),
    ]
    assert all(isinstance(row, MergedRow) for row in rows)


def test_a_merged_body_aligns_entries_with_id_schema_and_names_each_entrys_audiences():
    e, p = b"\x01" * 32, b"\x02" * 32
    empty = (None,) * 4
    rows = [
        MergedRow([(e, ("A", "B")), (p, ("B",)), *empty]),
        MergedRow([None, (p, ("A",)), *empty]),
    ]
    body = mapping_body("add", [ADVERTISER], "ignored", rows)
    assert body["id_schema"] == ["EMAIL_SHA256", "PHONE_SHA256"]
    assert body["batch_data"] == [
        [{"id": e.hex(), "audience_ids": ["A", "B"]}, {"id": p.hex(), "audience_ids": ["B"]}],
        [{}, {"id": p.hex(), "audience_ids": ["A"]}],
    ]
