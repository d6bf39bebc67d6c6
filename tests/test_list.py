"""`tiktok-audiences list`: the installed console script against the fake TikTok.

The store is filled by real syncs of the target, so the keys `list` finds are the ids a run
remembers.
"""

from __future__ import annotations

import json
import re

from tests.conftest import ADVERTISER, OTHER_ADVERTISER, TOKEN
from tests.test_cli import UNUSABLE_ADVERTISER, audience_id_of, cli, people, write_config

LIST = "dmp/custom_audience/list/"
# design.md's "Operator commands": the keys of `list --format json`, in order.
LIST_KEYS = [
    "advertiser_id",
    "audience_id",
    "name",
    "type",
    "matched",
    "valid",
    "expires_at",
    "key",
]


def listing(tmp_path, config, *extra: str):
    return cli(
        "list", "--config", write_config(tmp_path, config, "list.json"), *extra, cwd=tmp_path
    )


def test_list_reads_every_page_of_every_advertiser_with_the_key_using_each(tmp_path, target, fake):
    existing = [fake.add_audience(ADVERTISER, f"Existing {i:03}") for i in range(230)]
    other = [fake.add_audience(OTHER_ADVERTISER, f"Other {i}") for i in range(2)]
    # A run remembers the audiences it created: `contacts` now, `old` since dropped.
    target.config["audiences"] = {"contacts": {"audience_name": "Contacts"}, "old": {}}
    run = target.run([*people("contacts", 3), *people("old", 2)])
    assert run.returncode == 0, run.stderr
    config = {
        **target.config,
        "audiences": {
            "contacts": {"audience_name": "Contacts"},
            "buyers": {"audience_id": existing[150]},
            "partners": {"audience_id": other[1], "advertiser_ids": [OTHER_ADVERTISER]},
        },
    }
    fake.set_audience_details(existing[0], cover_num=5000, is_valid=False)
    fake.reset_log()

    result = listing(tmp_path, config, "--format", "json")

    assert result.returncode == 0, result.output
    assert result.stderr == ""
    rows = json.loads(result.stdout)
    assert all(list(r) == LIST_KEYS for r in rows)
    contacts, old = audience_id_of(fake, "Contacts"), audience_id_of(fake, "old")
    assert [(r["advertiser_id"], r["audience_id"]) for r in rows] == [
        *((ADVERTISER, i) for i in [*existing, contacts, old]),
        *((OTHER_ADVERTISER, i) for i in other),
    ]
    keys = {r["audience_id"]: r["key"] for r in rows if r["key"] is not None}
    assert keys == {contacts: "contacts", existing[150]: "buyers", other[1]: "partners"}
    first = rows[0]
    assert first["name"] == "Existing 000" and first["type"] == "Partner"
    assert (first["matched"], first["valid"]) == (5000, False)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", first["expires_at"])
    # Paging: 233 audiences of the first advertiser are three pages of at most 100.
    pages = [(r["query"]["advertiser_id"], r["query"]["page"]) for r in fake.requests_log(LIST)]
    assert pages == [
        (ADVERTISER, "1"),
        (ADVERTISER, "2"),
        (ADVERTISER, "3"),
        (OTHER_ADVERTISER, "1"),
    ]
    assert {r["query"]["page_size"] for r in fake.requests_log(LIST)} == {"100"}


def test_list_one_advertiser_as_a_table(tmp_path, target, fake):
    fake.add_audience(ADVERTISER, "Not this one")
    buyers = fake.add_audience(OTHER_ADVERTISER, "Buyers")
    config = {**target.config, "audiences": {"buyers": {"audience_id": buyers}}}
    fake.set_audience_details(buyers, cover_num=12345)

    result = listing(tmp_path, config, "--advertiser", OTHER_ADVERTISER)

    assert result.returncode == 0, result.output
    header, line = result.stdout.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "ADVERTISER",
        "AUDIENCE ID",
        "NAME",
        "TYPE",
        "MATCHED",
        "VALID",
        "EXPIRES",
        "KEY",
    ]
    cells = re.split(r"\s{2,}", line)
    assert cells[:6] == [OTHER_ADVERTISER, buyers, "Buyers", "Partner", "12,345", "yes"]
    assert re.match(r"^\d{4}-\d\d-\d\d$", cells[6]) and cells[7] == "buyers"
    assert header.index("MATCHED") + len("MATCHED") == line.index("12,345") + len("12,345")


def test_list_goes_on_past_an_advertiser_tiktok_refuses_and_fails(tmp_path, target, fake):
    fake.add_advertiser(UNUSABLE_ADVERTISER, name="Someone else's account")
    mine = fake.add_audience(ADVERTISER, "Mine")
    config = {**target.config, "advertiser_ids": [UNUSABLE_ADVERTISER, ADVERTISER]}

    result = listing(tmp_path, config, "--format", "json")

    assert result.returncode == 1
    assert [r["audience_id"] for r in json.loads(result.stdout)] == [mine]
    [line] = result.stderr.splitlines()
    assert line.startswith(f"tiktok-audiences: advertiser {UNUSABLE_ADVERTISER}: listing its ")
    assert "40001" in line


def test_list_without_a_token_is_one_line(tmp_path, target):
    result = listing(tmp_path, {**target.config, "access_token": None})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "`access_token` is not set" in result.stderr and TOKEN not in result.stderr
    assert not target.store_path.exists(), "list must not create a store"
