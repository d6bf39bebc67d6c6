"""Unit and property tests for the target_tiktok_audiences.identifiers package."""

from __future__ import annotations

import hashlib
import math
import sys
from collections import UserDict
from dataclasses import replace
from decimal import Decimal
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    SLOTS,
    IdentifierExtractor,
    NormalizationOptions,
)
from target_tiktok_audiences.identifiers.email import norm_email
from target_tiktok_audiences.identifiers.extraction import (
    _BAD_MAID_SHA256,
    hashes_to_hex,
)
from target_tiktok_audiences.identifiers.kinds import (
    ID_TYPES,
    INVALID_AAID,
    INVALID_EMAIL,
    INVALID_IDFA,
    INVALID_PHONE,
    MISSING,
    REASONS,
    STRIP,
)
from target_tiktok_audiences.identifiers.maid import norm_maid
from target_tiktok_audiences.identifiers.phone import norm_phone
from target_tiktok_audiences.settings import normalization_options
from tests.conftest import sha

# Vectors from tiktok-api.md, "Normalising identifiers before SHA-256".
EMAIL_VECTOR = "janedoe@gmail.com"
EMAIL_HASH = "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"
PHONE_VECTOR = "+37493828222"
PHONE_DIGITS_HASH = "65b7e6dcf6f4310f8d7cbfbd78289a753062fb054d6664fb9aaac5df66a422d4"
PHONE_E164_HASH = hashlib.sha256(b"+37493828222").hexdigest()
MAID_VECTOR = "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"
MAID_HASH = "83dc3f5f32b9472613b0f038d36f22585a609d018af6f6067f50da318bf354bd"
ZERO_MAID = "00000000-0000-0000-0000-000000000000"

SLOT = {name: i for i, name in enumerate(SLOTS)}


# The settings' defaults, as a config that sets none of them gives them.
DEFAULT_OPTIONS = normalization_options({})


def extractor(fields=None, **options):
    """The extractor of `fields` (the default ones), normalising as the settings `options` say."""
    return IdentifierExtractor(
        DEFAULT_IDENTIFIER_FIELDS if fields is None else fields, normalization_options(options)
    )


def run(record, fields=None, **options):
    """Return ({slot: hex}, reasons) for one record."""
    hashes, reasons = extractor(fields, **options)(record)
    return hashes_to_hex(hashes), reasons


def normalized(kind: str, value: Any, **options: str) -> str | None:
    """The text the extractor hashes for `value` in a field of `kind` (None: it hashes none).

    `options`: normalisation settings by name. The text is what the extractor's own
    normalising function makes of the trimmed value; the extractor's hash is checked to be its.
    """
    settings = normalization_options(options)
    s = value.strip(STRIP) if isinstance(value, str) else ""
    text = None
    if s and kind == "email":
        text = norm_email(s, settings.email_normalization == "strip_local")
    elif s and kind == "phone":
        digits = settings.phone_format == "digits"
        text = norm_phone(s, settings.phone_default_region, digits)
    elif s:
        text = norm_maid(s)
    hashes, _ = IdentifierExtractor({kind: "value"}, settings)({"value": value})
    digest = hashes[SLOT[f"{kind.upper()}_SHA256"]]
    if text is not None:
        assert digest == hashlib.sha256(text.encode()).digest()
    elif len(s) != 64:  # a 64-hex value is a SHA-256 already, kept as it is
        assert digest is None
    return text


# --------------------------------------------------------------------------- #
# Public constants
# --------------------------------------------------------------------------- #


def test_public_constants():
    assert SLOTS == (
        "EMAIL_SHA256",
        "PHONE_SHA256",
        "IDFA_SHA256",
        "IDFA_MD5",
        "AAID_SHA256",
        "AAID_MD5",
    )
    assert ID_TYPES == ("email", "phone", "idfa", "aaid")
    assert dict(DEFAULT_IDENTIFIER_FIELDS) == {t: t for t in ID_TYPES}
    assert (MISSING, INVALID_EMAIL, INVALID_PHONE, INVALID_IDFA, INVALID_AAID) == (
        "missing",
        "invalid_email",
        "invalid_phone",
        "invalid_idfa",
        "invalid_aaid",
    )


def test_strip_set_covers_every_unicode_whitespace_character():
    spaces = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert spaces <= set(STRIP)


# --------------------------------------------------------------------------- #
# Vectors
# --------------------------------------------------------------------------- #


def test_email_vector():
    assert normalized("email", EMAIL_VECTOR) == EMAIL_VECTOR
    assert sha(EMAIL_VECTOR) == EMAIL_HASH
    assert run({"email": EMAIL_VECTOR}) == ({"EMAIL_SHA256": EMAIL_HASH}, ())
    assert run({"email": "  JaneDoe@Gmail.com "}) == ({"EMAIL_SHA256": EMAIL_HASH}, ())


