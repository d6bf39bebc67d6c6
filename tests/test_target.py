"""In-process tests of the target's message handling, against the fake TikTok server."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.target import TargetTikTokAudiences
from tests.conftest import ADVERTISER, TOKEN, record, schema, sha, state

TARGET_SCRIPT = shutil.which("target-tiktok-audiences") or str(
    Path(sys.executable).parent / "target-tiktok-audiences"
)
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


# The console script: settings at start, the environment, stdout's ends (end-to-end)

PEOPLE = [schema(), *(record(id=i, email=f"p{i}@example.com") for i in range(4)), state({"n": 4})]


def one_error(run) -> str:
    """The run failed with exactly one ERROR line and no traceback; that line's message."""
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    [line] = run.errors
    return line.rsplit("| ", 1)[1]


def test_an_unknown_setting_is_refused_before_anything_is_sent(target, fake):
    run = target.run(PEOPLE, consent_feild="consent")
    assert one_error(run) == "unknown setting `consent_feild`: did you mean `consent_field`?"
    assert run.states == []
    assert fake.requests_log() == []
    run = target.run(PEOPLE, audiences={"contacts": {"audience_nmae": "C"}})
    assert "did you mean `audiences.contacts.audience_name`?" in one_error(run)


def test_an_inert_sdk_setting_is_one_warning_and_the_run_goes_on(target, fake):
    run = target.run(PEOPLE, load_method="upsert", add_record_metadata=True)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "| WARNING" in line]
    for name in ("load_method", "add_record_metadata"):
        assert sum(f"`{name}` is a singer-sdk setting" in w for w in warnings) == 1
    assert run.states == [{"n": 4}]


def test_two_specs_of_one_audience_are_refused_before_input_is_read(target, fake):
    buyers = fake.add_audience(ADVERTISER, "Buyers")
    specs = {"contacts": {"audience_id": buyers}, "vips": {"audience_id": buyers}}
    run = target.run(["this line is not JSON"], audiences=specs)
    message = one_error(run)
    assert message.startswith(
        f"`audiences.contacts` and `audiences.vips` both sync TikTok audience {buyers}"
    )
    assert "keep one spec per TikTok audience" in message
    assert fake.requests_log() == []


def test_two_streams_whose_names_tiktok_cuts_alike_are_refused(target, fake):
    first, second = "s" * 67 + "_first", "s" * 67 + "_second"
    messages = [schema(first), record(first, id=1, email="a@example.com"), schema(second)]
    message = one_error(target.run(messages))
    assert message.startswith(f"stream {first!r} and stream {second!r} both sync TikTok audience")
    assert fake.requests_log("segment/mapping/") == []


def test_a_specs_max_removal_fraction_overrides_the_top_level(target, fake):
    assert target.run(PEOPLE).returncode == 0
    shrunk = [schema(), record(id=0, email="p0@example.com")]  # 3 of 4 leave
    lenient = {"contacts": {"audience_name": "contacts", "max_removal_fraction": 1.0}}
    strict = {"contacts": {"audience_name": "contacts", "max_removal_fraction": 0.5}}
    refused = target.run(shrunk, audiences=strict, max_removal_fraction=1.0)
    assert "over max_removal_fraction 0.5" in one_error(refused)
    run = target.run(shrunk, audiences=lenient, max_removal_fraction=0.5)
    assert run.returncode == 0, run.stderr
    [audience] = fake.audiences()
    assert fake.members(str(audience["audience_id"]))["EMAIL_SHA256"] == {sha("p0@example.com")}


def test_an_env_var_overrides_the_file_without_config_env(target, fake):
    run = target.run(
        PEOPLE, access_token="stale-token", env={"TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN}
    )
    assert run.returncode == 0, run.stderr
    assert run.states == [{"n": 4}]
    [audience] = fake.audiences()
    assert len(fake.members(str(audience["audience_id"]))["EMAIL_SHA256"]) == 4


def test_settings_from_the_environment_alone(target, fake, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TARGET_TIKTOK_AUDIENCES_")},
        "TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN": TOKEN + "\n",
        "TARGET_TIKTOK_AUDIENCES_ADVERTISER_IDS": json.dumps([ADVERTISER]),
        "TARGET_TIKTOK_AUDIENCES_API_URL": fake.url,
        "TARGET_TIKTOK_AUDIENCES_MEMBERSHIP_STORE": str(target.store_path),
        "TARGET_TIKTOK_AUDIENCES_MIN_AUDIENCE_SIZE": "0",
        "TARGET_TIKTOK_AUDIENCES_MAX_REMOVAL_FRACTION": "0.4",
    }
    for args in ([], ["--config", "ENV"]):
        proc = subprocess.run(
            [TARGET_SCRIPT, *args],
            input="\n".join(json.dumps(m) for m in PEOPLE) + "\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"n": 4}
    assert len(fake.audiences()) == 1


def test_a_token_with_a_trailing_newline_is_trimmed(target, fake):
    run = target.run(PEOPLE, access_token=f"  {TOKEN}\n")
    assert run.returncode == 0, run.stderr
    assert run.states == [{"n": 4}]


def test_a_missing_config_file_is_one_line(tmp_path):
    proc = subprocess.run(
        [TARGET_SCRIPT, "--config", str(tmp_path / "nowhere.json")],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.endswith("nowhere.json does not exist: pass the target's config JSON with --config")


def test_a_closed_stdout_is_one_line_before_anything_is_sent(target, fake):
    config = target.tmp_path / "closed.json"
    config.write_text(json.dumps(target.config))
    proc = subprocess.run(
        ["bash", "-c", f'exec "{TARGET_SCRIPT}" --config "{config}" >&-'],
        input="\n".join(json.dumps(m) for m in PEOPLE) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, proc.stderr
    assert "stdout is closed: the target writes the tap's STATE there" in errors[0]
    assert "Traceback" not in proc.stderr
    assert fake.requests_log() == []


def test_a_reader_that_goes_away_is_one_line(target, fake):
    config = target.tmp_path / "pipe.json"
    config.write_text(json.dumps(target.config))
    proc = subprocess.Popen(
        [TARGET_SCRIPT, "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before the first STATE
    _, stderr = proc.communicate("\n".join(json.dumps(m) for m in PEOPLE) + "\n", timeout=120)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, stderr
    assert "stdout was closed by its reader" in errors[0]


def test_stream_maps_and_their_settings_work_as_in_the_sdk(target, fake):
    messages = [schema(), *(record(id=i, name=f"P{i}@Example.com") for i in range(1, 4))]
    run = target.run(
        messages,
        stream_maps={"contacts": {"email": "name.lower()", "__filter__": "id != config['skip']"}},
        stream_map_config={"skip": 2},
        faker_config={"seed": 1},
        batch_size_rows=1,
    )
    assert run.returncode == 0, run.stderr
    assert "singer-sdk setting" not in run.stderr
    [audience] = fake.audiences()
    assert fake.members(str(audience["audience_id"]))["EMAIL_SHA256"] == {
        sha("p1@example.com"),
        sha("p3@example.com"),
    }
