"""The TikTok Business API client: envelope checks, pacing, retries and batch splitting.

TikTok answers almost everything with HTTP 200; only `code == 0` is success. Every other code is
turned into a `TikTokAPIError` whose one-line message names the cause and the fix, and which never
carries the request body (hashes) or headers (the token).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import IO, Any

import orjson
import requests
from requests.adapters import HTTPAdapter

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.planning import batch_json, mapping_body
from target_tiktok_audiences.store import Batch
from target_tiktok_audiences.workers import Workers

logger = logging.getLogger("target_tiktok_audiences")

# A request body: a dict, or one already serialised (built by a worker process).
Body = dict | bytes
# Bodies of batches this large are built in a worker process, a few batches ahead.
PARALLEL_BODY_ROWS = 1000
BODIES_AHEAD = 2

RATE_LIMIT_CODES = frozenset({40100, 40133, 40016, 40132, 61000})
BATCH_TOO_LARGE_CODES = frozenset({40011, 40061})
_SERVER_CODES = frozenset({50000, 50002, 60001, 40202})
_FIXES = {
    40001: "the token may not act for this advertiser or audience: check `advertiser_ids` and "
    "the token's permissions (Audience Management) in TikTok Business Center",
    40002: "TikTok rejected a parameter or the audience is busy: retry later, or check the "
    "audience settings",
    40007: "the audience or object does not exist: check `audience_id` in `audiences`",
    40062: "identifiers reached TikTok unhashed: this is a bug, please report it",
    40102: "the access token expired: re-authorise with `tiktok-audiences auth` and update "
    "`access_token`",
    40104: "no access token was sent: set `access_token`",
    40105: "access token rejected: re-authorise with `tiktok-audiences auth` and update "
    "`access_token`",
    40110: "the auth code is invalid or used: open the consent URL again for a fresh code",
    40300: "the advertiser does not exist: check `advertiser_ids`",
}


def is_retryable_code(code: int) -> bool:
    """Rate limits, write conflicts and server faults clear up by themselves."""
    return code in RATE_LIMIT_CODES or code in _SERVER_CODES or 51000 <= code < 53000


def describe_code(code: int, message: str) -> str:
    """What TikTok's code means for the user, with the fix."""
    fix = _FIXES.get(code)
    if fix is None:
        if code in RATE_LIMIT_CODES:
            fix = (
                "TikTok's rate limit was still exhausted after every retry: lower "
                "`max_requests_per_second` or raise `max_retries`"
            )
        elif is_retryable_code(code):
            fix = "TikTok kept failing on its side: re-run later (nothing unconfirmed was recorded)"
        else:
            fix = "check the request settings"
    detail = f": {message}" if message else ""
    return f"TikTok answered code {code}{detail}; {fix}"


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


