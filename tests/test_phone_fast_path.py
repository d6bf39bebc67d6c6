"""The fast phone path gives exactly what phonenumbers' parser gives, or leaves it to the parser.

`identifiers.phone._phone_fast` reads common shapes from phonenumbers' metadata alone; it must never
disagree with `_phone_parsed` (the parser). These tests compare the two on numbers of every
calling code and every region, formatted every usual way, and on arbitrary strings.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from target_tiktok_audiences.identifiers import SLOTS, IdentifierExtractor
from target_tiktok_audiences.identifiers.phone import _phone_fast, _phone_parsed
from target_tiktok_audiences.settings import normalization_options
from tests.conftest import sha

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
SEPARATORS = ("", " ", "-", ".", "  ", " - ")


def _formatted(digits: str, rng: random.Random) -> str:
    """Digits split into groups by one separator, sometimes with the first group in brackets."""
    sep = rng.choice(SEPARATORS)
    groups, i = [], 0
    while i < len(digits):
        step = rng.randint(1, 4)
        groups.append(digits[i : i + step])
        i += step
    if len(groups) > 1 and rng.random() < 0.3:
        groups[0] = f"({groups[0]})"
        return groups[0] + " " + sep.join(groups[1:])
    return sep.join(groups)


def _agrees(text: str, region: str) -> bool:
    """True when the fast path has no answer or the parser's; returns whether it answered."""
    fast = _phone_fast(text, region)
    if fast is not None:
        assert fast == _phone_parsed(text, region), (text, region)
    return fast is not None


def test_international_numbers_of_every_calling_code() -> None:
    rng = random.Random(5)
    answered = 0
    tried = 0
    for code in CALLING_CODES:
        for length in range(1, 19):
            for _ in range(6):
                national = "".join(rng.choice("0123456789") for _ in range(length))
                text = "+" + _formatted(f"{code}{national}", rng)
                tried += 1
                answered += _agrees(text, rng.choice(REGIONS))
    # Most are not possible numbers or start with a prefix; enough must take the fast path.
    assert answered > tried // 10


def test_national_numbers_in_every_region() -> None:
    rng = random.Random(7)
    answered = 0
    for region in REGIONS:
        code = str(phonenumbers.country_code_for_region(region))
        idd = phonenumbers.PhoneMetadata.metadata_for_region(region).international_prefix
        dialled = idd if idd and idd.isdigit() else "00"  # "011", "810": dialled abroad
        example = phonenumbers.example_number(region)
        lengths = [len(phonenumbers.national_significant_number(example))] if example else []
        for length in [*lengths, *range(3, 15)]:
            for _ in range(4):
                national = rng.choice("123456789") + "".join(
                    rng.choice("0123456789") for _ in range(length - 1)
                )
                for digits in (national, code + national, "0" + national, dialled + national):
                    answered += _agrees(_formatted(digits, rng), region)
    assert answered > 1000


def test_example_numbers_of_every_region_and_type() -> None:
    """Real numbering plans: every example number phonenumbers has, written both ways."""
    answered = 0
    for region in REGIONS:
        for kind in phonenumbers.PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
            international = phonenumbers.format_number(
                example, phonenumbers.PhoneNumberFormat.INTERNATIONAL
            )
            for text in (e164, national, international):
                answered += _agrees(text, region)
                answered += _agrees(text, "US")
    assert answered > 1000


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("(212) 200-0002", "US", "+12122000002"),
        ("1 212 200 0004", "US", "+12122000004"),
        ("+1-212-200-0006", "US", "+12122000006"),
        ("+44 20 7946 0000", "US", "+442079460000"),
        ("+49 30 12345678", "DE", "+493012345678"),
        ("415.555.0123", "US", "+14155550123"),
        ("+37493828222", "US", "+37493828222"),
    ],
)
def test_common_shapes_take_the_fast_path(text: str, region: str, expected: str) -> None:
    assert _phone_fast(text, region) == expected
    assert _phone_parsed(text, region) == expected
    options = normalization_options({"phone_default_region": region})
    hashes, _ = IdentifierExtractor({"phone": "phone"}, options)({"phone": text})
    assert hashes[SLOTS.index("PHONE_SHA256")] == bytes.fromhex(sha(expected))


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("020 7946 0000", "GB"),  # a national prefix: the parser strips it
        ("011 44 20 7946 0000", "US"),  # an international dialling prefix
        ("810 123 456", "TJ"),  # one that does not start with 0 (TJ numbers have 9 digits)
        ("+44 020 7946 0000", "US"),  # a national prefix after the calling code
        ("1-800-FLOWERS", "US"),  # letters
        ("+1 212 200 0002 ext. 7", "US"),  # an extension
        ("\uff12\uff11\uff12\uff12\uff10\uff10\uff10\uff10\uff10\uff12", "US"),  # full-width
        ("+0 212 200 0002", "US"),  # no calling code starts with 0
        ("200-0002", "US"),  # a local-only number
    ],
)
def test_unusual_shapes_are_left_to_the_parser(text: str, region: str) -> None:
    assert _phone_fast(text, region) is None


@settings(max_examples=3000, deadline=None)
@given(
    text=st.text(alphabet="+0123456789 ().-", min_size=1, max_size=24),
    region=st.sampled_from(REGIONS),
)
def test_arbitrary_strings_agree(text: str, region: str) -> None:
    _agrees(text, region)


@settings(max_examples=3000, deadline=None)
@given(
    plus=st.booleans(),
    code=st.sampled_from(CALLING_CODES),
    national=st.text(alphabet="0123456789", min_size=1, max_size=18),
    region=st.sampled_from(REGIONS),
    seed=st.integers(0, 2**16),
)
def test_generated_numbers_agree(
    plus: bool, code: int, national: str, region: str, seed: int
) -> None:
    text = _formatted(f"{code}{national}", random.Random(seed))
    _agrees("+" + text if plus else text, region)
