"""In-process tests of the target's message handling, against the fake TikTok server."""

from __future__ import annotations

import io
import json

import pytest

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.target import TargetTikTokAudiences
from tests.conftest import ADVERTISER, TOKEN, record, schema, sha, state

INTERLEAVED = [
    schema(),
    record(id=1, email="a@example.com"),
    state({"after": 1}),
    record(id=2, email="b@example.com"),
    state({"after": 2}),
    record(id=3, email="c@example.com"),
]


class EagerTarget(TargetTikTokAudiences):
    """Drains every sink, and tries to write STATE, after every record (the SDK's max age)."""

    _MAX_RECORD_AGE_IN_MINUTES = 0


def run_in_process(config: dict, messages: list[dict], cls: type = EagerTarget) -> None:
    lines = "\n".join(json.dumps(m) for m in messages) + "\n"
    cls(config=config).listen(io.StringIO(lines))


@pytest.fixture
def config(tmp_path, fake) -> dict:
    return {
        "access_token": TOKEN,
        "advertiser_ids": [ADVERTISER],
        "api_url": fake.url,
        "membership_store": str(tmp_path / "store.sqlite"),
        "min_audience_size": 0,
        "max_requests_per_second": 500,
        "max_retries": 0,
    }


def test_state_is_held_while_a_snapshot_is_open(config, fake, capsys):
    fake.inject(error_rate=1.0, error_codes=(40001,))
    with pytest.raises(TikTokAPIError):
        run_in_process(config, INTERLEAVED)
    assert capsys.readouterr().out == ""


def test_state_follows_confirmed_snapshot(config, fake, capsys):
    run_in_process(config, INTERLEAVED)
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert out == [{"after": 2}]
    assert len(fake.requests_log("segment/mapping/")) == 1  # one snapshot, one request


def test_incremental_state_is_written_after_each_confirmed_drain(config, fake, capsys):
    config["sync_mode"] = "incremental"
    run_in_process(config, INTERLEAVED)
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # One STATE per drain, each written only after the records before it were confirmed.
    assert out[0] == {"after": 1}
    assert out[-1] == {"after": 2}
    assert len(fake.requests_log("segment/mapping/")) == 3


def test_schema_change_mid_stream_keeps_earlier_records(config, fake):
    changed = schema()
    changed["schema"]["properties"]["extra"] = {"type": ["string", "null"]}
    messages = [
        schema(),
        record(id=1, email="a@example.com"),
        changed,
        record(id=2, email="b@example.com"),
    ]
    run_in_process(config, messages, cls=TargetTikTokAudiences)
    audience = fake.audiences()[0]["audience_id"]
    assert fake.members(str(audience))["EMAIL_SHA256"] == {
        sha("a@example.com"),
        sha("b@example.com"),
    }
