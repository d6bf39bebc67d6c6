"""The TikTok Business API client: envelope checks, pacing, retries and batch splitting.

TikTok answers almost everything with HTTP 200; only `code == 0` is success. Every other code is
turned into a `TikTokAPIError` whose one-line message names the cause and the fix, and which never
carries the request body (hashes) or headers (the token).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import orjson
import requests
import urllib3

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.tiktok.answers import (
    TRANSPORT_ERRORS,
    Answer,
    RequestIds,
    envelope_answer,
    transport_error,
)
from target_tiktok_audiences.tiktok.audiences import AudienceCalls
from target_tiktok_audiences.tiktok.codes import BATCH_TOO_LARGE_CODES
from target_tiktok_audiences.tiktok.mapping import MAPPING, Batch, batch_json, mapping_body
from target_tiktok_audiences.tiktok.pacing import Pacer
from target_tiktok_audiences.tiktok.watchdog import DeadlinePassed, Watch, WatchedAdapter, watches
from target_tiktok_audiences.workers import Workers

logger = logging.getLogger("target_tiktok_audiences")

# A request body: a dict, or one already serialised (built by a worker process).
Body = dict | bytes
# Bodies of batches this large are built in a worker process, a few batches ahead.
PARALLEL_BODY_ROWS = 1000
BODIES_AHEAD = 2

# Bytes read from the socket at a time: the deadline is checked between reads.
_READ_CHUNK = 65536
# What an access token may hold: visible ASCII. Anything else cannot go in an HTTP header (or is
# no TikTok token), and the library errors that say so would echo the header, token and all.
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")


def token_fault(token: str) -> str | None:
    """Why a token (surrounding whitespace already trimmed) cannot be sent; None if it can."""
    if token and not _TOKEN_CHARACTERS.fullmatch(token):
        return (
            "the access token holds a character that cannot go in an HTTP header or a TikTok "
            "token (a space, a line break, a control or non-ASCII character): copy "
            "`access_token` again from TikTok"
        )
    return None


@dataclass(frozen=True)
class ClientOptions:
    """How the client times out, retries, paces and batches (the settings of those names)."""

    timeout: float  # request_timeout: the whole request, not each read
    max_retries: int
    max_requests_per_second: float
    max_parallel_requests: int
    batch_size: int  # the first batch size; halved when TikTok says a batch is too large
    backoff_base: float  # retry_backoff_seconds


class TikTokClient(AudienceCalls):
    """Sends requests to the TikTok Business API; thread-safe.

    Whatever the network or the HTTP libraries raise leaves as a `TikTokAPIError` with this
    module's own message, raised `from None`: a library's text can echo a header (the token).
    Once `stop` was called no request is sent and no retry waits.
    """

    def __init__(
        self,
        api_url: str,
        access_token: str | None,
        options: ClientOptions,
        *,
        workers: Workers | None = None,
    ) -> None:
        """`options` come from the settings (`RunSettings.client_options`), which state them."""
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.options = options
        self.timeout = options.timeout
        self.max_retries = options.max_retries
        self.max_parallel_requests = options.max_parallel_requests
        self.batch_size = options.batch_size
        self.backoff_base = options.backoff_base
        self.requests_sent = 0
        self._workers = workers if workers is not None else Workers(1)
        self._reached = False  # any HTTP answer yet: a refused first connection is no blip
        self._stopping = threading.Event()
        self._pacer = Pacer(options.max_requests_per_second)
        self._lock = threading.Lock()
        self._session = requests.Session()
        adapter = WatchedAdapter(pool_maxsize=max(options.max_parallel_requests, 1))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["Content-Type"] = "application/json"
        token = (access_token or "").strip()
        # Why the token cannot be sent, if it cannot: every request then fails with this.
        self._unsendable_header = token_fault(token)
        if token and self._unsendable_header is None:
            self._session.headers["Access-Token"] = token

    def close(self) -> None:
        """Release the connection pool."""
        self._session.close()

    def stop(self) -> None:
        """The run is being terminated: send nothing more, and give up waiting to retry."""
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
        """Send one request, retrying what can be retried; return the envelope's `data`."""
        return self.answer(method, path, params=params, body=body, idempotent=idempotent).data

    def answer(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        body: Body | None = None,
        idempotent: bool = True,
    ) -> Answer:
        """Send one request, retrying what can be retried; return TikTok's successful answer.

        A request that is not `idempotent` (creating an audience) is retried only when TikTok
        said it did nothing (a rate limit): after a timeout or a broken answer it may have
        been carried out. The wait before a retry ends at once when the client is stopped.
        """
        attempt = 0
        rate_limited = 0
        while True:
            try:
                return self._send(method, path, params, body)
            except TikTokAPIError as exc:
                retry = exc.retryable and (idempotent or exc.rate_limited)
                if not retry or attempt >= self.max_retries or self._stopping.is_set():
                    raise
                attempt += 1
                if exc.rate_limited:
                    rate_limited += 1
                    self._pacer.refused()
                delay = self._backoff(attempt, rate_limited)
                logger.warning(
                    "%s failed (%s); retry %d of %d in %.1f s",
                    path,
                    exc,
                    attempt,
                    self.max_retries,
                    delay,
                )
                if self._stopping.wait(delay):
                    raise self._stopped(path) from None

    def _backoff(self, attempt: int, rate_limited: int) -> float:
        """Exponential backoff with full jitter; a rate limit that persists waits minutes.

        A per-second limit clears within a second, so the first rate-limit retries are short;
        when it persists, it is a per-minute limit, which TikTok lifts after about 5 minutes.
        """
        if rate_limited >= 3:
            return min(300.0, 60.0 * 2 ** (rate_limited - 3)) * self.backoff_base
        base = self.backoff_base * 2 ** (attempt - 1)
        return min(120.0, base * (0.5 + random.random()))

    @staticmethod
    def _stopped(path: str) -> TikTokAPIError:
        return TikTokAPIError(
            f"{path} not sent: the run is being terminated; the next run sends it", path=path
        )

    def _send(self, method: str, path: str, params: dict | None, body: Body | None) -> Answer:
        if self._unsendable_header:
            raise TikTokAPIError(self._unsendable_header, path=path)
        if self._stopping.is_set():
            raise self._stopped(path)
        # Everything costly (a 5,000-row body) is done before the pacer lets the request go, so
        # it reaches TikTok when the pacer said, not whenever this thread next gets the GIL.
        try:
            prepared = self._session.prepare_request(
                requests.Request(
                    method,
                    self.api_url + path,
                    params=params,
                    data=orjson.dumps(body) if isinstance(body, dict) else body,
                )
            )
            # As session.request would: proxies and CA bundle from the environment. Streamed:
            # the body is read here, against the request's deadline.
            environment = self._session.merge_environment_settings(
                prepared.url, {}, True, None, None
            )
        except (requests.RequestException, ValueError) as exc:
            msg = (
                f"cannot build a request to {mask_url(self.api_url)} ({type(exc).__name__}): "
                "check `api_url`"
            )
            raise TikTokAPIError(msg, path=path) from None
        self._pacer.wait()
        if self._stopping.is_set():
            raise self._stopped(path)
        with self._lock:
            self.requests_sent += 1
        deadline = time.monotonic() + self.timeout
        watch = watches.current = Watch(deadline)
        try:
            response = self._session.send(
                prepared,
                **environment,
                # Connecting and the answer's head share the budget; the body gets what is left.
                # requests hands a urllib3 Timeout to urllib3 as it is; its stubs know floats.
                timeout=urllib3.Timeout(total=self.timeout),  # type: ignore[arg-type]
                # A redirect would carry the Access-Token header (and hashes) to another host.
                allow_redirects=False,
            )
            self._reached = True
            try:
                content = self._read_body(response, deadline)
            finally:
                response.close()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(
                path,
                DeadlinePassed() if watch.expired else exc,
                api_url=self.api_url,
                timeout=self.timeout,
                reached=self._reached,
            ) from None
        finally:
            watch.disarm()
            watches.current = None
        return envelope_answer(path, response.status_code, content)

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        """The whole body, or `DeadlinePassed` once `deadline` passes, however it trickles in.

        Each read waits at most until the deadline (the socket's timeout is cut to what is
        left), so a body sent a byte at a time cannot stretch the request past
        `request_timeout`. A body shorter than its Content-Length raises urllib3's
        IncompleteRead.
        """
        raw = response.raw
        chunks: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlinePassed
            connection = raw.connection
            sock = getattr(connection, "sock", None) if connection is not None else None
            if sock is not None:
                sock.settimeout(remaining)
            chunk = raw.read1(_READ_CHUNK, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    # Audience membership

    def map_batch(
        self,
        action: str,
        advertiser_ids: Sequence[str],
        audience_id: str,
        batch: Batch,
        body: bytes | None = None,
    ) -> RequestIds:
        """Send one batch of people; halve it while TikTok says it is too large.

        Returns the `request_id` of each request TikTok accepted for the batch, in send order:
        one, or one per part of a batch that was halved, with the rows each carried.
        `body`: the batch's request body, if it was built already (`batch_json`).
        """
        try:
            answer = self.answer(
                "POST",
                MAPPING,
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
            first = self.map_batch(action, advertiser_ids, audience_id, Batch.of(rows[:half]))
            rest = self.map_batch(action, advertiser_ids, audience_id, Batch.of(rows[half:]))
            return RequestIds([*first.answered, *rest.answered])
        return RequestIds([(answer.request_id, batch.size)])

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
        on_confirmed: Callable[[Batch, RequestIds], None],
    ) -> None:
        """Send batches with up to `max_parallel_requests` in flight.

        `on_confirmed(batch, request_ids)` runs in the calling thread for every batch TikTok
        confirmed, with the `request_id`s of the requests that carried it (`map_batch`), so the
        store is only ever touched from one thread. The first failure stops new sends, waits
        for those in flight (confirming the ones that succeeded), and is raised.
        """
        limit = self.max_parallel_requests
        in_flight: dict[Future[RequestIds], Batch] = {}
        failure: BaseException | None = None

        def settle(done: Iterable[Future[RequestIds]]) -> None:
            nonlocal failure
            for future in done:
                batch = in_flight.pop(future)
                exc = future.exception()
                if exc is None:
                    on_confirmed(batch, future.result())
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
