"""A lost store meets composed audiences: the console scripts, the fake TikTok, a real store.

Written from design.md (`rebuild_when_store_empty`, "Membership", "Audiences, composed"): a
store that lost an audience's id adopts the audience of the configured name rather than create
a second one, and with `rebuild_when_store_empty` fills a fresh `<name> (rebuilt DATE)`. Either
way TikTok ends holding exactly what the contract defines: the union of the included streams'
hashes less every hash of an excluded person, per `split_by` value.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from psycopg import sql

from target_tiktok_audiences.store.postgres import split_schema
from tests.conftest import ADVERTISER
from tests.fake_tiktok import FakeTikTok
from tests.test_composed_end_to_end import (
    BOTH_STORES,
    CREATE,
    LOOKALIKE,
    POSTGRESQL,
    SQLITE,
    Hash,
    StoreRunner,
    audience_named,
    bodies,
    created_names,
    em,
    held,
    person,
    ph,
    sent,
    status_rows,
    streams,
    succeeded,
)


class RecoveryRunner(StoreRunner):
    """A runner whose store can be lost: its SQLite file deleted, or its schema dropped."""

    def lose_store(self) -> None:
        """What a new worker or a lost disk leaves: no store at all where the config points."""
        if self.pg is None:
            for suffix in ("", "-wal", "-shm"):
                self.store_path.with_name(self.store_path.name + suffix).unlink(missing_ok=True)
            return
        schema_name = split_schema(self.config["membership_store"])[1]
        with self.pg.connect() as db:
            db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema_name)))


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeTikTok) -> RecoveryRunner:
    """On SQLite; on a fresh PostgreSQL schema where `BOTH_STORES` asks for it."""
    on_postgres = getattr(request, "param", SQLITE) == POSTGRESQL
    pg = request.getfixturevalue("postgres_server") if on_postgres else None
    return RecoveryRunner(tmp_path, fake, pg)


VIP = {
    "audiences": {
        "vip": {"audience_name": "VIP", "streams": ["a", "b"], "exclude_streams": ["x"]},
    }
}
INPUT = [
    *streams("a", "b", "x"),
    person("a", 1, "one@x.io", "+14155550101"),
    person("a", 2, "two@x.io"),
    person("b", 7, "one@x.io"),  # person 1 of a, by her email
    person("b", 8, "eight@x.io", "+14155550108"),
    person("b", 9, "nine@x.io", "+14155550109"),
    person("x", 5, phone="+14155550109"),  # b's person 9, by phone alone
]
# The union of a and b, less every hash of b's person 9.
VIP_HASHES: set[Hash] = {
    em("one@x.io"),
    ph("+14155550101"),
    em("two@x.io"),
    em("eight@x.io"),
    ph("+14155550108"),
}


def rebuilt(name: str) -> str:
    return f"{name} (rebuilt {time.strftime('%Y-%m-%d')})"


@BOTH_STORES
def test_a_lost_store_adopts_the_composed_audience_by_name_and_warns(target, fake):
    succeeded(target.run(INPUT, **VIP))
    vip = audience_named(fake, "VIP")
    assert held(fake, "VIP") == VIP_HASHES

    target.lose_store()
    fake.reset_log()
    run = succeeded(target.run(INPUT, **VIP))
    assert created_names(fake) == []
    assert audience_named(fake, "VIP") == vip  # adopted, not created twice
    assert [a["name"] for a in fake.audiences()] == ["VIP"]
    assert held(fake, "VIP") == VIP_HASHES
    assert not {em("nine@x.io"), ph("+14155550109")} & set(sent(fake, "add"))
    assert "'VIP' already exists on TikTok" in run.stderr
    assert "never be removed" in run.stderr and "rebuild_when_store_empty" in run.stderr

    # The store knows the audience again: a later run is an ordinary one.
    fake.reset_log()
    run = succeeded(target.run(INPUT, **VIP))
    assert fake.requests_log("segment/mapping/") == []
    assert "already" not in run.stderr


@BOTH_STORES
def test_a_lost_store_rebuilds_the_composed_audience_when_asked(target, fake):
    succeeded(target.run(INPUT, **VIP))
    old = audience_named(fake, "VIP")
    before = held(fake, "VIP")

    target.lose_store()
    fake.reset_log()
    run = succeeded(target.run(INPUT, rebuild_when_store_empty=True, **VIP))
    assert created_names(fake) == [rebuilt("VIP")]
    assert held(fake, rebuilt("VIP")) == VIP_HASHES
    assert sent(fake, "add") == Counter(dict.fromkeys(VIP_HASHES, 1))
    assert held(fake, "VIP") == before  # left for the user to retire
    assert audience_named(fake, "VIP") == old
    assert "rebuilding it as a new audience" in run.stderr

    # The rebuilt audience is the store's from now on.
    fake.reset_log()
    succeeded(target.run(INPUT, rebuild_when_store_empty=True, **VIP))
    assert fake.requests_log("segment/mapping/") == []
    assert bodies(fake, CREATE) == []


TIERS = {
    "audiences": {
        "tiers": {
            "audience_name": "Tier {value}",
            "streams": ["a"],
            "exclude_streams": ["x"],
            "split_by": "tier",
        }
    }
}
TIERED = [
    *streams("a", "x"),
    person("a", 1, "p1@x.io", tier="gold"),
    person("a", 2, "p2@x.io", tier="gold"),
    person("a", 3, "p3@x.io", tier="silver"),
    person("a", 4, "p4@x.io", tier="silver"),
    person("a", 6, "p6@x.io", tier="silver"),
    person("x", 9, "p4@x.io"),
]
# Two people each: the fake's match rate gives each audience a matched person to lose.
GOLD, SILVER = {em("p1@x.io"), em("p2@x.io")}, {em("p3@x.io"), em("p6@x.io")}


@BOTH_STORES
def test_a_lost_store_adopts_each_split_by_value_audience(target, fake):
    succeeded(target.run(TIERED, **TIERS))
    ids = {name: audience_named(fake, name) for name in ("Tier gold", "Tier silver")}

    target.lose_store()
    fake.reset_log()
    run = succeeded(target.run(TIERED, **TIERS))
    assert created_names(fake) == []
    assert {name: audience_named(fake, name) for name in ids} == ids
    assert (held(fake, "Tier gold"), held(fake, "Tier silver")) == (GOLD, SILVER)
    assert "'Tier gold' already exists on TikTok" in run.stderr
    assert "'Tier silver' already exists on TikTok" in run.stderr

    # A value new since the store was lost is created, once; the others stay adopted.
    fake.reset_log()
    succeeded(target.run([*TIERED, person("a", 5, "p5@x.io", tier="bronze")], **TIERS))
    assert created_names(fake) == ["Tier bronze"]
    assert held(fake, "Tier bronze") == {em("p5@x.io")}
    assert (held(fake, "Tier gold"), held(fake, "Tier silver")) == (GOLD, SILVER)


@BOTH_STORES
def test_a_lost_store_rebuilds_each_split_by_value_audience_when_asked(target, fake):
    succeeded(target.run(TIERED, **TIERS))
    before = {name: held(fake, name) for name in ("Tier gold", "Tier silver")}

    target.lose_store()
    fake.reset_log()
    succeeded(target.run(TIERED, rebuild_when_store_empty=True, **TIERS))
    assert sorted(created_names(fake)) == [rebuilt("Tier gold"), rebuilt("Tier silver")]
    assert held(fake, rebuilt("Tier gold")) == GOLD
    assert held(fake, rebuilt("Tier silver")) == SILVER
    assert {name: held(fake, name) for name in before} == before


def test_a_lost_store_with_a_composed_audience_id_warns_and_fills_it(target, fake):
    existing = fake.add_audience(ADVERTISER, "CRM buyers")
    cfg = {"audiences": {"vip": {"audience_id": existing, "streams": ["a", "b"]}}}
    plain = [line for line in INPUT if line.get("stream") != "x"]
    succeeded(target.run(plain, **cfg))

    target.lose_store()
    run = succeeded(target.run(plain, rebuild_when_store_empty=True, **cfg))
    assert f"Audience {existing} already has" in run.stderr
    assert created_names(fake) == []
    assert held(fake, "CRM buyers") == VIP_HASHES | {em("nine@x.io"), ph("+14155550109")}


def test_a_lost_store_adopts_the_lookalike_rather_than_make_a_second(target, fake):
    spec = {
        "audience_name": "VIP",
        "streams": ["a"],
        "lookalike": {"audience_name": "VIP lookalike", "location_ids": ["6252001"]},
    }
    cfg = {"audiences": {"vip": spec}}
    people = [*streams("a"), *(person("a", i, f"p{i}@x.io") for i in range(120))]
    succeeded(target.run(people, **cfg))
    lookalike = audience_named(fake, "VIP lookalike")

    target.lose_store()
    fake.reset_log()
    succeeded(target.run(people, **cfg))
    assert fake.requests_log(LOOKALIKE) == []
    assert audience_named(fake, "VIP lookalike") == lookalike
    assert status_rows(target, **cfg)[0]["lookalike_audience_id"] == lookalike

    fake.reset_log()
    succeeded(target.run(people, **cfg))
    assert fake.requests_log() == []


def test_a_lost_store_adopts_a_simple_audience_and_the_composed_one_it_feeds(target, fake):
    cfg = {"audiences": {"a": {"audience_name": "A list"}, **VIP["audiences"]}}
    succeeded(target.run(INPUT, **cfg))
    ids = {name: audience_named(fake, name) for name in ("A list", "VIP")}

    target.lose_store()
    fake.reset_log()
    run = succeeded(target.run(INPUT, **cfg))
    assert created_names(fake) == []
    assert {name: audience_named(fake, name) for name in ids} == ids
    assert held(fake, "A list") == {em("one@x.io"), ph("+14155550101"), em("two@x.io")}
    assert held(fake, "VIP") == VIP_HASHES
    assert run.stderr.count("already exists on TikTok") == 2