def test_phone_vector_digits_and_e164():
    assert normalized("phone", PHONE_VECTOR, phone_format="digits") == "37493828222"
    assert normalized("phone", PHONE_VECTOR) == "+37493828222"
    assert sha("37493828222") == PHONE_DIGITS_HASH
    assert run({"phone": PHONE_VECTOR}, phone_format="digits") == (
        {"PHONE_SHA256": PHONE_DIGITS_HASH},
        (),
    )
    assert run({"phone": PHONE_VECTOR}) == ({"PHONE_SHA256": PHONE_E164_HASH}, ())
    assert PHONE_E164_HASH != PHONE_DIGITS_HASH


@pytest.mark.parametrize("value", [MAID_VECTOR, MAID_VECTOR.upper(), f"\t{MAID_VECTOR.upper()} \n"])
@pytest.mark.parametrize("id_type", ["idfa", "aaid"])
def test_maid_vector(value, id_type):
    assert normalized("idfa", value) == MAID_VECTOR
    assert run({id_type: value}) == ({f"{id_type.upper()}_SHA256": MAID_HASH}, ())


def test_hashes_to_hex():
    digest = bytes(range(32))
    assert hashes_to_hex((digest, None, None, b"\xab" * 16, None, None)) == {
        "EMAIL_SHA256": digest.hex(),
        "IDFA_MD5": "ab" * 16,
    }
    assert hashes_to_hex((None,) * 6) == {}


def test_full_record_all_slots_are_raw_bytes():
    hashes, reasons = extractor()(
        {"email": EMAIL_VECTOR, "phone": PHONE_VECTOR, "idfa": MAID_VECTOR, "aaid": MAID_VECTOR}
    )
    assert reasons == ()
    assert len(hashes) == len(SLOTS)
    assert hashes[SLOT["EMAIL_SHA256"]] == bytes.fromhex(EMAIL_HASH)
    assert hashes[SLOT["PHONE_SHA256"]] == bytes.fromhex(PHONE_E164_HASH)
    assert hashes[SLOT["IDFA_SHA256"]] == bytes.fromhex(MAID_HASH)
    assert hashes[SLOT["AAID_SHA256"]] == bytes.fromhex(MAID_HASH)
    assert hashes[SLOT["IDFA_MD5"]] is None
    assert hashes[SLOT["AAID_MD5"]] is None


# --------------------------------------------------------------------------- #
# Email
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "value",
    [
        "JANEDOE@GMAIL.COM",
        " janedoe@gmail.com",
        "janedoe@gmail.com\n",
        "\tJaneDoe@gmail.Com\r\n",
        "\u00a0janedoe@gmail.com\u3000",  # no-break space, ideographic space
        "\u2003janedoe@gmail.com\u2029",  # em space, paragraph separator
        "\ufeffjanedoe@gmail.com\u200b",  # BOM, zero-width space
    ],
)
def test_email_whitespace_and_case(value):
    assert normalized("email", value) == EMAIL_VECTOR
    assert run({"email": value}) == ({"EMAIL_SHA256": EMAIL_HASH}, ())


def test_email_non_ascii_is_lowercased_and_hashed_as_utf8():
    assert normalized("email", " ÉLODIE@Exemple.FR ") == "élodie@exemple.fr"
    hashes, _ = extractor()({"email": "ÉLODIE@Exemple.FR"})
    assert hashes[0] == hashlib.sha256("élodie@exemple.fr".encode()).digest()


@pytest.mark.parametrize(
    ("value", "standard", "strip_local"),
    [
        ("Jane.Doe+news@Gmail.com", "jane.doe+news@gmail.com", "janedoe@gmail.com"),
        ("jane.doe@gmail.com", "jane.doe@gmail.com", "janedoe@gmail.com"),
        ("jane+a+b@x.io", "jane+a+b@x.io", "jane@x.io"),
        ("j.a.n.e@sub.example.co.uk", "j.a.n.e@sub.example.co.uk", "jane@sub.example.co.uk"),
        ("+tag@x.io", "+tag@x.io", None),  # local part empty after stripping
        ("...@x.io", "...@x.io", None),
        ("jane@my.domain.com", "jane@my.domain.com", "jane@my.domain.com"),  # domain dots kept
    ],
)
def test_email_strip_local_vs_standard(value, standard, strip_local):
    assert normalized("email", value) == standard
    assert normalized("email", value, email_normalization="standard") == standard
    assert normalized("email", value, email_normalization="strip_local") == strip_local


