"""SMS settings (the SMS worker owns this model; consent_ivr.config embeds it under `sms`).

Every key has a default, so the service runs with no config: the `log` gateway prints each
confirmation and appends it to a JSONL file. Passwords are never config keys: a gateway reads
the environment variable named by its `password_env`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consent_ivr.sms import templates as tpl


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DlrConfig(_Model):
    """Where delivery reports arrive when the worker runs as its own process."""

    listen: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8091, ge=0, le=65535)
    path: str = "/sms/dlr"
    # The URL the gateway calls; default http://{host}:{port}{path}. Set it when the reports
    # should go to the service's own HTTP server (`consent-ivr run` mounts the same route).
    url: str | None = None


class LogGatewayConfig(_Model):
    file: Path = Path("var/sms-outbox.jsonl")
    echo: bool = True  # also print each SMS to stdout


class KannelConfig(_Model):
    sendsms_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    username: str = "consent-ivr"
    password_env: str = "CONSENT_IVR_KANNEL_PASSWORD"
    # The admin interface lets a worker see whether Kannel still holds a message it is unsure
    # about (store-status) before it sends that message again.
    admin_url: str | None = None
    admin_password_env: str = "CONSENT_IVR_KANNEL_ADMIN_PASSWORD"
    dlr_mask: int = Field(default=31, ge=1, le=31)
    smsc: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)


class SmppConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=2775, ge=1, le=65535)
    system_id: str = Field(default="consent-ivr", max_length=15)
    password_env: str = "CONSENT_IVR_SMPP_PASSWORD"
    system_type: str = Field(default="", max_length=12)
    enquire_link_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)


def _merge_templates(user: Any) -> Any:
    """User texts replace the built-in ones per campaign and language, keeping the rest."""
    merged = tpl.default_templates()
    if not isinstance(user, dict):
        return user
    for campaign, languages in user.items():
        if not isinstance(languages, dict):
            return user
        merged.setdefault(campaign, {}).update(languages)
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

    def dlr_url(self, port: int | None = None) -> str:
        """The delivery-report URL given to the gateway (``port``: the one actually bound)."""
        if self.dlr.url:
            return self.dlr.url
        return f"http://{self.dlr.host}:{port or self.dlr.port}{self.dlr.path}"
