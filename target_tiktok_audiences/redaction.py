"""Keeping secrets out of text: database passwords in URLs, and registered secret values.

Every message that may carry a store location or a library's exception text passes through
here before it reaches a log, an exception or a file. Pure functions; the one registry of
secret values is filled at start-up from the settings (`remember_secret`).
"""

from __future__ import annotations

import re
import threading

MASK = "***"

# `scheme://user:password@host`: the password part of the user info.
_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^@\s]*(?=@)")
# `password=...` in a URL's query or a libpq conninfo string, quoted or not.
_PASSWORD_PARAMETER = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^&\s;'\"]+)",
    re.IGNORECASE,
)

_secrets: set[str] = set()
_lock = threading.Lock()


def mask_url(text: str) -> str:
    """`text` with every URL user-info password and `password=` value replaced by `***`."""
    text = _USERINFO_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _PASSWORD_PARAMETER.sub(lambda m: m["head"] + MASK, text)


def remember_secret(value: str | None) -> None:
    """Register a secret value (a token, a password) that `scrub` removes from any text.

    Values shorter than 4 characters are not registered: masking them would garble text
    without protecting anything.
    """
    if not value:
        return
    with _lock:
        for form in {value, value.strip()}:
            if len(form) >= 4:
                _secrets.add(form)


def scrub(text: str) -> str:
    """`text` without any registered secret and without URL passwords."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return mask_url(text)