def test_email_strip_local_in_extractor():
    strip = extractor(email_normalization="strip_local")
    std = extractor()
    assert hashes_to_hex(strip({"email": "Jane.Doe+x@gmail.com"})[0]) == {
        "EMAIL_SHA256": EMAIL_HASH
    }
    assert hashes_to_hex(std({"email": "Jane.Doe+x@gmail.com"})[0]) == {
        "EMAIL_SHA256": sha("jane.doe+x@gmail.com")
    }
    assert strip({"email": "+x@gmail.com"}) == ((None,) * 6, (INVALID_EMAIL,))


@pytest.mark.parametrize(
    "value",
    [
        "a@b@c.com",  # two @
        "janedoe@gmail",  # no dot in domain
        "@gmail.com",  # empty local part
        "janedoe@",  # empty domain
        "janedoe",  # no @
        "a@b..com",  # empty label
        "a@.b.com",  # leading dot
        "a@b.com.",  # trailing dot
        "a@.",
        "jane doe@gmail.com",  # space inside
        "jane@gm ail.com",
        "jane\u00a0doe@gmail.com",  # Unicode whitespace inside
        "jane\u200bdoe@gmail.com",  # zero-width space inside
        "jane\tdoe@gmail.com",
        "jane\x00doe@gmail.com",  # control character
        "a\ud800@b.com",  # lone surrogate: not encodable as UTF-8
        "0123456789abcdef0123456789abcdef",  # 32 hex is not a pre-hashed email
    ],
)
def test_invalid_emails(value):
    assert normalized("email", value) is None
    assert run({"email": value}) == ({}, (INVALID_EMAIL,))


def test_email_length_limit():
    ok = "a" * 300 + "@example.com"  # 312 characters
    assert normalized("email", ok) == ok
    too_long = "a" * 309 + "@example.com"  # 321 characters
    assert normalized("email", too_long) is None
    assert run({"email": too_long}) == ({}, (INVALID_EMAIL,))
    assert run({"email": "a@" + "b." * 500_000 + "com"}) == ({}, (INVALID_EMAIL,))
    # Padding whitespace does not count towards the limit.
    assert normalized("email", " " * 1000 + ok + " " * 1000) == ok


def test_email_lowercase_that_grows_past_limit_is_rejected():
    # "İ".lower() is two code points; the normalised result must still be valid input.
    value = "İ" * 160 + "@x.io"  # 165 characters, 325 once lowercased
    assert len(value) <= 320
    assert normalized("email", value) is None


def test_email_non_strings_and_blanks_are_not_hashed():
    assert normalized("email", None) is None
    assert normalized("email", 12) is None
    assert normalized("email", "   ") is None


# --------------------------------------------------------------------------- #
# Phone
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("value", "region", "e164"),
    [
        ("(415) 555-0100", "US", "+14155550100"),
        ("415.555.0100", "US", "+14155550100"),
        ("1 415 555 0100", "US", "+14155550100"),
        ("4155550100", "CA", "+14155550100"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("020 7946 0958", "gb", "+442079460958"),  # region is case-insensitive
        ("030 1234567", "DE", "+49301234567"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("06 1234 5678", "IT", "+390612345678"),  # Italian leading zero kept
        ("0412 345 678", "AU", "+61412345678"),
        ("090-1234-5678", "JP", "+819012345678"),
        ("093828222", "AM", "+37493828222"),
        ("\u00a0(415) 555-0100\u2003", "US", "+14155550100"),
        ("415-555-0100 ext. 12", "US", "+14155550100"),  # extension dropped
        ("1-800-FLOWERS", "US", "+18003569377"),
        ("tel:+1-415-555-0100", "US", "+14155550100"),
    ],
)
def test_national_phones(value, region, e164):
    assert normalized("phone", value, phone_default_region=region) == e164
    assert (
        normalized("phone", value, phone_default_region=region, phone_format="digits") == e164[1:]
    )
    assert run({"phone": value}, phone_default_region=region) == (
        {"PHONE_SHA256": sha(e164)},
        (),
    )


@pytest.mark.parametrize(
    ("value", "e164"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("+44 (0)20 7946 0958", "+442079460958"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+39 06 1234 5678", "+390612345678"),
        (PHONE_VECTOR, PHONE_VECTOR),
    ],
)
@pytest.mark.parametrize("region", ["US", "GB", "DE", "JP", "AM"])
def test_international_phones_ignore_default_region(value, e164, region):
    assert normalized("phone", value, phone_default_region=region) == e164


@pytest.mark.parametrize(
    ("value", "region", "e164"),
    [
        ("0044 20 7946 0958", "GB", "+442079460958"),  # IDD 00
        ("0044 20 7946 0958", "DE", "+442079460958"),
        ("011 44 20 7946 0958", "US", "+442079460958"),  # IDD 011
    ],
)
def test_international_dialling_prefix(value, region, e164):
    assert normalized("phone", value, phone_default_region=region) == e164


def test_phone_digits_vs_e164_in_extractor():
    record = {"phone": "(415) 555-0100"}
    assert run(record) == ({"PHONE_SHA256": sha("+14155550100")}, ())
    assert run(record, phone_format="digits") == ({"PHONE_SHA256": sha("14155550100")}, ())


@pytest.mark.parametrize(
    ("value", "region", "e164"),
    [
        (14155550100, "US", "+14155550100"),
        (4155550100, "US", "+14155550100"),
        (442079460958, "GB", "+442079460958"),
        (37493828222, "AM", "+37493828222"),
    ],
)
def test_int_phone(value, region, e164):
    assert run({"phone": value}, phone_default_region=region) == (
        {"PHONE_SHA256": sha(e164)},
        (),
    )


@pytest.mark.parametrize(
    "value", [0, -4155550100, 12, 10**64, pytest.param(10**5000, id="10**5000")]
)
def test_bad_int_phone(value):
    assert run({"phone": value}) == ({}, (INVALID_PHONE,))


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("12", "US"),  # too short
        ("555-0100", "US"),  # local only: no area code, no usable E.164
        ("7946 0958", "GB"),
        ("+1 415 555 0100 1234", "US"),  # too long
        ("0044 20 7946 0958", "US"),  # 00 is not the US international prefix
        ("abc", "US"),
        ("janedoe@gmail.com", "US"),
        ("+999 1234", "US"),  # unknown country code
        ("+", "US"),
        ("()-", "US"),
        ("1" * 65, "US"),  # over 64 characters
    ],
)
def test_invalid_phones(value, region):
    assert normalized("phone", value, phone_default_region=region) is None
    assert run({"phone": value}, phone_default_region=region) == ({}, (INVALID_PHONE,))


