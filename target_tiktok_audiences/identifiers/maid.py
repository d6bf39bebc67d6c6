"""Mobile advertising ids (IDFA, AAID): a UUID, lowercased, hyphenated, never all zeros.

A UUID written without hyphens (32 hex characters) has them restored first, so both spellings
of one device give one hash.
"""

from __future__ import annotations

import re
from typing import Final

_UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
HEX32_RE: Final = re.compile(r"[0-9a-fA-F]{32}")
# The id of a device that opted out of tracking: it identifies no one.
ZERO_UUID: Final = "00000000-0000-0000-0000-000000000000"


def norm_maid(s: str) -> str | None:
    """Normalise a stripped, non-empty IDFA/AAID; None unless a non-zero UUID.

    A UUID without hyphens (32 hex characters) gets them back (8-4-4-4-12).
    """
    if len(s) == 32 and HEX32_RE.fullmatch(s) is not None:
        s = f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"
    elif len(s) != 36 or _UUID_RE.fullmatch(s) is None:
        return None
    s = s.lower()
    return None if s == ZERO_UUID else s
