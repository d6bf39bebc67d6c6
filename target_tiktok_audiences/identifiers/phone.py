"""Phones: E.164 as ``phonenumbers`` reads them, most of them without asking its parser.

Parsing with ``phonenumbers`` costs tens of microseconds, more than all else a record needs, so
:func:`_phone_fast` reads the common shapes from its metadata alone and leaves everything else
to :func:`_phone_parsed`. Invariant: the two never disagree (tests compare them on numbers of
every calling code and region). A normalised phone is a fixed point: normalising it again gives
it back. Only this module imports ``phonenumbers``.
"""

from __future__ import annotations

import re
from typing import Final, cast

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, ValidationResult

PHONE_FORMATS: Final[tuple[str, ...]] = ("e164", "digits")
MAX_PHONE_LENGTH: Final = 64
_MAX_NATIONAL_LENGTH: Final = 17  # phonenumbers' longest national significant number
# An int phone needs at most MAX_PHONE_LENGTH decimal digits; checked before str(),
# which would otherwise be slow (or raise) on a huge int.
PHONE_INT_LIMIT: Final = 10**MAX_PHONE_LENGTH

_REGIONS: Final[frozenset[str]] = frozenset(phonenumbers.SUPPORTED_REGIONS)

_pn_parse = phonenumbers.parse
_pn_possible = phonenumbers.is_possible_number_with_reason
_pn_nsn = phonenumbers.national_significant_number
_IS_POSSIBLE: Final = ValidationResult.IS_POSSIBLE


def check_region(region: object) -> str:
    """Return ``region`` canonicalised (``"gb"`` -> ``"GB"``) or raise ValueError."""
    if isinstance(region, str):
        canonical = region.strip().upper()
        if canonical in _REGIONS:
            return canonical
    raise ValueError(
        f"phone_default_region: {region!r} is not a region phonenumbers knows; "
        "use a two-letter ISO 3166-1 region code such as US, GB, DE or FR"
    )


# Country calling code -> compiled national_prefix_for_parsing of its main region
# (None when it has none). Filled lazily; holds phonenumbers metadata only.
_PREFIX_PATTERNS: dict[int, re.Pattern[str] | None] = {}


def _national_prefix_pattern(country_code: int) -> re.Pattern[str] | None:
    """Return the pattern phonenumbers uses to strip a national prefix for ``country_code``."""
    try:
        return _PREFIX_PATTERNS[country_code]
    except KeyError:
        pass
    region = phonenumbers.region_code_for_country_code(country_code)
    if region == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        metadata = PhoneMetadata.metadata_for_nongeo_region(country_code)
    else:
        metadata = PhoneMetadata.metadata_for_region(region)
    raw = metadata.national_prefix_for_parsing if metadata is not None else None
    pattern = re.compile(raw) if raw else None
    _PREFIX_PATTERNS[country_code] = pattern
    return pattern


def norm_phone(s: str, region: str, digits: bool) -> str | None:
    """Normalise a stripped, non-empty phone to E.164 (or its digits); None when invalid."""
    if len(s) > MAX_PHONE_LENGTH:
        return None
    e164 = _phone_fast(s, region) or _phone_parsed(s, region)
    if e164 is None:
        return None
    return e164[1:] if digits else e164


# Every calling code phonenumbers knows, as written: "1", "44", "880", ...
_CALLING_CODES: Final[dict[str, int]] = {
    str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
}
# Separators the fast path reads past: phonenumbers ignores them wherever they stand.
_PHONE_SEPARATORS: Final = str.maketrans("", "", " ().-")
# (calling code, national number length) -> whether phonenumbers calls such a number possible.
# Its answer depends on nothing else (the lengths in the code's metadata), so it is asked once.
_POSSIBLE: dict[tuple[int, int], bool] = {}
_Pattern = re.Pattern[str]
# Default region -> (its calling code; the patterns of its international dialling prefix, its
# national prefix and its national numbers, each None when it has none). Filled lazily.
_REGION_RULES: dict[str, tuple[str, _Pattern | None, _Pattern | None, _Pattern | None]] = {}


def _compiled(pattern: str | None) -> _Pattern | None:
    """A metadata pattern compiled; None when the metadata has none (or an empty one)."""
    return re.compile(pattern) if pattern else None


