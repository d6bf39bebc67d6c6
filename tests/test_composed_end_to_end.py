"""Composed audiences end to end: the console scripts, the fake TikTok, a real store.

Written from design.md ("Audiences, composed", "Membership", the settings `sources` and
`exclude_streams`), not from the implementation. Each test states what TikTok holds afterwards
exactly, as a set of (id_schema, hash) pairs per audience name, which requests were sent, the
exit code and the one-line errors. Readings of the contract these tests fix:

- Exclusion subtracts every hash of an excluded person from the union of the included people's
  hashes, even a hash that an included person shares with them (a household phone): the
  excluded person must not be reachable through it.
- A hash is sent once per change, however many included people hold it.
- A record that `where`, `split_by` or an exclusion keeps out counts in `skipped` as `filtered`
  or `excluded`; a member it keeps out leaves TikTok and is counted there once, as with
  `no_consent`. Records of an exclusion stream are not counted in any audience's report.
- An emptied `split_by` audience stays on TikTok, empty; a failed share is not remembered, so
  the next run tries it again.

The `harness` tests use the simple form only and pass against the previous release: they prove
the helpers (membership, report lines, store dumps, status, refusals before input) right.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import (
    ADVERTISER,
    OTHER_ADVERTISER,
    TOKEN,
    Run,
    TargetRunner,
    record,
    schema,
    sha,
    state,
)
from tests.fake_tiktok import FakeTikTok
from tests.postgres import PostgresServer

THIRD_ADVERTISER = "7000000000000000004"  # in the Business Center of ADVERTISER
OUTSIDE_ADVERTISER = "7000000000000000005"  # in another Business Center

CREATE = "segment/audience/"
MAPPING = "segment/mapping/"
SHARE = "dmp/custom_audience/share/"
CANCEL = "dmp/custom_audience/share/cancel/"
LOOKALIKE = "dmp/custom_audience/lookalike/create/"

SQLITE, POSTGRESQL = "sqlite", "postgresql"
BOTH_STORES = pytest.mark.parametrize("target", [SQLITE, POSTGRESQL], indirect=True)

_OPERATOR = shutil.which("tiktok-audiences") or str(
    Path(sys.executable).parent / "tiktok-audiences"
)

Hash = tuple[str, str]


class StoreRunner(TargetRunner):
    """The console-script runner on a SQLite file, or on a fresh schema of `pg` when given."""

    def __init__(self, tmp_path: Path, fake: FakeTikTok, pg: PostgresServer | None) -> None:
        super().__init__(tmp_path, fake)
        self.pg = pg
        if pg is not None:
            self.config["membership_store"] = pg.new_url()

    def dump(self) -> dict[str, list[str]]:
        """Every row of every table of the store, sorted: equal dumps, an untouched store."""
        if self.pg is None:
            db = sqlite3.connect(self.store_path)
            try:
                names = "SELECT name FROM sqlite_master WHERE type = 'table'"
                tables = [row[0] for row in db.execute(names)]
                return {t: sorted(map(repr, db.execute(f'SELECT * FROM "{t}"'))) for t in tables}
            finally:
                db.close()
        schema_name = parse_qs(urlsplit(self.config["membership_store"]).query)["schema"][0]
        with self.pg.connect() as pg:
            names = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            tables = [row[0] for row in pg.execute(names, (schema_name,))]
            return {
                t: sorted(map(repr, pg.execute(f'SELECT * FROM "{schema_name}"."{t}"')))
                for t in tables
            }


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeTikTok) -> StoreRunner:
    """On SQLite; on a fresh PostgreSQL schema where `BOTH_STORES` asks for it."""
    on_postgres = getattr(request, "param", SQLITE) == POSTGRESQL
    pg = request.getfixturevalue("postgres_server") if on_postgres else None
    return StoreRunner(tmp_path, fake, pg)


# Identifiers and records


def em(address: str) -> Hash:
    return ("EMAIL_SHA256", sha(address))


def ph(e164: str) -> Hash:
    return ("PHONE_SHA256", sha(e164))


def person(
    stream: str, key: int, email: str | None = None, phone: str | None = None, **fields: Any
) -> dict:
    """A RECORD of `stream` for the person keyed `key`; an identifier given as None is absent."""
    ids = {k: v for k, v in (("email", email), ("phone", phone)) if v is not None}
    return record(stream, id=key, **ids, **fields)


def streams(*names: str) -> list[dict]:
    return [schema(name) for name in names]


# What TikTok holds and was sent


def audience_named(fake: FakeTikTok, name: str) -> str:
    """The id of the one TikTok audience called `name` (two, or none, fail the test)."""
    ids = [str(a["audience_id"]) for a in fake.audiences() if a["name"] == name]
    assert len(ids) == 1, (name, fake.audiences())
    return ids[0]


def held(fake: FakeTikTok, name: str) -> set[Hash]:
    """What TikTok holds in the audience called `name`, as (id_schema, hash) pairs."""
    members = fake.members(audience_named(fake, name))
    return {(kind, h) for kind, hashes in members.items() for h in hashes}


def bodies(fake: FakeTikTok, path: str) -> list[dict]:
    """The bodies TikTok accepted (code 0) on `path`, in arrival order."""
    return [r["body"] for r in fake.requests_log(path) if r["code"] == 0]


def sent(fake: FakeTikTok, action: str, audience_id: str | None = None) -> Counter[Hash]:
    """Every hash sent with `action` (to `audience_id`, or to any), counted per sending."""
    out: Counter[Hash] = Counter()
    for body in bodies(fake, MAPPING):
        if body["action"] != action:
            continue
        for row in body["batch_data"]:
            for kind, entry in zip(body["id_schema"], row, strict=True):
                if entry and (audience_id is None or audience_id in entry["audience_ids"]):
                    out[(kind, entry["id"])] += 1
    return out


def created_names(fake: FakeTikTok) -> list[str]:
    return [b["custom_audience_name"] for b in bodies(fake, CREATE) if b["action"] == "create"]


def shared_ids(fake: FakeTikTok, path: str) -> list[str]:
    return [a for b in bodies(fake, path) for a in b["shared_advertiser_ids"]]


# The report line

_REPORT = re.compile(
    r"Audience (?P<name>.+?) \(stream (?P<key>[^)]*)\)(?: \[dry run\])?: "
    r"added (?P<added>\d+), removed (?P<removed>\d+), changed (?P<changed>\d+), "
    r"unchanged (?P<unchanged>\d+), skipped (?P<skipped>\d+)(?: \((?P<reasons>[^)]*)\))?, "
    r"held (?P<held>\d+), requests (?P<requests>\d+), "
)
_COUNTS = ("added", "removed", "changed", "unchanged", "skipped", "held", "requests")


@dataclass(frozen=True)
class Report:
    """One audience's report line, parsed; `reasons` sums to `skipped`.

    Equality leaves `requests` out: whether a create or a look-up counts is not the contract's.
    """

    key: str
    added: int
    removed: int
    changed: int
    unchanged: int
    skipped: int
    held: int
    reasons: dict[str, int]
    requests: int = field(default=0, compare=False)

    @property
    def accounted(self) -> int:
        """Records plus absent people: what the counts of design.md add up to."""
        return self.added + self.changed + self.unchanged + self.held + self.removed + self.skipped


def reports(run: Run) -> dict[str, Report]:
    """Each audience's report line by audience name; a name reported twice fails the test."""
    out: dict[str, Report] = {}
    for line in run.stderr.splitlines():
        match = _REPORT.search(line)
        if match is None:
            continue
        name = match["name"]
        assert name not in out, f"two report lines for {name}: {run.stderr}"
        reasons = {}
        for part in (match["reasons"] or "").split(", "):
            if part not in ("", "none"):
                reason, count = part.rsplit(" ", 1)
                reasons[reason] = int(count)
        counts = {k: int(match[k]) for k in _COUNTS}
        assert sum(reasons.values()) == counts["skipped"], line
        out[name] = Report(key=match["key"], reasons=reasons, **counts)
    return out


