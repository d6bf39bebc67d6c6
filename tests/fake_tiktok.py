"""A fake TikTok Business API server for end-to-end tests.

It speaks real HTTP on 127.0.0.1, validates requests as strictly as ``/work/shared/tiktok-api.md``
describes, keeps audience membership in memory and supports fault injection (latency, hangs,
HTTP 503 and 429, error codes, rate limiting, answers that break off mid-body or trickle in a byte
at a time, a create answered without its id, partial success 20001, a busy audience 40002, an
audience deleted behind the target's back).

Every advertiser sits in a Business Center (``add_advertiser(..., business_center="bc1")``, one for
all by default): mapping requests and shares (``share/``, ``share/cancel/``, read back with
``shares()``) stay inside one. ``lookalike/create/`` makes an audience of type ``Lookalike`` from a
source of at least 100 people, counted in the fake's own membership.

Use it from tests::

    with FakeTikTok() as fake:
        fake.add_advertiser("7000000000000000001")
        fake.add_token("T", ["7000000000000000001"])
        ...  # point the target's api_url at fake.url

or as a script (prints its URL on one line, serves until SIGTERM/SIGINT, then prints a JSON summary
of stats and member counts to stderr)::

    python tests/fake_tiktok.py --port 8765 --token T --advertiser 7000000000000000001

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import itemgetter
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/open_api/v1.3/"

ID_SCHEMAS: dict[str, int] = {
    "EMAIL_SHA256": 64,
    "PHONE_SHA256": 64,
    "IDFA_SHA256": 64,
    "IDFA_MD5": 32,
    "AAID_SHA256": 64,
    "AAID_MD5": 32,
}
_HEX_RUN = re.compile(r"[0-9a-f]*")
_HEX_DIGITS = b"0123456789abcdef"

# TikTok's codes, as tiktok-api.md's table lists them. Spelled out here rather than imported
# from the package: the fake is the protocol's independent witness (and stdlib only).
OK = 0
PARTIAL_SUCCESS = 20001
INVALID_PARAMETERS = 40000
NO_PERMISSION = 40001
INVALID_OR_BUSY = 40002
NOT_FOUND = 40007
TOO_MANY_IDS = 40011
RATE_LIMITED_API = 40016
INVALID_BATCH_SIZE = 40061
PII_NOT_HASHED = 40062
RATE_LIMITED_APP = 40100
TOKEN_MISSING = 40104
TOKEN_INVALID = 40105
INVALID_AUTH_CODE = 40110
RATE_LIMITED_REQUESTS = 40132
RATE_LIMITED_ADVERTISER = 40133
WRITE_CONFLICT = 40202
ADVERTISER_NOT_FOUND = 40300
SERVER_ERROR = 50000
SERVER_FAULT = 50002
MAINTENANCE = 60001
RATE_LIMITED_SYSTEM = 61000

MESSAGES: dict[int, str] = {
    OK: "OK",
    PARTIAL_SUCCESS: "Partial success",
    INVALID_PARAMETERS: "Invalid parameters",
    NO_PERMISSION: "No permission",
    INVALID_OR_BUSY: "Invalid parameters",
    NOT_FOUND: "Object does not exist",
    TOO_MANY_IDS: "Too many ids",
    RATE_LIMITED_API: "Too many requests",
    INVALID_BATCH_SIZE: "Invalid batch size",
    PII_NOT_HASHED: "PII not hashed",
    RATE_LIMITED_APP: "Too many requests",
    TOKEN_MISSING: "Access token is missing",
    TOKEN_INVALID: "Access token is invalid",
    INVALID_AUTH_CODE: "Invalid auth code",
    RATE_LIMITED_REQUESTS: "Too many requests",
    RATE_LIMITED_ADVERTISER: "Too many requests",
    WRITE_CONFLICT: "Write conflict",
    ADVERTISER_NOT_FOUND: "Advertiser does not exist",
    SERVER_ERROR: "Internal server error",
    SERVER_FAULT: "Internal server error",
    MAINTENANCE: "System maintenance",
    RATE_LIMITED_SYSTEM: "Too many requests",
}

BUSY_MESSAGE = "Audience is busy processing, try later"

SHARE_KEYS = frozenset({"advertiser_id", "custom_audience_ids", "shared_advertiser_ids"})
SHARE_MAX = 10  # ids in each list of a share/ or share/cancel/ body
LOOKALIKE_KEYS = frozenset({"advertiser_id", "custom_audience_name", "lookalike_spec"})
LOOKALIKE_SPEC_KEYS = frozenset(
    {
        "source_audience_id",
        "include_source",
        "location_ids",
        "mobile_os",
        "placements",
        "audience_size",
    }
)
LOOKALIKE_ENUMS = {
    "mobile_os": ("ALL", "ANDROID", "IOS"),
    "audience_size": ("NARROW", "BALANCED", "BROAD"),
}
LOOKALIKE_NAME_MAX = 128
LOOKALIKE_MIN_SOURCE = 100  # people in a lookalike's source audience

FIRST_AUDIENCE_ID = 7100000000000000001
YEAR_SECONDS = 365 * 24 * 3600


class ApiError(Exception):
    """An answer with a non-zero envelope code."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or MESSAGES.get(code, "Error"))
        self.code = code
        self.message = message or MESSAGES.get(code, "Error")


def _fmt_time(ts: float) -> str:
    """Format a UNIX time as TikTok does: ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _is_str_list(value: Any) -> bool:
    """Return whether value is a non-empty list of non-empty strings."""
    return (
        isinstance(value, list) and len(value) > 0 and all(isinstance(v, str) and v for v in value)
    )


def _all_hex(ids: list[str], length: int) -> bool:
    """Return whether every id is lowercase hex of exactly this length (checked in bulk)."""
    if not ids:
        return True
    if set(map(len, ids)) != {length}:
        return False
    try:
        joined = "".join(ids).encode("ascii")
    except UnicodeEncodeError:
        return False
    return not joined.translate(None, _HEX_DIGITS)


def _json_array_param(query: dict[str, str], name: str, max_len: int = 100) -> list[str]:
    """Parse a query parameter holding a JSON-encoded array of 1..max_len strings."""
    raw = query.get(name)
    if raw is None:
        raise ApiError(INVALID_PARAMETERS, f"{name}: missing")
    try:
        value = json.loads(raw)
    except ValueError:
        raise ApiError(INVALID_PARAMETERS, f"{name}: not a JSON array") from None
    if not _is_str_list(value):
        raise ApiError(
            INVALID_PARAMETERS, f"{name}: must be a JSON array of 1 to {max_len} id strings"
        )
    if len(value) > max_len:
        raise ApiError(INVALID_PARAMETERS, f"{name}: at most {max_len} ids, got {len(value)}")
    return value


def _int_param(query: dict[str, str], name: str, default: int, lo: int, hi: int | None) -> int:
    """Parse an integer query parameter within [lo, hi]."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(INVALID_PARAMETERS, f"{name}: not an integer") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ApiError(INVALID_PARAMETERS, f"{name}: must be {bound}, got {value}")
    return value


