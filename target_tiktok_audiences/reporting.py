"""What a run tells the person watching it: progress while it works, one line per audience after.

Everything goes to stderr through the target's logger; stdout carries only STATE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any


class Progress:
    """Logs a progress line every `interval` seconds of a long run, never more often.

    Counts are people (records read, changes planned, sent to TikTok, confirmed by it); the
    clock is read once per 4096 records, so counting costs nothing on the hot path.
    """

    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self._logger = logger
        self._interval = interval
        self._started = time.monotonic()
        self._next = self._started + interval
        self.read = 0
        self.planned = 0
        self.sent = 0
        self.confirmed = 0

    def records_read(self, count: int = 1) -> None:
        """More records read from the tap."""
        before, self.read = self.read, self.read + count
        if before >> 12 != self.read >> 12:
            self.tick()

    def changes_planned(self, count: int) -> None:
        """Count changes (person rows to send) a sync planned."""
        self.planned += count
        self.tick()

    def changes_sent(self, count: int) -> None:
        """Count rows handed to a mapping request."""
        self.sent += count
        self.tick()

    def changes_confirmed(self, count: int) -> None:
        """Count rows TikTok confirmed."""
        self.confirmed += count
        self.tick()

    def tick(self) -> None:
        """Log if the interval has passed."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        elapsed = now - self._started
        self._logger.info(
            "Progress: read %d records (%.0f/s), changes planned %d, sent %d, confirmed %d, %.0f s",
            self.read,
            self.read / elapsed if elapsed else 0.0,
            self.planned,
            self.sent,
            self.confirmed,
            elapsed,
        )


def audience_line(label: str, stream: str, counts: Mapping[str, Any], *, dry_run: bool) -> str:
    """The end-of-run line for one audience: what changed, what was skipped, what it cost."""
    skipped = counts["skipped"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "none"
    return (
        f"Audience {label} (stream {stream}){' [dry run]' if dry_run else ''}: "
        f"added {counts['added']}, removed {counts['removed']}, changed {counts['changed']}, "
        f"unchanged {counts['unchanged']}, skipped {sum(skipped.values())} ({reasons}), "
        f"held {counts['held']}, requests {counts['requests']}, {counts['seconds']:.2f} s"
    )
