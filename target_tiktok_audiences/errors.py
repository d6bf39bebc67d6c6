"""Failures a user can act on: each carries a one-line message naming the cause and the fix."""

from __future__ import annotations


class TargetError(Exception):
    """An expected failure: reported as one line on stderr, exit status non-zero, no traceback."""


class ConfigError(TargetError):
    """A setting is missing, malformed or contradicts another one."""


class InputError(TargetError):
    """The Singer input on stdin is malformed."""


class RemovalGuardError(TargetError):
    """A snapshot would remove more of an audience than `max_removal_fraction` allows."""


class StoreError(TargetError):
    """The membership store cannot be opened or is in use by another run."""


class TikTokAPIError(TargetError):
    """TikTok answered with a non-zero `code`, or an HTTP error, for one request.

    The message never includes the request body or headers: they carry hashes and the token.
    `rate_limited`: TikTok (or a gateway, HTTP 429) refused the request unread, for now.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        path: str = "",
        request_id: str | None = None,
        retryable: bool = False,
        rate_limited: bool = False,
        tiktok_message: str = "",
    ) -> None:
        super().__init__(message)
        self.tiktok_message = tiktok_message  # what TikTok said, without our fix
        self.code = code
        self.path = path
        self.request_id = request_id
        self.retryable = retryable
        self.rate_limited = rate_limited


class AudienceDeletedError(TargetError):
    """An audience the target created by name is gone from TikTok (NOT_FOUND for its id).

    The sync catches it and creates the audience again; it only reaches the user when the
    new audience is reported gone too.
    """

    def __init__(self, message: str, *, audience_id: str) -> None:
        super().__init__(message)
        self.audience_id = audience_id
