"""The `tiktok-audiences` operator commands: the installed console script against the fake server.

Stores are filled by real syncs of the target (the `target` fixture), so `status` reads exactly
what a run leaves behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import requests

from target_tiktok_audiences.cli.status import configured, fetch_details, with_configured_identity
from target_tiktok_audiences.cli.status_rows import (
    CALCULATING_SECONDS,
    STATUS_KEYS,
    Watch,
    shared_with,
    status_row,
    status_word,
)
from target_tiktok_audiences.cli.status_table import render_table
from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.settings import (
    AudienceDefinition,
    nest_meltano_object,
    resolve_definitions,
)
from target_tiktok_audiences.store import AudienceRow
from target_tiktok_audiences.tiktok.audiences import AudienceCalls
from tests.conftest import ADVERTISER, OTHER_ADVERTISER, TOKEN, record, schema

_SCRIPT = shutil.which("tiktok-audiences") or str(Path(sys.executable).parent / "tiktok-audiences")
UNUSABLE_ADVERTISER = "7000000000000000003"  # exists, but the token may not use it
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# design.md's "Operator commands": the keys of `status --format json`, in order.
CONTRACT_KEYS = [
    *("stream", "audience_id", "name", "advertiser_ids", "confirmed", "pending"),
    *("last_sync_at", "last_result", "matched", "match_rate", "valid", "expires_at", "status"),
    *("split_value", "streams", "shared_with", "lookalike_audience_id"),
]
COMPOSED_KEYS = CONTRACT_KEYS[-4:]
# Added by this target: the configured streams that stopped sending (null: not watched).
STATUS_JSON_KEYS = [*CONTRACT_KEYS, "stale_streams"]


def watch(shared: list[str] | None = None, **changes: Any) -> Watch:
    """What `status` knows beyond the row: by default not syncing, never stale."""
    return replace(Watch(syncing=False, shared=shared, stale_after=0.0, stale=None), **changes)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """Run the installed console script with no TARGET_TIKTOK_AUDIENCES_* leaking in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_TIKTOK_AUDIENCES_")}
    proc = subprocess.run(
        [_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**base, **(env or {})},
        check=False,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert TOKEN not in result.output, "the token must never be printed"
    assert "Traceback" not in result.output, result.output
    return result


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "cli.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return str(path)


def people(stream: str, n: int, start: int = 0) -> list[dict]:
    return [schema(stream)] + [
        record(stream, id=i, email=f"person{i}@example.com") for i in range(start, start + n)
    ]


def audience_id_of(fake, name: str) -> str:
    [match] = [a for a in fake.audiences() if a["name"] == name]
    return str(match["audience_id"])


# check


@pytest.fixture
def check_config(target, fake) -> dict[str, Any]:
    """The target's config plus an existing audience for each advertiser."""
    fake.add_advertiser(UNUSABLE_ADVERTISER, name="Someone else's account")
    buyers = fake.add_audience(ADVERTISER, "Buyers")
    return {
        **target.config,
        "advertiser_ids": [ADVERTISER, OTHER_ADVERTISER],
        "audiences": {
            "buyers": {"audience_id": buyers},
            "contacts": {"audience_name": "Contacts"},
        },
    }


def test_check_passes_with_a_good_token(tmp_path, check_config):
    run = cli("check", "--config", write_config(tmp_path, check_config), cwd=tmp_path)
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    assert lines[0] == "ok   token works (user: fake user)"
    assert lines[1] == f"ok   advertiser {ADVERTISER} reachable (Main account, STATUS_ENABLE)"
    assert lines[2].startswith(f"ok   advertiser {OTHER_ADVERTISER} reachable")
    assert re.match(
        r"^ok   audience \d+ \(stream buyers\) exists in advertiser \d+ \(Buyers\)$", lines[3]
    )
    assert len(lines) == 4  # audience_name specs have nothing to check before their first sync


def test_check_bad_token_fails_once_and_names_the_fix(tmp_path, check_config, fake):
    config = {**check_config, "access_token": "not-a-real-token"}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        "FAIL token: rejected (40105): re-authorise with `tiktok-audiences auth` and update "
        "`access_token`"
    ]
    assert "not-a-real-token" not in run.output
    assert [r["path"] for r in fake.requests_log()] == ["user/info/"]


