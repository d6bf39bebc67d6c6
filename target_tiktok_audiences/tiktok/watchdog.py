"""The watchdog: a request's whole deadline, enforced by shutting its connection down.

urllib3's timeouts bound each socket operation, not the request: an answer that trickles in a
byte at a time never times out. A `Watch` is armed as the request goes out on its connection
and, at the deadline, shuts that connection down, so a blocked read fails at once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class DeadlinePassed(Exception):
    """`request_timeout` ran out before the whole answer came in."""


class Watch:
    """One request's deadline: at it, the connection the request uses is shut down.

    Armed by the connection when the request goes out (`_WatchedConnection`), so it covers
    sending the body and waiting for the answer's head, however slowly either trickles; a
    blocked read then fails at once, and `expired` tells that failure from a network fault.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._timer: threading.Timer | None = None
        self._connection: _WatchedConnection | None = None

    def arm(self, connection: _WatchedConnection) -> None:
        """Shut `connection` down if the request is still running on it at the deadline."""
        self.disarm()
        connection.watch, self._connection = self, connection
        self._timer = threading.Timer(
            max(self.deadline - time.monotonic(), 0.0), self._expire, (connection,)
        )
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        """The request is over (or moves to another connection): nothing to shut down."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connection is not None and self._connection.watch is self:
            self._connection.watch = None
        self._connection = None

    def _expire(self, connection: _WatchedConnection) -> None:
        if connection.watch is not self:  # back in the pool, or serving another request now
            return
        self.expired = True
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Watches(threading.local):
    """The watch of the request this thread is sending, if any."""

    current: Watch | None = None


watches = _Watches()


class _WatchedConnection(HTTPConnection):
    """An HTTP connection that arms its thread's request watch as a request goes out."""

    watch: Watch | None = None  # the watch of the request it carries, or carried last

    def request(self, *args: Any, **kwargs: Any) -> None:
        """Send the request, watched until the deadline."""
        if watches.current is not None:
            watches.current.arm(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    """The HTTPS twin of `_WatchedConnection`."""


class _WatchedPool(HTTPConnectionPool):
    """A pool of watched HTTP connections."""

    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    """A pool of watched HTTPS connections."""

    ConnectionCls = _WatchedHTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """requests' adapter, its direct connections watched (a proxied one relies on timeouts)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The usual pool manager, with pools of watched connections."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedPool,
            "https": _WatchedHTTPSPool,
        }