class TikTokClient:
    """Sends requests to the TikTok Business API; thread-safe."""

    def __init__(
        self,
        api_url: str,
        access_token: str | None,
        *,
        timeout: float = 60,
        max_retries: int = 8,
        max_requests_per_second: float = 10,
        max_parallel_requests: int = 4,
        batch_size: int = 10000,
        backoff_base: float = 1.0,
        workers: Workers | None = None,
    ) -> None:
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_parallel_requests = max_parallel_requests
        self.batch_size = batch_size
        self.backoff_base = backoff_base
        self.requests_sent = 0
        self._workers = workers if workers is not None else Workers(1)
        self._reached = False  # any HTTP answer yet: a refused first connection is no blip
        self._stopping = threading.Event()
        self._pacer = Pacer(max_requests_per_second)
        self._lock = threading.Lock()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_maxsize=max(max_parallel_requests, 1))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["Content-Type"] = "application/json"
        if access_token:
            self._session.headers["Access-Token"] = access_token

    def close(self) -> None:
        """Release the connection pool."""
        self._session.close()

    def stop(self) -> None:
        """Give up waiting to retry: the run is being terminated."""
        self._stopping.set()

    # One request

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        body: Body | None = None,
        idempotent: bool = True,
    ) -> dict:
        """Send one request, retrying what can be retried; return the envelope's `data`.

        A request that is not `idempotent` (creating an audience) is retried only when TikTok
        said it did nothing (a rate limit): after a timeout it may have been carried out.
        """
        attempt = 0
        rate_limited = 0
        while True:
            try:
                return self._send(method, path, params, body)
            except TikTokAPIError as exc:
                retry = exc.retryable and (idempotent or exc.code in RATE_LIMIT_CODES)
                if not retry or attempt >= self.max_retries:
                    raise
                attempt += 1
                if exc.code in RATE_LIMIT_CODES:
                    rate_limited += 1
                delay = self._backoff(attempt, rate_limited)
                logger.warning(
                    "%s failed (%s); retry %d of %d in %.1f s",
                    path,
                    exc,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)

    def _backoff(self, attempt: int, rate_limited: int) -> float:
        """Exponential backoff with full jitter; a rate limit that persists waits minutes.

        A per-second limit clears within a second, so the first rate-limit retries are short;
        when it persists, it is a per-minute limit, which TikTok lifts after about 5 minutes.
        """
        if rate_limited >= 3:
            return min(300.0, 60.0 * 2 ** (rate_limited - 3)) * self.backoff_base
        base = self.backoff_base * 2 ** (attempt - 1)
        return min(120.0, base * (0.5 + random.random()))

    def _send(self, method: str, path: str, params: dict | None, body: Body | None) -> dict:
        # Everything costly (a 5,000-row body) is done before the pacer lets the request go, so
        # it reaches TikTok when the pacer said, not whenever this thread next gets the GIL.
        prepared = self._session.prepare_request(
            requests.Request(
                method,
                self.api_url + path,
                params=params,
                data=orjson.dumps(body) if isinstance(body, dict) else body,
            )
        )
        # As session.request would: proxies and CA bundle from the environment.
        environment = self._session.merge_environment_settings(prepared.url, {}, None, None, None)
        self._pacer.wait()
        with self._lock:
            self.requests_sent += 1
        try:
            response = self._session.send(
                prepared,
                **environment,
                timeout=self.timeout,
                # A redirect would carry the Access-Token header (and hashes) to another host.
                allow_redirects=False,
            )
        except requests.Timeout:
            msg = (
                f"TikTok did not answer {path} within request_timeout ({self.timeout:g} s); "
                "raise `request_timeout` if this persists"
            )
            raise TikTokAPIError(msg, path=path, retryable=True) from None
        except requests.ConnectionError:
            msg = f"cannot reach TikTok at {self.api_url}: check `api_url` and the network"
            raise TikTokAPIError(msg, path=path, retryable=self._reached) from None
        self._reached = True
        return self._envelope(path, response)

    @staticmethod
    def _envelope(path: str, response: requests.Response) -> dict:
        status = response.status_code
        if status >= 500:
            msg = f"TikTok answered HTTP {status} for {path}: a server fault, re-run later"
            raise TikTokAPIError(msg, path=path, retryable=True)
        if 300 <= status < 400:
            msg = (
                f"TikTok answered {path} with a redirect (HTTP {status}), which is not followed "
                "so the token stays with TikTok: check `api_url`"
            )
            raise TikTokAPIError(msg, path=path)
        if status != 200:
            msg = (
                f"TikTok answered HTTP {status} for {path}: wrong path or method; check "
                "`api_url` ends in /open_api/v1.3/"
            )
            raise TikTokAPIError(msg, path=path)
        try:
            envelope = response.json()
            code = int(envelope["code"])
        except (ValueError, KeyError, TypeError):
            msg = f"TikTok answered {path} without its JSON envelope: check `api_url`"
            raise TikTokAPIError(msg, path=path, retryable=True) from None
        if code != 0:
            message = str(envelope.get("message") or "")[:200]
            raise TikTokAPIError(
                f"{path}: {describe_code(code, message)}",
                code=code,
                path=path,
                request_id=envelope.get("request_id"),
                retryable=is_retryable_code(code),
                tiktok_message=message,
            )
        data = envelope.get("data")
        return data if isinstance(data, dict) else {}

    # Audience membership

    def map_batch(
        self,
        action: str,
        advertiser_ids: Sequence[str],
        audience_id: str,
        batch: Batch,
        body: bytes | None = None,
    ) -> None:
        """Send one batch of people; halve it while TikTok says it is too large.

        `body`: the batch's request body, if it was built already (`batch_json`).
        """
        try:
            self.request(
                "POST",
                "segment/mapping/",
                body=body or mapping_body(action, advertiser_ids, audience_id, batch.slots()),
            )
        except TikTokAPIError as exc:
            if exc.code not in BATCH_TOO_LARGE_CODES or batch.size == 1:
                raise
            half = (batch.size + 1) // 2
            with self._lock:
                if half < self.batch_size:
                    logger.warning(
                        "TikTok says a batch of %d is too large (%s); batch size is now %d",
                        batch.size,
                        exc.code,
                        half,
                    )
                    self.batch_size = half
            rows = batch.slots()
            self.map_batch(action, advertiser_ids, audience_id, Batch.of(rows[:half]))
            self.map_batch(action, advertiser_ids, audience_id, Batch.of(rows[half:]))

    def _with_bodies(
        self,
        action: str,
        advertiser_ids: Sequence[str],
        audience_id: str,
        batches: Iterable[Batch],
    ) -> Iterator[tuple[Batch, Future[bytes]]]:
        """Each batch with its request body, a few batches ahead.

        A large batch's body is built in a worker process while the batches before it go.
        """
        ahead: deque[tuple[Batch, Future[bytes]]] = deque()
        for batch in batches:
            body = self._workers.submit(
                batch_json,
                action,
                list(advertiser_ids),
                audience_id,
                batch,
                parallel=batch.size >= PARALLEL_BODY_ROWS,
            )
            ahead.append((batch, body))
            if len(ahead) > BODIES_AHEAD:
                yield ahead.popleft()
        yield from ahead

    def map_all(
        self,
        action: str,
        advertiser_ids: Sequence[str],
        audience_id: str,
        batches: Iterable[Batch],
        on_confirmed: Callable[[Batch], None],
    ) -> None:
        """Send batches with up to `max_parallel_requests` in flight.

        `on_confirmed` runs in the calling thread for every batch TikTok confirmed, so the
        store is only ever touched from one thread. The first failure stops new sends, waits
        for those in flight (confirming the ones that succeeded), and is raised.
        """
        limit = self.max_parallel_requests
        in_flight: dict[Future, Batch] = {}
        failure: BaseException | None = None

        def settle(done: Iterable[Future]) -> None:
            nonlocal failure
            for future in done:
                batch = in_flight.pop(future)
                exc = future.exception()
                if exc is None:
                    on_confirmed(batch)
                elif failure is None:
                    failure = exc

        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="tiktok") as pool:
            for batch, body in self._with_bodies(action, advertiser_ids, audience_id, batches):
                settle([f for f in in_flight if f.done()])
                while len(in_flight) >= limit:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    settle(done)
                if failure is not None:
                    break
                future = pool.submit(
                    self.map_batch, action, advertiser_ids, audience_id, batch, body.result()
                )
                in_flight[future] = batch
            if in_flight:
                done, _ = wait(in_flight)
                settle(done)
        if failure is not None:
            raise failure


