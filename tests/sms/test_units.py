"""Pure parts: encoding and parts, templates, phone numbers, backoff, config validation, stop
words, and texts that may only promise a reply channel that works."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from consent_ivr import config as app_config
from consent_ivr.sms import promises, stopwords
from consent_ivr.sms import templates as tpl
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.encoding import measure
from consent_ivr.sms.inbound import sender_e164
from consent_ivr.sms.phones import InvalidPhone, parse_mobile
from consent_ivr.sms.worker import retry_delay

REPO = Path(__file__).resolve().parents[2]

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
        ({"stopped": "{company}"}, r"stopped: unknown variable \{company\}"),
    ],
)
def test_bad_templates_rejected(texts: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SmsConfig(templates={"acme": {"ru": texts}})


def test_a_language_without_defaults_needs_every_text() -> None:
    with pytest.raises(ValidationError, match=r"templates\.acme\.de: no text for decision"):
        SmsConfig(templates={"acme": {"de": {"granted": "x", "declined": "y"}}})


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
    one = SmsConfig(templates={"default": {"ru": {"granted": "{company}"}}})
    assert one.templates["default"]["ru"]["granted"] == "{company}"
    assert (
        one.templates["default"]["ru"]["stopped"]
        == tpl.default_templates()["default"]["ru"]["stopped"]
    )


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


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("STOP", True),
        ("  stop. ", True),
        ("Стоп!", True),
        ("отписаться", True),
        ("S T O P", True),
        ("stop calling me", False),
        ("", False),
        ("...", False),
        ("стопка", False),
    ],
)
def test_stop_word_is_the_whole_text_case_spaces_and_punctuation_ignored(
    text: str, stop: bool
) -> None:
    assert stopwords.is_stop(text, SmsConfig().inbound.stop_words) is stop


def test_a_promise_names_a_stop_word_in_capitals() -> None:
    words = SmsConfig().inbound.stop_words
    assert stopwords.promised("Reply STOP to opt out", words) == "STOP"
    assert stopwords.promised("ответьте СТОП", words) == "СТОП"
    assert stopwords.promised("processing for this purpose has stopped", words) is None
    assert stopwords.promised("we stop calling", words) is None
    assert stopwords.promised("{how_to_withdraw}", words) is None


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("79001234567", None, "+79001234567"),
        ("+79001234567", None, "+79001234567"),
        ("4915112345678", "RU", "+4915112345678"),
        ("89001234567", "RU", "+79001234567"),
        ("89001234567", None, None),
        ("MEGAFON", "RU", None),
    ],
)
def test_inbound_sender_in_e164(raw: str, region: str | None, e164: str | None) -> None:
    assert sender_e164(raw, region) == e164


def write_config(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "config.yaml"
    file.write_text(text, encoding="utf-8")
    return file


def test_shipped_and_embedded_defaults_promise_nothing_they_cannot_keep() -> None:
    for conf in (app_config.load(REPO / "config.yaml", env={}), app_config.Config()):
        assert promises.reply_problems(conf)  # the log gateway, an alphanumeric sender
        assert not promises.channels(conf).replies
        promises.check(conf)


def test_config_check_refuses_a_template_promising_stop_to_an_alphanumeric_sender(
    tmp_path: Path,
) -> None:
    file = write_config(
        tmp_path,
        "sms:\n  gateway: smpp\n  sender: ACME\n  templates:\n    default:\n      ru:\n"
        "        granted: '{company}: согласие записано. Ответьте СТОП, чтобы отозвать.'\n",
    )
    with pytest.raises(app_config.ConfigError) as e:
        app_config.load(file, env={})
    message = str(e.value)
    assert "sms.templates.default.ru.granted tells people to reply СТОП" in message
    assert "'ACME' (sms.sender) is not a number" in message
    assert "{how_to_withdraw}" in message
    numeric = write_config(tmp_path, file.read_text().replace("ACME", "'79001234567'"))
    app_config.load(numeric, env={})  # a number people can reply to: the promise is kept


def test_config_check_refuses_a_purpose_promising_stop_with_the_log_gateway(
    tmp_path: Path,
) -> None:
    shipped = (REPO / "config.yaml").read_text(encoding="utf-8")
    text = shipped.replace(
        "en: call the number you called and choose it in the menu",
        "en: reply STOP to our text message",
    )
    assert text != shipped
    with pytest.raises(
        app_config.ConfigError,
        match=r"purposes\.marketing-calls\.withdrawal\.en tells people to reply STOP.*log gateway",
    ):
        app_config.load(write_config(tmp_path, text), env={})


def test_kannel_replies_need_the_http_server_and_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sms = {"gateway": "kannel", "sender": "12345"}
    monkeypatch.delenv("CONSENT_IVR_SMS_INBOUND_TOKEN", raising=False)
    conf = app_config.Config.model_validate({"sms": sms})
    assert promises.reply_problems(conf) == []
    assert not promises.channels(conf).replies  # the route is not mounted without its token
    monkeypatch.setenv("CONSENT_IVR_SMS_INBOUND_TOKEN", "secret")
    assert promises.channels(conf).replies
    off = app_config.Config.model_validate({"sms": sms, "http": {"enabled": False}})
    assert any("http.enabled" in p for p in promises.reply_problems(off))
    assert not promises.channels(off).replies


def test_channels_say_how_to_withdraw() -> None:
    sms = SmsConfig()
    replies = promises.Channels(True, {"acme": "+74951234567"})
    call = promises.Channels(False, {"acme": "+74951234567"})
    assert replies.how_to_withdraw(sms, "acme", "en", "x") == "reply STOP to this message"
    assert call.how_to_withdraw(sms, "acme", "en", "x") == "call +74951234567"
    assert call.how_to_withdraw(sms, "other", "en", "the purpose's own") == "the purpose's own"
    assert replies.how_to_withdraw(sms, "acme", "de", "the purpose's own") == "the purpose's own"


def test_the_reply_hint_must_name_a_stop_word() -> None:
    with pytest.raises(ValidationError, match=r"how_to_withdraw\.en\.reply .* names none"):
        SmsConfig.model_validate(
            {"how_to_withdraw": {"en": {"reply": "reply END", "call": "call {phone_number}"}}}
        )
    with pytest.raises(ValidationError, match=r"phone_number"):
        SmsConfig.model_validate(
            {"how_to_withdraw": {"en": {"reply": "reply STOP", "call": "call {number}"}}}
        )