def _exact_keys(obj: dict[str, Any], keys: frozenset[str], name: str) -> None:
    """Refuse an object whose keys are not exactly `keys` (a missing or an unknown one)."""
    missing, unknown = sorted(keys - obj.keys()), sorted(obj.keys() - keys)
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise ApiError(INVALID_PARAMETERS, f"{name}: {'; '.join(parts)}")


def _id_list(value: Any, name: str, max_len: int) -> list[str]:
    """A body's list of 1..max_len id strings."""
    if not _is_str_list(value) or len(value) > max_len:
        raise ApiError(INVALID_PARAMETERS, f"{name}: must be a list of 1 to {max_len} id strings")
    return value


Groups = dict[tuple[str, ...], list[list[str]]]
"""Audience ids (as a tuple) -> one list of ids per id_schema position."""


def _rows_fast(batch: list[Any], schema: list[str]) -> Groups | None:
    """Validate and group batch_data with bulk (C-speed) checks; None when anything is off.

    Never accepts what ``_rows_checked`` would refuse; refusing here only costs the slow pass.
    """
    width = len(schema)
    if set(map(type, batch)) != {list} or set(map(len, batch)) != {width}:
        return None
    if not all(map(any, batch)):
        return None
    groups: Groups = {}
    get_id, get_auds = itemgetter("id"), itemgetter("audience_ids")
    for j, column in enumerate(zip(*batch, strict=True)):
        if set(map(type, column)) != {dict}:
            return None
        filled = [item for item in column if item]
        if not filled:
            continue
        if set(map(len, filled)) != {2}:
            return None
        try:
            ids = list(map(get_id, filled))
            auds = list(map(get_auds, filled))
        except KeyError:
            return None
        if set(map(type, ids)) != {str} or set(map(type, auds)) != {list}:
            return None
        by_key: dict[tuple[str, ...], list[str]]
        if auds.count(auds[0]) == len(auds):  # the usual case: one audience list for all
            by_key = {tuple(auds[0]): ids}
        else:
            by_key = {}
            for key, ident in zip(map(tuple, auds), ids, strict=True):
                by_key.setdefault(key, []).append(ident)
        for key, key_ids in by_key.items():
            if not _is_str_list(list(key)):
                return None
            if not _all_hex(key_ids, ID_SCHEMAS[schema[j]]):
                return None
            groups.setdefault(key, [[] for _ in range(width)])[j] = key_ids
    return groups


def _rows_checked(batch: list[Any], schema: list[str]) -> Groups:
    """Validate batch_data row by row, raising ApiError for the first problem; return groups."""
    width = len(schema)
    groups: Groups = {}
    last_auds: Any = None
    cur: list[list[str]] = []
    for n, row in enumerate(batch):
        if type(row) is not list:
            raise ApiError(INVALID_PARAMETERS, f"batch_data: row {n} is not a list")
        if len(row) != width:
            raise ApiError(
                INVALID_PARAMETERS,
                f"batch_data: row {n} has {len(row)} entries, id_schema has {width}",
            )
        filled = False
        for j, item in enumerate(row):
            if type(item) is not dict:
                raise ApiError(
                    INVALID_PARAMETERS, f"batch_data: row {n} entry {j} is not an object"
                )
            if not item:
                continue
            if len(item) != 2 or "id" not in item or "audience_ids" not in item:
                raise ApiError(
                    INVALID_PARAMETERS,
                    f"batch_data: row {n} entry {j} must be {{}} or have exactly "
                    f"id and audience_ids",
                )
            ident = item["id"]
            auds = item["audience_ids"]
            if type(ident) is not str:
                raise ApiError(
                    INVALID_PARAMETERS, f"batch_data: row {n} entry {j}: id must be a string"
                )
            if auds != last_auds or type(auds) is not list:
                if not _is_str_list(auds):
                    raise ApiError(
                        INVALID_PARAMETERS,
                        f"batch_data: row {n} entry {j}: audience_ids must be a non-empty "
                        f"list of strings",
                    )
                last_auds = auds
                cur = groups.setdefault(tuple(auds), [[] for _ in range(width)])
            length = ID_SCHEMAS[schema[j]]
            if len(ident) != length or not _HEX_RUN.fullmatch(ident):
                raise ApiError(
                    PII_NOT_HASHED,
                    f"PII not hashed: row {n} entry {j} ({schema[j]}) must be lowercase hex "
                    f"of length {length}",
                )
            cur[j].append(ident)
            filled = True
        if not filled:
            raise ApiError(INVALID_PARAMETERS, f"batch_data: row {n} has only empty entries")
    return groups


@dataclass
class Answer:
    """One HTTP answer and how it goes out on the wire.

    ``delivery``: ``"whole"``; ``"break"`` (headers with the full Content-Length and half the
    body, then the connection closes); ``"reset"`` (the same, then a TCP reset); ``"dribble"``
    (the whole answer, head included, a byte at a time, ``pause`` seconds apart);
    ``"dribble_body"`` (the head at once, then the body so).
    """

    status: int
    payload: dict[str, Any]
    delay: float = 0.0
    delivery: str = "whole"
    pause: float = 0.0


@dataclass
class _Fault:
    """What fault injection decided for one request (see ``FakeTikTok.inject``)."""

    kind: str | None = None  # rate_limited, http_429, busy, http_503, error, partial
    code: int = 0
    latency: float = 0.0
    hang: float = 0.0
    delivery: str = "whole"
    pause: float = 0.0