def test_check_unreachable_advertiser(tmp_path, check_config):
    config = {
        **check_config,
        "advertiser_ids": [ADVERTISER, UNUSABLE_ADVERTISER, "7000000000000000009"],
    }
    config["audiences"] = {
        "far": {"audience_id": "7100000000000000999", "advertiser_ids": [UNUSABLE_ADVERTISER]}
    }
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[1].startswith(f"ok   advertiser {ADVERTISER} reachable")
    assert lines[2].startswith(
        f"FAIL advertiser {UNUSABLE_ADVERTISER}: not usable by this token (40001): authorise"
    )
    assert lines[3].startswith("FAIL advertiser 7000000000000000009: does not exist (40300): check")
    assert lines[4] == (
        f"FAIL audience 7100000000000000999 (stream far): not checked, advertiser "
        f"{UNUSABLE_ADVERTISER} failed above"
    )


def test_check_missing_audience(tmp_path, check_config):
    config = {**check_config, "audiences": {"gone": {"audience_id": "7100000000000000999"}}}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout.splitlines()[-1] == (
        f"FAIL audience 7100000000000000999 (stream gone): does not exist in advertiser "
        f"{ADVERTISER} (40007): check `audiences.gone.audience_id`, or use `audience_name` to "
        "have the target create one"
    )


def test_check_audience_of_another_advertiser(tmp_path, check_config, fake):
    theirs = fake.add_audience(OTHER_ADVERTISER, "Their audience")
    config = {**check_config, "audiences": {"theirs": {"audience_id": theirs}}}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout.splitlines()[-1] == (
        f"FAIL audience {theirs} (stream theirs): belongs to another advertiser, not "
        f"{ADVERTISER} (40001): set `audiences.theirs.advertiser_ids` to the audience's ad account"
    )


def test_check_without_a_token_is_one_line(tmp_path, check_config):
    config = {**check_config, "access_token": None, "dry_run": True}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1
    assert "check: `access_token` is not set" in run.stderr