def succeeded(run: Run) -> Run:
    assert run.returncode == 0, run.stderr
    assert run.errors == [], run.stderr
    return run


def refused(run: Run, fake: FakeTikTok) -> str:
    """The one error line of a run that stopped before reading its input or sending anything."""
    assert run.returncode != 0, run.stderr
    assert len(run.errors) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "not valid JSON" not in run.stderr, "the input was read before the refusal"
    assert run.states == []
    assert fake.requests_log() == []
    return run.errors[0]


NOT_JSON = "this line is not JSON: a target that reads it before refusing says so"


# The operator command


def status_rows(target: TargetRunner, **overrides: Any) -> list[dict[str, Any]]:
    """`tiktok-audiences status --format json` on the runner's config (plus `overrides`)."""
    config = {k: v for k, v in {**target.config, **overrides}.items() if v is not None}
    path = target.tmp_path / "status.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_TIKTOK_AUDIENCES_")}
    proc = subprocess.run(
        [_OPERATOR, "status", "--config", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=target.tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


# Harness: the simple form, as the previous release has it


@BOTH_STORES
def test_harness_simple_form_membership_reports_and_store_dump(target, fake):
    cfg = {"audiences": {"a": {"audience_name": "A list"}, "b": {}}}
    first = [
        *streams("a", "b"),
        person("a", 1, "a1@x.io", "+14155550101"),
        person("a", 2, "a2@x.io"),
        person("a", 3, "not-an-email"),
        person("b", 1, "b1@x.io"),
        state({"run": 1}),
    ]
    run = succeeded(target.run(first, **cfg))
    assert run.states == [{"run": 1}]
    assert held(fake, "A list") == {em("a1@x.io"), ph("+14155550101"), em("a2@x.io")}
    assert held(fake, "b") == {em("b1@x.io")}
    assert sorted(created_names(fake)) == ["A list", "b"]
    lines = reports(run)
    assert lines["A list"] == Report("a", 2, 0, 0, 0, 1, 0, {"invalid_email": 1})
    assert lines["A list"].accounted == 3
    assert lines["b"].key == "b"

    fake.reset_log()
    second = [*streams("a"), person("a", 1, "a1@x.io", "+14155550101"), person("a", 4, "a4@x.io")]
    run = succeeded(target.run(second, **cfg))
    assert held(fake, "A list") == {em("a1@x.io"), ph("+14155550101"), em("a4@x.io")}
    assert sent(fake, "delete") == Counter({em("a2@x.io"): 1})
    assert sent(fake, "add") == Counter({em("a4@x.io"): 1})
    assert set(reports(run)) == {"A list"}
    assert reports(run)["A list"].accounted == 2 + 1  # two records, one absent person

    before = target.dump()
    assert any(rows for rows in before.values())
    fake.reset_log()
    dry = succeeded(target.run([*second, person("a", 9, "a9@x.io")], dry_run=True, **cfg))
    assert "[dry run]" in dry.stderr
    assert fake.requests_log() == []
    assert target.dump() == before
    rows = {row["name"]: row for row in status_rows(target, **cfg)}
    assert (rows["A list"]["audience_id"], rows["A list"]["confirmed"]) == (
        audience_named(fake, "A list"),
        2,
    )


def test_harness_a_bad_spec_is_refused_before_the_input_is_read(target, fake):
    error = refused(target.run([NOT_JSON], audiences={"a": {"audience_nam": "A"}}), fake)
    assert "audience_nam" in error and "audience_name" in error


# `streams`


@BOTH_STORES
def test_streams_union_keeps_a_shared_hash_while_either_stream_has_it(target, fake):
    cfg = {"audiences": {"vip": {"audience_name": "VIP", "streams": ["a", "b"]}}}
    jane, jane_phone = "jane@x.io", "+14155550101"
    run = succeeded(
        target.run(
            [
                *streams("a", "b"),
                person("a", 1, jane, jane_phone),
                person("a", 2, "sam@x.io"),
                person("b", 7, jane),  # the same person, by her email, in both streams
                person("b", 8, phone="+14155550108"),
            ],
            **cfg,
        )
    )
    union = {em(jane), ph(jane_phone), em("sam@x.io"), ph("+14155550108")}
    assert held(fake, "VIP") == union
    assert sent(fake, "add") == Counter(dict.fromkeys(union, 1)), "each hash sent once"
    assert created_names(fake) == ["VIP"]
    assert [a["name"] for a in fake.audiences()] == ["VIP"]
    assert "is not listed in `audiences`" not in run.stderr
    line = reports(run)["VIP"]
    assert (line.key, line.added, line.skipped, line.accounted) == ("vip", 4, 0, 4)

    # Jane leaves a but stays in b: only the phone that a alone knew leaves TikTok.
    fake.reset_log()
    run = succeeded(
        target.run(
            [
                *streams("a", "b"),
                person("a", 2, "sam@x.io"),
                person("b", 7, jane),
                person("b", 8, phone="+14155550108"),
            ],
            **cfg,
        )
    )
    assert held(fake, "VIP") == union - {ph(jane_phone)}
    assert sent(fake, "delete") == Counter({ph(jane_phone): 1})
    assert sent(fake, "add") == Counter()

    # b alone, without Jane: a is remembered (without her), so her email goes now.
    fake.reset_log()
    succeeded(target.run([*streams("b"), person("b", 8, phone="+14155550108")], **cfg))
    assert held(fake, "VIP") == {em("sam@x.io"), ph("+14155550108")}
    assert sent(fake, "delete") == Counter({em(jane): 1})


def test_a_stream_feeds_two_audiences(target, fake):
    cfg = {
        "audiences": {
            "vip": {"audience_name": "VIP", "streams": ["a", "b"]},
            "news": {"audience_name": "Newsletter", "streams": ["a"]},
        }
    }
    a = [person("a", i, f"a{i}@x.io") for i in (1, 2, 3)]
    succeeded(target.run([*streams("a", "b"), *a, person("b", 1, "b1@x.io")], **cfg))
    a_hashes = {em(f"a{i}@x.io") for i in (1, 2, 3)}
    assert held(fake, "VIP") == a_hashes | {em("b1@x.io")}
    assert held(fake, "Newsletter") == a_hashes
    assert sorted(created_names(fake)) == ["Newsletter", "VIP"]

    fake.reset_log()
    run = succeeded(target.run([*streams("a"), *a[:2]], **cfg))
    assert held(fake, "VIP") == a_hashes - {em("a3@x.io")} | {em("b1@x.io")}
    assert held(fake, "Newsletter") == a_hashes - {em("a3@x.io")}
    assert created_names(fake) == []
    assert {name: r.removed for name, r in reports(run).items()} == {"VIP": 1, "Newsletter": 1}


# `exclude_streams`


@BOTH_STORES
def test_exclusion_by_any_hash_withholds_all_of_that_persons_hashes(target, fake):
    cfg = {
        "audiences": {"vip": {"audience_name": "VIP", "streams": ["a"], "exclude_streams": ["x"]}}
    }
    run = succeeded(
        target.run(
            [
                *streams("a", "x"),
                person("a", 1, "one@x.io", "+14155550101"),
                person("a", 2, "two@x.io"),
                person("a", 3, "three@x.io", "+14155550103"),
                person("x", 9, phone="+14155550101"),  # person 1, by phone alone
            ],
            **cfg,
        )
    )
    assert held(fake, "VIP") == {em("two@x.io"), em("three@x.io"), ph("+14155550103")}
    assert em("one@x.io") not in sent(fake, "add")
    assert ph("+14155550101") not in sent(fake, "add")
    # The exclusion stream feeds no audience, and is no ignored stream either.
    assert [a["name"] for a in fake.audiences()] == ["VIP"]
    assert "Stream x is not listed" not in run.stderr
    line = reports(run)["VIP"]
    assert line.reasons == {"excluded": 1}
    assert (line.added, line.accounted) == (2, 3)


@BOTH_STORES
def test_a_hash_shared_with_an_excluded_person_is_withheld(target, fake):
    """Two people share a household phone: excluding one withholds the phone from both."""
    cfg = {
        "audiences": {"vip": {"audience_name": "VIP", "streams": ["a"], "exclude_streams": ["x"]}},
        "max_removal_fraction": 1.0,
    }
    household = "+14155550100"
    a = [
        *streams("a"),
        person("a", 1, "one@x.io", household),
        person("a", 2, "two@x.io", household),
    ]
    succeeded(target.run([*a, *streams("x"), person("x", 9, "two@x.io")], **cfg))
    assert held(fake, "VIP") == {em("one@x.io")}

    # Person 2 leaves the suppression list: a, remembered, brings both back in full.
    fake.reset_log()
    succeeded(target.run([*streams("x"), person("x", 9, "nobody@x.io")], **cfg))
    assert held(fake, "VIP") == {em("one@x.io"), em("two@x.io"), ph(household)}
    assert sent(fake, "add") == Counter({em("two@x.io"): 1, ph(household): 1})

    # Person 1 is suppressed: the household phone goes, though person 2 still has it.
    fake.reset_log()
    succeeded(target.run([*streams("x"), person("x", 9, "one@x.io")], **cfg))
    assert held(fake, "VIP") == {em("two@x.io")}
    assert sent(fake, "delete") == Counter({em("one@x.io"): 1, ph(household): 1})


def test_top_level_exclude_streams_apply_to_every_audience_and_add_to_the_specs(target, fake):
    cfg = {
        "exclude_streams": ["optout"],
        "audiences": {
            "contacts": {},
            "vip": {"audience_name": "VIP", "streams": ["a"], "exclude_streams": ["x"]},
        },
    }
    run = succeeded(
        target.run(
            [
                *streams("contacts", "a", "optout", "x"),
                person("contacts", 1, "e1@x.io"),
                person("contacts", 2, "e2@x.io"),
                person("a", 1, "e1@x.io"),
                person("a", 3, "e3@x.io"),
                person("a", 4, "e4@x.io"),
                person("optout", 9, "e1@x.io"),
                person("x", 8, "e3@x.io"),
            ],
            **cfg,
        )
    )
    assert held(fake, "contacts") == {em("e2@x.io")}
    assert held(fake, "VIP") == {em("e4@x.io")}
    assert sorted(a["name"] for a in fake.audiences()) == ["VIP", "contacts"]
    assert reports(run)["contacts"].reasons == {"excluded": 1}
    assert reports(run)["VIP"].reasons == {"excluded": 2}


# Sources are remembered


@BOTH_STORES
def test_sources_are_remembered_across_runs(target, fake):
    cfg = {
        "audiences": {
            "vip": {"audience_name": "VIP", "streams": ["a", "b"], "exclude_streams": ["x"]}
        }
    }
    a = [person("a", 1, "a1@x.io"), person("a", 2, "a2@x.io")]
    b1, b2, b3 = person("b", 1, "b1@x.io"), person("b", 2, "b2@x.io"), person("b", 3, "b3@x.io")
    x1, x2 = person("x", 1, "x1@x.io"), person("x", 2, "b2@x.io")
    succeeded(target.run([*streams("a", "b", "x"), *a, b1, b2, x1, state({"run": 1})], **cfg))
    a_hashes = {em("a1@x.io"), em("a2@x.io")}
    assert held(fake, "VIP") == a_hashes | {em("b1@x.io"), em("b2@x.io")}

    # x alone, now suppressing b's person 2: a and b count as they last were.
    fake.reset_log()
    run = succeeded(target.run([*streams("x"), x1, x2, state({"run": 2})], **cfg))
    assert run.states == [{"run": 2}]
    assert held(fake, "VIP") == a_hashes | {em("b1@x.io")}
    assert sent(fake, "delete") == Counter({em("b2@x.io"): 1})
    assert sent(fake, "add") == Counter()
    assert reports(run)["VIP"].removed == 1

    # b alone: its snapshot replaces b's, a's people stay, x still suppresses person 2.
    fake.reset_log()
    succeeded(target.run([*streams("b"), b2, b3], **cfg))
    assert held(fake, "VIP") == a_hashes | {em("b3@x.io")}
    assert sent(fake, "delete") == Counter({em("b1@x.io"): 1})
    assert sent(fake, "add") == Counter({em("b3@x.io"): 1})

    # x alone again, without person 2: b's remembered snapshot brings them back.
    fake.reset_log()
    succeeded(target.run([*streams("x"), x1], **cfg))
    assert held(fake, "VIP") == a_hashes | {em("b2@x.io"), em("b3@x.io")}
    assert sent(fake, "add") == Counter({em("b2@x.io"): 1})

    # Nothing new: nothing sent.
    fake.reset_log()
    succeeded(target.run([*streams("x"), x1], **cfg))
    assert fake.requests_log() == []


# `where`


def test_where_matches_scalars_arrays_and_dotted_paths_exactly(target, fake):
    cfg = {
        "audiences": {
            "se": {
                "audience_name": "SE gold",
                "streams": ["a"],
                "where": {"country": "SE", "plan.tier": ["gold", "silver"]},
            },
            "scored": {"audience_name": "Scored", "streams": ["a"], "where": {"score": 1}},
        },
        "max_removal_fraction": 1.0,
    }

    def records(tier_of_two: str) -> list[dict]:
        return [
            *streams("a"),
            person("a", 1, "e1@x.io", country="SE", plan={"tier": "gold"}, score=1),
            person("a", 2, "e2@x.io", country="SE", plan={"tier": tier_of_two}, score="1"),
            person("a", 3, "e3@x.io", country="se", plan={"tier": "gold"}, score=True),
            person("a", 4, "e4@x.io", country="SE", plan={"tier": "bronze"}),
            person("a", 5, "e5@x.io", country="SE"),
            person("a", 6, "e6@x.io", country="DK", plan={"tier": "gold"}, score=1),
        ]

    run = succeeded(target.run(records("silver"), **cfg))
    assert held(fake, "SE gold") == {em("e1@x.io"), em("e2@x.io")}
    assert held(fake, "Scored") == {em("e1@x.io"), em("e6@x.io")}
    lines = reports(run)
    assert lines["SE gold"].reasons == {"filtered": 4}
    assert lines["Scored"].reasons == {"filtered": 4}
    assert lines["SE gold"].accounted == lines["Scored"].accounted == 6

    # A member whose record stops matching leaves, and is counted as filtered.
    fake.reset_log()
    run = succeeded(target.run(records("bronze"), **cfg))
    assert held(fake, "SE gold") == {em("e1@x.io")}
    assert sent(fake, "delete") == Counter({em("e2@x.io"): 1})
    assert reports(run)["SE gold"] == Report("se", 0, 0, 0, 1, 5, 0, {"filtered": 5})


# `split_by`


def tiered(key: int, tier: str | None) -> dict:
    plan = {} if tier == "-" else {"plan": {"tier": tier}}
    return person("a", key, f"p{key}@x.io", **plan)


@BOTH_STORES
def test_split_by_makes_one_audience_per_value_and_moves_people_between_them(target, fake):
    spec = {"audience_name": "Tier {value}", "streams": ["a"], "split_by": "plan.tier"}
    cfg = {"audiences": {"tiers": spec}}
    filtered = [tiered(5, None), tiered(6, "-")]  # a null value, and no value at all
    run = succeeded(
        target.run(
            [
                *streams("a"),
                *(tiered(k, "gold") for k in (1, 2, 3)),
                tiered(4, "silver"),
                *filtered,
            ],
            **cfg,
        )
    )
    assert sorted(created_names(fake)) == ["Tier gold", "Tier silver"]
    assert held(fake, "Tier gold") == {em("p1@x.io"), em("p2@x.io"), em("p3@x.io")}
    assert held(fake, "Tier silver") == {em("p4@x.io")}
    lines = reports(run)
    # Each value's line counts its people; the spec's own line the records of no value.
    assert set(lines) == {"Tier gold", "Tier silver", "Tier {value}"}
    assert {r.key for r in lines.values()} == {"tiers"}
    assert (lines["Tier gold"].added, lines["Tier silver"].added) == (3, 1)
    assert sum(r.reasons.get("filtered", 0) for r in lines.values()) == 2
    gold, silver = audience_named(fake, "Tier gold"), audience_named(fake, "Tier silver")

    # Person 3 moves to silver: deleted from gold, added to silver, nothing created.
    fake.reset_log()
    moved = [tiered(1, "gold"), tiered(2, "gold"), tiered(3, "silver"), tiered(4, "silver")]
    succeeded(target.run([*streams("a"), *moved, *filtered], **cfg))
    assert created_names(fake) == []
    assert held(fake, "Tier gold") == {em("p1@x.io"), em("p2@x.io")}
    assert held(fake, "Tier silver") == {em("p3@x.io"), em("p4@x.io")}
    assert sent(fake, "delete", gold) == Counter({em("p3@x.io"): 1})
    assert sent(fake, "delete", silver) == Counter()
    assert sent(fake, "add", silver) == Counter({em("p3@x.io"): 1})
    assert sent(fake, "add", gold) == Counter()

    # Silver is gone from a complete snapshot: emptying it is the removal guard's call.
    fake.reset_log()
    only_gold = [*streams("a"), *moved[:2], *filtered, state({"run": 3})]
    run = target.run(only_gold, **cfg)
    assert run.returncode != 0
    assert run.states == []
    assert len(run.errors) == 1, run.stderr
    assert "Tier silver" in run.errors[0] and "max_removal_fraction" in run.errors[0]
    assert bodies(fake, MAPPING) == []
    assert held(fake, "Tier silver") == {em("p3@x.io"), em("p4@x.io")}

    allowed = {"audiences": {"tiers": {**spec, "max_removal_fraction": 1.0}}}
    run = succeeded(target.run(only_gold, **allowed))
    assert run.states == [{"run": 3}]
    assert held(fake, "Tier silver") == set()
    assert held(fake, "Tier gold") == {em("p1@x.io"), em("p2@x.io")}
    assert reports(run)["Tier silver"].removed == 2
    assert created_names(fake) == []


def test_split_by_holds_each_value_until_it_has_min_audience_size(target, fake):
    spec = {
        "audience_name": "Level {value}",
        "streams": ["a"],
        "split_by": "level",
        "min_audience_size": 2,
    }
    cfg = {"audiences": {"levels": spec}}
    first = [
        *streams("a"),
        person("a", 1, "p1@x.io", level=1),
        person("a", 2, "p2@x.io", level=1),
        person("a", 3, "p3@x.io", level=2),
    ]
    run = succeeded(target.run(first, **cfg))
    assert created_names(fake) == ["Level 1"]
    assert held(fake, "Level 1") == {em("p1@x.io"), em("p2@x.io")}
    assert reports(run)["Level 2"].held == 1
    assert reports(run)["Level 1"].held == 0

    fake.reset_log()
    succeeded(target.run([*first, person("a", 4, "p4@x.io", level=2)], **cfg))
    assert created_names(fake) == ["Level 2"]
    assert held(fake, "Level 2") == {em("p3@x.io"), em("p4@x.io")}


# `share_with_advertiser_ids`


def test_shares_are_made_once_extended_cancelled_and_a_failed_one_ends_the_run(target, fake):
    fake.add_advertiser(THIRD_ADVERTISER, name="Third account")
    fake.add_advertiser(OUTSIDE_ADVERTISER, name="Elsewhere", business_center="bc2")
    fake.add_token(TOKEN, [ADVERTISER, OTHER_ADVERTISER, THIRD_ADVERTISER, OUTSIDE_ADVERTISER])

    def shared_with(*ids: str) -> dict[str, Any]:
        spec = {"audience_name": "VIP", "streams": ["a"], "share_with_advertiser_ids": list(ids)}
        return {"audiences": {"vip": spec}}

    people = [*streams("a"), person("a", 1, "p1@x.io"), person("a", 2, "p2@x.io")]
    succeeded(target.run(people, **shared_with(OTHER_ADVERTISER)))
    vip = audience_named(fake, "VIP")
    assert held(fake, "VIP") == {em("p1@x.io"), em("p2@x.io")}
    assert fake.shares(vip) == {OTHER_ADVERTISER}
    assert bodies(fake, SHARE) == [
        {
            "advertiser_id": ADVERTISER,
            "custom_audience_ids": [vip],
            "shared_advertiser_ids": [OTHER_ADVERTISER],
        }
    ]

    fake.reset_log()
    succeeded(target.run(people, **shared_with(OTHER_ADVERTISER)))
    assert fake.requests_log() == [], "a share is made once"

    fake.reset_log()
    succeeded(target.run(people, **shared_with(OTHER_ADVERTISER, THIRD_ADVERTISER)))
    assert shared_ids(fake, SHARE) == [THIRD_ADVERTISER]
    assert fake.requests_log(CANCEL) == []
    assert fake.shares(vip) == {OTHER_ADVERTISER, THIRD_ADVERTISER}

    fake.reset_log()
    succeeded(target.run(people, **shared_with(THIRD_ADVERTISER)))
    assert shared_ids(fake, CANCEL) == [OTHER_ADVERTISER]
    assert {b["custom_audience_ids"][0] for b in bodies(fake, CANCEL)} == {vip}
    assert fake.requests_log(SHARE) == []
    assert fake.shares(vip) == {THIRD_ADVERTISER}

    # Outside the Business Center: one line naming it, exit 1, after membership is confirmed.
    fake.reset_log()
    more = [*people, person("a", 3, "p3@x.io"), state({"run": 5})]
    run = target.run(more, **shared_with(THIRD_ADVERTISER, OUTSIDE_ADVERTISER))
    assert run.returncode == 1
    assert len(run.errors) == 1, run.stderr
    assert OUTSIDE_ADVERTISER in run.errors[0]
    assert "Traceback" not in run.stderr
    assert run.states == [{"run": 5}]
    assert held(fake, "VIP") == {em("p1@x.io"), em("p2@x.io"), em("p3@x.io")}
    assert [r["body"]["shared_advertiser_ids"] for r in fake.requests_log(SHARE)] == [
        [OUTSIDE_ADVERTISER]
    ]
    assert fake.shares(vip) == {THIRD_ADVERTISER}

    # The failed share was not made: the next run tries it again, and only it.
    fake.reset_log()
    run = target.run(more, **shared_with(THIRD_ADVERTISER, OUTSIDE_ADVERTISER))
    assert run.returncode == 1
    assert bodies(fake, MAPPING) == []
    assert [r["body"]["shared_advertiser_ids"] for r in fake.requests_log(SHARE)] == [
        [OUTSIDE_ADVERTISER]
    ]


# `lookalike` and `status`


def test_lookalike_is_made_once_the_audience_has_100_people_and_status_shows_it(target, fake):
    cfg = {
        "audiences": {
            "vip": {
                "audience_name": "VIP",
                "streams": ["a", "b"],
                "share_with_advertiser_ids": [OTHER_ADVERTISER],
                "lookalike": {"audience_name": "VIP lookalike", "location_ids": ["6252001"]},
            },
            "tiers": {"audience_name": "Tier {value}", "streams": ["a"], "split_by": "tier"},
        }
    }

    def people(n: int) -> list[dict]:
        tiers = ("gold", "silver")
        return [
            *streams("a", "b"),
            *(person("a", i, f"p{i}@x.io", tier=tiers[i % 2]) for i in range(n - 1)),
            person("b", 1, "b1@x.io"),
        ]

    succeeded(target.run(people(99), **cfg))
    assert len(held(fake, "VIP")) == 99
    assert fake.requests_log(LOOKALIKE) == [], "no lookalike of fewer than 100 people"

    fake.reset_log()
    succeeded(target.run(people(100), **cfg))
    vip = audience_named(fake, "VIP")
    assert bodies(fake, LOOKALIKE) == [
        {
            "advertiser_id": ADVERTISER,
            "custom_audience_name": "VIP lookalike",
            "lookalike_spec": {
                "source_audience_id": vip,
                "include_source": False,
                "location_ids": ["6252001"],
                "mobile_os": "ALL",
                "placements": ["TikTok"],
                "audience_size": "BALANCED",
            },
        }
    ]
    log = fake.requests_log()
    uploads = [
        i for i, r in enumerate(log) if r["path"] == MAPPING and vip in json.dumps(r["body"])
    ]
    assert uploads and [r["path"] for r in log].index(LOOKALIKE) > max(uploads)

    fake.reset_log()
    succeeded(target.run(people(101), **cfg))
    assert fake.requests_log(LOOKALIKE) == [], "the lookalike's id is remembered"

    rows = {row["name"]: row for row in status_rows(target, **cfg)}
    assert {
        k: rows["VIP"][k]
        for k in ("streams", "split_value", "shared_with", "lookalike_audience_id")
    } == {
        "streams": ["a", "b"],
        "split_value": None,
        "shared_with": [OTHER_ADVERTISER],
        "lookalike_audience_id": audience_named(fake, "VIP lookalike"),
    }
    assert rows["VIP"]["audience_id"] == vip and rows["VIP"]["confirmed"] == 101
    assert fake.audience(rows["VIP"]["lookalike_audience_id"])["type"] == "Lookalike"
    for value in ("gold", "silver"):
        row = rows[f"Tier {value}"]
        assert (row["split_value"], row["streams"], row["lookalike_audience_id"]) == (
            value,
            ["a"],
            None,
        )
        assert row["audience_id"] == audience_named(fake, f"Tier {value}")


# Refusals at start


@pytest.mark.parametrize(
    "read_setting",
    [
        {"consent_field": "consent"},
        {"identifier_fields": {"email": "mail"}},
        {"sync_mode": "incremental"},
        {"membership_field": "member"},
    ],
    ids=lambda s: next(iter(s)),
)
def test_streams_with_a_read_setting_is_refused_naming_sources(target, fake, read_setting):
    spec = {"audience_name": "VIP", "streams": ["a", "b"], **read_setting}
    error = refused(target.run([NOT_JSON], audiences={"vip": spec}), fake)
    assert "`sources`" in error and "vip" in error and next(iter(read_setting)) in error


@pytest.mark.parametrize(
    "audiences",
    [
        {"first": {"audience_name": "VIP"}, "second": {"audience_name": "VIP"}},
        {
            "first": {"audience_name": "VIP", "streams": ["a", "b"]},
            "second": {"audience_name": "VIP", "streams": ["c"]},
        },
        {
            "first": {"audience_id": "1790000000000000001"},
            "second": {"audience_id": "1790000000000000001"},
        },
    ],
    ids=["two-names", "two-composed-names", "two-ids"],
)
def test_two_specs_of_one_tiktok_audience_are_refused_naming_both_and_the_fix(
    target, fake, audiences
):
    error = refused(target.run([NOT_JSON], audiences=audiences), fake)
    assert "first" in error and "second" in error
    assert re.search(r"\bone spec\b.*`streams`", error), "the fix: one spec with `streams`"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"audience_id": "1790000000000000001", "split_by": "tier"}, ("split_by", "audience_id")),
        ({"audience_name": "Tiers", "split_by": "tier"}, ("split_by", "{value}")),
    ],
    ids=["with-audience-id", "without-value"],
)
def test_a_split_by_spec_without_a_name_per_value_is_refused(target, fake, spec, named):
    error = refused(target.run([NOT_JSON], audiences={"tiers": {"streams": ["a"], **spec}}), fake)
    assert all(word in error for word in named), error


