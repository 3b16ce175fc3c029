"""Phone numbers: E.164 for storage, masked for logs."""

from __future__ import annotations

import pytest

from consent_ivr.phone import mask, to_e164

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("number", "region", "expected"),
    [
        # Russian mobile in the notations people and PBXs use
        ("+79161234567", "RU", "+79161234567"),
        ("+7 916 123-45-67", "RU", "+79161234567"),
        ("+7 (916) 123 45 67", "RU", "+79161234567"),
        ("8 (916) 123-45-67", "RU", "+79161234567"),
        ("89161234567", "RU", "+79161234567"),
        ("79161234567", "RU", "+79161234567"),  # caller id without the plus
        ("9161234567", "RU", "+79161234567"),
        ("tel:+7-916-123-45-67", "RU", "+79161234567"),
        (" +7 916 123 45 67 ", "RU", "+79161234567"),
        # Russian landline and toll-free
        ("+7(495)1234567", "RU", "+74951234567"),
        ("8 495 123-45-67", "RU", "+74951234567"),
        ("8-800-555-35-35", "RU", "+78005553535"),
        # British numbers
        ("07911 123456", "GB", "+447911123456"),
        ("+44 7911 123456", "GB", "+447911123456"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+44 (0)20 7946 0958", "GB", "+442079460958"),
        ("00 44 20 7946 0958", "GB", "+442079460958"),
        # the region only matters when the number has no country code
        ("+7 916 123 45 67", "GB", "+79161234567"),
        ("+44 20 7946 0958", "RU", "+442079460958"),
        ("8 10 44 20 7946 0958", "RU", "+442079460958"),  # Russian international prefix
    ],
)
def test_to_e164(number: str, region: str, expected: str) -> None:
    assert to_e164(number, region) == expected


@pytest.mark.parametrize(
    "number",
    [
        None,
        "",
        "   ",
        "abc",
        "anonymous",
        "Unknown",
        "+",
        "++7",
        "12",
        "+7 916",
        "hello 12",
        "1234567890123456789",
    ],
)
@pytest.mark.parametrize("region", ["RU", "GB"])
def test_garbage_is_none(number: str | None, region: str) -> None:
    assert to_e164(number, region) is None


@pytest.mark.parametrize(
    ("number", "region"),
    [("1234", "GB"), ("8916", "GB"), ("123456", "GB"), ("2345678", "RU"), ("1234567", "RU")],
)
def test_local_only_numbers_are_not_e164(number: str, region: str) -> None:
    """A PBX extension or a local number without its area code has no E.164 form: turning
    "1234" into "+441234" would invent a subject that does not exist."""
    assert to_e164(number, region) is None


def test_region_decides_national_numbers() -> None:
    assert to_e164("07911 123456", "GB") == "+447911123456"
    assert to_e164("9161234567", "RU") == "+79161234567"
    assert to_e164("9161234567", "RU") != to_e164("9161234567", "GB")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+79161234567", "+7********67"),
        ("+447911123456", "+4*********56"),
        ("89161234567", "8********67"),
        (" +79161234567 ", "+7********67"),
    ],
)
def test_mask(number: str, expected: str) -> None:
    assert mask(number) == expected


@pytest.mark.parametrize("number", ["+79161234567", "+447911123456", "+12025550143"])
def test_mask_hides_all_but_prefix_and_last_two(number: str) -> None:
    masked = mask(number)
    assert masked.startswith(number[:2])
    assert masked.endswith(number[-2:])
    assert set(masked[2:-2]) == {"*"}
    assert len(masked) == len(number)
    for i in range(2, len(number) - 2):
        assert masked[i] == "*"


@pytest.mark.parametrize(("number", "expected"), [(None, "-"), ("", "-"), ("1234", "****")])
def test_mask_short_or_missing(number: str | None, expected: str) -> None:
    assert mask(number) == expected
