"""Emails: trim, lowercase, and optionally drop a ``+tag`` and the dots of the local part.

A normalised email is itself a valid input that normalises to itself (idempotent), and is
always encodable as UTF-8.
"""

from __future__ import annotations

import re
from typing import Final

from target_tiktok_audiences.identifiers.kinds import INVISIBLE

EMAIL_NORMALIZATIONS: Final[tuple[str, ...]] = ("standard", "strip_local")
MAX_EMAIL_LENGTH: Final = 320

# Characters never allowed inside an email: "@" (handled separately), Unicode
# whitespace (\s), invisible format characters, C0 controls and DEL.
_NOT_EMAIL_CHAR: Final = r"@\s\x00-\x1f\x7f" + INVISIBLE
_EMAIL_RE: Final = re.compile(
    rf"[^{_NOT_EMAIL_CHAR}]+@(?:[^.{_NOT_EMAIL_CHAR}]+\.)+[^.{_NOT_EMAIL_CHAR}]+"
)


def norm_email(s: str, strip_local: bool) -> str | None:
    """Normalise a stripped, non-empty email; None when invalid."""
    if len(s) > MAX_EMAIL_LENGTH:
        return None
    s = s.lower()
    # Lowercasing can lengthen a few non-ASCII characters: re-check so the
    # result is itself a valid input (normalising stays idempotent).
    if len(s) > MAX_EMAIL_LENGTH or _EMAIL_RE.fullmatch(s) is None:
        return None
    if strip_local:
        at = s.index("@")
        local = s[:at].split("+", 1)[0].replace(".", "")
        if not local:
            return None
        s = local + s[at:]
    if not s.isascii():
        try:
            s.encode()
        except UnicodeEncodeError:  # lone surrogates: not text, cannot be hashed as UTF-8
            return None
    return s