# `sources`


def test_sources_set_how_each_stream_is_read(target, fake):
    cfg = {
        "sources": {
            "b": {"consent_field": "consent", "identifier_fields": {"email": "contact.mail"}},
            "x": {"identifier_fields": {"email": "blocked"}},
        },
        "audiences": {
            "vip": {"audience_name": "VIP", "streams": ["a", "b"], "exclude_streams": ["x"]}
        },
    }
    run = succeeded(
        target.run(
            [
                *streams("a", "b", "x"),
                person("a", 1, "e1@x.io", consent=False),  # a reads no consent field
                person("a", 2, "e2@x.io"),
                record("b", id=3, contact={"mail": "e3@x.io"}, consent=True),
                record("b", id=4, contact={"mail": "e4@x.io"}, consent=False),
                person("b", 5, "e5@x.io", consent=True),  # b's email is contact.mail
                record("x", id=9, blocked="e2@x.io"),
            ],
            **cfg,
        )
    )
    assert held(fake, "VIP") == {em("e1@x.io"), em("e3@x.io")}
    line = reports(run)["VIP"]
    assert line.reasons == {"no_consent": 1, "missing": 1, "excluded": 1}
    assert (line.added, line.accounted) == (2, 5)


# Dry run


@BOTH_STORES
def test_dry_run_of_a_composed_audience_sends_nothing_and_changes_no_store(target, fake, tmp_path):
    cfg = {
        "audiences": {
            "vip": {"audience_name": "VIP", "streams": ["a", "b"], "exclude_streams": ["x"]}
        },
        "max_removal_fraction": 1.0,
    }
    first = [
        *streams("a", "b", "x"),
        person("a", 1, "a1@x.io", "+14155550101"),
        person("b", 2, "b2@x.io"),
        person("b", 3, "b3@x.io"),
        person("x", 9, "b3@x.io"),
        state({"run": 1}),
    ]
    dry = succeeded(target.run(first, dry_run=True, access_token=None, **cfg))
    assert dry.states == []
    assert fake.requests_log() == []
    planned = [json.loads(x) for x in (tmp_path / "tiktok-audiences-dry-run.jsonl").open()]
    assert [(p["method"], p["path"]) for p in planned] == [("POST", CREATE), ("POST", MAPPING)]
    assert planned[0]["body"] == {
        "advertiser_id": ADVERTISER,
        "action": "create",
        "custom_audience_name": "VIP",
    }
    mapping = planned[1]["body"]
    assert mapping["action"] == "add"
    rows = [
        (kind, entry["id"], tuple(entry["audience_ids"]))
        for row in mapping["batch_data"]
        for kind, entry in zip(mapping["id_schema"], row, strict=True)
        if entry
    ]
    assert sorted(rows) == sorted(
        (*h, ("dry-run:VIP",)) for h in (em("a1@x.io"), ph("+14155550101"), em("b2@x.io"))
    )
    assert "[dry run]" in dry.stderr and reports(dry)["VIP"].added == 2

    # The dry run left nothing behind: the real run does all of it.
    run = succeeded(target.run(first, **cfg))
    assert run.states == [{"run": 1}]
    assert created_names(fake) == ["VIP"]
    assert held(fake, "VIP") == {em("a1@x.io"), ph("+14155550101"), em("b2@x.io")}

    before = target.dump()
    fake.reset_log()
    changed = [*streams("b", "x"), person("b", 2, "b2@x.io"), person("b", 4, "b4@x.io")]
    dry = succeeded(target.run([*changed, person("x", 9, "a1@x.io")], dry_run=True, **cfg))
    assert fake.requests_log() == []
    assert target.dump() == before
    planned = [json.loads(x) for x in (tmp_path / "tiktok-audiences-dry-run.jsonl").open()]
    assert {p["body"]["action"] for p in planned} == {"add", "delete"}