def test_phone_length_limit():
    padded = " " * 100 + "(415) 555-0100" + " " * 100
    assert normalized("phone", padded) == "+14155550100"
    long_but_padded = "+1 415 555 0100" + " " * 50  # spaces inside would count
    assert normalized("phone", long_but_padded) == "+14155550100"
    assert normalized("phone", "+1 " + "-" * 70 + " 415 555 0100") is None


@pytest.mark.parametrize(
    ("value", "region"),
    [("00029442722", "GB"), ("0112170556076", "CN"), ("+61001024", "CC"), ("+3109644928", "NL")],
)
def test_national_prefix_after_country_code_gives_a_fixed_point(value, region):
    # phonenumbers strips a national prefix (or carrier code) when re-reading an
    # E.164 string, so the normaliser re-parses until the result is stable.
    once = normalized("phone", value, phone_default_region=region)
    assert once is not None
    assert normalized("phone", once, phone_default_region=region) == once
    assert normalized("phone", once, phone_default_region="US") == once


def test_phone_non_strings_and_blanks_are_not_hashed():
    assert normalized("phone", None) is None
    assert normalized("phone", 4155.0) is None
    assert normalized("phone", " ") is None


# --------------------------------------------------------------------------- #
# Mobile advertising ids
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("id_type", ["idfa", "aaid"])
@pytest.mark.parametrize(
    "value",
    [
        ZERO_MAID,  # opted-out device
        f" {ZERO_MAID} ",
        "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b2",  # one digit short
        "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25a",
        "5f3a2b189c4d-4e7f-b8e2-17d3a1e69b25-",  # hyphens misplaced
        "5f3a2b18_9c4d_4e7f_b8e2_17d3a1e69b25",
        "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69g25",  # non-hex
        "{5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25}",
        "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b2\u0665",  # Arabic-Indic digit
        "5f3a2b189c4d4e7fb8e217d3a1e69b",  # 30 hex
        "not a device id",
        "x" * 65,
    ],
)
def test_invalid_maids(value, id_type):
    assert normalized("idfa", value) is None
    reason = INVALID_IDFA if id_type == "idfa" else INVALID_AAID
    assert run({id_type: value}) == ({}, (reason,))


def test_maid_non_strings_are_not_hashed():
    assert normalized("idfa", None) is None
    assert normalized("idfa", 5) is None


# --------------------------------------------------------------------------- #
# Pre-hashed values
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("id_type", "slot"),
    [
        ("email", "EMAIL_SHA256"),
        ("phone", "PHONE_SHA256"),
        ("idfa", "IDFA_SHA256"),
        ("aaid", "AAID_SHA256"),
    ],
)
def test_prehashed_sha256_passes_through_lowercased(id_type, slot):
    digest = hashlib.sha256(b"someone").hexdigest()
    hashes, reasons = extractor()({id_type: "  " + digest.upper() + "\n"})
    assert reasons == ()
    assert hashes_to_hex(hashes) == {slot: digest}
    assert hashes[SLOT[slot]] == bytes.fromhex(digest)
    # Not hashed twice.
    assert hashes[SLOT[slot]] != hashlib.sha256(digest.encode()).digest()


