"""How a campaign dials: settings under `campaigns.<name>.dialing` (consent_ivr.config embeds
this model; it must not import consent_ivr.config).

Defaults are the safe ones: one call at a time, one call per second, no answering-machine
detection, and a calling window of 09:00-21:00 in the person's own time."""

from __future__ import annotations

import zoneinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consent_ivr import durations
from consent_ivr.config_types import Host

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def minutes(hhmm: str) -> int:
    """ "09:30" -> 570; "24:00" is the end of the day."""
    hours, _, mins = hhmm.partition(":")
    return int(hours) * 60 + int(mins)


class Window(_Model):
    """When a person may be called, in their local time. The zone comes from the number
    (phonenumbers); a number that may be in several zones is called only when the window is
    open in all of them, unless `timezone` names the zone to assume for such numbers (and for
    numbers whose zone is unknown, which are otherwise not called)."""

    days: tuple[Day, ...] = DAYS
    start: str = "09:00"
    end: str = "21:00"
    timezone: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        hours, sep, mins = v.partition(":")
        ok = sep and hours.isdigit() and mins.isdigit() and len(mins) == 2
        if not ok or not (0 <= int(mins) < 60 and 0 <= minutes(v) <= 24 * 60):
            raise ValueError(f"expected a time of day HH:MM between 00:00 and 24:00, got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (expected e.g. Europe/Moscow)") from None
        return v

    @model_validator(mode="after")
    def _order(self) -> Window:
        if minutes(self.start) >= minutes(self.end):
            raise ValueError(f"start {self.start} must come before end {self.end}")
        if not self.days:
            raise ValueError("days is empty: nobody could ever be called")
        return self


class Retry(_Model):
    """Another attempt after a call that reached nobody, up to `max_attempts` calls a number."""

    on: tuple[Literal["no_answer", "busy", "congestion", "failed", "machine"], ...] = (
        "no_answer",
        "busy",
    )
    delay: str = "PT30M"  # ISO 8601 duration
    max_attempts: int = Field(default=3, ge=1, le=20)

    @field_validator("delay", mode="before")
    @classmethod
    def _iso_duration(cls, v: object) -> object:
        return durations.check(v)  # type: ignore[arg-type]


class Amd(_Model):
    """Asterisk's answering-machine detection (app_amd) on answered outbound calls. A machine
    is hung up before a word is said: it never hears the question, so it never gives consent.
    The settings are AMD()'s own, in milliseconds."""

    enabled: bool = False
    initial_silence_ms: int = Field(default=2500, ge=0)
    greeting_ms: int = Field(default=1500, ge=0)
    after_greeting_silence_ms: int = Field(default=800, ge=0)
    total_analysis_time_ms: int = Field(default=5000, ge=0)
    min_word_length_ms: int = Field(default=100, ge=0)
    between_words_silence_ms: int = Field(default=50, ge=0)
    maximum_number_of_words: int = Field(default=3, ge=1)
    silence_threshold: int = Field(default=256, ge=0, le=32767)
    maximum_word_length_ms: int = Field(default=5000, ge=0)

    def argument(self) -> str:
        """The dialplan's CONSENT_AMD: AMD()'s nine arguments, /-separated ("" when off)."""
        if not self.enabled:
            return ""
        values = (
            self.initial_silence_ms,
            self.greeting_ms,
            self.after_greeting_silence_ms,
            self.total_analysis_time_ms,
            self.min_word_length_ms,
            self.between_words_silence_ms,
            self.maximum_number_of_words,
            self.silence_threshold,
            self.maximum_word_length_ms,
        )
        return "/".join(str(v) for v in values)


class Ami(_Model):
    """The Asterisk Manager Interface to originate through (`originate: ami`), and where that
    Asterisk reaches this service's FastAGI server. The password only from the environment."""

    host: Host = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    user: str = "consent-ivr"
    password_env: str = "CONSENT_IVR_AMI_PASSWORD"
    agi: str = "127.0.0.1:4573"  # host:port, as the PBX sees the FastAGI server


class Dialing(_Model):
    # Asterisk dial string, {number} (E.164) and {digits} filled in, e.g. PJSIP/{digits}@trunk
    endpoint: str | None = None
    # ari: through the service's Stasis app (dialplan context consent-outbound);
    # ami: AMI Originate into consent-agi-outbound, for PBXs that give AMI and AGI but no ARI.
    originate: Literal["ari", "ami"] = "ari"
    caller_id: str | None = None  # what the person sees; None: the trunk's default
    ring_timeout_s: int = Field(default=30, ge=1, le=300)
    max_concurrent: int = Field(default=1, ge=1, le=1000)
    calls_per_second: float = Field(default=1.0, gt=0, le=100)
    window: Window = Window()
    retry: Retry = Retry()
    amd: Amd = Amd()
    ami: Ami = Ami()
    # A runner holds the numbers it dials for this long, renewed while it lives; after a crash
    # another runner takes them over once it runs out.
    lease_s: float = Field(default=120.0, ge=10)
    # An answered call lasts at most this long for the runner (then its slot is given back).
    max_call_s: float = Field(default=1800.0, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            v.format(number="+10000000000", digits="10000000000")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"{v!r}: the only placeholders are {{number}} (E.164) and {{digits}}"
            ) from None
        return v

    def dial_string(self, phone: str) -> str:
        assert self.endpoint is not None
        return self.endpoint.format(number=phone, digits=phone.lstrip("+"))
