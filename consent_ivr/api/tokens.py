"""API tokens: made and printed once (`consent-ivr tokens create`), kept only as their SHA-256,
revocable. The service looks a token up by its hash and keeps what it found for
`api.token_cache_s`, so the hot path does not pay a query for it on every request."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr.api.models import SCOPES, ApiToken
from consent_ivr.clock import utc

PREFIX = "cvr_"
SHOWN = 10  # characters of a token kept in clear, to tell tokens apart


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token as the request handlers see it (never the secret)."""

    token_id: int
    name: str
    scopes: frozenset[str]
    rate_per_s: float | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise ValueError(
            f"scope {', '.join(unknown) or '(none)'}: expected one or more of {', '.join(SCOPES)}"
        )
    return wanted


def create(
    session: Session, name: str, scopes: Sequence[str], at: datetime, rate_per_s: float | None
) -> tuple[ApiToken, str]:
    """A new token: its row, and the token itself (shown once, stored nowhere)."""
    if not name or len(name) > 64:
        raise ValueError("name: expected 1 to 64 characters")
    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError("rate: expected a positive number of requests per second")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        prefix=token[:SHOWN],
        token_sha256=digest(token),
        scopes=check_scopes(scopes),
        rate_per_s=rate_per_s,
        created_at=utc(at),
    )
    session.add(row)
    session.flush()
    return row, token


def revoke(session: Session, which: str, at: datetime) -> list[ApiToken]:
    """Revoke the live token with this id, or every live token with this name."""
    query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    if which.isdigit():
        query = query.where(ApiToken.id == int(which))
    else:
        query = query.where(ApiToken.name == which)
    rows = list(session.scalars(query))
    for row in rows:
        row.revoked_at = utc(at)
    return rows


def listed(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def find(session: Session, token_sha256: str) -> Caller | None:
    row = session.scalars(
        select(ApiToken).where(ApiToken.token_sha256 == token_sha256, ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Caller(row.id, row.name, frozenset(row.scopes), row.rate_per_s)


class TokenCache:
    """What a token (by its hash, or any other key) was found to be, a caller or nothing, for
    `ttl` seconds: revoking a token takes effect within `ttl`.

    One lookup at a time per key: the requests that miss together wait for the same one
    (when the entry expired under load, 50 requests used to start 50 lookups, each taking a
    database thread from the calls and the interpreter from the event loop). A key asked for
    in the second half of its `ttl` is answered from the cache while one lookup refreshes it
    behind, so a busy token never waits for its own lookup. `ttl` 0: a lookup per request,
    none shared."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._found: dict[str, tuple[float, Caller | None]] = {}
        self._pending: dict[str, asyncio.Future[Caller | None]] = {}

    async def caller(
        self, key: str, lookup: Callable[[], Awaitable[Caller | None]]
    ) -> Caller | None:
        if self.ttl <= 0:
            return await lookup()
        hit = self._found.get(key)
        if hit is not None:
            age = self.clock() - hit[0]
            if age < self.ttl:
                if age >= self.ttl / 2 and key not in self._pending:
                    self._start(key, lookup).add_done_callback(_quiet)
                return hit[1]
        pending = self._pending.get(key) or self._start(key, lookup)
        return await asyncio.shield(pending)

    def _start(
        self, key: str, lookup: Callable[[], Awaitable[Caller | None]]
    ) -> asyncio.Future[Caller | None]:
        async def fetch() -> Caller | None:
            asked = self.clock()  # the answer is as old as the question
            try:
                found = await lookup()
            finally:
                del self._pending[key]
            if len(self._found) > 10_000:  # random tokens must not grow it without bound
                self._found.clear()
            self._found[key] = (asked, found)
            return found

        task = self._pending[key] = asyncio.ensure_future(fetch())
        return task


def _quiet(task: asyncio.Future[Caller | None]) -> None:
    """A refresh behind the cache that failed: the entry stays until its `ttl` ends, and the
    lookup in front of the next request then reports the failure."""
    if not task.cancelled():
        task.exception()
