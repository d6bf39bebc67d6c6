"""Faults end to end: TikTok failing, the process dying, two runs at once, and bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.conftest import _SCRIPT, TOKEN, TargetRunner, record, schema, sha, state
from tests.test_end_to_end import members, only_audience

FAST_RETRIES = {"retry_backoff_seconds": 0.01, "max_retries": 8}


def people(n: int, start: int = 1) -> list[dict]:
    return [
        record(id=i, email=f"person{i}@example.com", phone=f"+1415555{i:04d}")
        for i in range(start, start + n)
    ]


def expected(ids: range) -> set[tuple[str, str]]:
    pairs = set()
    for i in ids:
        pairs.add(("EMAIL_SHA256", sha(f"person{i}@example.com")))
        pairs.add(("PHONE_SHA256", sha(f"+1415555{i:04d}")))
    return pairs


def test_converges_under_injected_failures_rate_limits_and_batch_limit(target, fake):
    fake.max_batch = 40
    fake.inject(
        error_rate=0.2,
        error_codes=(40100, 40133, 50000, 40202, 61000),
        http_503_rate=0.1,
        rate_limit_per_second=10,
    )
    run = target.run(
        [schema(), *people(600), state({"done": 1})],
        batch_size=100,
        max_requests_per_second=60,
        max_parallel_requests=4,
        **FAST_RETRIES,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert members(fake, only_audience(fake)) == expected(range(1, 601))
    assert run.states == [{"done": 1}]
    # Seeded, but threads interleave: count the faults together rather than each kind.
    assert fake.stats["errors_injected"] + fake.stats["http_503"] >= 5
    assert fake.stats["rate_limited"] > 0
    assert "batch size is now 50" in run.stderr
    # The size stays halved for the rest of the run: only the batches already in flight when
    # TikTok first said "too many" (and their retries after other faults) went out at 100.
    sizes = [len(r["body"]["batch_data"]) for r in fake.requests_log("segment/mapping/")]
    faults = fake.stats["errors_injected"] + fake.stats["http_503"] + fake.stats["rate_limited"]
    assert sizes.count(100) <= 4 + faults
    assert len(sizes) > 600 / 40
    # A later snapshot with fewer people removes exactly those, under the same faults.
    run = target.run(
        [schema(), *people(500)], batch_size=100, max_removal_fraction=1.0, **FAST_RETRIES
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert members(fake, only_audience(fake)) == expected(range(1, 501))
    for secret in ("person1@example.com", "+14155550001", TOKEN):
        assert secret not in run.stderr


def test_gives_up_after_max_retries_with_a_clear_error(target, fake):
    fake.inject(error_rate=1.0, error_codes=(50000,))
    run = target.run(
        [schema(), *people(3), state({"s": 1})], retry_backoff_seconds=0.01, max_retries=2
    )
    assert run.returncode == 1
    assert run.states == []
    assert len(fake.requests_log("segment/mapping/")) == 3
    assert len(run.errors) == 1
    assert "50000" in run.errors[0] and "re-run later" in run.errors[0]
    assert "Traceback" not in run.stderr


def test_request_that_hangs_is_timed_out_and_retried(target, fake):
    fake.inject(hang_next=1, hang_seconds=4)
    started = time.monotonic()
    run = target.run([schema(), *people(5)], request_timeout=1, **FAST_RETRIES)
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 30
    assert "did not answer segment/mapping/ within request_timeout" in run.stderr
    assert members(fake, only_audience(fake)) == expected(range(1, 6))


def test_unreachable_api_url_fails_fast(target):
    started = time.monotonic()
    run = target.run([schema(), *people(2)], api_url="http://127.0.0.1:9/open_api/v1.3/")
    assert run.returncode == 1
    assert time.monotonic() - started < 20
    assert len(run.errors) == 1
    assert "cannot reach TikTok at http://127.0.0.1:9/open_api/v1.3/" in run.errors[0]


def _start(target: TargetRunner, messages: list[dict], config_name: str, **overrides):
    config = {**target.config, **overrides}
    config_path = target.tmp_path / config_name
    config_path.write_text(json.dumps(config))
    input_path = target.tmp_path / (config_name + ".singer")
    input_path.write_text("\n".join(json.dumps(m) for m in messages) + "\n")
    return subprocess.Popen(
        [_SCRIPT, "--config", str(config_path), "--input", str(input_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=target.tmp_path,
    )


def _wait_for_mappings(fake, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [r for r in fake.requests_log("segment/mapping/", bodies=False) if r["code"] == 0]
        if len(done) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("the run never got that far")


def test_sigkill_mid_sync_then_rerun_converges(target, fake):
    fake.inject(latency=0.15)
    messages = [schema(), *people(300), state({"done": 1})]
    proc = _start(target, messages, "kill.json", batch_size=10, max_parallel_requests=2)
    _wait_for_mappings(fake, 8)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert out == ""  # no STATE for unconfirmed work
    audience_id = only_audience(fake)
    on_tiktok = members(fake, audience_id)
    assert 0 < len(on_tiktok) < 600
    # The store holds no more than TikTok confirmed.
    confirmed = target.store_rows("members")
    assert len(confirmed) * 2 <= len(on_tiktok) + 4
    fake.inject()
    fake.reset_log()
    run = target.run(messages)
    assert run.returncode == 0, run.stderr
    assert run.states == [{"done": 1}]
    assert members(fake, audience_id) == expected(range(1, 301))
    assert only_audience(fake) == audience_id  # not created twice
    # People TikTok confirmed in the killed run are not sent again, bar the batches in flight.
    resent = sum(len(r["body"]["batch_data"]) for r in fake.requests_log("segment/mapping/"))
    assert resent <= 300 - len(confirmed) + 2 * 10
    run = target.run([schema(), *people(250)], max_removal_fraction=1.0)
    assert run.returncode == 0, run.stderr
    assert members(fake, audience_id) == expected(range(1, 251))


def test_second_run_on_the_same_audience_waits_then_refuses(target, fake):
    fake.inject(latency=0.3)
    first = _start(
        target, [schema(), *people(60)], "first.json", batch_size=5, max_parallel_requests=1
    )
    _wait_for_mappings(fake, 1)
    second = _start(target, [schema(), *people(60)], "second.json", store_lock_timeout=1)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert "is being synced by another run" in err
    assert "store_lock_timeout" in err
    assert "Traceback" not in err
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert members(fake, only_audience(fake)) == expected(range(1, 61))


def test_runs_on_different_audiences_share_a_store(target, fake):
    fake.inject(latency=0.1)
    a = _start(
        target,
        [schema("a"), *[dict(m, stream="a") for m in people(30)]],
        "a.json",
        batch_size=5,
        max_parallel_requests=1,
    )
    b = _start(
        target,
        [schema("b"), *[dict(m, stream="b") for m in people(30, 100)]],
        "b.json",
        batch_size=5,
        max_parallel_requests=1,
        store_lock_timeout=0,
    )
    for proc in (a, b):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    by_name = {x["name"]: str(x["audience_id"]) for x in fake.audiences()}
    assert members(fake, by_name["a"]) == expected(range(1, 31))
    assert members(fake, by_name["b"]) == expected(range(100, 130))


def test_bad_input_matrix(target, fake):
    weird = [
        record(id=1, email=12345),
        record(id=2, email=["a@example.com"]),
        record(id=3, phone={"n": "+14155550100"}),
        record(id=4, idfa=True),
        record(id=5, aaid=1.5),
        record(id=6, email="x" * 100_000 + "@example.com"),
        record(id=7, phone="9" * 10_000),
        record(id=8, email=None, phone=""),
        record(id=9, email="\u200bok@example.com\u00a0"),
    ]
    run = target.run([schema(), *weird, {"type": "SOMETHING_NEW", "x": 1}])
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == {("EMAIL_SHA256", sha("ok@example.com"))}
    assert "skipped 8" in run.stderr
    assert "x" * 100 not in run.stderr and "9" * 100 not in run.stderr

    cases = {
        "record before schema": (
            [record(id=1, email="a@example.com")],
            "before a corresponding schema",
        ),
        "malformed json": (
            [schema(), '{"type": "RECORD", "stream": "contacts", "rec'],
            "input line 2 is not valid JSON",
        ),
        "missing key": (
            [schema(), record(id=1, email="b@example.com"), record(email="a@example.com")],
            "has no value for its key properties id",
        ),
        "not an object": ([schema(), "[1, 2, 3]"], "input line 2 is not a Singer message"),
        "no stream": (
            [schema(), {"type": "RECORD", "record": {"email": "a@example.com"}}],
            "lacks required key(s) stream",
        ),
        "no type": (
            [schema(), {"stream": "contacts", "record": {"email": "a@example.com"}}],
            "lacks required key(s) type",
        ),
    }
    for messages, message in cases.values():
        run = target.run([*messages, state({"s": 1})])
        assert run.returncode == 1, message
        assert len(run.errors) == 1, run.stderr
        assert message in run.errors[0]
        assert "Traceback" not in run.stderr
        assert "a@example.com" not in run.stderr
        assert run.states == []


def test_sigterm_writes_no_state_for_an_open_snapshot(target, fake):
    fake.inject(latency=0.2)
    proc = _start(
        target,
        [schema(), *people(100), state({"s": 1})],
        "term.json",
        batch_size=5,
        max_parallel_requests=1,
    )
    _wait_for_mappings(fake, 1)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert out == ""
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Terminated by signal 15" in err


@pytest.mark.parametrize("mode", ["incremental", "snapshot"])
def test_a_removal_after_a_first_upload_that_died_part_way_is_sent_and_counted_once(
    target, fake, mode
):
    # A first upload that died after TikTok confirmed its batches, before it was marked done:
    # the store has members but no upload time, so the next run goes through the hold path.
    cfg = {"sync_mode": mode, "min_audience_size": 2}
    assert target.run([schema(), *people(3)], **cfg).returncode == 0
    db = sqlite3.connect(target.store_path)
    with db:
        db.execute("UPDATE audiences SET uploaded_at = NULL")
    db.close()
    leaving = record(id=1, email="person1@example.com", _sdc_deleted_at="2026-01-01T00:00:00Z")
    run = target.run([schema(), leaving, *people(2, start=2)], **cfg)
    assert run.returncode == 0, run.stderr
    assert members(fake, only_audience(fake)) == expected(range(2, 4))
    assert "removed 1," in run.stderr
