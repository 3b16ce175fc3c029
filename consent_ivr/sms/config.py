"""SMS settings (the SMS worker owns this model; consent_ivr.config embeds it under `sms`).

Every key has a default, so the service runs with no config: the `log` gateway prints each
confirmation and appends it to a JSONL file. Passwords are never config keys: a gateway reads
the environment variable named by its `password_env`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)

from consent_ivr.config_types import FilePath, Host, HttpUrl, UrlPath
from consent_ivr.sms import stopwords
from consent_ivr.sms import templates as tpl


class _Model(BaseModel):
    # inf and nan are no timeout, interval or size a person means.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DlrConfig(_Model):
    """Where delivery reports arrive when the worker runs as its own process."""

    listen: bool = True
    host: Host = "127.0.0.1"
    port: int = Field(default=8091, ge=0, le=65535)
    path: UrlPath = "/sms/dlr"
    # The URL the gateway calls; default http://{host}:{port}{path}. Set it when the reports
    # should go to the service's own HTTP server (`consent-ivr run` mounts the same route).
    url: HttpUrl | None = None
    # Addresses reports may come from (the gateway's), e.g. ["127.0.0.1/32"]; empty: any
    # address (reports are signed for their job either way).
    allow_from: tuple[IPvAnyNetwork, ...] = ()


class LogGatewayConfig(_Model):
    file: FilePath = Path("var/sms-outbox.jsonl")
    echo: bool = True  # also print each SMS to stdout


class KannelConfig(_Model):
    sendsms_url: HttpUrl = "http://127.0.0.1:13013/cgi-bin/sendsms"
    username: str = "consent-ivr"
    password_env: str = "CONSENT_IVR_KANNEL_PASSWORD"
    # The admin interface lets a worker see whether Kannel still holds a message it is unsure
    # about (store-status) before it sends that message again.
    admin_url: HttpUrl | None = None
    admin_password_env: str = "CONSENT_IVR_KANNEL_ADMIN_PASSWORD"
    dlr_mask: int = Field(default=31, ge=1, le=31)
    smsc: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)


class SmppConfig(_Model):
    host: Host = "127.0.0.1"
    port: int = Field(default=2775, ge=1, le=65535)
    system_id: str = Field(default="consent-ivr", max_length=15)
    password_env: str = "CONSENT_IVR_SMPP_PASSWORD"
    system_type: str = Field(default="", max_length=12)
    enquire_link_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)


class InboundConfig(_Model):
    """SMS people send us (consent_ivr.sms.inbound): a stop word withdraws their consent."""

    enabled: bool = True
    # The route Kannel's sms-service calls on the service's HTTP server; it is mounted only
    # when the environment variable `token_env` holds the shared token (see scripts/kannel.sh).
    path: UrlPath = "/sms/inbound"
    token_env: str = "CONSENT_IVR_SMS_INBOUND_TOKEN"
    stop_words: tuple[str, ...] = Field(
        default=(
            "STOP",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "QUIT",
            "СТОП",
            "ОТПИСКА",
            "ОТПИСАТЬСЯ",
        ),
        min_length=1,
    )
    # all: a stop word withdraws every active consent of the number; last: those of the
    # purposes of the last SMS sent to it (every one when that tells none that is active).
    scope: Literal["all", "last"] = "all"
    # The language of a reply to a number we hold no record of.
    language: str = "ru"
    # The reply to any text that is not a stop word, per language; none by default.
    replies: dict[str, str] = Field(default_factory=dict)

    @field_validator("stop_words")
    @classmethod
    def _words(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        empty = [w for w in v if not stopwords.normal(w)]
        if empty:
            raise ValueError(f"a stop word needs a letter or digit (got {empty!r})")
        return v


class WithdrawHint(_Model):
    """The words of {how_to_withdraw} in one language (consent_ivr.sms.promises)."""

    reply: str  # when a reply reaches us: must name a stop word
    call: str  # when it does not and the campaign has a phone number: {phone_number}

    @field_validator("call")
    @classmethod
    def _number_only(cls, v: str) -> str:
        try:
            names = tpl.fields(v)
        except tpl.TemplateError as e:
            raise ValueError(str(e)) from None
        if set(names) - {"phone_number"}:
            raise ValueError("the only variable here is {phone_number}")
        return v


def _merge_templates(user: Any) -> Any:
    """User texts replace the built-in ones per campaign, language and decision."""
    merged = tpl.default_templates()
    if not isinstance(user, dict):
        return user
    for campaign, languages in user.items():
        if not isinstance(languages, dict):
            return user
        for language, texts in languages.items():
            if not isinstance(texts, dict):
                return user
            merged.setdefault(campaign, {}).setdefault(language, {}).update(texts)
    return merged


class SmsConfig(_Model):
    enabled: bool = True
    gateway: Literal["log", "kannel", "smpp"] = "log"
    # `consent-ivr run` also runs a worker (the single-machine default); more workers, e.g.
    # `consent-ivr sms-worker` processes, may run beside it safely.
    worker_in_process: bool = True
    sender: str = Field(default="CONSENT", min_length=1, max_length=20)
    # Used when the number does not tell one time zone (Russian mobiles span eleven).
    timezone: str = "Europe/Moscow"
    date_format: dict[str, str] = Field(
        default_factory=lambda: {"ru": "%d.%m.%Y", "en": "%d %b %Y"}
    )
    decision_words: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "ru": {
                "granted": "вы дали согласие",
                "declined": "вы отказались дать согласие",
                "withdrawn": "вы отозвали согласие",
            },
            "en": {
                "granted": "you gave your consent",
                "declined": "you declined",
                "withdrawn": "you withdrew your consent",
            },
        }
    )
    templates: dict[str, dict[str, dict[str, str]]] = Field(default_factory=tpl.default_templates)
    how_to_withdraw: dict[str, WithdrawHint] = Field(
        default_factory=lambda: {
            "ru": WithdrawHint(
                reply="ответьте СТОП на это СМС", call="позвоните на {phone_number}"
            ),
            "en": WithdrawHint(reply="reply STOP to this message", call="call {phone_number}"),
        }
    )
    max_segments: int = Field(default=6, ge=1, le=255)

    # Delivery and retries.
    max_age_s: float = Field(default=86400.0, gt=0)
    retry_base_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=600.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)
    in_doubt_wait_s: float = Field(default=60.0, ge=0)
    batch_size: int = Field(default=20, ge=1, le=1000)
    concurrency: int = Field(default=4, ge=1, le=64)
    poll_interval_s: float = Field(default=1.0, gt=0)
    # A job held for a call that never ended (the service died mid-call) goes out after this.
    hold_max_s: float = Field(default=600.0, gt=0)

    inbound: InboundConfig = InboundConfig()
    dlr: DlrConfig = DlrConfig()
    log: LogGatewayConfig = LogGatewayConfig()
    kannel: KannelConfig = KannelConfig()
    smpp: SmppConfig = SmppConfig()

    @field_validator("templates", mode="before")
    @classmethod
    def _with_defaults(cls, v: Any) -> Any:
        return _merge_templates(v)

    @field_validator("templates")
    @classmethod
    def _known_variables(cls, v: dict[str, dict[str, dict[str, str]]]) -> Any:
        try:
            tpl.check(v)
        except tpl.TemplateError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name such as Europe/Moscow") from None
        return v

    @model_validator(mode="after")
    def _retry_bounds(self) -> SmsConfig:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must not be smaller than retry_base_s")
        timeout = {"kannel": self.kannel.timeout_s, "smpp": self.smpp.timeout_s}.get(self.gateway)
        if timeout is not None and self.lease_s <= timeout:
            # A lease shorter than a send would let a second worker claim a job mid-send.
            raise ValueError(
                f"lease_s ({self.lease_s:g}) must be longer than sms.{self.gateway}.timeout_s "
                f"({timeout:g})"
            )
        return self

    @model_validator(mode="after")
    def _hints_name_a_stop_word(self) -> SmsConfig:
        for language, hint in self.how_to_withdraw.items():
            if stopwords.promised(hint.reply, self.inbound.stop_words) is None:
                raise ValueError(
                    f"how_to_withdraw.{language}.reply ({hint.reply!r}) names none of "
                    f"sms.inbound.stop_words in capitals: name the word people should send"
                )
        return self

    def inbound_token(self) -> str | None:
        """The shared token of the inbound route, from the environment (None: not set)."""
        return os.environ.get(self.inbound.token_env) or None

    def dlr_url(self, port: int | None = None) -> str:
        """The delivery-report URL given to the gateway (``port``: the one actually bound)."""
        if self.dlr.url:
            return self.dlr.url
        return f"http://{self.dlr.host}:{port or self.dlr.port}{self.dlr.path}"
