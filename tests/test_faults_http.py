"""TikTok and network faults end to end: the real console scripts against the fake server.

Answers that break off or trickle in, HTTP 429, 20001 and 40002, a create without its id, an
audience deleted on TikTok, and SIGTERM while a retry waits. Every error path is checked for
one line on stderr, no traceback, no STATE and no token.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import ADVERTISER, TOKEN, Run, TargetRunner, record, schema, state
from tests.test_cli import cli
from tests.test_end_to_end import members, only_audience
from tests.test_faults import FAST_RETRIES, _start, expected, people


def assert_one_line_failure(run: Run) -> str:
    """Exit 1, one ERROR line, no traceback, no STATE, no token; return the line."""
    assert run.returncode == 1, run.stderr[-3000:]
    assert len(run.errors) == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert run.states == []
    assert TOKEN not in run.stderr and TOKEN not in run.stdout
    return run.errors[0]


def assert_clean(run: Run) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert TOKEN not in run.stderr and TOKEN not in run.stdout


def status_rows(target: TargetRunner) -> list[dict]:
    config = target.tmp_path / "status.json"
    config.write_text(json.dumps(target.config))
    result = cli("status", "--config", str(config), "--format", "json", cwd=target.tmp_path)
    return json.loads(result.stdout)


def contacts_named(fake, name: str = "contacts") -> list[dict]:
    return [a for a in fake.audiences() if a["name"] == name]


# Answers that break off


@pytest.mark.parametrize("knob", ["break_next", "reset_next"])
def test_answer_that_breaks_off_mid_body_is_retried(target, fake, knob):
    fake.inject(**{knob: 2})
    run = target.run([schema(), *people(5), state({"s": 1})], **FAST_RETRIES)
    assert_clean(run)
    assert "broke off mid-way" in run.stderr
    assert run.states == [{"s": 1}]
    assert members(fake, only_audience(fake)) == expected(range(1, 6))
    assert fake.stats["broken"] == 2


def test_answer_that_keeps_breaking_fails_with_one_line_and_status_failed(target, fake):
    fake.inject(break_next=100)
    run = target.run([schema(), *people(3), state({"s": 1})], retry_backoff_seconds=0.01)
    line = assert_one_line_failure(run)
    assert "segment/mapping/ broke off mid-way" in line
    [row] = status_rows(target)
    assert row["last_result"] == "failed"
    assert row["status"] == "FAILED"


def test_create_whose_answer_breaks_off_is_not_sent_twice(target, fake):
    fake.inject(break_next=1, paths=("segment/audience/",))
    run = target.run([schema(), *people(3), state({"s": 1})], **FAST_RETRIES)
    assert "broke off mid-way" in assert_one_line_failure(run)
    assert len(fake.requests_log("segment/audience/")) == 1
    assert [row["status"] for row in status_rows(target)] == ["FAILED"]
    run = target.run([schema(), *people(3), state({"s": 1})], **FAST_RETRIES)
    assert_clean(run)
    assert "using it rather than creating a second one" in run.stderr
    [audience] = contacts_named(fake)
    assert members(fake, str(audience["audience_id"])) == expected(range(1, 4))


def test_http_429_is_backed_off_like_a_rate_limit(target, fake):
    fake.inject(http_429_next=2)
    run = target.run([schema(), *people(4), state({"s": 1})], **FAST_RETRIES)
    assert_clean(run)
    assert "HTTP 429" in run.stderr
    assert "wrong path" not in run.stderr
    assert members(fake, only_audience(fake)) == expected(range(1, 5))


def test_http_429_on_create_is_retried(target, fake):
    fake.inject(http_429_next=1, paths=("segment/audience/",))
    run = target.run([schema(), *people(2)], **FAST_RETRIES)
    assert_clean(run)
    assert len(contacts_named(fake)) == 1


def test_request_timeout_bounds_an_answer_that_trickles_in(target, fake):
    # About 80 bytes at 0.25 s each: 20 s to arrive, every byte well within the timeout.
    fake.inject(dribble_next=1, dribble_seconds=0.25)
    started = time.monotonic()
    run = target.run([schema(), *people(3)], request_timeout=1, **FAST_RETRIES)
    took = time.monotonic() - started
    assert_clean(run)
    assert "did not answer segment/mapping/ within request_timeout (1 s)" in run.stderr
    assert took < 15
    assert members(fake, only_audience(fake)) == expected(range(1, 4))


# What TikTok answers


def test_create_without_an_id_fails_then_the_next_run_adopts_the_audience(target, fake):
    fake.inject(create_without_id_next=1)
    messages = [schema(), *people(4), state({"s": 1})]
    run = target.run(messages, **FAST_RETRIES)
    line = assert_one_line_failure(run)
    assert "sent no audience_id" in line
    assert "dry-run:" not in run.stderr
    assert fake.requests_log("segment/mapping/") == []
    audience_ids = [row[3] for row in target.store_rows("audiences")]
    assert audience_ids == [None]
    run = target.run(messages, **FAST_RETRIES)
    assert_clean(run)
    assert run.states == [{"s": 1}]
    [audience] = contacts_named(fake)
    assert members(fake, str(audience["audience_id"])) == expected(range(1, 5))
    assert len(fake.requests_log("segment/audience/")) == 1


def test_partial_success_fails_the_batch_with_what_tiktok_said(target, fake):
    fake.inject(partial_next=1)
    messages = [schema(), *people(4), state({"s": 1})]
    line = assert_one_line_failure(target.run(messages, **FAST_RETRIES))
    assert "20001" in line and "Partial success" in line
    assert "the next run sends it again" in line
    assert len(fake.requests_log("segment/mapping/")) == 1  # not retried
    assert target.store_rows("members") == []  # nothing confirmed
    assert_clean(target.run(messages, **FAST_RETRIES))
    assert members(fake, only_audience(fake)) == expected(range(1, 5))


def test_busy_audience_is_retried_later(target, fake):
    fake.inject(busy_next=2)
    run = target.run([schema(), *people(3)], **FAST_RETRIES)
    assert_clean(run)
    assert "busy" in run.stderr
    assert len(fake.requests_log("segment/mapping/")) == 3
    assert members(fake, only_audience(fake)) == expected(range(1, 4))


def test_other_40002_is_not_retried(target, fake):
    fake.inject(error_rate=1.0, error_codes=(40002,))
    line = assert_one_line_failure(target.run([schema(), *people(3)], **FAST_RETRIES))
    assert "40002" in line and "rejected a parameter" in line
    assert len(fake.requests_log("segment/mapping/")) == 1


# An audience deleted on TikTok


def incremental_people(ids, *, leaving=()) -> list[dict]:
    rows = [record(id=i, email=f"person{i}@example.com", phone=f"+1415555{i:04d}") for i in ids]
    rows += [record(id=i, member=False) for i in leaving]
    return rows


@pytest.mark.parametrize("mode", ["snapshot", "incremental"])
def test_audience_created_by_name_and_deleted_is_created_again_and_refilled(target, fake, mode):
    options = {"sync_mode": mode, "membership_field": "member", **FAST_RETRIES}
    assert_clean(target.run([schema(), *people(5)], **options))
    old = only_audience(fake)
    fake.delete_audience(old)
    if mode == "snapshot":
        messages = [schema(), *people(4), *people(1, 6), state({"s": 2})]
        want = {*range(1, 5), 6}
    else:  # people 1, 3 and 5 are not in this run's input, but must be in the new audience
        messages = [schema(), *incremental_people([4, 6], leaving=[2]), state({"s": 2})]
        want = {1, 3, 4, 5, 6}
    run = target.run(messages, max_removal_fraction=1.0, **options)
    assert_clean(run)
    assert run.states == [{"s": 2}]
    assert f"({old}, stream contacts) no longer exists on TikTok" in run.stderr
    new = only_audience(fake)
    assert new != old
    assert members(fake, new) == expected(want)
    assert [row[3] for row in target.store_rows("audiences")] == [new]
    # The next run knows the new audience: nothing to send, nothing created.
    fake.reset_log()
    rerun = messages if mode == "snapshot" else [schema(), state({"s": 3})]
    assert_clean(target.run(rerun, **options))
    assert fake.requests_log("segment/audience/") == []
    assert fake.requests_log("segment/mapping/") == []
    assert members(fake, new) == expected(want)


def test_audience_created_but_never_filled_and_then_deleted_is_created_again(target, fake):
    # Run 1 creates the audience, then every mapping fails: the store knows its id, no member.
    fake.inject(error_rate=1.0, error_codes=(50000,))
    assert_one_line_failure(target.run([schema(), *people(3)], retry_backoff_seconds=0.01))
    old = only_audience(fake)
    fake.delete_audience(old)
    fake.inject()
    # Run 2 reads the audience back before its first upload: 40007 from custom_audience/get/.
    run = target.run([schema(), *people(3), state({"s": 1})], **FAST_RETRIES)
    assert_clean(run)
    assert f"({old}, stream contacts) no longer exists on TikTok" in run.stderr
    gets = fake.requests_log("dmp/custom_audience/get/", bodies=False)
    assert [r["code"] for r in gets] == [40007]
    assert run.states == [{"s": 1}]
    new = only_audience(fake)
    assert new != old
    assert members(fake, new) == expected(range(1, 4))


@pytest.mark.parametrize("mode", ["snapshot", "incremental"])
def test_configured_audience_id_that_was_deleted_stops_with_one_line(target, fake, mode):
    audience_id = fake.add_audience(ADVERTISER, "Customers")
    options = {
        "sync_mode": mode,
        "audiences": {"contacts": {"audience_id": audience_id}},
        **FAST_RETRIES,
    }
    assert_clean(target.run([schema(), *people(3)], **options))
    fake.delete_audience(audience_id)
    run = target.run([schema(), *people(4), state({"s": 2})], **options)
    line = assert_one_line_failure(run)
    assert f"audience {audience_id} (stream contacts) no longer exists on TikTok" in line
    assert "`audiences.contacts.audience_id`" in line
    assert fake.audiences() == []  # nothing created in its place
    assert [row["status"] for row in status_rows(target)] == ["FAILED"]


def test_configured_audience_id_deleted_before_its_first_upload(target, fake):
    audience_id = fake.add_audience(ADVERTISER, "Customers")
    fake.delete_audience(audience_id)
    options = {"audiences": {"contacts": {"audience_id": audience_id}}, **FAST_RETRIES}
    line = assert_one_line_failure(target.run([schema(), *people(2), state({"s": 1})], **options))
    assert f"audience {audience_id} (stream contacts) no longer exists" in line
    assert fake.requests_log("segment/mapping/") == []


# SIGTERM


def test_sigterm_while_a_retry_waits_stops_at_once_and_sends_nothing_more(target, fake):
    fake.inject(error_rate=1.0, error_codes=(50000,))
    proc = _start(
        target,
        [schema(), *people(20), state({"s": 1})],
        "term.json",
        retry_backoff_seconds=60,
        max_retries=8,
        batch_size=5,
        max_parallel_requests=2,
    )
    try:
        deadline = time.monotonic() + 60
        while not fake.requests_log("segment/mapping/", bodies=False):
            assert time.monotonic() < deadline, "the run never sent a mapping"
            time.sleep(0.02)
        time.sleep(0.3)  # the first answers came back: retries are waiting now
        signalled = time.time()
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stopped = time.time() - signalled
    assert stopped < 10, err[-3000:]
    assert out == ""
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Terminated by signal 15" in err
    assert "Traceback" not in err and TOKEN not in err
    late = [r for r in fake.requests_log(bodies=False) if r["time"] > signalled]
    assert late == []
    [row] = status_rows(target)
    assert row["status"] == "FAILED"


# The token


def test_token_that_cannot_go_in_a_header_is_named_and_never_printed(target, fake, tmp_path):
    token = TOKEN + "\u00e9x"
    config = {**target.config, "access_token": token}
    path: Path = tmp_path / "bad-token.json"
    path.write_text(json.dumps(config))
    result = cli("check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "the access token holds a character that cannot go in an HTTP header" in result.output
    assert token not in result.output
    run = target.run([schema(), *people(2), state({"s": 1})], access_token=token)
    line = assert_one_line_failure(run)
    assert "cannot go in an HTTP header" in line
    assert token not in run.stderr
    assert fake.requests_log() == []