MD5_FIELDS = {"idfa_md5": "idfa_md5", "aaid_md5": "aaid_md5"}


@pytest.mark.parametrize(("id_type", "slot"), [("idfa", "IDFA_SHA256"), ("aaid", "AAID_SHA256")])
def test_32_hex_maid_is_a_uuid_without_hyphens(id_type, slot):
    """Hyphens restored (8-4-4-4-12), then hashed like the UUID: never taken as an MD5."""
    bare = MAID_VECTOR.replace("-", "").upper()
    assert run({id_type: f" {bare}\t"}) == ({slot: MAID_HASH}, ())
    assert run({id_type: bare}) == run({id_type: MAID_VECTOR})
    assert normalized("idfa", bare) == MAID_VECTOR


@pytest.mark.parametrize("id_type", ["idfa", "aaid"])
def test_32_zeros_is_an_opted_out_device(id_type):
    assert run({id_type: "0" * 32}) == ({}, (REASONS[id_type],))


@pytest.mark.parametrize(
    ("field", "slot", "reason"),
    [("idfa_md5", "IDFA_MD5", INVALID_IDFA), ("aaid_md5", "AAID_MD5", INVALID_AAID)],
)
def test_md5_fields_take_32_hex_only(field, slot, reason):
    md5 = hashlib.md5(MAID_VECTOR.encode(), usedforsecurity=False).hexdigest()
    hashes, reasons = extractor(MD5_FIELDS)({field: md5.upper()})
    assert reasons == ()
    assert hashes_to_hex(hashes) == {slot: md5}
    assert len(hashes[SLOT[slot]]) == 16
    for other in (MAID_VECTOR, hashlib.sha256(b"x").hexdigest(), md5[:-1], 42):
        assert run({field: other}, MD5_FIELDS) == ({}, (reason,))
    assert run({field: "  "}, MD5_FIELDS) == ({}, ("missing",))


def test_md5_fields_are_not_read_by_default():
    md5 = hashlib.md5(MAID_VECTOR.encode(), usedforsecurity=False).hexdigest()
    assert run({"idfa_md5": md5}) == ({}, ("missing",))


def test_a_device_id_and_its_md5_fill_both_slots():
    md5 = hashlib.md5(MAID_VECTOR.encode(), usedforsecurity=False).hexdigest()
    fields = {"idfa": "idfa", "idfa_md5": "idfa_md5"}
    assert run({"idfa": MAID_VECTOR, "idfa_md5": md5}, fields) == (
        {"IDFA_SHA256": MAID_HASH, "IDFA_MD5": md5},
        (),
    )


@pytest.mark.parametrize(
    ("id_type", "reason"), [("email", INVALID_EMAIL), ("phone", INVALID_PHONE)]
)
def test_32_hex_email_or_phone_is_invalid(id_type, reason):
    value = hashlib.md5(b"x", usedforsecurity=False).hexdigest()
    assert run({id_type: value}) == ({}, (reason,))


@pytest.mark.parametrize(
    ("id_type", "value"),
    [
        ("email", hashlib.sha256(b"").hexdigest()),
        ("phone", hashlib.sha256(b"").hexdigest().upper()),
        ("idfa", hashlib.sha256(b"").hexdigest()),
        ("aaid_md5", hashlib.md5(b"", usedforsecurity=False).hexdigest()),
        ("idfa", hashlib.sha256(ZERO_MAID.encode()).hexdigest()),
        ("idfa_md5", hashlib.md5(ZERO_MAID.encode(), usedforsecurity=False).hexdigest()),
    ],
)
def test_prehashed_empty_or_opted_out_values_are_rejected(id_type, value):
    hashes, reasons = extractor(MD5_FIELDS if id_type.endswith("_md5") else None)({id_type: value})
    assert hashes == (None,) * 6
    assert reasons == (REASONS[id_type],)


def test_63_and_65_hex_are_not_prehashed():
    assert run({"email": "a" * 63}) == ({}, (INVALID_EMAIL,))
    assert run({"idfa": "a" * 65}) == ({}, (INVALID_IDFA,))


# --------------------------------------------------------------------------- #
# Record handling
# --------------------------------------------------------------------------- #


def test_dotted_paths_walk_nested_dicts():
    fields = {"email": "contact.email", "phone": "contact.phones.mobile", "idfa": "device.idfa"}
    record = {
        "contact": {"email": EMAIL_VECTOR, "phones": {"mobile": PHONE_VECTOR}},
        "device": {"idfa": MAID_VECTOR},
        "email": "ignored@example.com",
    }
    assert run(record, fields) == (
        {"EMAIL_SHA256": EMAIL_HASH, "PHONE_SHA256": PHONE_E164_HASH, "IDFA_SHA256": MAID_HASH},
        (),
    )