class DryRunClient(TikTokClient):
    """Writes each request a real run would send to a JSON-lines file, and sends nothing."""

    def __init__(self, output: IO[str], **kwargs: Any) -> None:
        kwargs.update(
            max_requests_per_second=1e9, max_parallel_requests=1
        )  # file order = send order
        super().__init__(**kwargs)
        self._output = output

    def map_all(
        self,
        action: str,
        advertiser_ids: Sequence[str],
        audience_id: str,
        batches: Iterable[Batch],
        on_confirmed: Callable[[Batch], None],
    ) -> None:
        """Write each batch in turn, in the calling thread.

        The file's order is then the send order, and no thread holds the GIL while the store
        reads the next batch (a thread that does makes every database call wait for it).
        """
        for batch, body in self._with_bodies(action, advertiser_ids, audience_id, batches):
            self.map_batch(action, advertiser_ids, audience_id, batch, body.result())
            on_confirmed(batch)

    def _send(self, method: str, path: str, params: dict | None, body: Body | None) -> dict:
        if isinstance(body, bytes):
            body = orjson.Fragment(body)
        record = {"method": method, "path": path, "body": body if body is not None else params}
        line = orjson.dumps(record).decode()
        with self._lock:
            self.requests_sent += 1
            self._output.write(line + "\n")
            self._output.flush()
        return {}

    def close(self) -> None:
        """Close the output file too."""
        super().close()
        self._output.close()
