"""What came back, as data or as one `TikTokAPIError` naming the cause and the fix.

TikTok answers HTTP 200 with an envelope; only `code == 0` is success. What the network or the
HTTP libraries raise is translated too, never quoting the library's text (it can echo headers).
"""

from __future__ import annotations

from collections.abc import Iterable
from http.client import HTTPException
from typing import NamedTuple, Self

import orjson
import requests
import urllib3

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.tiktok.codes import (
    HTTP_TOO_MANY_REQUESTS,
    OK,
    RATE_LIMIT_CODES,
    describe_code,
    is_retryable_code,
)
from target_tiktok_audiences.tiktok.watchdog import DeadlinePassed

# What sending a request can raise, below our own errors: each becomes a TikTokAPIError.
TRANSPORT_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    HTTPException,
    OSError,
    ValueError,
    DeadlinePassed,
)


def transport_error(
    path: str, exc: BaseException, *, api_url: str, timeout: float, reached: bool
) -> TikTokAPIError:
    """Our own one-line error for what the network or the HTTP libraries raised.

    Never the library's text: `InvalidHeader` and friends quote the header, token included.
    `reached`: TikTok answered some request of this client before, so a refused connection or
    a broken answer is a blip (retried), not a wrong `api_url`.
    """
    if isinstance(
        exc, (DeadlinePassed, requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    ):
        msg = (
            f"TikTok did not answer {path} within request_timeout ({timeout:g} s); "
            "raise `request_timeout` if this persists"
        )
        return TikTokAPIError(msg, path=path, retryable=True)
    broken = (
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.DecodeError,
        HTTPException,
    )
    if isinstance(exc, broken) and reached:
        msg = (
            f"TikTok's answer to {path} broke off mid-way ({type(exc).__name__}): a network "
            "or server fault; re-run later if this persists"
        )
        return TikTokAPIError(msg, path=path, retryable=True)
    if isinstance(exc, (requests.ConnectionError, OSError, *broken)):
        msg = (
            f"cannot reach TikTok at {mask_url(api_url)} ({type(exc).__name__}): check "
            "`api_url` and the network"
        )
        return TikTokAPIError(msg, path=path, retryable=reached)
    msg = (
        f"sending {path} to TikTok failed ({type(exc).__name__}): check `api_url` and "
        "`access_token`"
    )
    return TikTokAPIError(msg, path=path)


class Answer(NamedTuple):
    """A successful answer: its envelope's `data`, and the `request_id` TikTok gave it."""

    data: dict
    request_id: str  # "" when the envelope carries none


class RequestIds(tuple[str, ...]):
    """The `request_id`s TikTok answered for one batch, in send order, and each one's rows.

    One per request TikTok accepted: a batch halved on 40011/40061 went as several requests.
    `rows[i]` is the number of people the request of `self[i]` carried; they sum to the batch's
    size.
    """

    rows: tuple[int, ...]

    def __new__(cls, answered: Iterable[tuple[str, int]]) -> Self:
        """`answered`: (request_id, rows) of each accepted request, in send order."""
        pairs = tuple(answered)
        ids = super().__new__(cls, (request_id for request_id, _ in pairs))
        ids.rows = tuple(rows for _, rows in pairs)
        return ids

    @property
    def answered(self) -> tuple[tuple[str, int], ...]:
        """(request_id, rows) of each accepted request, in send order."""
        return tuple(zip(self, self.rows, strict=True))


def envelope_answer(path: str, status: int, content: bytes) -> Answer:
    """The answer whose envelope says `code == 0`; else its TikTokAPIError.

    Retryable: HTTP 429 and 5xx, an answer without its envelope, and the codes `codes` calls so.
    """
    if status == HTTP_TOO_MANY_REQUESTS:
        msg = (
            f"TikTok answered HTTP 429 (too many requests) for {path}: its rate limit stayed "
            "exhausted after every retry; lower `max_requests_per_second` or raise "
            "`max_retries`"
        )
        raise TikTokAPIError(msg, path=path, retryable=True, rate_limited=True)
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
        envelope = orjson.loads(content)
        code = int(envelope["code"])
    except (ValueError, KeyError, TypeError):
        msg = f"TikTok answered {path} without its JSON envelope: check `api_url`"
        raise TikTokAPIError(msg, path=path, retryable=True) from None
    if code != OK:
        message = str(envelope.get("message") or "")[:200]
        raise TikTokAPIError(
            f"{path}: {describe_code(code, message)}",
            code=code,
            path=path,
            request_id=envelope.get("request_id"),
            retryable=is_retryable_code(code, message),
            rate_limited=code in RATE_LIMIT_CODES,
            tiktok_message=message,
        )
    data = envelope.get("data")
    return Answer(data if isinstance(data, dict) else {}, str(envelope.get("request_id") or ""))