def test_dotted_path_through_non_mapping_is_absent():
    fields = {"email": "contact.email", "phone": "phone"}
    ex = extractor(fields)
    for contact in ["jane@x.io", 5, None, True, 1.5, [{"email": EMAIL_VECTOR}], []]:
        assert ex({"contact": contact}) == ((None,) * 6, (MISSING,))
    # A mapping that is not a dict is walked too.
    assert hashes_to_hex(ex({"contact": UserDict(email=EMAIL_VECTOR)})[0]) == {
        "EMAIL_SHA256": EMAIL_HASH
    }
    # The literal dotted key is not read.
    assert ex({"contact.email": EMAIL_VECTOR}) == ((None,) * 6, (MISSING,))


def test_type_mapped_to_none_is_not_read():
    fields = {"email": "email", "phone": None, "idfa": None, "aaid": None}
    ex = extractor(fields)
    record = {"email": EMAIL_VECTOR, "phone": "garbage", "idfa": "garbage"}
    assert hashes_to_hex(ex(record)[0]) == {"EMAIL_SHA256": EMAIL_HASH}
    assert ex(record)[1] == ()
    assert ex({"phone": PHONE_VECTOR}) == ((None,) * 6, (MISSING,))


def test_type_left_out_of_mapping_is_not_read():
    ex = extractor({"phone": "tel"})
    assert ex({"email": EMAIL_VECTOR, "tel": PHONE_VECTOR})[0][SLOT["EMAIL_SHA256"]] is None


def test_default_fields_are_named_after_their_types():
    record = {
        "email": EMAIL_VECTOR,
        "phone": PHONE_VECTOR,
        "idfa": MAID_VECTOR,
        "aaid": MAID_VECTOR,
    }
    assert set(run(record)[0]) == {"EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256"}
    assert run({f"{name}_": value for name, value in record.items()}) == ({}, (MISSING,))


def test_one_valid_one_invalid_keeps_valid_and_reports():
    hashes, reasons = extractor()({"email": "not-an-email", "phone": "(415) 555-0100"})
    assert hashes_to_hex(hashes) == {"PHONE_SHA256": sha("+14155550100")}
    assert reasons == (INVALID_EMAIL,)


def test_every_value_rejected_reports_each_reason_in_type_order():
    fields = {"aaid": "a", "phone": "p", "email": "e", "idfa": "i"}  # order of config irrelevant
    hashes, reasons = extractor(fields)({"a": "x", "p": "x", "e": "x", "i": "x"})
    assert hashes == (None,) * 6
    assert reasons == (INVALID_EMAIL, INVALID_PHONE, INVALID_IDFA, INVALID_AAID)


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"other": EMAIL_VECTOR},
        {"email": None, "phone": None, "idfa": None, "aaid": None},
        {"email": "", "phone": "   ", "idfa": "\t\n", "aaid": "\u00a0\u200b"},
    ],
)
def test_missing_when_nothing_present(record):
    assert extractor()(record) == ((None,) * 6, (MISSING,))


def test_absent_values_are_not_rejections():
    hashes, reasons = extractor()({"email": EMAIL_VECTOR, "phone": "", "idfa": None})
    assert reasons == ()
    assert hashes_to_hex(hashes) == {"EMAIL_SHA256": EMAIL_HASH}


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        1.5,
        4155550100.0,
        float("nan"),
        float("inf"),
        Decimal("4155550100"),
        {},
        [],
        {"a": 1},
        ["x"],
        b"bytes",
    ],
)
@pytest.mark.parametrize("id_type", ID_TYPES)
def test_non_string_values_are_rejected(value, id_type):
    assert run({id_type: value}) == ({}, (REASONS[id_type],))


@pytest.mark.parametrize("id_type", ["email", "idfa", "aaid"])
def test_int_is_rejected_except_for_phone(id_type):
    assert run({id_type: 4155550100}) == ({}, (REASONS[id_type],))


def test_str_subclass_is_accepted():
    class Str(str):
        pass

    assert run({"email": Str(EMAIL_VECTOR)}) == ({"EMAIL_SHA256": EMAIL_HASH}, ())


@pytest.mark.parametrize("record", [None, [], "email", 5])
def test_non_mapping_record_is_missing(record):
    assert extractor()(record) == ((None,) * 6, (MISSING,))


@pytest.mark.parametrize(
    ("id_type", "size"), [("email", 10_000), ("phone", 10_000), ("idfa", 10_000), ("aaid", 10**6)]
)
def test_absurdly_long_values(id_type, size):
    assert run({id_type: "1" * size}) == ({}, (REASONS[id_type],))


def test_reasons_never_contain_the_value():
    record = {"email": "secret@nowhere", "phone": "secret-555", "idfa": "secret", "aaid": "secret"}
    hashes, reasons = extractor()(record)
    assert hashes == (None,) * 6
    assert reasons == (INVALID_EMAIL, INVALID_PHONE, INVALID_IDFA, INVALID_AAID)


