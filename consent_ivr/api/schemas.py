"""The shapes of the API: request models validate what comes in (and answer 422 naming the
field), response models describe what goes out. Both make the OpenAPI document
(consent_ivr.api.openapi); tests/api/test_schema.py checks every response against it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Phone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        description="The person's number: E.164 (+79161234567), or national in the "
        "configured default_region",
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
# Words people write (who, why): anything but U+0000, which PostgreSQL cannot store in text.
NO_NUL = r"^[^\x00]*$"
STATES = Literal["given", "refused", "withdrawn", "expired", "none"]
RECORD_STATES = Literal["requested", "given", "refused", "withdrawn", "expired"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests ---------------------------------------------------------------------------------


class ConsentsQuery(_In):
    phone: Phone
    purpose: Name | None = Field(default=None, description="Only this purpose")


class RecordsQuery(_In):
    phone: Phone | None = None
    campaign: Name | None = None
    purpose: Name | None = None
    outcome: Name | None = Field(
        default=None, description="granted, declined, withdrawn, no_response, abandoned, ..."
    )
    status: RECORD_STATES | None = Field(
        default=None, description="The consent's state now (expiry derived at read time)"
    )
    kind: Literal["consent", "withdrawal"] | None = None
    from_: datetime | None = Field(
        default=None, alias="from", description="Started at or after (date or date-time; UTC)"
    )
    to: datetime | None = Field(default=None, description="Started before (date or date-time)")
    cursor: str | None = Field(
        default=None, max_length=200, description="`next_cursor` of the previous page"
    )
    limit: int = Field(default=50, ge=1, le=5000, description="At most api.page_max")


class RecordPath(_In):
    id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class CallRequest(_In):
    phone: Phone
    campaign: Name | None = Field(default=None, description="Default: default_campaign")
    language: Name | None = Field(default=None, description="Default: the campaign's language")


class WithdrawalRequest(_In):
    phone: Phone
    purpose: Name | None = Field(default=None, description="This purpose, or set `all`")
    all: bool = Field(default=False, description="Every active consent of the person")
    by: str = Field(
        min_length=1, max_length=64, pattern=NO_NUL, description="Who records it (operator)"
    )
    reason: str = Field(
        min_length=1,
        max_length=500,
        pattern=NO_NUL,
        description="Why, e.g. 'asked by e-mail on 2026-11-30'",
    )

    @model_validator(mode="after")
    def _one_target(self) -> WithdrawalRequest:
        if (self.purpose is None) == (not self.all):
            raise ValueError("give either purpose or all: true (not both, not neither)")
        return self


# ---- responses --------------------------------------------------------------------------------


class Verdict(_Out):
    allowed: bool
    state: str
    reason: str = Field(description="Why, in words")
    record_id: str | None


class MayContact(_Out):
    call: Verdict
    sms: Verdict


class PurposeState(_Out):
    purpose: str
    state: STATES
    since: Timestamp | None
    record_id: str | None = Field(description="The record of the latest decision")
    channel: str | None = Field(description="How that decision was made: phone, sms, operator")
    expires_at: Timestamp | None
    records: list[str] = Field(description="Every record of this purpose, newest first")
    may_contact: MayContact


class DoNotContact(_Out):
    id: int
    purpose: str | None = Field(description="None: every purpose")
    channel: Literal["all", "call", "sms"]
    source: str = Field(description="refused, withdrawn, stop or operator")
    since: Timestamp
    reason: str | None
    by: str | None


class Consents(_Out):
    phone: str
    purposes: list[PurposeState]
    do_not_contact: list[DoNotContact]


class RecordSummary(_Out):
    record_id: str
    kind: str
    phone: str | None
    campaign: str
    purpose: str | None
    outcome: str | None
    status: str | None
    direction: str
    language: str
    call_id: str
    started_at: Timestamp
    decided_at: Timestamp | None


class RecordPage(_Out):
    items: list[RecordSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end. A page may hold "
        "fewer than `limit` records and still have a next one (a `status` filter)."
    )


class CallInfo(_Out):
    call_id: str
    channel_id: str
    caller_number: str | None
    called_number: str | None


class KeyPress(_Out):
    digit: str
    at: Timestamp
    step: str | None
    acted_on: bool
    purpose: str | None


class PromptPlayed(_Out):
    prompt: str
    at: Timestamp
    sha256: str | None
    text: str | None
    version: str | None


class Recording(_Out):
    path: str | None
    sha256: str
    duration_s: float | None
    format: str | None


class EventView(_Out):
    seq: int
    at: Timestamp
    kind: str
    step: str | None
    data: dict[str, Any]
    hash: str
    ledger_seq: int


class Integrity(_Out):
    chain_ok: bool
    verified: bool
    problems: list[str]
    warnings: list[str]
    notes: list[str]


class SmsView(_Out):
    job_id: str
    kind: str
    template: str
    decision: str
    status: str
    gateway: str | None
    message_id: str | None
    text: str
    sent_at: Timestamp | None
    delivered_at: Timestamp | None
    failed_at: Timestamp | None
    error: str | None
    attempts: int


class RecordView(_Out):
    """The record as `consent-ivr show --json` prints it: the facts, every prompt and key, the
    recording, SMS, withdrawals, the event chain and the verification result."""

    record_id: str
    schema_version: str
    kind: str
    phone: str | None
    phone_source: str | None
    campaign: str
    purpose: str | None
    purpose_details: dict[str, Any]
    controller: dict[str, Any]
    jurisdiction: str
    language: str
    direction: str
    collection_method: str
    outcome: str | None
    status: str | None
    expires_at: Timestamp | None
    started_at: Timestamp
    decided_at: Timestamp | None
    ended_at: Timestamp | None
    call: CallInfo
    keys: list[KeyPress]
    prompts: list[PromptPlayed]
    recording: Recording | None
    withdrawals: list[dict[str, Any]]
    withdrew: dict[str, Any] | None
    erased: dict[str, Any] | None
    subject_commitment: str | None
    events: list[EventView]
    integrity: Integrity
    sms: list[SmsView]


class CallStarted(_Out):
    channel_id: str = Field(description="The Asterisk channel of the call")
    phone: str
    campaign: str
    language: str
    purposes: list[str]


class Withdrawn(_Out):
    record_id: str
    purpose: str | None


class WithdrawalResult(_Out):
    phone: str
    withdrawn: list[Withdrawn] = Field(description="Empty when nothing was active")


class FieldError(_Out):
    field: str
    in_: Literal["query", "body", "path"] = Field(alias="in")
    message: str


class Refusal(_Out):
    purpose: str
    reason: str
    record_id: str | None


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError] | None = None
    refusals: list[Refusal] | None = None


class Health(_Out):
    status: Literal["ok"]
    pid: int  # which of the processes sharing the port answered


class Check(_Out):
    ok: bool
    detail: str


class Readiness(_Out):
    ready: bool
    checks: dict[str, Check] = Field(description="ari, database, recordings, sms_gateway")
