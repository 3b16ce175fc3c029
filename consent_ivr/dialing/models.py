"""Campaign state: the numbers of each campaign and where each stands.

Every attempt itself is a `ContactAttempt` (consent_ivr.store.models), with Asterisk's result
and cause, like the calls a refusal stopped; a number's row only says what is left to do. The
campaign row is what runners lock to claim numbers one at a time, which makes its limits (calls
in progress, calls per second) hold across runners sharing the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consent_ivr.store.models import Base

# A number's status. pending: to dial (now or at next_attempt_at); dialling: claimed by a
# runner, its call under way; done: nothing left to do (see `result`); skipped: not ours to
# call (it refused, withdrew or is on the do-not-contact list; `reason` says which).
PENDING, DIALLING, DONE, SKIPPED = "pending", "dialling", "done", "skipped"


class DialCampaign(Base):
    __tablename__ = "dial_campaigns"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    # The next moment a call may be placed under the campaign's calls-per-second limit.
    next_dial_at: Mapped[datetime]


class DialNumber(Base):
    __tablename__ = "dial_numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(128))
    language: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(255))  # file:line it was read from
    zones: Mapped[str] = mapped_column(String(255))  # time zones the number may be in
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    result: Mapped[str | None] = mapped_column(String(16))  # of the latest attempt
    reason: Mapped[str | None] = mapped_column(Text)
    channel_id: Mapped[str | None] = mapped_column(String(128))  # of the latest attempt
    claim_token: Mapped[str | None] = mapped_column(String(36))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("campaign", "phone", name="uq_dial_numbers_campaign_phone"),
        Index("ix_dial_numbers_due", "campaign", "status", "next_attempt_at"),
    )