# --------------------------------------------------------------------------- #
# Configuration errors
# --------------------------------------------------------------------------- #


def test_unknown_identifier_type():
    with pytest.raises(ValueError, match=r"'mail'.*email, phone, idfa, aaid") as err:
        extractor({"mail": "email"})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "fields", [{"email": ""}, {"email": "a..b"}, {"email": ".email"}, {"email": 5}]
)
def test_malformed_field_path(fields):
    with pytest.raises(ValueError, match="identifier_fields"):
        extractor(fields)


@pytest.mark.parametrize("fields", [{}, {"email": None, "phone": None}])
def test_mapping_that_reads_nothing(fields):
    with pytest.raises(ValueError, match="at least one"):
        extractor(fields)


def test_fields_not_a_mapping():
    with pytest.raises(ValueError, match="identifier_fields"):
        IdentifierExtractor(["email"], DEFAULT_OPTIONS)  # type: ignore[arg-type]


@pytest.mark.parametrize("region", ["XX", "ZZ", "USA", "", "001", None, 1])
def test_bad_region(region):
    with pytest.raises(ValueError, match="phone_default_region") as err:
        replace(DEFAULT_OPTIONS, phone_default_region=region)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("region", ["us", " gb ", "De"])
def test_region_is_canonicalised(region):
    assert replace(DEFAULT_OPTIONS, phone_default_region=region).phone_default_region == (
        region.strip().upper()
    )


@pytest.mark.parametrize(
    ("kwargs", "setting", "allowed"),
    [
        ({"phone_format": "E164"}, "phone_format", "e164, digits"),
        ({"phone_format": "plus"}, "phone_format", "e164, digits"),
        ({"email_normalization": "gmail"}, "email_normalization", "standard, strip_local"),
        ({"email_normalization": None}, "email_normalization", "standard, strip_local"),
    ],
)
def test_bad_enum_options(kwargs, setting, allowed):
    with pytest.raises(ValueError, match=setting) as err:
        replace(DEFAULT_OPTIONS, **kwargs)
    assert allowed in str(err.value)
    assert "\n" not in str(err.value)


def test_options_are_frozen_and_default_to_the_settings():
    options = DEFAULT_OPTIONS
    assert (options.phone_default_region, options.phone_format, options.email_normalization) == (
        "US",
        "e164",
        "standard",
    )
    with pytest.raises(AttributeError):
        options.phone_format = "digits"  # type: ignore[misc]
    with pytest.raises(TypeError):
        NormalizationOptions()  # type: ignore[call-arg]  # no default of its own


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
SPACES = st.text(alphabet=" \t\n\r\u00a0\u2003\u3000\u200b\ufeff", max_size=3)


@st.composite
def messy(draw, core):
    """Surround a value with whitespace and randomise its case."""
    value = draw(core)
    flips = draw(st.lists(st.booleans(), min_size=len(value), max_size=len(value)))
    value = "".join(c.upper() if f else c.lower() for c, f in zip(value, flips, strict=True))
    return draw(SPACES) + value + draw(SPACES)


email_like = st.one_of(
    st.emails(),
    st.builds(
        lambda local, labels: local + "@" + ".".join(labels),
        st.text(min_size=0, max_size=12),
        st.lists(st.text(min_size=0, max_size=6), min_size=0, max_size=4),
    ),
    st.text(),
)
phone_like = st.one_of(
    st.text(alphabet="0123456789 +-().", max_size=20),
    st.builds(
        str.__add__,
        st.sampled_from(["", "+", "0", "00", "011", "+0"]),
        st.text(alphabet="0123456789", min_size=4, max_size=15),
    ),
)
maid_like = st.one_of(
    st.uuids().map(str), st.text(alphabet="0123456789abcdefABCDEF- ", max_size=40), st.text()
)


@given(messy(email_like), st.sampled_from(["standard", "strip_local"]))
def test_email_normalisation_is_idempotent(value, mode):
    once = normalized("email", value, email_normalization=mode)
    if once is not None:
        assert normalized("email", once, email_normalization=mode) == once
        assert once == once.strip() and "@" in once


@settings(max_examples=400, deadline=None)
@given(phone_like, st.sampled_from(REGIONS))
def test_phone_normalisation_is_idempotent(value, region):
    once = normalized("phone", value, phone_default_region=region)
    if once is not None:
        assert once.startswith("+") and once[1:].isdigit()
        assert normalized("phone", once, phone_default_region=region) == once
        # An E.164 number does not depend on the default region.
        assert normalized("phone", once, phone_default_region="US") == once
        # Digits form is the E.164 form without "+".
        assert (
            normalized("phone", value, phone_default_region=region, phone_format="digits")
            == once[1:]
        )
        assert (
            normalized("phone", once, phone_default_region=region, phone_format="digits")
            == once[1:]
        )