def test_dry_run_of_split_by_names_each_value_audience_it_would_create(target, fake, tmp_path):
    spec = {"audience_name": "Tier {value}", "streams": ["a"], "split_by": "plan.tier"}
    records = [*streams("a"), tiered(1, "gold"), tiered(2, "silver"), tiered(3, None)]
    dry = succeeded(target.run(records, dry_run=True, access_token=None, audiences={"t": spec}))
    assert fake.requests_log() == []
    planned = [json.loads(x) for x in (tmp_path / "tiktok-audiences-dry-run.jsonl").open()]
    creates = sorted(p["body"]["custom_audience_name"] for p in planned if p["path"] == CREATE)
    assert creates == ["Tier gold", "Tier silver"]
    targets = {
        (entry["id"], tuple(entry["audience_ids"]))
        for p in planned
        if p["path"] == MAPPING
        for row in p["body"]["batch_data"]
        for entry in row
        if entry
    }
    assert targets == {
        (sha("p1@x.io"), ("dry-run:Tier gold",)),
        (sha("p2@x.io"), ("dry-run:Tier silver",)),
    }
    assert set(reports(dry)) == {"Tier gold", "Tier silver", "Tier {value}"}


# The report line adds up


def test_the_report_accounts_for_every_record_of_the_included_streams(target, fake):
    cfg = {
        "audiences": {
            "vip": {
                "audience_name": "VIP",
                "streams": ["a", "b"],
                "exclude_streams": ["x"],
                "where": {"country": "SE"},
            }
        },
        "max_removal_fraction": 1.0,
    }
    a = [
        person("a", 1, "a1@x.io", country="SE"),
        person("a", 2, "a2@x.io", country="SE"),
        person("a", 3, "a3@x.io", country="DK"),
        person("a", 4, "a4@x.io", country="SE"),
    ]
    b = [
        person("b", 1, "b1@x.io", country="SE"),
        person("b", 2, "not-an-email", country="SE"),
        person("b", 1, "b1-new@x.io", country="SE"),
    ]
    x = [person("x", 9, "a4@x.io"), person("x", 10, "z@x.io")]
    run = succeeded(target.run([*streams("a", "b", "x"), *a, *b, *x], **cfg))
    assert held(fake, "VIP") == {em("a1@x.io"), em("a2@x.io"), em("b1-new@x.io")}
    line = reports(run)["VIP"]
    assert line == Report(
        "vip",
        3,
        0,
        0,
        0,
        4,
        0,
        {"filtered": 1, "excluded": 1, "invalid_email": 1, "duplicate": 1},
    )
    assert line.accounted == len(a) + len(b)

    # a again without person 2, b remembered: three records and one absent person.
    fake.reset_log()
    run = succeeded(target.run([*streams("a"), a[0], a[2], a[3]], **cfg))
    assert held(fake, "VIP") == {em("a1@x.io"), em("b1-new@x.io")}
    line = reports(run)["VIP"]
    assert (line.unchanged, line.removed, line.reasons) == (1, 1, {"filtered": 1, "excluded": 1})
    assert line.accounted == 3 + 1
