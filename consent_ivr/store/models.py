"""Database tables: calls, consent records and their append-only, hash-chained event log.

Field names follow ISO/IEC TS 27560 and the Kantara Consent Receipt where one exists
(``record_id``, ``pii_principal_id``, ``collection_method``, ``jurisdiction``).
The current state of a consent is derived from its events; ``outcome`` is the fixed result of
the collection call, written once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
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

SCHEMA_VERSION = "1"


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

    records: Mapped[list[ConsentRecord]] = relationship(back_populates="call")


class ConsentRecord(Base):
    __tablename__ = "consent_records"

    record_id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    schema_version: Mapped[str] = mapped_column(String(8), default=SCHEMA_VERSION)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id"), index=True)
    pii_principal_id: Mapped[str] = mapped_column(String(32), index=True)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(16))
    campaign: Mapped[str] = mapped_column(String(64))
    purpose_id: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[dict[str, Any]]
    controller: Mapped[dict[str, Any]]
    collection_method: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    # Where the event chain ends: a removed newest event is otherwise undetectable.
    head_seq: Mapped[int | None]
    head_hash: Mapped[str | None] = mapped_column(String(64))

    call: Mapped[Call] = relationship(back_populates="records")
    events: Mapped[list[ConsentEvent]] = relationship(
        back_populates="record", order_by="ConsentEvent.seq"
    )

    __table_args__ = (Index("ix_consent_records_phone_purpose", "pii_principal_id", "purpose_id"),)


class ConsentEvent(Base):
    """Append-only: each row hashes the previous one of its record, so edits are detectable."""

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

    record: Mapped[ConsentRecord] = relationship(back_populates="events")

    __table_args__ = (UniqueConstraint("record_id", "seq", name="uq_consent_events_record_seq"),)
