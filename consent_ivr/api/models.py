"""Tables of the API: its tokens (stored hashed: the token itself is shown once, at creation)
and the audit log of every action taken through the API and the console."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from consent_ivr.store.models import Base

SCOPES = ("read", "call", "withdraw", "export")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    # The first characters of the token, to tell tokens apart in lists and logs.
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the whole token: tokens are 256 random bits, so a fast hash is enough.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_per_s: Mapped[float | None] = mapped_column(Float)  # None: api.rate_per_s
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    """One action through the API or the console: who (the token), what, on what, and how it
    ended (the HTTP status)."""

    __tablename__ = "api_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    token_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None]