@given(messy(maid_like))
def test_maid_normalisation_is_idempotent(value):
    once = normalized("idfa", value)
    if once is not None:
        assert normalized("idfa", once) == once
        assert once == once.lower() and len(once) == 36


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=())),  # incl. surrogates
    email_like,
    phone_like,
    maid_like,
    st.sampled_from([hashlib.sha256(b"x").hexdigest(), "A" * 64, "b" * 32, ZERO_MAID]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
NESTED_FIELDS = {"email": "email", "phone": "contact.phone", "idfa": "idfa", "aaid": "d.e.aaid"}


def nested(value_strategy):
    return st.fixed_dictionaries(
        {},
        optional={
            "email": value_strategy,
            "idfa": value_strategy,
            "contact": st.one_of(
                value_strategy, st.fixed_dictionaries({}, optional={"phone": value_strategy})
            ),
            "d": st.one_of(
                value_strategy,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "e": st.one_of(
                            value_strategy,
                            st.fixed_dictionaries({}, optional={"aaid": value_strategy}),
                        )
                    },
                ),
            ),
        },
    )


EXTRACTORS = [
    IdentifierExtractor(NESTED_FIELDS, DEFAULT_OPTIONS),
    IdentifierExtractor(
        NESTED_FIELDS,
        NormalizationOptions(
            phone_default_region="GB", phone_format="digits", email_normalization="strip_local"
        ),
    ),
]
ALL_REASONS = {MISSING, INVALID_EMAIL, INVALID_PHONE, INVALID_IDFA, INVALID_AAID}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(nested(json_values), st.sampled_from(EXTRACTORS))
def test_extractor_never_raises_on_arbitrary_json(record, ex):
    hashes, reasons = ex(record)
    assert isinstance(hashes, tuple) and len(hashes) == len(SLOTS)
    assert isinstance(reasons, tuple) and set(reasons) <= ALL_REASONS
    for slot, digest in zip(SLOTS, hashes, strict=True):
        assert digest is None or (
            isinstance(digest, bytes) and len(digest) == (16 if slot.endswith("MD5") else 32)
        )
    if reasons == (MISSING,):
        assert hashes == (None,) * 6
    else:
        assert MISSING not in reasons
        assert len(reasons) <= 4


@given(json_values)
def test_extractor_never_raises_on_arbitrary_record(record):
    hashes, reasons = EXTRACTORS[0](record)
    assert len(hashes) == len(SLOTS) and isinstance(reasons, tuple)


@given(messy(st.emails()), st.sampled_from(["standard", "strip_local"]))
def test_email_hash_is_hash_of_normalised_form(value, mode):
    norm = normalized("email", value, email_normalization=mode)
    assume(norm is not None)
    ex = extractor(email_normalization=mode)
    hashes, reasons = ex({"email": value})
    assert reasons == ()
    assert hashes[0] == hashlib.sha256(norm.encode()).digest()
    # Variants differing only in case and surrounding whitespace hash the same.
    assert ex({"email": " " + value.upper() + "\n"})[0] == hashes
    assert ex({"email": value.lower()})[0] == hashes


@given(st.uuids().map(str), SPACES, SPACES, st.sampled_from(["idfa", "aaid"]))
def test_maid_hash_is_hash_of_normalised_form(uuid, left, right, id_type):
    assume(uuid != ZERO_MAID)
    ex = extractor()
    hashes, reasons = ex({id_type: left + uuid.upper() + right})
    assert reasons == ()
    assert hashes == ex({id_type: uuid.lower()})[0]
    assert hashes_to_hex(hashes) == {f"{id_type.upper()}_SHA256": sha(uuid.lower())}


@given(
    st.sampled_from(["(415) 555-0100", "+1 415 555 0100", "4155550100", "1-415-555-0100"]),
    SPACES,
    SPACES,
)
def test_phone_hash_is_hash_of_normalised_form(value, left, right):
    hashes, reasons = extractor()({"phone": left + value + right})
    assert reasons == ()
    assert hashes_to_hex(hashes) == {"PHONE_SHA256": sha("+14155550100")}


@given(st.binary(min_size=32, max_size=32), st.sampled_from(ID_TYPES))
def test_prehashed_never_hashed_twice(digest, id_type):
    assume(digest not in _BAD_MAID_SHA256)
    hashes, reasons = extractor()({id_type: digest.hex().upper()})
    assert reasons == ()
    assert digest in hashes


def test_math_sanity_of_nan_record():
    # NaN compares unequal to itself; make sure it is simply rejected.
    assert run({"phone": math.nan}) == ({}, (INVALID_PHONE,))
