"""From a record to its identifier hashes: the per-record hot path of the target.

An :class:`IdentifierExtractor` is built once per stream (validating configuration and raising
:class:`ValueError` for bad settings) and then called once per record. A call never raises on
record content: a bad value becomes a rejection reason. Neither exceptions nor reasons ever
contain a raw identifier, and no raw identifier is cached between records.

A value that already is 64 hex characters is taken as a SHA-256 hash and passed through
lowercased; only the ``idfa_md5`` / ``aaid_md5`` fields hold MD5 hashes (32 hex characters,
passed through), anything else there is invalid. A pre-hashed value that hashes nothing (an
empty string, an opted-out device's all-zero id) is invalid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from target_tiktok_audiences.identifiers.email import EMAIL_NORMALIZATIONS, norm_email
from target_tiktok_audiences.identifiers.kinds import (
    FIELD_TYPES,
    ID_TYPES,
    MISSING,
    REASONS,
    SLOT_INDEX,
    SLOTS,
    STRIP,
    check_choice,
)
from target_tiktok_audiences.identifiers.maid import HEX32_RE, ZERO_UUID, norm_maid
from target_tiktok_audiences.identifiers.phone import (
    PHONE_FORMATS,
    PHONE_INT_LIMIT,
    check_region,
    norm_phone,
)

_HEX64_RE: Final = re.compile(r"[0-9a-fA-F]{64}")

# Pre-hashed values that cannot identify anyone: the hash of an empty string
# (a source that hashed a null) and, for device ids, the hash of the all-zeros
# id of a device that opted out of tracking.
_EMPTY_SHA256: Final = hashlib.sha256(b"").digest()
_EMPTY_MD5: Final = hashlib.md5(b"", usedforsecurity=False).digest()
_BAD_SHA256: Final = frozenset({_EMPTY_SHA256})
_BAD_MAID_SHA256: Final = frozenset({_EMPTY_SHA256, hashlib.sha256(ZERO_UUID.encode()).digest()})
_BAD_MAID_MD5: Final = frozenset(
    {_EMPTY_MD5, hashlib.md5(ZERO_UUID.encode(), usedforsecurity=False).digest()}
)

_sha256 = hashlib.sha256
_fromhex = bytes.fromhex

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
    unknown ``phone_format`` / ``email_normalization`` raises :class:`ValueError`. Each is
    given: their defaults are the settings' (``settings.normalization_options``).
    """

    phone_default_region: str
    phone_format: str
    email_normalization: str

    def __post_init__(self) -> None:
        """Validate and canonicalise the settings."""
        object.__setattr__(self, "phone_default_region", check_region(self.phone_default_region))
        check_choice("phone_format", self.phone_format, PHONE_FORMATS)
        check_choice("email_normalization", self.email_normalization, EMAIL_NORMALIZATIONS)


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
    slot = SLOT_INDEX[id_type]

    if id_type == "email":
        strip_local = options.email_normalization == "strip_local"

        def handle_email(value: Any, hashes: list[bytes | None]) -> int:
            """Hash one email value into the EMAIL_SHA256 slot."""
            if not isinstance(value, str):
                return _REJECTED
            s = value.strip(STRIP)
            if not s:
                return _ABSENT
            if len(s) == 64 and _HEX64_RE.fullmatch(s) is not None:
                return _keep_hashed(s, _BAD_SHA256, hashes, slot)
            norm = norm_email(s, strip_local)
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
                s = value.strip(STRIP)
                if not s:
                    return _ABSENT
                if len(s) == 64 and _HEX64_RE.fullmatch(s) is not None:
                    return _keep_hashed(s, _BAD_SHA256, hashes, slot)
            elif type(value) is int:  # not bool, not an int subclass
                if value < 0 or value >= PHONE_INT_LIMIT:
                    return _REJECTED
                s = str(value)
            else:
                return _REJECTED
            norm = norm_phone(s, region, digits)
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
            s = value.strip(STRIP)
            if not s:
                return _ABSENT
            if len(s) == 32 and HEX32_RE.fullmatch(s) is not None:
                return _keep_hashed(s, _BAD_MAID_MD5, hashes, slot)
            return _REJECTED

        return handle_maid_md5

    def handle_maid(value: Any, hashes: list[bytes | None]) -> int:
        """Hash one IDFA/AAID value (a UUID, hyphens optional) into its SHA256 slot.

        A 64-hex value is a SHA-256 hash already, kept as it is.
        """
        if not isinstance(value, str):
            return _REJECTED
        s = value.strip(STRIP)
        if not s:
            return _ABSENT
        n = len(s)
        if n == 64 and _HEX64_RE.fullmatch(s) is not None:
            return _keep_hashed(s, _BAD_MAID_SHA256, hashes, slot)
        if n == 36 or n == 32:
            norm = norm_maid(s)
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

    __slots__ = ("_plan",)

    def __init__(self, fields: Mapping[str, str | None], options: NormalizationOptions) -> None:
        if not isinstance(fields, Mapping):
            raise ValueError(
                "identifier_fields must be an object mapping identifier types to fields"
            )
        if not isinstance(options, NormalizationOptions):
            raise ValueError("options must be a NormalizationOptions")
        for id_type in fields:
            if id_type not in REASONS:
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
            plan.append((parts[0], parts[1:], _make_handler(id_type, options), REASONS[id_type]))
        if not plan:
            raise ValueError(
                "identifier_fields: no identifier type is mapped to a field; "
                f"map at least one of: {', '.join(ID_TYPES)}"
            )
        self._plan: tuple[tuple[str, tuple[str, ...], _Handler, str], ...] = tuple(plan)

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
