"""The kinds of identifier a record carries, the slots their hashes fill, why a value is refused.

Every other module of the package reads these names; this one imports none of them.
"""

from __future__ import annotations

from typing import Final

SLOTS: Final[tuple[str, ...]] = (
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "IDFA_MD5",
    "AAID_SHA256",
    "AAID_MD5",
)
ID_TYPES: Final[tuple[str, ...]] = ("email", "phone", "idfa", "aaid")
# What `identifier_fields` may map: the identifier types, and fields of MD5-hashed device ids.
FIELD_TYPES: Final[tuple[str, ...]] = (*ID_TYPES, "idfa_md5", "aaid_md5")
DEFAULT_IDENTIFIER_FIELDS: Final[dict[str, str]] = {
    "email": "email",
    "phone": "phone",
    "idfa": "idfa",
    "aaid": "aaid",
}

MISSING: Final = "missing"
INVALID_EMAIL: Final = "invalid_email"
INVALID_PHONE: Final = "invalid_phone"
INVALID_IDFA: Final = "invalid_idfa"
INVALID_AAID: Final = "invalid_aaid"

# The rejection reason of each field type; its keys are exactly FIELD_TYPES.
REASONS: Final[dict[str, str]] = {
    "email": INVALID_EMAIL,
    "phone": INVALID_PHONE,
    "idfa": INVALID_IDFA,
    "aaid": INVALID_AAID,
    "idfa_md5": INVALID_IDFA,
    "aaid_md5": INVALID_AAID,
}
# Index into SLOTS of the slot each field type fills.
SLOT_INDEX: Final[dict[str, int]] = {
    "email": 0,
    "phone": 1,
    "idfa": 2,
    "idfa_md5": 3,
    "aaid": 4,
    "aaid_md5": 5,
}

# Every character for which str.isspace() is true (tests check this is complete),
# plus invisible format characters that often survive copy-and-paste.
_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
INVISIBLE: Final = "\u180e\u200b\u200c\u200d\u2060\ufeff"
# What every value is trimmed of, at both ends, before it is read.
STRIP: Final = _WHITESPACE + INVISIBLE


def check_choice(setting: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{setting}: {value!r} is not allowed; use one of: {', '.join(allowed)}")
