"""PostgreSQL on the event loop, for the API's hot path: a person's consent states and
do-not-contact entries in one statement and one round trip, and the audit log's batches
written by COPY.

`GET /v1/consents` is asked before every contact. Through SQLAlchemy's session in a reader
thread the answer cost seven round trips (pool pre-ping, BEGIN, the states, the register, the
channel of a withdrawal, COMMIT) and about 1.7 ms of Python, most of it around queries that
take tens of microseconds on the server. Here one prepared statement, in autocommit (so one
snapshot for both parts), returns both parts as JSON arrays; `lifecycle.derive` and
`services.consent_answer` then build the same answer as the session path does (the tests
compare the two on the same data). The audit events of those reads (one per request) went in
as an executemany through SQLAlchemy, a burst of Python work each second that held the
requests behind it; COPY costs a few microseconds a row.

A small pool of psycopg async connections, opened on first use. Reads asked while every
connection is busy go together as one statement (`unnest` of their numbers and purposes), so a
loaded service spends one round trip and one pass of the driver on many requests. A connection
that fails is closed and the error raised to every read of its batch (the API answers 503); the
next use opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

from consent_ivr import metrics
from consent_ivr.clock import utc

# For each asked (phone, purpose), in the order asked: the records' state columns (newest
# first) and the register entries in force (newest first). A withdrawn record carries the
# channel of its latest `withdrawn` event; only its validity is read of the purpose, the one
# field the state depends on. One statement answers a whole batch of requests.
_SQL = """
SELECT
 (SELECT coalesce(json_agg(json_build_array(
      r.record_id, r.purpose_id, r.purpose -> 'validity', r.outcome, r.decided_at, r.status,
      r.status_at,
      CASE WHEN r.status = 'withdrawn' THEN
        (SELECT e.data ->> 'channel' FROM consent_events e
          WHERE e.record_id = r.record_id AND e.kind = 'withdrawn'
          ORDER BY e.seq DESC LIMIT 1)
      END) ORDER BY r.started_at DESC), '[]'::json)
    FROM consent_records r
   WHERE r.pii_principal_id = q.phone AND r.kind = 'consent'
     AND (q.purpose IS NULL OR r.purpose_id = q.purpose)),
 (SELECT coalesce(json_agg(json_build_array(
      s.id, s.purpose_id, s.channel, s.source, s.reason, s.by, s.record_id, s.created_at)
      ORDER BY s.created_at DESC), '[]'::json)
    FROM suppressions s
   WHERE s.phone = q.phone AND s.lifted_at IS NULL)
FROM unnest(%(phones)s::text[], %(purposes)s::text[]) WITH ORDINALITY AS q(phone, purpose, i)
ORDER BY q.i
"""


APPLICATION = "consent-ivr hot read"  # as pg_stat_activity shows its connections


class RecordState(NamedTuple):
    """A record's state columns as the statement returns them (a `lifecycle.StateRow`)."""

    record_id: str
    purpose_id: str | None
    purpose: dict[str, Any]
    outcome: str | None
    decided_at: datetime | None
    status: str | None
    status_at: datetime | None
    withdrawal_channel: str | None
    kind: str = "consent"


class RegisterEntry(NamedTuple):
    id: int
    purpose_id: str | None
    channel: str
    source: str
    reason: str | None
    by: str | None
    record_id: str | None
    created_at: datetime


def _time(text: str | None) -> datetime | None:
    return None if text is None else _when(text)


def _when(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))


def rows_of(records: list[list[Any]]) -> list[RecordState]:
    return [
        RecordState(
            rid,
            pid,
            {} if validity is None else {"validity": validity},
            outcome,
            _time(decided),
            status,
            _time(status_at),
            channel,
        )
        for rid, pid, validity, outcome, decided, status, status_at, channel in records
    ]


def entries_of(entries: list[list[Any]]) -> list[RegisterEntry]:
    return [
        RegisterEntry(eid, pid, ch, source, reason, by, rid, _when(created))
        for eid, pid, ch, source, reason, by, rid, created in entries
    ]


def conninfo(url: URL) -> str:
    """psycopg's connection string for a SQLAlchemy URL (its password included: never log it)."""
    params = {k: v for k, v in url.query.items() if isinstance(v, str)}
    return make_conninfo(
        "",
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        connect_timeout=10,
        **{"application_name": APPLICATION, **params},
    )


Asked = tuple[str, "str | None", "asyncio.Future[tuple[list[Any], list[Any]]]"]


class AsyncPg:
    """Up to `size` connections. Reads asked while they are all busy wait together and go as
    one statement (at most `batch` of them) when one is free: under load a round trip, a
    statement and its driver work answer many requests, and a quiet service still answers
    each at once. Every request's read starts after it was asked (one snapshot per batch)."""

    def __init__(self, url: URL, size: int = 4, batch: int = 256) -> None:
        self._conninfo = conninfo(url)
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(size)
        self._size = size
        self._batch = batch
        self._asked: list[Asked] = []
        self._readers = 0  # tasks sending batches (at most `size`)
        self._gathering = False  # one of them is about to take what is asked
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            if self._idle.empty():
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            else:
                conn = self._idle.get_nowait()
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
            self._idle.put_nowait(conn)

    async def consents(
        self, phone: str, purpose: str | None
    ) -> tuple[list[RecordState], list[RegisterEntry]]:
        """The number's records' state columns (of `purpose`, or all) and its register."""
        answer: asyncio.Future[tuple[list[Any], list[Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._asked.append((phone, purpose, answer))
        if not self._gathering and self._readers < self._size:
            self._start_reader()
        records, entries = await answer
        return rows_of(records), entries_of(entries)

    async def _read(self) -> None:
        """Send what is asked, a batch at a time, until nothing is. A task starts on the
        loop's next turn: the requests read in this one have joined its first batch."""
        try:
            self._gathering = False
            while self._asked:
                batch = [a for a in self._asked[: self._batch] if not a[2].done()]
                del self._asked[: self._batch]
                if batch:
                    await self._answer(batch)
        finally:
            self._readers -= 1
            if self._asked and not self._gathering:  # left by a reader that failed
                self._start_reader()

    def _start_reader(self) -> None:
        self._gathering = True
        self._readers += 1
        task = asyncio.get_running_loop().create_task(self._read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, batch: list[Asked]) -> None:
        metrics.API_READ_BATCH.observe(len(batch))
        try:
            async with self._connection() as conn:
                cur = await conn.execute(
                    _SQL,
                    {"phones": [a[0] for a in batch], "purposes": [a[1] for a in batch]},
                    prepare=True,
                )
                rows = await cur.fetchall()
            for (_, _, answer), row in zip(batch, rows, strict=True):
                if not answer.done():
                    answer.set_result((row[0], row[1]))
        except Exception as e:
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(e)
            return
        except BaseException:  # cancelled: so are the requests waiting for it
            for _, _, answer in batch:
                answer.cancel()
            raise

    async def copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append `rows` to `table` in one COPY (one transaction: all of them or none)."""
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), names)
        async with (
            self._connection() as conn,
            conn.cursor() as cur,
            cur.copy(statement) as copy,
        ):
            for row in rows:
                await copy.write_row(row)

    async def close(self) -> None:
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                await conn.close()
