"""The audit log: every action through the API or the console, by token.

An action that changes something (a call placed, a withdrawal) writes its audit event in its
own transaction (`add`), so the two commit together. Reads are many (the hot path asks before
every contact), so their events are queued and written in one batch every `api.audit_flush_s`
(`AuditLog.record`; on PostgreSQL by COPY); the queue is written out when the service stops,
too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import insert
from sqlalchemy.orm import Session

from consent_ivr.api.models import AuditEvent
from consent_ivr.api.tokens import Caller
from consent_ivr.clock import now, pause, utc
from consent_ivr.store.db import Database
from consent_ivr.store.pgasync import AsyncPg

log = logging.getLogger(__name__)

MAX_QUEUE = 100_000  # a database that stays down must not take the process with it


def event(
    caller: Caller,
    action: str,
    target: str | None,
    status: int,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "at": utc(at or now()),
        "token_id": caller.token_id,
        "token_name": caller.name,
        "action": action,
        "target": None if target is None else target[:128],
        "status": status,
        "detail": detail,
    }


def add(
    session: Session,
    caller: Caller,
    action: str,
    target: str | None,
    status: int,
    detail: dict[str, Any] | None = None,
) -> None:
    """The audit event of a change, in the change's own transaction: it is written if and only
    if the change is."""
    session.add(AuditEvent(**event(caller, action, target, status, detail)))


COLUMNS = ("at", "token_id", "token_name", "action", "target", "status", "detail")


def copied(row: dict[str, Any]) -> tuple[Any, ...]:
    detail = row["detail"]
    return (*(row[c] for c in COLUMNS[:-1]), None if detail is None else Jsonb(detail))


class AuditLog:
    def __init__(self, db: Database, flush_s: float, pg: AsyncPg | None = None) -> None:
        self.db = db
        self.pg = pg  # PostgreSQL: the batches by COPY, on the loop
        self.flush_s = flush_s
        self._queue: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def record(self, row: dict[str, Any]) -> None:
        if len(self._queue) >= MAX_QUEUE:
            log.error("audit queue full (%d events): the database does not take them", MAX_QUEUE)
            return
        self._queue.append(row)

    async def flush(self) -> int:
        rows, self._queue = self._queue, []
        if not rows:
            return 0

        def write(session: Session) -> None:
            session.execute(insert(AuditEvent), rows)

        try:
            if self.pg is None:
                await self.db.transaction(write)
            else:
                await self.pg.copy(AuditEvent.__tablename__, COLUMNS, map(copied, rows))
        except Exception as e:
            self._queue[:0] = rows  # kept for the next try
            log.error(
                "audit events not written (%d kept for later): %s", len(rows), type(e).__name__
            )
            return 0
        return len(rows)

    async def _run(self) -> None:
        while not self._stopped.is_set():
            await pause(self.flush_s, self._stopped)
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="api-audit")

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            await self._task
        await self.flush()
