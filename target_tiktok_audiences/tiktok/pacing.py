"""Pacing: how fast requests may start, across every thread of a run."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

MARGIN = 0.06
"""Seconds added to the pacer's window, against the jitter between a start here and its arrival.

A start is the moment a thread leaves `Pacer.wait`; the server counts the moment the request
arrives. When one request takes longer on the way than the one `allowance` starts after it,
the server sees the two closer together than they left. Measured in real runs against the fake
server (200 ms latency, 10/s, 4 in flight; bench/bench.py section 2 prints the tightest span
each run saw) on a 2-core machine shared with other jobs: that difference was under 10 ms for
nine pairs in ten and under 35 ms for 99 in 100; the largest of a run was 10-56 ms in twelve
runs at a load of 3 to 5, and 24-200 ms at loads of 6 to 11. 60 ms covers the first and costs
6% of the floor when every second's whole allowance is used (70 ms put 40 requests at 1.103x
their floor); covering 200 ms would cost 20%, and a request TikTok refuses for it is retried.
"""


class Pacer:
    """At most `allowance` request starts in any sliding `window` (+ `MARGIN`), across all threads.

    TikTok counts requests per second (a sliding second at the strictest), so a second's whole
    allowance may start at once, bounded only by the requests the caller keeps in flight: there
    is no even spacing. With `rate` of 1/s or more the window is one second and the allowance
    is `rate` rounded down (a sliding second that may hold 2.5 starts holds 2, so a fractional
    rate above 1 is honoured as its whole part); below 1/s the window is 1/`rate` seconds and
    the allowance one start. TikTok's per-minute limits are 60 times the per-second ones on
    every tier (10 QPS / 600 per minute for the basic one), and any sliding minute is 60
    disjoint sliding seconds, so holding to the per-second limit holds to them too.

    Each start is the clock's reading when the thread is let go, not the time it was told to
    wake: a thread that oversleeps (a loaded machine) pushes the starts after it later instead
    of bunching them. Invariant: of any `allowance` + 1 consecutive starts, the last is at
    least `window` + `MARGIN` after the first.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock, self._sleep = clock, sleep
        window = max(1.0, 1.0 / rate)
        self._allowance = max(1, math.floor(rate))
        self._span = window + MARGIN
        self._starts: deque[float] = deque(maxlen=self._allowance)
        self._lock = threading.Lock()

    def refused(self) -> None:
        """TikTok refused a request for its rate: no start until a whole window has passed.

        A per-second limit clears the next second, and a start sent before then would be
        refused too: a server that allows fewer than `allowance` per window (another app's
        requests, a lower tier than configured) then costs one refusal per request in flight,
        not one per request of the burst.
        """
        with self._lock:
            self._starts.extend([self._clock()] * self._allowance)

    def wait(self) -> None:
        """Block until this thread may start a request."""
        while True:
            with self._lock:
                now = self._clock()
                full = len(self._starts) == self._allowance
                free_at = self._starts[0] + self._span if full else now
                if free_at <= now:
                    self._starts.append(now)
                    return
            self._sleep(free_at - now)
