"""Turn a record's identifiers into the hashes TikTok expects.

Pure functions, no I/O, no logging. This is the hot path of the target: an
:class:`IdentifierExtractor` is built once per stream (validating configuration
and raising :class:`ValueError` for bad settings) and then called once per
record. A call never raises on record content: a bad value becomes a rejection
reason. Neither exceptions nor reasons ever contain a raw identifier, and no
raw identifier is cached between records.

Normalisation follows ``tiktok-api.md`` ("Normalising identifiers before
SHA-256"):

* email: trim, lowercase; optionally drop a ``+tag`` and dots in the local part;
* phone: E.164 via ``phonenumbers`` (``+`` form by default, digits-only option);
* IDFA / AAID: trim, lowercase, keep hyphens; UUID-shaped and not all zeros; a
  UUID written without hyphens (32 hex characters) has them restored first;
* a value that already is 64 hex characters is taken as a SHA-256 hash and
  passed through lowercased;
* only the ``idfa_md5`` / ``aaid_md5`` fields hold MD5 hashes (32 hex
  characters, passed through); anything else there is invalid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, ValidationResult

__all__ = [
    "DEFAULT_IDENTIFIER_FIELDS",
    "EMAIL_NORMALIZATIONS",
    "FIELD_TYPES",
    "ID_TYPES",
    "INVALID_AAID",
    "INVALID_EMAIL",
    "INVALID_IDFA",
    "INVALID_PHONE",
    "MISSING",
    "PHONE_FORMATS",
    "SLOTS",
    "IdentifierExtractor",
    "NormalizationOptions",
    "hashes_to_hex",
    "normalize_email",
    "normalize_maid",
    "normalize_phone",
    "sha256_hex",
]

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
PHONE_FORMATS: Final[tuple[str, ...]] = ("e164", "digits")
EMAIL_NORMALIZATIONS: Final[tuple[str, ...]] = ("standard", "strip_local")

MISSING: Final = "missing"
INVALID_EMAIL: Final = "invalid_email"
INVALID_PHONE: Final = "invalid_phone"
INVALID_IDFA: Final = "invalid_idfa"
INVALID_AAID: Final = "invalid_aaid"

_REASONS: Final[dict[str, str]] = {
    "email": INVALID_EMAIL,
    "phone": INVALID_PHONE,
    "idfa": INVALID_IDFA,
    "aaid": INVALID_AAID,
    "idfa_md5": INVALID_IDFA,
    "aaid_md5": INVALID_AAID,
}
# Index into SLOTS of the slot each field type fills.
_SLOT_INDEX: Final[dict[str, int]] = {
    "email": 0,
    "phone": 1,
    "idfa": 2,
    "idfa_md5": 3,
    "aaid": 4,
    "aaid_md5": 5,
}

MAX_EMAIL_LENGTH: Final = 320
MAX_PHONE_LENGTH: Final = 64
_MAX_NATIONAL_LENGTH: Final = 17  # phonenumbers' longest national significant number
# An int phone needs at most MAX_PHONE_LENGTH decimal digits; checked before str(),
# which would otherwise be slow (or raise) on a huge int.
_PHONE_INT_LIMIT: Final = 10**MAX_PHONE_LENGTH

# Every character for which str.isspace() is true (tests check this is complete),
# plus invisible format characters that often survive copy-and-paste.
_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_INVISIBLE: Final = "\u180e\u200b\u200c\u200d\u2060\ufeff"
_STRIP: Final = _WHITESPACE + _INVISIBLE

# Characters never allowed inside an email: "@" (handled separately), Unicode
# whitespace (\s), invisible format characters, C0 controls and DEL.
_NOT_EMAIL_CHAR: Final = r"@\s\x00-\x1f\x7f" + _INVISIBLE
_EMAIL_RE: Final = re.compile(
    rf"[^{_NOT_EMAIL_CHAR}]+@(?:[^.{_NOT_EMAIL_CHAR}]+\.)+[^.{_NOT_EMAIL_CHAR}]+"
)
_UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_HEX64_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_HEX32_RE: Final = re.compile(r"[0-9a-fA-F]{32}")
_ZERO_UUID: Final = "00000000-0000-0000-0000-000000000000"

# Pre-hashed values that cannot identify anyone: the hash of an empty string
# (a source that hashed a null) and, for device ids, the hash of the all-zeros
# id of a device that opted out of tracking.
_EMPTY_SHA256: Final = hashlib.sha256(b"").digest()
_EMPTY_MD5: Final = hashlib.md5(b"", usedforsecurity=False).digest()
_BAD_SHA256: Final = frozenset({_EMPTY_SHA256})
_BAD_MAID_SHA256: Final = frozenset({_EMPTY_SHA256, hashlib.sha256(_ZERO_UUID.encode()).digest()})
_BAD_MAID_MD5: Final = frozenset(
    {_EMPTY_MD5, hashlib.md5(_ZERO_UUID.encode(), usedforsecurity=False).digest()}
)

_REGIONS: Final[frozenset[str]] = frozenset(phonenumbers.SUPPORTED_REGIONS)

_sha256 = hashlib.sha256
_fromhex = bytes.fromhex
_pn_parse = phonenumbers.parse
_pn_possible = phonenumbers.is_possible_number_with_reason
_pn_nsn = phonenumbers.national_significant_number
_IS_POSSIBLE: Final = ValidationResult.IS_POSSIBLE

# Outcomes of reading one value.
_ABSENT: Final = 0
_OK: Final = 1
_REJECTED: Final = 2

_NO_HASHES: Final[tuple[bytes | None, ...]] = (None,) * len(SLOTS)
_MISSING_REASONS: Final[tuple[str, ...]] = (MISSING,)
_NO_REASONS: Final[tuple[str, ...]] = ()


@dataclass(frozen=True)
class NormalizationOptions:
    """How identifiers are normalised before hashing (validated on construction).

    ``phone_default_region`` is upper-cased and stripped; an unknown region or an
    unknown ``phone_format`` / ``email_normalization`` raises :class:`ValueError`.
    """

    phone_default_region: str = "US"
    phone_format: str = "e164"
    email_normalization: str = "standard"

    def __post_init__(self) -> None:
        """Validate and canonicalise the settings."""
        object.__setattr__(self, "phone_default_region", _check_region(self.phone_default_region))
        _check_choice("phone_format", self.phone_format, PHONE_FORMATS)
        _check_choice("email_normalization", self.email_normalization, EMAIL_NORMALIZATIONS)


def _check_region(region: object) -> str:
    """Return ``region`` canonicalised (``"gb"`` -> ``"GB"``) or raise ValueError."""
    if isinstance(region, str):
        canonical = region.strip().upper()
        if canonical in _REGIONS:
            return canonical
    raise ValueError(
        f"phone_default_region: {region!r} is not a region phonenumbers knows; "
        "use a two-letter ISO 3166-1 region code such as US, GB, DE or FR"
    )


def _check_choice(setting: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{setting}: {value!r} is not allowed; use one of: {', '.join(allowed)}")


# --------------------------------------------------------------------------- #
# Normalisers. The private ones take a string already stripped and non-empty.
# --------------------------------------------------------------------------- #


def _norm_email(s: str, strip_local: bool) -> str | None:
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


def _norm_phone(s: str, region: str, digits: bool) -> str | None:
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
    # Only regions `_check_region` let through get here, and each of those has metadata.
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


def _norm_maid(s: str) -> str | None:
    """Normalise a stripped, non-empty IDFA/AAID; None unless a non-zero UUID.

    A UUID without hyphens (32 hex characters) gets them back (8-4-4-4-12).
    """
    if len(s) == 32 and _HEX32_RE.fullmatch(s) is not None:
        s = f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"
    elif len(s) != 36 or _UUID_RE.fullmatch(s) is None:
        return None
    s = s.lower()
    return None if s == _ZERO_UUID else s


def normalize_email(value: str, mode: str = "standard") -> str | None:
    """Return the normalised email, or None when ``value`` is not a valid email.

    ``mode`` is ``"standard"`` (trim, lowercase) or ``"strip_local"`` (also drop
    everything from the first ``+`` and all dots in the local part). An unknown
    mode raises ValueError. A pre-hashed value is not an email (None).
    """
    _check_choice("email_normalization", mode, EMAIL_NORMALIZATIONS)
    if not isinstance(value, str):
        return None
    s = value.strip(_STRIP)
    return _norm_email(s, mode == "strip_local") if s else None


def normalize_phone(value: str, region: str = "US", fmt: str = "e164") -> str | None:
    """Return the phone in E.164 (``fmt="e164"``) or E.164 without ``+`` (``"digits"``).

    Numbers written without a country code are read in ``region``. None when
    ``phonenumbers`` cannot parse it or it is not a possible number. A bad
    ``region`` or ``fmt`` raises ValueError.
    """
    region = _check_region(region)
    _check_choice("phone_format", fmt, PHONE_FORMATS)
    if not isinstance(value, str):
        return None
    s = value.strip(_STRIP)
    return _norm_phone(s, region, fmt == "digits") if s else None


def normalize_maid(value: str) -> str | None:
    """Return the lowercased, hyphenated IDFA/AAID; None unless a UUID and not all zeros."""
    if not isinstance(value, str):
        return None
    s = value.strip(_STRIP)
    return _norm_maid(s) if s else None


def sha256_hex(value: str) -> str:
    """Return the lowercase hex SHA-256 of ``value`` encoded as UTF-8."""
    return hashlib.sha256(value.encode()).hexdigest()


def hashes_to_hex(hashes: Sequence[bytes | None]) -> dict[str, str]:
    """Return ``{slot: lowercase hex}`` for the non-None slots of ``hashes``."""
    return {slot: h.hex() for slot, h in zip(SLOTS, hashes, strict=False) if h is not None}


# --------------------------------------------------------------------------- #
# Per-type value handlers: (value, hashes) -> _ABSENT | _OK | _REJECTED.
# They write the digest into the hashes list in place.
# --------------------------------------------------------------------------- #

_Handler = Callable[[Any, list[bytes | None]], int]


def _keep_hashed(
    hex_digest: str, bad: frozenset[bytes], hashes: list[bytes | None], slot: int
) -> int:
    """Keep an already hashed value as it is (never hashed twice), unless it hashes nothing.

    Nothing means an empty string or an opted-out device's all-zero id.
    """
    digest = _fromhex(hex_digest)
    if digest in bad:
        return _REJECTED
    hashes[slot] = digest
    return _OK


def _make_handler(id_type: str, options: NormalizationOptions) -> _Handler:
    """Build the value handler for the field type ``id_type`` under ``options``."""
    slot = _SLOT_INDEX[id_type]

    if id_type == "email":
        strip_local = options.email_normalization == "strip_local"

        def handle_email(value: Any, hashes: list[bytes | None]) -> int:
            """Hash one email value into the EMAIL_SHA256 slot."""
            if not isinstance(value, str):
                return _REJECTED
            s = value.strip(_STRIP)
            if not s:
                return _ABSENT
            if len(s) == 64 and _HEX64_RE.fullmatch(s) is not None:
                return _keep_hashed(s, _BAD_SHA256, hashes, slot)
            norm = _norm_email(s, strip_local)
            if norm is None:
                return _REJECTED
            hashes[slot] = _sha256(norm.encode()).digest()
            return _OK

        return handle_email

    if id_type == "phone":
        region = options.phone_default_region
        digits = options.phone_format == "digits"

        def handle_phone(value: Any, hashes: list[bytes | None]) -> int:
            """Hash one phone value into the PHONE_SHA256 slot."""
            if isinstance(value, str):
                s = value.strip(_STRIP)
                if not s:
                    return _ABSENT
                if len(s) == 64 and _HEX64_RE.fullmatch(s) is not None:
                    return _keep_hashed(s, _BAD_SHA256, hashes, slot)
            elif type(value) is int:  # not bool, not an int subclass
                if value < 0 or value >= _PHONE_INT_LIMIT:
                    return _REJECTED
                s = str(value)
            else:
                return _REJECTED
            norm = _norm_phone(s, region, digits)
            if norm is None:
                return _REJECTED
            hashes[slot] = _sha256(norm.encode()).digest()
            return _OK

        return handle_phone

    if id_type.endswith("_md5"):

        def handle_maid_md5(value: Any, hashes: list[bytes | None]) -> int:
            """Keep one IDFA/AAID already hashed with MD5 in its MD5 slot."""
            if not isinstance(value, str):
                return _REJECTED
            s = value.strip(_STRIP)
            if not s:
                return _ABSENT
            if len(s) == 32 and _HEX32_RE.fullmatch(s) is not None:
                return _keep_hashed(s, _BAD_MAID_MD5, hashes, slot)
            return _REJECTED

        return handle_maid_md5

    def handle_maid(value: Any, hashes: list[bytes | None]) -> int:
        """Hash one IDFA/AAID value (a UUID, hyphens optional) into its SHA256 slot.

        A 64-hex value is a SHA-256 hash already, kept as it is.
        """
        if not isinstance(value, str):
            return _REJECTED
        s = value.strip(_STRIP)
        if not s:
            return _ABSENT
        n = len(s)
        if n == 64 and _HEX64_RE.fullmatch(s) is not None:
            return _keep_hashed(s, _BAD_MAID_SHA256, hashes, slot)
        if n == 36 or n == 32:
            norm = _norm_maid(s)
            if norm is not None:
                hashes[slot] = _sha256(norm.encode()).digest()
                return _OK
        return _REJECTED  # not a UUID, or the wrong length for one or a hash

    return handle_maid


def _parse_path(id_type: str, field: object) -> tuple[str, ...]:
    """Split a dotted field path, raising ValueError when it is malformed."""
    if not isinstance(field, str) or not field:
        raise ValueError(
            f"identifier_fields: the field for {id_type!r} must be a non-empty string "
            "(a dotted path for nested objects) or null"
        )
    parts = tuple(field.split("."))
    if not all(parts):
        raise ValueError(
            f"identifier_fields: the field {field!r} for {id_type!r} has an empty path segment"
        )
    return parts


class IdentifierExtractor:
    """Built once per stream from the identifier_fields mapping and options; called per record.

    ``fields`` maps a field type (one of :data:`FIELD_TYPES`) to a record field,
    a dotted path walking nested objects; a type mapped to None, or left out, is
    not read (merging with :data:`DEFAULT_IDENTIFIER_FIELDS` is the caller's job).
    Construction raises ValueError for an unknown type, a malformed field or a
    mapping that reads no field at all.
    """

    __slots__ = ("_fields_used", "_plan")

    def __init__(self, fields: Mapping[str, str | None], options: NormalizationOptions) -> None:
        if not isinstance(fields, Mapping):
            raise ValueError(
                "identifier_fields must be an object mapping identifier types to fields"
            )
        if not isinstance(options, NormalizationOptions):
            raise ValueError("options must be a NormalizationOptions")
        for id_type in fields:
            if id_type not in _REASONS:
                raise ValueError(
                    f"identifier_fields: unknown identifier type {id_type!r}; "
                    f"allowed: {', '.join(FIELD_TYPES)}"
                )
        plan: list[tuple[str, tuple[str, ...], _Handler, str]] = []
        for id_type in FIELD_TYPES:  # fixed order, so reasons come in a stable order
            field = fields.get(id_type)
            if field is None:
                continue
            parts = _parse_path(id_type, field)
            plan.append((parts[0], parts[1:], _make_handler(id_type, options), _REASONS[id_type]))
        if not plan:
            raise ValueError(
                "identifier_fields: no identifier type is mapped to a field; "
                f"map at least one of: {', '.join(ID_TYPES)}"
            )
        self._plan: tuple[tuple[str, tuple[str, ...], _Handler, str], ...] = tuple(plan)
        self._fields_used: frozenset[str] = frozenset(entry[0] for entry in plan)

    @property
    def fields_used(self) -> frozenset[str]:
        """Top-level record keys this extractor reads (for schema warnings)."""
        return self._fields_used

    def values(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        """The raw value of each mapped field (None where absent), in a fixed order.

        Cheap: no normalising, no hashing. Split from :meth:`hash_values` so the costly half
        can run in worker processes while the reader goes on.
        """
        if not isinstance(record, dict) and not isinstance(record, Mapping):
            return (None,) * len(self._plan)
        out: list[Any] = []
        for key, rest, _, _ in self._plan:
            value = record.get(key)
            for part in rest:
                if isinstance(value, (dict, Mapping)):
                    value = value.get(part)
                else:
                    value = None
                    break
            out.append(value)
        return tuple(out)

    def hash_values(
        self, values: Sequence[Any]
    ) -> tuple[tuple[bytes | None, ...], tuple[str, ...]]:
        """Normalise and hash what :meth:`values` read; see :meth:`__call__`."""
        hashes: list[bytes | None] = [None, None, None, None, None, None]
        present = False
        reasons: list[str] | None = None
        for value, (_, _, handle, reason) in zip(values, self._plan, strict=True):
            if value is None:
                continue
            outcome = handle(value, hashes)
            if outcome == _OK:
                present = True
            elif outcome == _REJECTED:
                present = True
                if reasons is None:
                    reasons = [reason]
                else:
                    reasons.append(reason)
        if not present:
            return _NO_HASHES, _MISSING_REASONS
        return tuple(hashes), (_NO_REASONS if reasons is None else tuple(reasons))

    def __call__(
        self, record: Mapping[str, Any]
    ) -> tuple[tuple[bytes | None, ...], tuple[str, ...]]:
        """Return (hashes aligned with SLOTS, reasons for each present-but-rejected value).

        When the record has no present value at all, hashes are all None and the
        reasons are ``("missing",)``. Never raises on record content.
        """
        return self.hash_values(self.values(record))
