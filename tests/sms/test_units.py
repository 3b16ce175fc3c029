"""Pure parts: encoding and parts, templates, phone numbers, backoff, config validation."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from consent_ivr import config as app_config
from consent_ivr.sms import templates as tpl
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.encoding import measure
from consent_ivr.sms.phones import InvalidPhone, parse_mobile
from consent_ivr.sms.worker import retry_delay

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "gsm7", 0, 0),
        ("a" * 160, "gsm7", 160, 1),
        ("a" * 161, "gsm7", 161, 2),
        ("a" * 306, "gsm7", 306, 2),
        ("a" * 307, "gsm7", 307, 3),
        ("€" * 80, "gsm7", 160, 1),  # extension characters take two septets
        ("a" * 152 + "€" + "a" * 8, "gsm7", 162, 2),
        ("a" * 152 + "€" + "a" * 152, "gsm7", 306, 3),  # never split: 3 parts, not 2
        ("я" * 70, "ucs2", 70, 1),
        ("я" * 71, "ucs2", 71, 2),
        ("a" * 70 + "ы", "ucs2", 71, 2),  # one Cyrillic letter turns the whole text UCS-2
        ("😀" * 35, "ucs2", 70, 1),  # surrogate pairs count twice
        ("a" * 66 + "😀" + "a" * 66, "ucs2", 134, 3),  # and are never split
        ("я" * 235, "ucs2", 235, 4),  # as Kannel split it on this machine (4 parts of 67)
        ("a" * 475, "gsm7", 475, 4),  # 4 parts of 153
    ],
)
def test_encoding_and_parts(text: str, encoding: str, units: int, segments: int) -> None:
    size = measure(text)
    assert (size.encoding, size.units, size.segments) == (encoding, units, segments)


def test_phone_normalised_to_e164_with_its_zone() -> None:
    assert parse_mobile("+7 (900) 123-45-67").e164 == "+79001234567"
    assert parse_mobile("89001234567", "RU").e164 == "+79001234567"
    assert parse_mobile("+4915112345678").time_zones == ("Europe/Berlin",)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+74951234567", "not a mobile"),  # a Moscow landline
        ("+7900123", "not a valid"),
        ("hello", "not a phone number"),
        ("", "not a phone number"),
    ],
)
def test_phone_rejected_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone, match=reason):
        parse_mobile(raw, "RU")


def test_phones_module_has_no_second_mask() -> None:
    # One masking rule for the whole service: consent_ivr.phone.mask (tested in tests/unit).
    import consent_ivr.sms.phones as phones

    assert not hasattr(phones, "mask")


def test_default_templates_cover_every_decision_and_use_known_variables() -> None:
    templates = tpl.default_templates()
    tpl.check(templates)
    for language in ("ru", "en"):
        assert set(templates["default"][language]) == set(tpl.DECISIONS)


def test_time_in_the_persons_zone_with_offset() -> None:
    at = datetime(2026, 11, 30, 21, 30, tzinfo=UTC)
    values = tpl.time_values(at, "Asia/Vladivostok", "%d.%m.%Y")
    assert values["datetime"] == "01.12.2026 07:30 (UTC+10)"
    assert tpl.time_values(at, "Asia/Kolkata", "%Y-%m-%d")["datetime"].endswith("(UTC+5:30)")


def test_unknown_variable_names_template_and_variable() -> None:
    bad = {"acme": {"en": {"granted": "Hi {compnay}", "declined": "x", "withdrawn": "y"}}}
    with pytest.raises(
        ValidationError, match=r"templates\.acme\.en\.granted: unknown variable \{compnay\}"
    ):
        SmsConfig(templates=bad)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ({"granted": "{company!r}", "declined": "x", "withdrawn": "y"}, "not a plain variable"),
        ({"granted": "{company", "declined": "x", "withdrawn": "y"}, "malformed braces"),
        ({"granted": "x", "declined": "y"}, "no text for decision"),
    ],
)
def test_bad_templates_rejected(texts: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SmsConfig(templates={"acme": {"ru": texts}})


def test_config_check_fails_on_unknown_variable(tmp_path: Path) -> None:
    """The path `consent-ivr config check` takes: the lead's loader validates SmsConfig."""
    file = tmp_path / "config.yaml"
    file.write_text(
        "sms:\n  templates:\n    default:\n      ru:\n"
        "        granted: '{company} {purpse}'\n        declined: x\n        withdrawn: y\n",
        encoding="utf-8",
    )
    with pytest.raises(
        app_config.ConfigError, match=r"templates\.default\.ru\.granted.*\{purpse\}"
    ):
        app_config.load(file, env={})


def test_user_templates_keep_the_other_defaults() -> None:
    sms = SmsConfig(templates={"acme": {"en": {d: d for d in tpl.DECISIONS}}})
    assert sms.templates["acme"]["en"]["granted"] == "granted"
    assert "ru" in sms.templates["default"]


def test_no_password_keys_and_lease_longer_than_a_send() -> None:
    with pytest.raises(ValidationError, match="kannel.password"):
        SmsConfig.model_validate({"kannel": {"password": "secret"}})
    with pytest.raises(ValidationError, match="lease_s"):
        SmsConfig(gateway="kannel", lease_s=5)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    sms = SmsConfig(retry_base_s=2, retry_max_s=30)
    rng = random.Random(7)
    delays = [retry_delay(n, sms, rng) for n in range(1, 8)]
    assert 1 <= delays[0] <= 2 and 4 <= delays[2] <= 8
    assert all(15 <= d <= 30 for d in delays[4:])
    assert len({round(retry_delay(3, sms, rng), 6) for _ in range(20)}) > 1