def test_check_unreachable_api_is_one_line(tmp_path, check_config):
    config = {**check_config, "api_url": "http://127.0.0.1:9/open_api/v1.3/"}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout.startswith("FAIL token: cannot reach TikTok at http://127.0.0.1:9/")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist: pass the target's config JSON with --config"),
        ("{not json", "is not valid JSON (line 1): fix the file"),
        ('{"advertiser_ids": ["1"], "min_audience_size": "many"}', "'many' is not of type"),
        ('{"access_token": 5, "advertiser_ids": ["1"]}', "`access_token` must be a string"),
        ('{"access_token": "t"}', "'advertiser_ids' is a required property"),
    ],
)
def test_bad_config_is_one_line(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    for command in ("check", "status", "list"):
        run = cli(command, "--config", str(path), cwd=tmp_path)
        assert run.returncode == 1
        assert run.stdout == ""
        assert run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith(f"tiktok-audiences: {command}: ")
        assert expected in run.stderr


# Config from the environment, as the target and Meltano set it


def test_env_vars_fill_and_override_the_config_file(tmp_path, check_config):
    config = {**check_config, "access_token": "stale-token", "audiences": None}
    env = {
        "TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN,
        "TARGET_TIKTOK_AUDIENCES_ADVERTISER_IDS": json.dumps([OTHER_ADVERTISER]),
        "TARGET_TIKTOK_AUDIENCES_MAX_REQUESTS_PER_SECOND": "50.5",
    }
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.output
    assert f"advertiser {OTHER_ADVERTISER} reachable" in run.stdout
    assert ADVERTISER not in run.stdout


def test_env_vars_alone_as_meltano_invoke_sets_them(tmp_path, check_config, fake):
    """Meltano exports object settings flattened (`{"stream.key": value}`); both shapes work."""
    buyers = check_config["audiences"]["buyers"]["audience_id"]
    env = {
        "TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN,
        "TARGET_TIKTOK_AUDIENCES_API_URL": fake.url,
        "TARGET_TIKTOK_AUDIENCES_ADVERTISER_IDS": json.dumps([ADVERTISER]),
        "TARGET_TIKTOK_AUDIENCES_AUDIENCES": json.dumps({"buyers.audience_id": buyers}),
        "TARGET_TIKTOK_AUDIENCES_DRY_RUN": "false",
        "TARGET_TIKTOK_AUDIENCES_MAX_REMOVAL_FRACTION": "0.5",
    }
    run = cli("check", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.output
    assert f"ok   audience {buyers} (stream buyers) exists" in run.stdout
    run = cli("check", "--config", "ENV", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.output


def test_env_var_that_is_not_a_number_is_one_line(tmp_path, check_config):
    env = {"TARGET_TIKTOK_AUDIENCES_REQUEST_TIMEOUT": "soon"}
    run = cli("check", "--config", write_config(tmp_path, check_config), cwd=tmp_path, env=env)
    assert run.returncode == 1
    assert "TARGET_TIKTOK_AUDIENCES_REQUEST_TIMEOUT is 'soon', not a number" in run.stderr


def test_nest_meltano_object():
    assert nest_meltano_object({"a.audience_name": "A", "a.advertiser_ids": ["1"]}) == {
        "a": {"audience_name": "A", "advertiser_ids": ["1"]}
    }
    assert nest_meltano_object({r"public\.contacts.audience_id": "7"}) == {
        "public.contacts": {"audience_id": "7"}
    }
    # Written by hand (object values) or flat already: left alone.
    assert nest_meltano_object({"public.contacts": {"audience_id": "7"}}) == {
        "public.contacts": {"audience_id": "7"}
    }
    assert nest_meltano_object({"email": "contact.email"}) == {"email": "contact.email"}


# status


def test_status_word_rules():
    now = 1_800_000_000.0
    base = {
        "last_result": "ok",
        "syncing": False,
        "stale": False,
        "pending": 0,
        "uploaded": True,
        "valid": True,
        "last_change_at": now - 3600,
        "matched": 5000,
        "expiring": False,
        "now": now,
    }

    def word(**changes: Any) -> str | None:
        return status_word(**{**base, **changes})

    assert word() == "ACTIVE"
    assert word(expiring=True) == "EXPIRING"
    assert word(matched=999, expiring=True) == "TOO_SMALL"
    assert word(matched=1000) == "ACTIVE"
    assert word(valid=False, matched=0, expiring=True) == "CALCULATING"
    assert word(valid=False, last_change_at=now - CALCULATING_SECONDS) == "ACTIVE"
    assert word(valid=False, last_change_at=now - CALCULATING_SECONDS, matched=10) == "TOO_SMALL"
    assert word(valid=False, last_change_at=None, matched=10) == "TOO_SMALL"
    assert word(pending=5, uploaded=False, valid=False, matched=0) == "PENDING"
    assert word(pending=5, uploaded=True) == "ACTIVE"  # held people only count before upload
    assert word(last_result="failed", pending=5, uploaded=False) == "FAILED"
    # SYNCING comes right after FAILED; STALE right before ACTIVE.
    assert word(syncing=True, last_result="failed") == "FAILED"
    assert word(syncing=True, pending=5, uploaded=False, valid=False, matched=0) == "SYNCING"
    assert word(stale=True) == "STALE"
    assert word(stale=True, expiring=True) == "EXPIRING"
    assert word(stale=True, matched=10) == "TOO_SMALL"
    assert word(stale=True, pending=5, uploaded=False) == "PENDING"
    assert word(stale=True, syncing=True) == "SYNCING"
    # TikTok's side unknown: only the store's words can be given.
    unknown = {"valid": None, "matched": None, "expiring": None}
    assert word(**unknown) is None
    assert word(**unknown, stale=True) == "STALE"
    assert word(**unknown, syncing=True) == "SYNCING"
    assert word(**unknown, last_result="failed") == "FAILED"
    assert word(**unknown, pending=3, uploaded=False) == "PENDING"


def row(audience_id: str | None, advertiser: str = ADVERTISER) -> AudienceRow:
    return AudienceRow(0, "s", audience_id, None, (advertiser,), None)


class RecordingClient(AudienceCalls):
    """Answers dmp/custom_audience/get/ like TikTok; one id is gone (40007)."""

    def __init__(self, gone: str | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.gone = gone

    def request(self, method: str, path: str, *, params: dict, **_: Any) -> dict:
        ids = json.loads(params["custom_audience_ids"])
        self.calls.append((params["advertiser_id"], ids))
        if self.gone in ids:
            raise TikTokAPIError("gone", code=40007, path=path)
        return {"list": [{"audience_details": {"audience_id": i, "cover_num": 1}} for i in ids]}


def test_fetch_details_batches_100_ids_per_advertiser_and_isolates_a_missing_one():
    rows = [row(str(i)) for i in range(250)] + [
        row("x", OTHER_ADVERTISER),
        row("dry-run:y"),
        row(None),
    ]
    client = RecordingClient()
    details, problems = fetch_details(client, rows)
    assert [(adv, len(ids)) for adv, ids in client.calls] == [
        (ADVERTISER, 100),
        (ADVERTISER, 100),
        (ADVERTISER, 50),
        (OTHER_ADVERTISER, 1),
    ]
    assert len(details) == 251 and not problems

    client = RecordingClient(gone="7")
    details, problems = fetch_details(client, [row(str(i)) for i in range(10)])
    assert len(client.calls) == 1 + 10
    assert sorted(details) == sorted(str(i) for i in range(10) if i != 7)
    assert problems == [
        "audience 7 no longer exists on TikTok (40007): remove it from `audiences`, or re-create it"
    ]


@pytest.fixture
def synced(target, fake, tmp_path) -> dict[str, str]:
    """A store with one audience per status word, made by real syncs; stream -> audience id."""
    streams = ("active", "small", "calculating", "expiring", "held", "failing")
    target.config["audiences"] = {s: {} for s in streams}  # each named after its stream
    target.config["audiences"]["held"] = {"min_audience_size": 10}
    sizes = {"active": 5, "small": 4, "calculating": 3, "expiring": 2, "held": 3}
    run = target.run([m for stream, n in sizes.items() for m in people(stream, n)])
    assert run.returncode == 0, run.stderr
    ids = {s: audience_id_of(fake, s) for s in ("active", "small", "calculating", "expiring")}
    fake.set_audience_details(ids["active"], cover_num=5000)
    fake.set_audience_details(ids["calculating"], is_valid=False, cover_num=0)
    fake.set_audience_details(ids["expiring"], cover_num=2000, is_expiring=True)

    fake.inject(error_rate=1.0, error_codes=(40001,))  # mapping refused: the sync fails
    run = target.run(people("failing", 3))
    fake.inject()
    assert run.returncode != 0
    ids["failing"] = audience_id_of(fake, "failing")
    return ids


def status(tmp_path: Path, config: dict[str, Any], *extra: str, env: dict | None = None) -> Result:
    return cli("status", "--config", write_config(tmp_path, config), *extra, cwd=tmp_path, env=env)


def test_status_json_has_every_status_word(tmp_path, target, synced):
    run = status(tmp_path, target.config, "--format", "json")
    assert run.returncode == 0, run.output
    assert run.stderr == ""
    rows = json.loads(run.stdout)
    assert all(list(r) == STATUS_JSON_KEYS for r in rows)
    # Simple audiences: no split value, no known streams, not shared, no lookalike; not watched.
    assert all(r[k] is None for r in rows for k in [*COMPOSED_KEYS, "stale_streams"])
    by_stream = {r["stream"]: r for r in rows}
    assert [r["stream"] for r in rows] == [
        "active",
        "small",
        "calculating",
        "expiring",
        "held",
        "failing",
    ]
    assert {s: r["status"] for s, r in by_stream.items()} == {
        "active": "ACTIVE",
        "small": "TOO_SMALL",
        "calculating": "CALCULATING",
        "expiring": "EXPIRING",
        "failing": "FAILED",
        "held": "PENDING",
    }
    active = by_stream["active"]
    assert active["audience_id"] == synced["active"]
    assert active["name"] == "active"
    assert active["advertiser_ids"] == [ADVERTISER]
    assert (active["confirmed"], active["pending"]) == (5, 0)
    assert active["last_result"] == "ok"
    assert ISO_UTC.match(active["last_sync_at"]) and ISO_UTC.match(active["expires_at"])
    assert active["matched"] == 5000 and active["match_rate"] == 1000.0
    assert active["valid"] is True
    small = by_stream["small"]
    assert (small["matched"], small["match_rate"]) == (2, 0.5)  # the fake matches 60%
    assert by_stream["calculating"]["valid"] is False
    failing = by_stream["failing"]
    assert (failing["last_result"], failing["confirmed"]) == ("failed", 0)
    held = by_stream["held"]
    assert (held["audience_id"], held["confirmed"], held["pending"]) == (None, 0, 3)
    assert held["name"] == "held"  # not on TikTok yet: the name the config will give it
    assert held["last_sync_at"] is not None
    assert (held["matched"], held["match_rate"], held["valid"], held["expires_at"]) == (None,) * 4


def test_status_table_is_aligned_and_shows_why_a_sync_failed(tmp_path, target, synced):
    run = status(tmp_path, target.config)
    assert run.returncode == 0, run.output
    lines = run.stdout.splitlines()
    header, body, notes = lines[0], lines[1:7], lines[7:]
    assert re.split(r"\s{2,}", header) == [
        "STREAM",
        "AUDIENCE ID",
        "NAME",
        "CONFIRMED",
        "PENDING",
        "LAST SYNC (UTC)",
        "RESULT",
        "MATCHED",
        "MATCH RATE",
        "VALID",
        "EXPIRES",
        "STATUS",
    ]
    status_at = header.index("STATUS")
    words = [line[status_at:] for line in body]
    assert words == ["ACTIVE", "TOO_SMALL", "CALCULATING", "EXPIRING", "PENDING", "FAILED"]
    # Right-aligned numbers end under their header.
    confirmed_end = header.index("CONFIRMED") + len("CONFIRMED")
    assert [line[:confirmed_end].split()[-1] for line in body] == ["5", "4", "3", "2", "0", "0"]
    assert "5,000" in body[0] and "100000.0%" in body[0]
    assert body[4].split()[:3] == ["held", "-", "held"]
    assert len(notes) == 1
    assert notes[0].startswith("failing: last sync failed: ")
    assert "40001" in notes[0]


def test_status_batches_reads_per_advertiser(tmp_path, target, fake, synced):
    fake.reset_log()
    status(tmp_path, target.config, "--format", "json")
    reads = fake.requests_log("dmp/custom_audience/get/")
    assert len(reads) == 1
    assert reads[0]["query"]["advertiser_id"] == ADVERTISER
    assert sorted(json.loads(reads[0]["query"]["custom_audience_ids"])) == sorted(synced.values())


def test_status_survives_an_audience_deleted_on_tiktok(tmp_path, target, fake, synced):
    answer = requests.post(
        fake.url + "segment/audience/",
        headers={"Access-Token": TOKEN, "Content-Type": "application/json"},
        json={
            "advertiser_id": ADVERTISER,
            "action": "delete",
            "delete_audience_id": synced["small"],
        },
        timeout=10,
    ).json()
    assert answer["code"] == 0
    run = status(tmp_path, target.config, "--format", "json")
    assert run.returncode == 0, run.output
    assert run.stderr == (
        f"tiktok-audiences: audience {synced['small']} no longer exists on TikTok (40007): "
        "remove it from `audiences`, or re-create it\n"
    )
    by_stream = {r["stream"]: r for r in json.loads(run.stdout)}
    assert by_stream["small"]["matched"] is None
    assert by_stream["active"]["status"] == "ACTIVE"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [({"access_token": None}, "no access_token is set"), ({"dry_run": True}, "dry_run is on")],
)
def test_status_without_a_token_shows_the_store_only(
    tmp_path, target, fake, synced, overrides, why
):
    fake.reset_log()
    run = status(tmp_path, {**target.config, **overrides}, "--format", "json")
    assert run.returncode == 0, run.output
    assert run.stderr == (
        f"tiktok-audiences: {why}: showing the store only; matched, match rate, validity and "
        "expiry need a token\n"
    )
    assert fake.requests_log() == []
    rows = {r["stream"]: r for r in json.loads(run.stdout)}
    assert {s: r["status"] for s, r in rows.items()} == {
        "active": None,
        "small": None,
        "calculating": None,
        "expiring": None,
        "failing": "FAILED",
        "held": "PENDING",
    }
    assert rows["active"]["confirmed"] == 5
    assert all(r[k] is None for r in rows.values() for k in ("matched", "match_rate", "valid"))
    table = status(tmp_path, {**target.config, **overrides})
    assert table.stdout.splitlines()[1].split()[-4:] == ["-", "-", "-", "-"]


def test_status_with_a_revoked_token_prints_the_store_and_fails(tmp_path, target, fake, synced):
    fake.remove_token(TOKEN)
    run = status(tmp_path, target.config, "--format", "json")
    assert run.returncode == 1
    assert len(json.loads(run.stdout)) == 6
    assert run.stderr.count("\n") == 1
    assert "TikTok's columns are unknown" in run.stderr and "40105" in run.stderr


def test_status_before_any_sync(tmp_path, target):
    run = status(tmp_path, target.config, "--format", "json")
    assert run.returncode == 0
    assert json.loads(run.stdout) == []
    assert run.stderr.startswith("tiktok-audiences: no membership store at ")
    assert run.stderr.count("\n") == 1
    assert not target.store_path.exists(), "status must not create a store"


def composed_row(**fields: Any) -> AudienceRow:
    return replace(
        AudienceRow(7, "tiers", "7100000000000000042", "Tier gold", (ADVERTISER,), 1.0), **fields
    )


def test_status_row_carries_what_the_store_knows_of_a_composed_audience():
    row = composed_row(
        split_value="gold",
        streams=("buyers", "newsletter"),
        shared_with=(OTHER_ADVERTISER,),
        lookalike_audience_id="7100000000000000043",
    )
    shown = status_row(row, 5, 0, None, 0.0, watch(shared_with(row, None)))
    assert {k: shown[k] for k in COMPOSED_KEYS} == {
        "split_value": "gold",
        "streams": ["buyers", "newsletter"],
        "shared_with": [OTHER_ADVERTISER],
        "lookalike_audience_id": "7100000000000000043",
    }
    json.dumps(shown)  # what --format json prints


def spec_of(row: AudienceRow, **spec: Any) -> AudienceDefinition | None:
    """The definition `status` finds for a row under a config with one spec for its key."""
    config = {
        "advertiser_ids": [ADVERTISER],
        "dry_run": True,
        "audiences": {row.stream: {"audience_name": "Tier {value}", "split_by": "tier", **spec}},
    }
    return configured(resolve_definitions(config), row)


def test_shared_with_is_null_only_for_an_audience_not_meant_to_be_shared():
    shared_to = {"share_with_advertiser_ids": [OTHER_ADVERTISER]}
    assert shared_with(composed_row(), None) is None
    assert shared_with(composed_row(), spec_of(composed_row())) is None
    assert shared_with(composed_row(), spec_of(composed_row(), **shared_to)) == []  # not yet
    shared = composed_row(shared_with=(OTHER_ADVERTISER,))
    assert shared_with(shared, spec_of(shared, **shared_to)) == [OTHER_ADVERTISER]
    assert shared_with(shared, None) == [OTHER_ADVERTISER]  # shared, since removed from the config


def test_status_table_shows_the_composed_columns_only_where_known():
    simple = status_row(composed_row(streams=("tiers",)), 5, 0, None, 0.0, watch())
    gold = composed_row(split_value="gold", streams=("buyers", "newsletter"))
    composed = [
        status_row(gold, 5, 0, None, 0.0, watch([])),
        status_row(
            replace(gold, split_value="silver", lookalike_audience_id="71"),
            *(5, 0, None, 0.0, watch()),
        ),
    ]
    assert render_table([simple]).splitlines()[0].split("  ")[-1] == "STATUS"
    header, *body = render_table([simple, *composed]).splitlines()
    columns = re.split(r"\s{2,}", header)
    assert columns[-4:] == ["SPLIT VALUE", "STREAMS", "SHARED WITH", "LOOKALIKE"]
    at = {name: header.index(name) for name in columns[-4:]}
    assert [line[at["SPLIT VALUE"] :].split()[0] for line in body] == ["-", "gold", "silver"]
    assert [line[at["STREAMS"] :].split()[0] for line in body] == [
        "-",  # the simple form's own stream is not repeated
        "buyers,newsletter",
        "buyers,newsletter",
    ]
    assert [line[at["SHARED WITH"] : at["LOOKALIKE"]].strip() for line in body] == [
        "-",
        "none yet",
        "-",
    ]
    assert [line[at["LOOKALIKE"] :] for line in body] == ["-", "-", "71"]
    # Only the columns some row fills.
    only_lookalike = render_table(composed[1:]).splitlines()[0]
    assert re.split(r"\s{2,}", only_lookalike)[-4:] == [
        "STATUS",
        "SPLIT VALUE",
        "STREAMS",
        "LOOKALIKE",
    ]


def test_render_table_marks_unknowns():
    row_ = dict.fromkeys(STATUS_KEYS)
    row_.update(stream="s", confirmed=0, pending=0, advertiser_ids=[], last_error=None)
    lines = render_table([row_]).splitlines()
    assert lines[1].split() == ["s", "-", "-", "0", "0", "-", "-", "-", "-", "-", "-", "-"]


# auth


@pytest.fixture
def app(fake) -> dict[str, str]:
    fake.add_app("app-1", "app-secret")
    fake.add_auth_code("code-1", "long-term-token-abc", [ADVERTISER, OTHER_ADVERTISER])
    return {"app_id": "app-1", "secret": "app-secret", "auth_code": "code-1"}


def auth(tmp_path: Path, app: dict[str, str], *extra: str, env: dict | None = None) -> Result:
    return cli(
        "auth",
        "--app-id",
        app["app_id"],
        "--secret",
        app["secret"],
        "--auth-code",
        app["auth_code"],
        *extra,
        cwd=tmp_path,
        env=env,
    )


def test_auth_prints_the_token_and_its_advertisers_then_the_code_is_used(tmp_path, fake, app):
    run = auth(tmp_path, app, "--api-url", fake.url)
    assert run.returncode == 0, run.output
    assert run.stdout.splitlines() == [
        "access_token: long-term-token-abc",
        f'advertiser_ids: ["{ADVERTISER}", "{OTHER_ADVERTISER}"]',
    ]
    assert "TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN" in run.stderr
    [request] = fake.requests_log("oauth2/access_token/")
    assert request["body"] == {"app_id": "app-1", "secret": "app-secret", "auth_code": "code-1"}

    again = auth(tmp_path, app, "--api-url", fake.url)
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr == (
        "tiktok-audiences: auth: the auth code is invalid, expired or already used (40110): "
        "open the app's advertiser authorization URL again and use the new auth_code within "
        "the hour\n"
    )


def test_auth_api_url_comes_from_the_environment(tmp_path, fake, app):
    run = auth(tmp_path, app, env={"TARGET_TIKTOK_AUDIENCES_API_URL": fake.url})
    assert run.returncode == 0, run.output
    assert len(fake.requests_log("oauth2/access_token/")) == 1


def test_auth_bad_secret_is_one_line(tmp_path, fake, app):
    run = auth(tmp_path, {**app, "secret": "wrong"}, "--api-url", fake.url)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert "Invalid app_id or secret" in run.stderr and "check --app-id and --secret" in run.stderr


def test_auth_help_explains_the_consent_url(tmp_path):
    run = cli("auth", "--help", cwd=tmp_path)
    assert run.returncode == 0
    assert "Advertiser authorization URL" in run.stdout
    assert "auth_code=" in run.stdout


def test_status_names_an_audience_tiktok_has_not_seen_from_the_config():
    config = {
        "advertiser_ids": [ADVERTISER],
        "dry_run": True,
        "audiences": {
            "vip": {"audience_name": "VIP"},
            "buyers": {"audience_id": "71"},
            "tiers": {"audience_name": "Tier {value}", "streams": ["a"], "split_by": "tier"},
        },
    }
    definitions = resolve_definitions(config)

    def identity(row: AudienceRow) -> AudienceRow:
        return with_configured_identity(row, configured(definitions, row))

    assert identity(AudienceRow(1, "vip", None, None, (ADVERTISER,), None)).name == "VIP"
    quiet = AudienceRow(2, "buyers", None, None, (ADVERTISER,), None)
    assert identity(quiet).audience_id == "71"
    held_gold = AudienceRow(5, "tiers", None, None, (ADVERTISER,), None, split_value="gold")
    assert identity(held_gold).name == "Tier gold"
    # A row from an older config (other ad account, or a stream no longer listed) stays as stored.
    old = AudienceRow(3, "vip", None, None, (OTHER_ADVERTISER,), None)
    assert identity(old) == old
    gone = AudienceRow(4, "gone", None, None, (ADVERTISER,), None)
    assert identity(gone) == gone


def test_store_copy_to_postgresql_and_back(target, fake, tmp_path, pg_url):
    from tests.conftest import record, schema

    people = [record(id=i, email=f"p{i}@example.com") for i in range(1, 6)]
    assert target.run([schema(), *people]).returncode == 0
    to_pg = cli("store", "copy", "--from", str(target.store_path), "--to", pg_url, cwd=tmp_path)
    assert to_pg.returncode == 0, to_pg.stderr
    assert to_pg.stdout.strip() == "copied 1 audiences, 5 members and 0 held people"
    again = cli("store", "copy", "--from", str(target.store_path), "--to", pg_url, cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr and "Traceback" not in again.stderr
    back = tmp_path / "back.sqlite"
    to_sqlite = cli("store", "copy", "--from", pg_url, "--to", str(back), cwd=tmp_path)
    assert to_sqlite.returncode == 0, to_sqlite.stderr
    # The copy is a working store: a sync against it sends nothing new.
    fake.reset_log()
    run = target.run([schema(), *people], membership_store=str(back))
    assert run.returncode == 0, run.stderr
    assert fake.requests_log("segment/mapping/") == []


# Settings, the environment and stdout, as the target sees them


def test_an_unknown_setting_is_one_line_in_every_command(tmp_path, check_config):
    config = {**check_config, "consent_feild": "consent"}
    for command in ("check", "status", "list"):
        run = cli(command, "--config", write_config(tmp_path, config), cwd=tmp_path)
        assert run.returncode == 1
        assert run.stderr == (
            f"tiktok-audiences: {command}: unknown setting `consent_feild`: did you mean "
            "`consent_field`?\n"
        )


def test_an_inert_sdk_setting_is_one_warning(tmp_path, check_config):
    config = {**check_config, "hard_delete": True}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 0, run.output
    assert run.stderr == (
        "tiktok-audiences: `hard_delete` is a singer-sdk setting that has no effect on this "
        "target: it is ignored\n"
    )


def test_check_refuses_two_specs_of_one_audience(tmp_path, check_config, fake):
    buyers = check_config["audiences"]["buyers"]["audience_id"]
    config = {
        **check_config,
        "audiences": {"a": {"audience_id": buyers}, "b": {"audience_id": buyers}},
    }
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert "`audiences.a` and `audiences.b` both sync" in run.stderr
    assert fake.requests_log() == []


def test_check_refuses_what_a_run_refuses_at_start(tmp_path, check_config, fake):
    """A `sources` entry that no audience reads: the run refuses it, so `check` does."""
    config = {**check_config, "sources": {"nobody": {"consent_field": "consent"}}}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert "`sources.nobody` is for stream 'nobody', which no audience reads" in run.stderr
    assert fake.requests_log() == []


def test_check_and_the_sync_read_the_same_environment(tmp_path, target, check_config):
    """The token from the environment wins over a stale one in the file, in both scripts."""
    config = {**check_config, "access_token": "stale-token", "audiences": None}
    env = {"TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.output
    sync = target.run(people("contacts", 3), env=env, access_token="stale-token")
    assert sync.returncode == 0, sync.stderr


@pytest.mark.parametrize("where", ["file", "environment"])
def test_a_token_with_surrounding_whitespace_is_trimmed(tmp_path, check_config, where):
    padded = f" {TOKEN}\n"
    config = {**check_config, "access_token": padded if where == "file" else None}
    env = {"TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": padded} if where == "environment" else {}
    run = cli("check", "--config", write_config(tmp_path, config), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.output
    assert run.stdout.splitlines()[0] == "ok   token works (user: fake user)"


def test_version_is_the_installed_packages():
    proc = subprocess.run([_SCRIPT, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert proc.stdout == f"tiktok-audiences {metadata.version('target-tiktok-audiences')}\n"


def test_status_ends_quietly_when_its_reader_goes_away(tmp_path, target, synced):
    path = write_config(tmp_path, target.config)
    proc = subprocess.Popen(
        [_SCRIPT, "status", "--config", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # as `| head -1` does once it has its line
    _, stderr = proc.communicate(timeout=60)
    assert stderr == b""
    assert proc.returncode == 141  # 128 + SIGPIPE, like any Unix tool


def test_a_closed_stdout_is_one_line(tmp_path, target, synced):
    path = write_config(tmp_path, target.config)
    proc = subprocess.run(
        ["bash", "-c", f'exec "{_SCRIPT}" status --config "{path}" >&-'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "tiktok-audiences: status: stdout is closed, and the answer goes there: redirect it "
        "(> FILE, or > /dev/null) instead of closing it\n"
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DRY_RUN", "ture", "TARGET_TIKTOK_AUDIENCES_DRY_RUN is 'ture', neither true nor false"),
        ("MIN_AUDIENCE_SIZE", "lots", "TARGET_TIKTOK_AUDIENCES_MIN_AUDIENCE_SIZE is 'lots', not a"),
        ("AUDIENCES", '{"c": ', "TARGET_TIKTOK_AUDIENCES_AUDIENCES is not valid JSON"),
    ],
)
def test_a_variable_the_sdk_would_misread_is_one_line_in_both_scripts(
    tmp_path, target, check_config, variable, value, expected
):
    env = {f"TARGET_TIKTOK_AUDIENCES_{variable}": value}
    for command in ("check", "status", "list"):
        run = cli(command, "--config", write_config(tmp_path, check_config), cwd=tmp_path, env=env)
        assert run.returncode == 1
        assert run.stderr.startswith(f"tiktok-audiences: {command}: {expected}")
        assert run.stderr.count("\n") == 1
    sync = target.run(people("contacts", 2), env=env)
    assert sync.returncode == 1
    assert "Traceback" not in sync.stderr
    [error] = sync.errors
    assert expected in error
    assert sync.states == []


def test_status_waits_for_a_silent_store_no_longer_than_store_timeout(tmp_path, target):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql://postgres:pw-9f2c1e@127.0.0.1:{port}/tests"
        path = write_config(
            tmp_path, {**target.config, "membership_store": url, "store_timeout": 3}
        )
        result = cli("status", "--config", path, cwd=tmp_path)  # 60 s at most
    assert result.returncode == 1
    assert "did not answer" in result.stderr and "store_timeout" in result.stderr
    assert "pw-9f2c1e" not in result.output
