"""Turn a record's identifiers into the hashes TikTok expects.

Pure functions, no I/O, no logging; worker processes import this package, so it imports
nothing of the target but itself, ``phonenumbers`` and the standard library. Neither
exceptions nor rejection reasons ever contain a raw identifier.

Normalisation follows ``tiktok-api.md`` ("Normalising identifiers before SHA-256"), one module
per kind of identifier:

* ``email``: trim, lowercase; optionally drop a ``+tag`` and dots in the local part;
* ``phone``: E.164 via ``phonenumbers`` (``+`` form by default, digits-only option), most
  numbers through a fast path that gives exactly what the parser gives;
* ``maid`` (IDFA / AAID): trim, lowercase, keep hyphens; UUID-shaped and not all zeros; a
  UUID written without hyphens (32 hex characters) has them restored first;
* ``extraction``: a record's fields read, normalised and hashed into :data:`SLOTS` order,
  pre-hashed values passed through, the reason for every value refused;
* ``kinds``: the identifier types, their slots and their rejection reasons.

This module is the package's face: the names the rest of the target uses.
"""

from target_tiktok_audiences.identifiers.email import EMAIL_NORMALIZATIONS
from target_tiktok_audiences.identifiers.extraction import (
    IdentifierExtractor,
    NormalizationOptions,
)
from target_tiktok_audiences.identifiers.kinds import (
    DEFAULT_IDENTIFIER_FIELDS,
    FIELD_TYPES,
    SLOTS,
)
from target_tiktok_audiences.identifiers.phone import PHONE_FORMATS

__all__ = [
    "DEFAULT_IDENTIFIER_FIELDS",
    "EMAIL_NORMALIZATIONS",
    "FIELD_TYPES",
    "PHONE_FORMATS",
    "SLOTS",
    "IdentifierExtractor",
    "NormalizationOptions",
]
