"""TikTok's answer codes, by name, and what the client does with each.

The envelope's `code` is the only success signal: 0 is success, everything else is a failure that
either clears up by itself (retried) or needs the user (one line with the fix). Every code the
target decides by is named here once; nothing else in the package spells one as a number.
"""

from __future__ import annotations

OK = 0
PARTIAL_SUCCESS = 20001
INVALID_PARAMETERS = 40000
NO_PERMISSION = 40001
# Also "audience busy/processing" (`is_busy`), which the audience takes later.
INVALID_OR_BUSY = 40002
NOT_FOUND = 40007
TOO_MANY_IDS = 40011
# Too many requests: tiktok-api.md names 40100 (app) and 40133 (advertiser) only.
RATE_LIMITED_API = 40016
INVALID_BATCH_SIZE = 40061
PII_NOT_HASHED = 40062
RATE_LIMITED_APP = 40100
TOKEN_EXPIRED = 40102
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
# 51xxx and 52xxx: server-side faults, by range.
SERVER_RANGE = range(51000, 53000)

HTTP_TOO_MANY_REQUESTS = 429

RATE_LIMIT_CODES = frozenset(
    {
        RATE_LIMITED_APP,
        RATE_LIMITED_ADVERTISER,
        RATE_LIMITED_API,
        RATE_LIMITED_REQUESTS,
        RATE_LIMITED_SYSTEM,
    }
)
# The batch is too large: split it and send the halves.
BATCH_TOO_LARGE_CODES = frozenset({TOO_MANY_IDS, INVALID_BATCH_SIZE})
# The token does not work: re-authorise.
TOKEN_CODES = frozenset({TOKEN_EXPIRED, TOKEN_MISSING, TOKEN_INVALID})
# TikTok's side failed (or two writes collided): retried with backoff.
SERVER_CODES = frozenset({SERVER_ERROR, SERVER_FAULT, MAINTENANCE, WRITE_CONFLICT})

# INVALID_OR_BUSY with one of these words: the audience is busy processing.
_BUSY_WORDS = ("busy", "processing")

_FIXES = {
    PARTIAL_SUCCESS: "TikTok applied only part of the batch, without saying which ids failed "
    "(they show later in the audience's history): the batch is not confirmed, and the next run "
    "sends it again",
    NO_PERMISSION: "the token may not act for this advertiser or audience: check "
    "`advertiser_ids` and the token's permissions (Audience Management) in TikTok Business Center",
    INVALID_OR_BUSY: "TikTok rejected a parameter: check the audience settings",
    NOT_FOUND: "the audience or object does not exist: check `audience_id` in `audiences`",
    PII_NOT_HASHED: "identifiers reached TikTok unhashed: this is a bug, please report it",
    TOKEN_EXPIRED: "the access token expired: re-authorise with `tiktok-audiences auth` and "
    "update `access_token`",
    TOKEN_MISSING: "no access token was sent: set `access_token`",
    TOKEN_INVALID: "access token rejected: re-authorise with `tiktok-audiences auth` and update "
    "`access_token`",
    INVALID_AUTH_CODE: "the auth code is invalid or used: open the consent URL again for a "
    "fresh code",
    ADVERTISER_NOT_FOUND: "the advertiser does not exist: check `advertiser_ids`",
}


def is_busy(code: int, message: str) -> bool:
    """INVALID_OR_BUSY worded as "audience busy/processing": it takes changes again later."""
    lowered = message.lower()
    return code == INVALID_OR_BUSY and any(word in lowered for word in _BUSY_WORDS)


def is_retryable_code(code: int, message: str = "") -> bool:
    """Rate limits, write conflicts, server faults and a busy audience clear up by themselves."""
    return (
        code in RATE_LIMIT_CODES
        or code in SERVER_CODES
        or code in SERVER_RANGE
        or is_busy(code, message)
    )


def describe_code(code: int, message: str, fix: str | None = None) -> str:
    """What TikTok's code means for the user, with the fix (`fix`, where the caller knows it).

    A busy audience is always told as busy: waiting, not a setting, is its fix.
    """
    fix = fix or _FIXES.get(code)
    if is_busy(code, message):
        fix = (
            "the audience stayed busy after every retry: re-run later (nothing unconfirmed was "
            "recorded)"
        )
    elif fix is None:
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
