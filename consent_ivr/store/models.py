"""Database tables: calls, consent records, their append-only hash-chained event log, the
ledger across all events, signed checkpoints, and the do-not-contact register.

Field names follow ISO/IEC TS 27560 and the Kantara Consent Receipt where one exists
(``record_id``, ``pii_principal_id``, ``collection_method``, ``jurisdiction``).
The events are the evidence; every column of a record and of its call is a cache of them that
`consent-ivr verify` recomputes (see consent_ivr.evidence.verify). The current state of a consent
is derived from its lifecycle events; ``status`` only caches the latest of them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = "2"

# A global sequence: SQLite only auto-increments an INTEGER primary key, so it gets Integer.
LedgerSeq = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Call(Base):
    """One phone call as Asterisk saw it; a call may carry one consent record per purpose."""

    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    channel_id: Mapped[str] = mapped_column(String(128), index=True)
    direction: Mapped[str] = mapped_column(String(16))
    caller_number: Mapped[str | None] = mapped_column(String(64))
    called_number: Mapped[str | None] = mapped_column(String(64))
    campaign: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    recording_path: Mapped[str | None] = mapped_column(Text)
    recording_sha256: Mapped[str | None] = mapped_column(String(64))
    recording_duration_s: Mapped[float | None] = mapped_column(Float)
    recording_format: Mapped[str | None] = mapped_column(String(16))
    erased_at: Mapped[datetime | None]
    # The service instance that took the call (ARI app @ Asterisk id): after a crash each
    # instance closes only its own calls left open.
    node: Mapped[str | None] = mapped_column(String(128), index=True)

    records: Mapped[list[ConsentRecord]] = relationship(back_populates="call")


class ConsentRecord(Base):
    """A consent (kind ``consent``, one purpose) or a withdrawal call (kind ``withdrawal``)."""

    __tablename__ = "consent_records"

    record_id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    schema_version: Mapped[str] = mapped_column(String(8), default=SCHEMA_VERSION)
    kind: Mapped[str] = mapped_column(String(16), default="consent")
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id"), index=True)
    # E.164; None when the caller's number was withheld, or after erasure.
    pii_principal_id: Mapped[str | None] = mapped_column(String(32), index=True)
    phone_source: Mapped[str | None] = mapped_column(String(16))  # caller-id, dialled, ...
    # The salt of the subject's commitment in the first event; erased with the phone, so the
    # commitment left in the chain can no longer be tied to any number.
    subject_salt: Mapped[str | None] = mapped_column(String(32))
    jurisdiction: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(16))
    campaign: Mapped[str] = mapped_column(String(64))
    purpose_id: Mapped[str | None] = mapped_column(String(64), index=True)
    purpose: Mapped[dict[str, Any]]
    controller: Mapped[dict[str, Any]]
    collection_method: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    status: Mapped[str | None] = mapped_column(String(16))  # the latest lifecycle event
    status_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    # Where the event chain ends: a removed newest event is otherwise undetectable.
    head_seq: Mapped[int | None]
    head_hash: Mapped[str | None] = mapped_column(String(64))

    call: Mapped[Call] = relationship(back_populates="records")
    events: Mapped[list[ConsentEvent]] = relationship(
        back_populates="record", order_by="ConsentEvent.seq"
    )

    __table_args__ = (Index("ix_consent_records_phone_purpose", "pii_principal_id", "purpose_id"),)


class ConsentEvent(Base):
    """Append-only (triggers refuse UPDATE and DELETE): each row hashes the previous one of its
    record, and the ledger columns chain every event of the database in one global order."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ForeignKey("consent_records.record_id"))
    seq: Mapped[int]
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    ledger_seq: Mapped[int] = mapped_column(LedgerSeq)
    ledger_prev: Mapped[str] = mapped_column(String(64))
    ledger_hash: Mapped[str] = mapped_column(String(64))

    record: Mapped[ConsentRecord] = relationship(back_populates="events")

    __table_args__ = (
        UniqueConstraint("record_id", "seq", name="uq_consent_events_record_seq"),
        UniqueConstraint("ledger_seq", name="uq_consent_events_ledger_seq"),
    )


class LedgerHead(Base):
    """One row: the newest ledger entry. Every transaction that writes evidence starts by
    updating it, which serialises evidence writers (one global order, no forked ledger)."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(LedgerSeq)
    hash: Mapped[str] = mapped_column(String(64))


class Checkpoint(Base):
    """The ledger head at a moment, signed (Ed25519) when a signing key is configured.
    Append-only; each is also appended to the file `evidence.checkpoints`."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ledger_seq: Mapped[int] = mapped_column(LedgerSeq, index=True)
    ledger_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    key_id: Mapped[str | None] = mapped_column(String(16))
    signature: Mapped[str | None] = mapped_column(String(128))


class Suppression(Base):
    """The do-not-contact register: a refusal, a withdrawal, a STOP or an operator's entry.

    It keeps the phone number after the records themselves are erased, because honouring an
    objection requires remembering who objected (and nothing else about them)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(String(32))
    purpose_id: Mapped[str | None] = mapped_column(String(64))  # None: every purpose
    channel: Mapped[str] = mapped_column(String(8))  # all, call, sms
    source: Mapped[str] = mapped_column(String(16))  # refused, withdrawn, stop, operator
    reason: Mapped[str | None] = mapped_column(Text)
    by: Mapped[str | None] = mapped_column(String(64))
    record_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]
    lifted_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_suppressions_phone", "phone", "purpose_id"),)


class ContactAttempt(Base):
    """A contact the product made or refused to make: an outbound call or an SMS, with why.

    A call to a number that refused or withdrew is not placed: it is kept here as
    ``suppressed`` with the reason, so the refusal is shown to have been obeyed."""

    __tablename__ = "contact_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    phone: Mapped[str] = mapped_column(String(32), index=True)
    campaign: Mapped[str | None] = mapped_column(String(64))
    purpose_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))  # call, sms
    result: Mapped[str] = mapped_column(String(16))  # suppressed, placed, failed
    reason: Mapped[str | None] = mapped_column(Text)
    channel_id: Mapped[str | None] = mapped_column(String(128))