RATE_LIMIT_KINDS = ("sliding", "bucket", "second")


class RateLimit:
    """How a server may count `rate` requests per second; `admit` says whether one more may pass.

    ``sliding``: at most `rate` admitted in the second before each request (the strictest).
    ``bucket``: a token bucket of capacity `rate`, full at first, refilled continuously at
    `rate` per second: a full second's worth may pass at once, then one per 1/`rate` s.
    ``second``: a counter per whole second of the clock, cleared when the next second begins
    ("per-second limits clear the next second"): `rate` at the end of one second and `rate`
    more at the start of the next may pass. Refused requests count for none of them.
    """

    def __init__(self, rate: float, kind: str = "sliding") -> None:
        if kind not in RATE_LIMIT_KINDS:
            raise ValueError(f"rate limit kind {kind!r}: use one of {', '.join(RATE_LIMIT_KINDS)}")
        self.rate, self.kind = rate, kind
        self._admitted: collections.deque[float] = collections.deque()
        self._tokens, self._last = float(rate), -math.inf
        self._second, self._count = -math.inf, 0

    def admit(self, now: float) -> bool:
        """Whether a request arriving at `now` (seconds, never decreasing) may pass; counts it."""
        if self.kind == "bucket":
            if self._last > -math.inf:
                self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True
        if self.kind == "second":
            second = math.floor(now)
            if second != self._second:
                self._second, self._count = second, 0
            if self._count >= self.rate:
                return False
            self._count += 1
            return True
        while self._admitted and now - self._admitted[0] >= 1.0:
            self._admitted.popleft()
        if len(self._admitted) >= self.rate:
            return False
        self._admitted.append(now)
        return True


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeTikTok and stays quiet."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], fake: FakeTikTok) -> None:
        self.fake = fake
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection so stop() can cut kept-alive clients off."""
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client connection (keep-alive ones included)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Swallow errors from clients that went away (timeouts, resets)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        traceback.print_exc(file=sys.stderr)


class _Handler(BaseHTTPRequestHandler):
    """Routes every HTTP method to FakeTikTok._handle."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else keep-alive clients wait ~40 ms per answer
    server_version = "FakeTikTok/1.0"
    timeout = 120  # idle keep-alive connections end eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing per request."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        answer = self.server.fake._handle(self.command, self.path, dict(self.headers.items()), body)
        if answer.delay > 0:
            time.sleep(answer.delay)
        data = json.dumps(answer.payload, separators=(",", ":")).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if answer.delivery != "dribble":  # else the head goes out with the body
                self.end_headers()
            if self.command == "HEAD":
                pass
            elif answer.delivery in ("break", "reset"):
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._cut(reset=answer.delivery == "reset")
                return
            elif answer.delivery in ("dribble", "dribble_body"):
                self._dribble(data, answer.pause, head=answer.delivery == "dribble")
            else:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _dribble(self, data: bytes, pause: float, *, head: bool) -> None:
        """Send `data` a byte at a time, `pause` seconds apart; with `head`, the head too."""
        if head:
            self._headers_buffer.append(b"\r\n")
            data = b"".join(self._headers_buffer) + data
            self._headers_buffer = []
        else:
            self.wfile.flush()
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            time.sleep(pause)

    def _cut(self, *, reset: bool) -> None:
        """End the connection mid-answer: a close (FIN), or with `reset` a TCP reset (RST)."""
        self.close_connection = True
        if reset:  # linger on, for zero seconds: closing sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # really closed once the handler lets go of its files
        else:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class FakeTikTok:
    """In-memory imitation of the TikTok Business API audience endpoints.

    State (advertisers, tokens, audiences, membership, log, stats) lives behind one lock.
    Membership is kept per audience as ``{id_schema: {lowercase hex id: None}}`` (dicts of strings
    are invisible to the garbage collector, which keeps big audiences cheap); ``members()`` returns
    sets.
    """

    def __init__(self, *, max_batch: int = 10000, seed: int = 0, log_bodies: bool = True) -> None:
        self.max_batch = max_batch
        self.log_bodies = log_bodies
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._advertisers: dict[str, dict[str, str]] = {}
        self._tokens: dict[str, set[str]] = {}
        self._apps: dict[str, str] = {}
        self._auth_codes: dict[str, tuple[str, list[str]]] = {}
        self._used_codes: set[str] = set()
        self._audiences: dict[str, dict[str, Any]] = {}
        self._next_audience_id = FIRST_AUDIENCE_ID
        self._log: list[dict[str, Any]] = []
        self._request_seq = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stats: dict[str, int] = {
            "requests": 0,
            "rate_limited": 0,
            "errors_injected": 0,
            "http_503": 0,
            "hangs": 0,
            "http_429": 0,
            "broken": 0,
            "dribbled": 0,
            "partial": 0,
            "busy": 0,
            "created_without_id": 0,
        }
        self._faults: dict[str, Any] = {}
        self._rate_limit: RateLimit | None = None
        self.inject()
        self._routes: dict[str, tuple[str, bool, Callable[..., dict[str, Any]]]] = {
            "segment/mapping/": ("POST", True, self._segment_mapping),
            "segment/audience/": ("POST", True, self._segment_audience),
            "dmp/custom_audience/get/": ("GET", True, self._audience_get),
            "dmp/custom_audience/list/": ("GET", True, self._audience_list),
            "dmp/custom_audience/share/": ("POST", True, self._share),
            "dmp/custom_audience/share/cancel/": ("POST", True, self._share_cancel),
            "dmp/custom_audience/lookalike/create/": ("POST", True, self._lookalike_create),
            "user/info/": ("GET", True, self._user_info),
            "advertiser/info/": ("GET", True, self._advertiser_info),
            "oauth2/advertiser/get/": ("GET", True, self._oauth_advertisers),
            "oauth2/access_token/": ("POST", False, self._oauth_access_token),
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> FakeTikTok:
        """Bind 127.0.0.1 (port 0: any free port) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and cut open connections; sleeping requests are dropped.

        State is kept: ``start()`` again serves the same audiences (on a new port unless given).
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> FakeTikTok:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._server is None:
            raise RuntimeError("FakeTikTok is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL with trailing slash, e.g. ``http://127.0.0.1:PORT/open_api/v1.3/``."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    # ------------------------------------------------------------------ setup

    def add_advertiser(
        self,
        advertiser_id: str,
        *,
        name: str = "",
        business_center: str = "bc1",
        status: str = "STATUS_ENABLE",
    ) -> None:
        """Register an advertiser (ad account) in a business center."""
        with self._lock:
            self._advertisers[str(advertiser_id)] = {
                "advertiser_id": str(advertiser_id),
                "name": name or f"Advertiser {advertiser_id}",
                "business_center": business_center,
                "status": status,
            }

    def add_token(self, token: str, advertiser_ids: list[str]) -> None:
        """Register a token that may use these advertisers (replaces an earlier grant)."""
        with self._lock:
            self._tokens[token] = {str(a) for a in advertiser_ids}

    def remove_token(self, token: str) -> None:
        """Revoke a token: later requests with it answer 40105."""
        with self._lock:
            self._tokens.pop(token, None)

    def add_audience(self, advertiser_id: str, name: str, *, audience_id: str | None = None) -> str:
        """Create a pre-existing audience for an advertiser and return its id."""
        with self._lock:
            if str(advertiser_id) not in self._advertisers:
                raise ValueError(f"unknown advertiser {advertiser_id}; call add_advertiser first")
            if audience_id is not None and str(audience_id) in self._audiences:
                raise ValueError(f"audience {audience_id} already exists")
            return self._create_audience_locked(str(advertiser_id), name, audience_id)

    def add_app(self, app_id: str, secret: str) -> None:
        """Register an app for the oauth2 endpoints."""
        with self._lock:
            self._apps[app_id] = secret

    def add_auth_code(self, auth_code: str, token: str, advertiser_ids: list[str]) -> None:
        """Register a single-use auth code that exchanges for this token and advertisers."""
        with self._lock:
            self._auth_codes[auth_code] = (token, [str(a) for a in advertiser_ids])
            self._used_codes.discard(auth_code)

    # ------------------------------------------------------------------ inspection

    def members(self, audience_id: str) -> dict[str, set[str]]:
        """Return ``{id_schema: set of ids}`` currently in the audience (empty schemas omitted)."""
        with self._lock:
            aud = self._audiences[str(audience_id)]
            return {s: set(ids) for s, ids in aud["members"].items() if ids}

    def audience(self, audience_id: str) -> dict[str, Any]:
        """Return the audience's details as the API serves them, plus ``member_count``."""
        with self._lock:
            return self._details_locked(self._audiences[str(audience_id)], with_count=True)

    def set_audience_details(self, audience_id: str, **fields: Any) -> None:
        """Override served fields (cover_num, is_valid, is_expiring, expired_time, name, ...)."""
        with self._lock:
            aud = self._audiences[str(audience_id)]
            for key, value in fields.items():
                if key == "name":
                    aud["name"] = value
                else:
                    aud["overrides"][key] = value

    def shares(self, audience_id: str) -> set[str]:
        """The advertisers an audience is shared with now (``share/`` less ``share/cancel/``)."""
        with self._lock:
            return set(self._audiences[str(audience_id)]["shared_with"])

    def audiences(self) -> list[dict[str, Any]]:
        """Return all existing audiences (creation order), shaped like ``audience()``."""
        with self._lock:
            return [self._details_locked(a, with_count=True) for a in self._audiences.values()]

    def requests_log(self, path: str | None = None, *, bodies: bool = True) -> list[dict[str, Any]]:
        """Return logged requests (arrival order), optionally only those for one relative path.

        Each entry: method, path, query, body (parsed JSON or None; always None with
        ``bodies=False``, which skips parsing), code (envelope code, or the HTTP status when not
        200; None while still being answered), request_id (the envelope's, None without one),
        time. The Access-Token is never stored.
        """
        with self._lock:
            entries = [dict(e) for e in self._log if path is None or e["path"] == path]
        for e in entries:
            raw = e.pop("_raw")
            body = None
            if raw and bodies:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
            e["body"] = body
        return entries

    def reset_log(self) -> None:
        """Forget the request log."""
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ faults

    def inject(
        self,
        *,
        error_rate: float = 0.0,
        error_codes: tuple[int, ...] = (SERVER_ERROR,),
        http_503_rate: float = 0.0,
        latency: float = 0.0,
        hang_next: int = 0,
        hang_seconds: float = 0.0,
        rate_limit_per_second: float | None = None,
        rate_limit_kind: str = "sliding",
        http_429_next: int = 0,
        break_next: int = 0,
        reset_next: int = 0,
        dribble_next: int = 0,
        dribble_seconds: float = 0.05,
        dribble_head: bool = True,
        partial_next: int = 0,
        busy_next: int = 0,
        create_without_id_next: int = 0,
        paths: tuple[str, ...] = ("segment/mapping/",),
    ) -> None:
        """Set the fault knobs; every call replaces all of them (no arguments: all off).

        The ``*_next`` knobs each hit that many of the next requests on ``paths``:
        ``http_429_next`` answers HTTP 429 and does nothing; ``busy_next`` answers 40002 with
        ``BUSY_MESSAGE`` and does nothing; ``partial_next`` (mapping only) applies the first
        half of the batch and answers 20001; ``break_next`` and ``reset_next`` carry the request
        out, then send the headers and half the body and close the connection (FIN, or a TCP
        reset); ``dribble_next`` carries it out and sends the answer (with ``dribble_head``
        false: only its body) a byte at a time, ``dribble_seconds`` apart.
        ``create_without_id_next`` hits creates (``segment/audience/`` action create, and
        ``lookalike/create/``) whatever ``paths`` says: the audience is created, the answer is
        code 0 without ``audience_id``.
        """
        with self._lock:
            self._faults = {
                "error_rate": float(error_rate),
                "error_codes": tuple(error_codes) or (SERVER_ERROR,),
                "http_503_rate": float(http_503_rate),
                "latency": float(latency),
                "hang_next": int(hang_next),
                "hang_seconds": float(hang_seconds),
                "http_429_next": int(http_429_next),
                "break_next": int(break_next),
                "reset_next": int(reset_next),
                "dribble_next": int(dribble_next),
                "dribble_seconds": float(dribble_seconds),
                "dribble_head": bool(dribble_head),
                "partial_next": int(partial_next),
                "busy_next": int(busy_next),
                "create_without_id_next": int(create_without_id_next),
                "paths": tuple(paths),
            }
            self._rate_limit = (
                None
                if rate_limit_per_second is None
                else RateLimit(rate_limit_per_second, rate_limit_kind)
            )

    def delete_audience(self, audience_id: str) -> None:
        """Delete an audience as a user would in Ads Manager: later requests for it get 40007."""
        with self._lock:
            del self._audiences[str(audience_id)]

    # ------------------------------------------------------------------ internals

    def _create_audience_locked(
        self, advertiser_id: str, name: str, audience_id: str | None, kind: str = "Partner"
    ) -> str:
        if audience_id is None:
            while str(self._next_audience_id) in self._audiences:
                self._next_audience_id += 1
            audience_id = str(self._next_audience_id)
            self._next_audience_id += 1
        if len(name) > 70:
            name = name[:67] + "..."
        self._audiences[str(audience_id)] = {
            "audience_id": str(audience_id),
            "advertiser_id": advertiser_id,
            "name": name,
            "created": time.time(),
            # dicts of str -> None rather than sets: the garbage collector never scans them
            "members": {s: {} for s in ID_SCHEMAS},
            "overrides": {},
            "type": kind,
            "shared_with": set(),
        }
        return str(audience_id)

    def _details_locked(
        self, aud: dict[str, Any], *, type_key: str = "type", with_count: bool = False
    ) -> dict[str, Any]:
        distinct = len(set().union(*aud["members"].values()))
        created = aud["created"]
        details: dict[str, Any] = {
            "audience_id": aud["audience_id"],
            "name": aud["name"],
            "advertiser_id": aud["advertiser_id"],
            "cover_num": distinct * 6 // 10,
            "is_valid": True,
            "is_expiring": False,
            "expired_time": _fmt_time(created + YEAR_SECONDS),
            "create_time": _fmt_time(created),
            type_key: aud["type"],
        }
        details.update(aud["overrides"])
        if with_count:
            details["member_count"] = distinct
        return details

    def _envelope(self, code: int, message: str, data: dict[str, Any] | None) -> dict[str, Any]:
        with self._lock:
            self._request_seq += 1
            seq = self._request_seq
        return {
            "code": code,
            "message": message,
            "request_id": f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}fake{seq:010d}",
            "data": data if data is not None else {},
        }

    def _check_advertiser_locked(self, token: str | None, advertiser_id: Any) -> str:
        if not isinstance(advertiser_id, str) or not advertiser_id:
            raise ApiError(INVALID_PARAMETERS, "advertiser_id: must be a non-empty string")
        if advertiser_id not in self._advertisers:
            raise ApiError(ADVERTISER_NOT_FOUND, f"Advertiser {advertiser_id} does not exist")
        if token is None or advertiser_id not in self._tokens.get(token, set()):
            raise ApiError(NO_PERMISSION, f"No permission to operate advertiser {advertiser_id}")
        return advertiser_id

    def _admitted(self, rel: str, arrived: float) -> bool:
        """Whether the rate limit lets a request on ``rel`` that arrived at ``arrived`` pass.

        Called under the lock with the time the request is logged by, in log order: the
        limit counts exactly the arrivals the log shows (a replay of the log's times through
        `RateLimit` refuses the same requests).
        """
        if self._rate_limit is None or rel not in self._faults["paths"]:
            return True
        return self._rate_limit.admit(arrived)

    def _faults_for(self, rel: str, admitted: bool) -> _Fault:
        """Decide the faults for one request on path ``rel`` (see ``inject``)."""
        with self._lock:
            f = self._faults
            if rel not in f["paths"]:
                return _Fault()
            if not admitted:
                self.stats["rate_limited"] += 1
                return _Fault("rate_limited", RATE_LIMITED_APP)
            for knob, kind, stat in (
                ("http_429_next", "http_429", "http_429"),
                ("busy_next", "busy", "busy"),
            ):
                if f[knob] > 0:
                    f[knob] -= 1
                    self.stats[stat] += 1
                    return _Fault(kind)
            fault = _Fault(latency=f["latency"])
            if f["hang_next"] > 0:
                f["hang_next"] -= 1
                self.stats["hangs"] += 1
                fault.hang = f["hang_seconds"]
            if f["http_503_rate"] > 0 and self._rng.random() < f["http_503_rate"]:
                self.stats["http_503"] += 1
                fault.kind, fault.code = "http_503", 503
                return fault
            if f["error_rate"] > 0 and self._rng.random() < f["error_rate"]:
                self.stats["errors_injected"] += 1
                fault.kind, fault.code = "error", int(self._rng.choice(f["error_codes"]))
                return fault
            if rel == "segment/mapping/" and f["partial_next"] > 0:
                f["partial_next"] -= 1
                self.stats["partial"] += 1
                fault.kind = "partial"
            for knob, delivery, stat in (
                ("break_next", "break", "broken"),
                ("reset_next", "reset", "broken"),
                ("dribble_next", "dribble" if f["dribble_head"] else "dribble_body", "dribbled"),
            ):
                if f[knob] > 0:
                    f[knob] -= 1
                    self.stats[stat] += 1
                    fault.delivery, fault.pause = delivery, f["dribble_seconds"]
                    break
            return fault

    def _create_without_id(self, rel: str, body: dict[str, Any] | None) -> bool:
        """Whether this request is a create to answer without its id (and count it)."""
        if not body:
            return False
        create = rel == "segment/audience/" and body.get("action") == "create"
        if not create and rel != "dmp/custom_audience/lookalike/create/":
            return False
        with self._lock:
            if self._faults["create_without_id_next"] <= 0:
                return False
            self._faults["create_without_id_next"] -= 1
            self.stats["created_without_id"] += 1
            return True

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
    ) -> Answer:
        """Answer one HTTP request (the answer says how to send it)."""
        parts = urlsplit(raw_path)
        path = parts.path
        rel = path[len(PREFIX) :] if path.startswith(PREFIX) else path
        query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(parts.query).items()}
        entry: dict[str, Any] = {
            "method": method,
            "path": rel,
            "query": query,
            "_raw": raw_body if (self.log_bodies and method != "GET") else b"",
            "code": None,
            "request_id": None,
        }
        with self._lock:
            entry["time"] = time.time()
            self.stats["requests"] += 1
            self._log.append(entry)
            admitted = self._admitted(rel, entry["time"])

        def finish(status: int, payload: dict[str, Any], fault: _Fault | None = None) -> Answer:
            entry["code"] = payload.get("code", status) if status == 200 else status
            entry["request_id"] = payload.get("request_id") if status == 200 else None
            if fault is None:
                return Answer(status, payload)
            return Answer(status, payload, fault.hang, fault.delivery, fault.pause)

        route = self._routes.get(rel) if path.startswith(PREFIX) else None
        if route is None:
            return finish(404, {"message": f"Not Found: {path}"})
        want_method, needs_token, func = route
        if method != want_method:
            return finish(405, {"message": f"Method {method} not allowed; use {want_method}"})

        token: str | None = None
        headers_l = {k.lower(): v for k, v in headers.items()}
        if needs_token:
            token = headers_l.get("access-token") or None
            if token is None:
                msg = "Access-Token header is missing"
                if headers_l.get("authorization", "").lower().startswith("bearer"):
                    msg += " (Authorization: Bearer is not accepted)"
                return finish(200, self._envelope(TOKEN_MISSING, msg, None))
            with self._lock:
                known = token in self._tokens
            if not known:
                return finish(200, self._envelope(TOKEN_INVALID, "Access token is invalid", None))

        fault = self._faults_for(rel, admitted)
        if fault.kind == "rate_limited":
            return finish(200, self._envelope(RATE_LIMITED_APP, "Too many requests", None))
        if fault.kind == "http_429":
            return finish(429, {"message": "Too Many Requests"})
        if fault.kind == "busy":
            return finish(200, self._envelope(INVALID_OR_BUSY, BUSY_MESSAGE, None))
        if fault.latency > 0:
            time.sleep(fault.latency)
        if fault.kind == "http_503":
            return finish(503, {"message": "Service Unavailable"}, fault)
        if fault.kind == "error":
            msg = f"{MESSAGES.get(fault.code, 'Error')} (injected)"
            return finish(200, self._envelope(fault.code, msg, None), fault)

        try:
            body: dict[str, Any] | None = None
            if method == "POST":
                ctype = headers_l.get("content-type", "").split(";")[0].strip().lower()
                if ctype != "application/json":
                    raise ApiError(INVALID_PARAMETERS, "Content-Type must be application/json")
                try:
                    parsed = json.loads(raw_body) if raw_body else None
                except ValueError:
                    raise ApiError(INVALID_PARAMETERS, "Request body is not valid JSON") from None
                if not isinstance(parsed, dict):
                    raise ApiError(INVALID_PARAMETERS, "Request body must be a JSON object")
                body = parsed
            partial = fault.kind == "partial" and body is not None
            if partial and isinstance(body.get("batch_data"), list) and body["batch_data"]:
                body["batch_data"] = body["batch_data"][: (len(body["batch_data"]) + 1) // 2]
            without_id = self._create_without_id(rel, body)
            data = func(token=token, query=query, body=body)
            if without_id:
                data = {k: v for k, v in data.items() if k != "audience_id"}
            if partial:
                return finish(
                    200, self._envelope(PARTIAL_SUCCESS, MESSAGES[PARTIAL_SUCCESS], data), fault
                )
            return finish(200, self._envelope(OK, MESSAGES[OK], data), fault)
        except ApiError as err:
            return finish(200, self._envelope(err.code, err.message, None), fault)
        except Exception:
            return finish(500, {"message": "fake_tiktok bug", "traceback": traceback.format_exc()})

    # ------------------------------------------------------------------ endpoints

    def _segment_mapping(
        self, *, token: str | None, query: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        advertiser_ids = body.get("advertiser_ids")
        if not _is_str_list(advertiser_ids):
            raise ApiError(
                INVALID_PARAMETERS, "advertiser_ids: must be a non-empty list of strings"
            )
        with self._lock:
            centers = set()
            for adv in advertiser_ids:
                self._check_advertiser_locked(token, adv)
                centers.add(self._advertisers[adv]["business_center"])
        if len(centers) > 1:
            raise ApiError(
                INVALID_PARAMETERS, "advertiser_ids: advertisers must be in one Business Center"
            )
        action = body.get("action")
        if action not in ("add", "delete"):
            raise ApiError(INVALID_PARAMETERS, f"action: must be add or delete, got {action!r}")
        schema = body.get("id_schema")
        if not isinstance(schema, list) or not schema:
            raise ApiError(INVALID_PARAMETERS, "id_schema: must be a non-empty list")
        for s in schema:
            if s not in ID_SCHEMAS:
                raise ApiError(INVALID_PARAMETERS, f"id_schema: unknown value {s!r}")
        if len(set(schema)) != len(schema):
            raise ApiError(INVALID_PARAMETERS, "id_schema: duplicate values")
        batch = body.get("batch_data")
        if not isinstance(batch, list) or not batch:
            raise ApiError(INVALID_PARAMETERS, "batch_data: must be a non-empty list")
        if len(batch) > self.max_batch:
            raise ApiError(
                TOO_MANY_IDS, f"Too many ids: {len(batch)} rows, at most {self.max_batch}"
            )

        groups = _rows_fast(batch, schema)
        if groups is None:  # something is off: the careful pass names the first problem
            groups = _rows_checked(batch, schema)

        allowed = set(advertiser_ids)
        audience_ids_seen = sorted({aid for key in groups for aid in key})
        with self._lock:
            for aid in audience_ids_seen:
                aud = self._audiences.get(aid)
                if aud is None:
                    raise ApiError(NOT_FOUND, f"Audience {aid} does not exist")
                if aud["advertiser_id"] not in allowed:
                    raise ApiError(
                        NO_PERMISSION, f"Audience {aid} does not belong to advertiser_ids"
                    )
            for key, lists in groups.items():
                for aid in key:
                    members = self._audiences[aid]["members"]
                    for j, ids in enumerate(lists):
                        if not ids:
                            continue
                        target = members[schema[j]]
                        if action == "add":
                            target.update(dict.fromkeys(ids))
                        else:
                            for ident in ids:
                                target.pop(ident, None)
        return {}

    def _segment_audience(
        self, *, token: str | None, query: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        action = body.get("action")
        if action == "create":
            name = body.get("custom_audience_name")
            with self._lock:
                adv = self._check_advertiser_locked(token, body.get("advertiser_id"))
                if not isinstance(name, str) or not name.strip():
                    raise ApiError(
                        INVALID_PARAMETERS, "custom_audience_name: must be a non-empty string"
                    )
                return {"audience_id": self._create_audience_locked(adv, name, None)}
        if action == "delete":
            target = body.get("delete_audience_id")
            ids = [target] if isinstance(target, str) and target else target
            if not _is_str_list(ids):
                raise ApiError(INVALID_PARAMETERS, "delete_audience_id: must be an audience id")
            with self._lock:
                adv = self._check_advertiser_locked(token, body.get("advertiser_id"))
                for aid in ids:
                    aud = self._audiences.get(aid)
                    if aud is None:
                        raise ApiError(NOT_FOUND, f"Audience {aid} does not exist")
                    if aud["advertiser_id"] != adv:
                        raise ApiError(NO_PERMISSION, f"Audience {aid} does not belong to {adv}")
                for aid in ids:
                    del self._audiences[aid]
            return {}
        raise ApiError(INVALID_PARAMETERS, f"action: must be create or delete, got {action!r}")

    def _audience_get(
        self, *, token: str | None, query: dict[str, Any], body: None
    ) -> dict[str, Any]:
        ids = _json_array_param(query, "custom_audience_ids")
        with self._lock:
            adv = self._check_advertiser_locked(token, query.get("advertiser_id"))
            out = []
            for aid in ids:
                aud = self._audiences.get(aid)
                if aud is None:
                    raise ApiError(NOT_FOUND, f"Audience {aid} does not exist")
                if aud["advertiser_id"] != adv:
                    raise ApiError(NO_PERMISSION, f"Audience {aid} does not belong to {adv}")
                out.append({"audience_details": self._details_locked(aud)})
        return {"list": out}

    def _audience_list(
        self, *, token: str | None, query: dict[str, Any], body: None
    ) -> dict[str, Any]:
        page = _int_param(query, "page", 1, 1, None)
        page_size = _int_param(query, "page_size", 10, 1, 100)
        with self._lock:
            adv = self._check_advertiser_locked(token, query.get("advertiser_id"))
            mine = [a for a in self._audiences.values() if a["advertiser_id"] == adv]
            chunk = mine[(page - 1) * page_size : page * page_size]
            items = [self._details_locked(a, type_key="audience_type") for a in chunk]
        total = len(mine)
        return {
            "list": items,
            "page_info": {
                "page": page,
                "page_size": page_size,
                "total_number": total,
                "total_page": math.ceil(total / page_size),
            },
        }

    def _owned_audience_locked(self, audience_id: Any, advertiser_id: str, name: str) -> dict:
        """The audience `audience_id` names, which `advertiser_id` must own."""
        if not isinstance(audience_id, str) or not audience_id:
            raise ApiError(INVALID_PARAMETERS, f"{name}: must be an audience id string")
        aud = self._audiences.get(audience_id)
        if aud is None:
            raise ApiError(NOT_FOUND, f"Audience {audience_id} does not exist")
        if aud["advertiser_id"] != advertiser_id:
            raise ApiError(
                NO_PERMISSION, f"Audience {audience_id} does not belong to {advertiser_id}"
            )
        return aud

    def _share_request_locked(
        self, token: str | None, body: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Check a ``share/`` or ``share/cancel/`` body; its audiences and advertisers."""
        _exact_keys(body, SHARE_KEYS, "body")
        owner = self._check_advertiser_locked(token, body["advertiser_id"])
        audience_ids = _id_list(body["custom_audience_ids"], "custom_audience_ids", SHARE_MAX)
        shared = _id_list(body["shared_advertiser_ids"], "shared_advertiser_ids", SHARE_MAX)
        audiences = [
            self._owned_audience_locked(aid, owner, "custom_audience_ids") for aid in audience_ids
        ]
        center = self._advertisers[owner]["business_center"]
        for adv in shared:
            if adv == owner:
                raise ApiError(
                    INVALID_PARAMETERS, f"shared_advertiser_ids: {adv} owns the audiences"
                )
            other = self._advertisers.get(adv)
            if other is None:
                raise ApiError(ADVERTISER_NOT_FOUND, f"Advertiser {adv} does not exist")
            if other["business_center"] != center:
                raise ApiError(
                    NO_PERMISSION,
                    f"No permission to share with advertiser {adv}: it is not in the Business "
                    f"Center of advertiser {owner}",
                )
        return audiences, shared

    def _share(
        self, *, token: str | None, query: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        with self._lock:
            audiences, shared = self._share_request_locked(token, body)
            for aud in audiences:
                aud["shared_with"].update(shared)
        return {}

    def _share_cancel(
        self, *, token: str | None, query: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        with self._lock:
            audiences, shared = self._share_request_locked(token, body)
            for aud in audiences:
                aud["shared_with"].difference_update(shared)
        return {}

    def _lookalike_create(
        self, *, token: str | None, query: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        _exact_keys(body, LOOKALIKE_KEYS, "body")
        name = body["custom_audience_name"]
        if not isinstance(name, str) or not name.strip() or len(name) > LOOKALIKE_NAME_MAX:
            raise ApiError(
                INVALID_PARAMETERS,
                f"custom_audience_name: must be a non-empty string of at most "
                f"{LOOKALIKE_NAME_MAX} characters",
            )
        spec = body["lookalike_spec"]
        if not isinstance(spec, dict):
            raise ApiError(INVALID_PARAMETERS, "lookalike_spec: must be an object")
        _exact_keys(spec, LOOKALIKE_SPEC_KEYS, "lookalike_spec")
        for key, allowed in LOOKALIKE_ENUMS.items():
            if spec[key] not in allowed:
                raise ApiError(
                    INVALID_PARAMETERS,
                    f"lookalike_spec.{key}: must be one of {', '.join(allowed)}, got {spec[key]!r}",
                )
        if type(spec["include_source"]) is not bool:
            raise ApiError(INVALID_PARAMETERS, "lookalike_spec.include_source: must be a boolean")
        for key in ("location_ids", "placements"):
            if not _is_str_list(spec[key]):
                raise ApiError(
                    INVALID_PARAMETERS, f"lookalike_spec.{key}: must be a non-empty list of strings"
                )
        with self._lock:
            adv = self._check_advertiser_locked(token, body["advertiser_id"])
            source_id = spec["source_audience_id"]
            source = self._owned_audience_locked(
                source_id, adv, "lookalike_spec.source_audience_id"
            )
            if source["type"] == "Lookalike":
                raise ApiError(
                    INVALID_OR_BUSY,
                    f"Audience {source_id} is a lookalike: a lookalike's source cannot be one",
                )
            people = len(set().union(*source["members"].values()))
            if people < LOOKALIKE_MIN_SOURCE:
                raise ApiError(
                    INVALID_OR_BUSY,
                    f"Audience {source_id} has {people} people: a lookalike's source needs at "
                    f"least {LOOKALIKE_MIN_SOURCE}",
                )
            return {"audience_id": self._create_audience_locked(adv, name, None, "Lookalike")}

    def _user_info(self, *, token: str | None, query: dict[str, Any], body: None) -> dict[str, Any]:
        digest = hashlib.sha256((token or "").encode()).hexdigest()
        return {"display_name": "fake user", "id": str(int(digest[:15], 16))}

    def _advertiser_info(
        self, *, token: str | None, query: dict[str, Any], body: None
    ) -> dict[str, Any]:
        ids = _json_array_param(query, "advertiser_ids")
        with self._lock:
            out = []
            for adv in ids:
                self._check_advertiser_locked(token, adv)
                a = self._advertisers[adv]
                out.append({"advertiser_id": adv, "name": a["name"], "status": a["status"]})
        return {"list": out}

    def _check_app_locked(self, app_id: Any, secret: Any) -> None:
        if not isinstance(app_id, str) or not isinstance(secret, str):
            raise ApiError(INVALID_PARAMETERS, "app_id and secret are required")
        if self._apps.get(app_id) != secret:
            raise ApiError(INVALID_PARAMETERS, "Invalid app_id or secret")

    def _oauth_advertisers(
        self, *, token: str | None, query: dict[str, Any], body: None
    ) -> dict[str, Any]:
        with self._lock:
            self._check_app_locked(query.get("app_id"), query.get("secret"))
            allowed = self._tokens.get(token or "", set())
            out = [
                {"advertiser_id": adv, "advertiser_name": a["name"]}
                for adv, a in self._advertisers.items()
                if adv in allowed
            ]
        return {"list": out}

    def _oauth_access_token(
        self, *, token: str | None, query: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        code = body.get("auth_code")
        with self._lock:
            self._check_app_locked(body.get("app_id"), body.get("secret"))
            if not isinstance(code, str) or code not in self._auth_codes:
                raise ApiError(INVALID_AUTH_CODE, "Invalid auth code")
            if code in self._used_codes:
                raise ApiError(INVALID_AUTH_CODE, "Auth code has already been used")
            self._used_codes.add(code)
            new_token, advertisers = self._auth_codes[code]
            self._tokens[new_token] = set(advertisers)
        return {
            "access_token": new_token,
            "advertiser_ids": list(advertisers),
            "scope": [4],
        }

    # ------------------------------------------------------------------ script helpers

    def summary(self) -> dict[str, Any]:
        """Return stats and per-audience member counts (for the script's exit report)."""
        with self._lock:
            auds = {
                aid: {
                    "name": a["name"],
                    "advertiser_id": a["advertiser_id"],
                    "members": {s: len(ids) for s, ids in a["members"].items() if ids},
                    "distinct": len(set().union(*a["members"].values())),
                }
                for aid, a in self._audiences.items()
            }
            return {"stats": dict(self.stats), "audiences": auds}


def main(argv: list[str] | None = None) -> int:
    """Run the fake until SIGTERM/SIGINT, then print a JSON summary to stderr."""
    p = argparse.ArgumentParser(description="Fake TikTok Business API server")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", action="append", help="token usable for all advertisers")
    p.add_argument("--advertiser", action="append", help="advertiser id (repeatable)")
    p.add_argument(
        "--audience",
        action="append",
        default=[],
        metavar="NAME[=ID]",
        help="pre-existing audience for the first advertiser (repeatable)",
    )
    p.add_argument("--app", action="append", default=[], metavar="APP_ID:SECRET")
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--rate-limit", type=float, default=None, help="mapping requests per second")
    p.add_argument(
        "--rate-limit-kind",
        choices=RATE_LIMIT_KINDS,
        default="sliding",
        help="how --rate-limit counts (see RateLimit): sliding (the strictest), bucket, second",
    )
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--http-503-rate", type=float, default=0.0)
    p.add_argument("--max-batch", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-bodies", action="store_true", help="keep request bodies in memory")
    args = p.parse_args(argv)

    advertisers = args.advertiser or ["7000000000000000001"]
    tokens = args.token or ["fake-token"]
    fake = FakeTikTok(max_batch=args.max_batch, seed=args.seed, log_bodies=args.log_bodies)
    for adv in advertisers:
        fake.add_advertiser(adv)
    for tok in tokens:
        fake.add_token(tok, advertisers)
    for spec in args.app:
        app_id, _, secret = spec.partition(":")
        fake.add_app(app_id, secret)
    created = {}
    for spec in args.audience:
        name, _, aid = spec.partition("=")
        created[name] = fake.add_audience(advertisers[0], name, audience_id=aid or None)
    fake.inject(
        latency=args.latency,
        rate_limit_per_second=args.rate_limit,
        rate_limit_kind=args.rate_limit_kind,
        error_rate=args.error_rate,
        http_503_rate=args.http_503_rate,
    )

    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.start(args.port)
    print(fake.url, flush=True)
    if created:
        print(json.dumps({"audiences": created}), file=sys.stderr, flush=True)
    while not done.wait(0.5):
        pass
    fake.stop()
    print(json.dumps(fake.summary(), indent=2), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
