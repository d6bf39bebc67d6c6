"""Progress lines and the end-of-run audience line."""

from __future__ import annotations

import logging

import pytest

from target_tiktok_audiences import reporting
from target_tiktok_audiences.reporting import Progress, audience_line


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(reporting.time, "monotonic", fake)
    return fake


def test_progress_logs_every_interval_and_not_more_often(clock, caplog):
    caplog.set_level(logging.INFO)
    progress = Progress(logging.getLogger("t"), interval=5)
    for _ in range(10000):
        progress.records_read()
    assert caplog.records == []  # under 5 s: silent
    clock.now += 6
    for _ in range(4096):
        progress.records_read()
    progress.changes_planned(300)
    progress.changes_sent(200)
    progress.changes_confirmed(100)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert line.startswith("Progress: read 12288 records (2048/s)")
    clock.now += 6
    progress.changes_confirmed(100)
    assert caplog.records[-1].getMessage() == (
        "Progress: read 14096 records (1175/s), changes planned 300, sent 200, confirmed 200, 12 s"
    )


def test_audience_line_names_every_count():
    counts = {
        "added": 3,
        "removed": 1,
        "changed": 2,
        "unchanged": 10,
        "held": 0,
        "skipped": {"missing": 2, "invalid_email": 1},
        "requests": 4,
        "seconds": 0.5,
    }
    assert audience_line("Buyers", "contacts", counts, dry_run=True) == (
        "Audience Buyers (stream contacts) [dry run]: added 3, removed 1, changed 2, "
        "unchanged 10, skipped 3 (invalid_email 1, missing 2), held 0, requests 4, 0.50 s"
    )
