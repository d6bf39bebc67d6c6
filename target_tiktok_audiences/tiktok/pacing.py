"""Pacing: how fast requests may start, across every thread of a run."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Pacer:
    """At most `rate` request starts in any sliding second, spread evenly, across all threads.

    TikTok counts requests in a sliding one-second window. Even spacing alone lets the 11th
    start land exactly one second after the first, so starts are also held to `rate` per
    second plus a small margin for the jitter between leaving here and arriving there.
    """

    MARGIN = 0.1

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock, self._sleep = clock, sleep  # a test's stopped clock makes starts exact
        self._interval = 1.0 / rate
        self._window = max(1, int(rate))
        self._starts: deque[float] = deque(maxlen=self._window)
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this thread may start a request."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if len(self._starts) == self._window:
                start = max(start, self._starts[0] + 1.0 + self.MARGIN)
            self._starts.append(start)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)
