"""Tables of the SMS part: the outbox (one job per SMS), every delivery report the gateway sent,
and every SMS a person sent us.

A confirmation job is written in the same transaction as the decision it confirms, so the two
commit or roll back together. Its text is rendered and frozen at that moment: what the person
was sent is part of the evidence and must not change when a template is edited later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consent_ivr.store.models import Base, new_id

# Job states. A job only moves forward along
#   held -> queued -> sending -> sent -> delivered | failed
# (queued <- sending on a retry). A job is `held` while the call whose decisions it confirms
# goes on, so that one SMS sums up all of them. Final states: delivered and failed; `logged`
# (the log gateway only wrote the text down: nobody received it); `suppressed` (a marketing
# text the person could no longer be sent when its turn came).
HELD = "held"
QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
LOGGED = "logged"
FAILED = "failed"
SUPPRESSED = "suppressed"
FINAL = (DELIVERED, LOGGED, FAILED, SUPPRESSED)

# What a job is: a confirmation of decisions (always sent, that of a withdrawal too), a reply
# to an SMS the person sent, or a marketing text (sent only while `may_contact` allows it).
CONFIRMATION = "confirmation"
REPLY = "reply"
MARKETING = "marketing"


class SmsJob(Base):
    """One SMS; its id is the idempotency key the gateway sees."""

    __tablename__ = "sms_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), default=CONFIRMATION)
    # Every record the SMS is about (a call's decisions, a withdrawal's consents): each of
    # them gets the SMS's events in its chain. record_id is the first of them; a reply or a
    # marketing text is about no record.
    record_id: Mapped[str | None] = mapped_column(
        ForeignKey("consent_records.record_id"), index=True
    )
    record_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose_id: Mapped[str | None] = mapped_column(String(64))  # of a marketing text
    call_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # The template (a decision, summary, stopped) or the kind of text (reply, marketing).
    decision: Mapped[str] = mapped_column(String(16))
    decided_at: Mapped[datetime]
    campaign: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    phone: Mapped[str] = mapped_column(String(32), index=True)
    text: Mapped[str] = mapped_column(Text)
    encoding: Mapped[str] = mapped_column(String(8))
    segments: Mapped[int] = mapped_column(Integer)

    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    # Set when an attempt may have reached the gateway without its answer being recorded:
    # the next worker asks the gateway before sending again.
    in_doubt: Mapped[bool] = mapped_column(default=False)
    attempt_started_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(36))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    gateway: Mapped[str | None] = mapped_column(String(16))
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("record_id", "decision", "decided_at", name="uq_sms_jobs_decision"),
        Index("ix_sms_jobs_due", "status", "next_attempt_at"),
    )


class SmsDeliveryReport(Base):
    """A delivery report as received, append-only: the job keeps the summary, this the detail."""

    __tablename__ = "sms_delivery_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("sms_jobs.id"), index=True)
    received_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    gateway_status: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]]


# What was done with an inbound SMS.
WITHDRAWN = "withdrawn"  # a stop word: the sender's active consents were withdrawn
STOPPED = "stopped"  # a stop word from a number with nothing active: on the register
OTHER = "other"  # anything else: stored, and answered when a reply is configured


class SmsInbound(Base):
    """Every SMS a person sent us, as received, and what was done with it."""

    __tablename__ = "sms_inbound"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    received_at: Mapped[datetime]
    gateway: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(String(64), index=True)  # E.164 when it parses
    recipient: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    # The gateway's id of the message: a delivery the gateway repeats is handled once.
    message_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    record_ids: Mapped[list[str]] = mapped_column(JSON, default=list)  # the records withdrawn
    reply_job_id: Mapped[str | None] = mapped_column(ForeignKey("sms_jobs.id"))

    __table_args__ = (UniqueConstraint("gateway", "message_id", name="uq_sms_inbound_message"),)