def _region_rules(region: str) -> tuple[str, _Pattern | None, _Pattern | None, _Pattern | None]:
    """What the fast path needs to know of a default region (see `_phone_fast`)."""
    try:
        return _REGION_RULES[region]
    except KeyError:
        pass
    # Only regions `check_region` let through get here, and each of those has metadata.
    metadata = cast(PhoneMetadata, PhoneMetadata.metadata_for_region(region))
    general = metadata.general_desc
    rules = (
        str(metadata.country_code),
        _compiled(metadata.international_prefix),
        _compiled(metadata.national_prefix_for_parsing),
        _compiled(general.national_number_pattern if general is not None else None),
    )
    _REGION_RULES[region] = rules
    return rules


def _possible(code: int, national: str) -> bool:
    """Whether phonenumbers calls a national number (no leading zero) of this code possible."""
    key = (code, len(national))
    known = _POSSIBLE.get(key)
    if known is None:
        number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
        known = _POSSIBLE[key] = _pn_possible(number) == _IS_POSSIBLE
    return known


def _phone_fast(s: str, region: str) -> str | None:
    """The E.164 form of a phone in a common shape, exactly as `_phone_parsed` gives it.

    Parsing with phonenumbers costs tens of microseconds, more than all else a record needs. The
    common shapes (ASCII digits and `( ) . -` or spaces, with or without a leading `+`) need
    only its metadata: the calling code, then a length check. Anything that could take
    another branch of phonenumbers' parser (a national or international dialling prefix, a
    leading zero, letters, other characters, an impossible length) gives None: ask
    phonenumbers. Tests compare the two on generated numbers of every calling code.
    """
    if s[0] == "+":
        number = s[1:].translate(_PHONE_SEPARATORS)
        if len(number) < 3 or not number.isdigit() or not number.isascii() or number[0] == "0":
            return None
        for end in (1, 2, 3):
            code = number[:end]
            calling_code = _CALLING_CODES.get(code)
            if calling_code is not None:
                break
        else:
            return None
        national = number[end:]
    else:
        national = s.translate(_PHONE_SEPARATORS)
        if len(national) < 3 or not national.isdigit() or not national.isascii():
            return None
        code, international_prefix, prefix, general = _region_rules(region)
        if international_prefix is not None and international_prefix.match(national):
            return None
        if national.startswith(code):
            # The region's calling code written without "+" ("1 415 ..."): phonenumbers drops
            # it when the number only reads as a national number without it.
            rest = national[len(code) :]
            if general is None or general.fullmatch(national) or not general.fullmatch(rest):
                return None
            national = rest
        if prefix is not None and prefix.match(national):
            return None
        calling_code = _CALLING_CODES[code]
    # The calling code's own national prefix too: `_phone_parsed` re-reads such a number.
    prefix = _national_prefix_pattern(calling_code)
    if (
        not 2 <= len(national) <= _MAX_NATIONAL_LENGTH
        or national[0] == "0"
        or (prefix is not None and prefix.match(national))
        or not _possible(calling_code, national)
    ):
        return None
    return f"+{code}{national}"


def _phone_parsed(s: str, region: str) -> str | None:
    """E.164 as phonenumbers parses it, for any input it accepts; None when invalid."""
    try:
        number = _pn_parse(s, region)
        nsn = _pn_nsn(number)
        e164 = f"+{number.country_code}{nsn}"
        # Parsing an E.164 string strips a national prefix (or carrier code) when
        # the national number starts with one, so "+44 0…" or a Chinese number
        # with a carrier code can read differently once written in E.164.
        # Re-parse until stable so the result is a fixed point (normalising it
        # again gives it back). Rare: real national numbers do not start so.
        for _ in range(4):
            # phonenumbers.parse sets the country code of every number it returns.
            pattern = _national_prefix_pattern(cast(int, number.country_code))
            if pattern is None or pattern.match(nsn) is None:
                break
            number = _pn_parse(e164, None)
            nsn = _pn_nsn(number)
            again = f"+{number.country_code}{nsn}"
            if again == e164:
                break
            e164 = again
        else:
            return None
    except NumberParseException:
        return None
    # IS_POSSIBLE_LOCAL_ONLY (e.g. a US number without its area code) has no
    # usable E.164 form, so only a fully possible number is accepted.
    if _pn_possible(number) != _IS_POSSIBLE:
        return None
    return e164
