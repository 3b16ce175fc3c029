"""PostgreSQL on the event loop (consent_ivr.store.pgasync): the hot path's one-statement read
gives the same answer as the session path (`services.consent_status`) for every state a person
can be in, alone or in a batch of reads asked together, and sees what other connections commit
at once; the audit log's COPY keeps a batch that failed for the next flush; a connection the
server killed fails the reads on it, and the next use reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import select

from consent_ivr import metrics
from consent_ivr.api import audit, services, tokens
from consent_ivr.api.models import AuditEvent
from consent_ivr.store import lifecycle, pgasync
from consent_ivr.store.db import Database
from tests.integration.test_lifecycle import NEWS, OFFERS, at, call

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]

CONFIG: Any = SimpleNamespace(purposes={"offers": {}, "news": {}, "letters": {}})
PHONES = [f"+7916000000{i}" for i in range(8)]
T = TypeVar("T")


def by_session(db: Database, phone: str, purpose: str | None, hours: float) -> Any:
    with db.session() as s:
        return services.consent_status(s, CONFIG, phone, purpose, at(hours))


async def by_reader(r: pgasync.AsyncPg, phone: str, purpose: str | None, hours: float) -> Any:
    rows, entries = await r.consents(phone, purpose)
    return services.consent_status_of(CONFIG, phone, purpose, rows, entries, at(hours))


def with_reader(db: Database, work: Callable[[pgasync.AsyncPg], Awaitable[T]], size: int = 2) -> T:
    """`work(reader)` on a new event loop (`size` connections), the reader closed after."""

    async def go() -> T:
        reader = pgasync.AsyncPg(db.engine.url, size=size)
        try:
            return await work(reader)
        finally:
            await reader.close()

    return asyncio.run(go())


def withdraw(db: Database, phone: str, hours: float, channel: str, **kw: Any) -> None:
    with db.session() as s:
        done = lifecycle.withdraw(
            s, lifecycle.active(s, phone, None, at(hours)), at(hours), channel=channel, **kw
        )
        assert done, f"nothing withdrawn for {phone}"


def people(db: Database) -> None:
    """One number in each state: none, given on two purposes, refused, withdrawn by SMS and
    by an operator, expired, a refusal replaced by a consent, an operator's entry (one lifted)."""
    call(db, (OFFERS, None), phone=PHONES[0])
    call(db, (OFFERS, "granted"), (NEWS, "granted"), phone=PHONES[1])
    call(db, (OFFERS, "declined"), phone=PHONES[2])
    call(db, (OFFERS, "granted"), (NEWS, "granted"), phone=PHONES[3])
    withdraw(db, PHONES[3], 2, "sms", via_sms="sms-1")
    call(db, (OFFERS, "granted"), phone=PHONES[4])
    withdraw(db, PHONES[4], 3, "operator", by="Anna", reason="letter")
    call(db, (NEWS, "granted"), phone=PHONES[5])  # NEWS is valid one day
    call(db, (OFFERS, "declined"), phone=PHONES[6])
    call(db, (OFFERS, "granted"), t=5, phone=PHONES[6])
    call(db, (OFFERS, "granted"), phone=PHONES[7])
    with db.session() as s:
        kept = lifecycle.suppress(s, PHONES[7], None, "operator", at(1), channel="sms", by="Oleg")
        lifted = lifecycle.suppress(s, PHONES[7], "offers", "operator", at(1), reason="x")
        s.flush()
        lifecycle.lift(s, lifted.id, at(2))
        assert kept.id != lifted.id


def test_the_reader_answers_as_the_session_does(database: Database) -> None:
    people(database)
    asked = [
        (phone, purpose, hours)
        for phone in PHONES
        for purpose in (None, "offers", "news", "letters")
        for hours in (1, 10, 48)
    ]

    async def read_all(reader: pgasync.AsyncPg) -> list[Any]:
        return [await by_reader(reader, *q) for q in asked]

    answers = with_reader(database, read_all)
    assert len(answers) == len(PHONES) * 12
    states = set()
    for q, answer in zip(asked, answers, strict=True):
        expected = by_session(database, *q)
        assert answer == expected, q
        states |= {p["state"] for p in expected["purposes"]}
    # The comparison covered every state, and register entries both ways.
    assert states == {"none", "given", "refused", "withdrawn", "expired"}
    answer = answers[asked.index((PHONES[4], "offers", 10))]
    assert answer["purposes"][0]["channel"] == "operator"
    answer = answers[asked.index((PHONES[3], "news", 10))]
    assert answer["purposes"][0]["channel"] == "sms"
    entries = answers[asked.index((PHONES[7], None, 10))]["do_not_contact"]
    assert [(e["source"], e["channel"], e["by"]) for e in entries] == [("operator", "sms", "Oleg")]


def read_batches() -> tuple[float, float]:
    """(statements, requests) of the hot read so far in this process."""
    found = {"count": 0.0, "sum": 0.0}
    for metric in metrics.API_READ_BATCH.collect():
        for sample in metric.samples:
            for part in found:
                if sample.name.endswith("_" + part):
                    found[part] = sample.value
    return found["count"], found["sum"]


def test_reads_asked_together_go_as_one_statement_each_with_its_own_answer(
    database: Database,
) -> None:
    people(database)
    asked = [(phone, purpose, 10) for phone in PHONES for purpose in (None, "offers", "news")] * 2
    before = read_batches()

    async def together(reader: pgasync.AsyncPg) -> list[Any]:
        return await asyncio.gather(*(by_reader(reader, *q) for q in asked))

    answers = with_reader(database, together)
    statements, requests = (a - b for a, b in zip(read_batches(), before, strict=True))
    assert (statements, requests) == (1, len(asked))
    for q, answer in zip(asked, answers, strict=True):
        assert answer == by_session(database, *q), q
    assert len({str(a) for a in answers}) > len(PHONES)  # the answers differ: none was swapped


def test_a_read_given_up_leaves_the_others_of_its_batch_answered(database: Database) -> None:
    people(database)

    async def go(reader: pgasync.AsyncPg) -> list[Any]:
        reads = [asyncio.ensure_future(by_reader(reader, p, None, 10)) for p in PHONES]
        await asyncio.sleep(0)  # every read has been asked; the batch is not sent yet
        reads[2].cancel()  # its client went away
        done = await asyncio.gather(*reads, return_exceptions=True)
        assert isinstance(done[2], asyncio.CancelledError)
        return [d for i, d in enumerate(done) if i != 2]

    answers = with_reader(database, go)
    phones = [p for i, p in enumerate(PHONES) if i != 2]
    assert answers == [by_session(database, p, None, 10) for p in phones]


def test_an_unknown_purpose_is_refused_the_same_way(database: Database) -> None:
    people(database)
    with pytest.raises(services.UnknownPurpose, match="'nope'") as one:
        by_session(database, PHONES[1], "nope", 1)
    with pytest.raises(services.UnknownPurpose) as two:
        with_reader(database, lambda r: by_reader(r, PHONES[1], "nope", 1))
    assert str(one.value) == str(two.value)


def test_what_another_connection_commits_is_read_at_once(database: Database) -> None:
    call(database, (OFFERS, "granted"), phone=PHONES[1])

    async def go(reader: pgasync.AsyncPg) -> list[bool]:
        seen = []
        for step in (1, 2):
            answer = await by_reader(reader, PHONES[1], "offers", 9)
            seen.append(answer["purposes"][0]["may_contact"]["call"]["allowed"])
            if step == 1:
                await asyncio.to_thread(withdraw, database, PHONES[1], 2, "operator", by="Anna")
        return seen

    assert with_reader(database, go) == [True, False]


def test_a_killed_connection_fails_one_read_and_the_next_reconnects(
    database: Database, pg_server: Any
) -> None:
    call(database, (OFFERS, "granted"), phone=PHONES[1])

    async def go(reader: pgasync.AsyncPg) -> tuple[Exception | None, Any]:
        await reader.consents(PHONES[1], None)  # opens the connection
        assert kill_connections(pg_server, database) == 1
        failed = None
        try:
            await reader.consents(PHONES[1], None)
        except psycopg.OperationalError as e:
            failed = e
        return failed, await reader.consents(PHONES[1], None)

    failed, (rows, _) = with_reader(database, go)
    assert isinstance(failed, psycopg.errors.AdminShutdown), failed
    assert [r.status for r in rows] == ["given"]


def test_a_killed_connection_fails_every_read_of_its_batch_then_reconnects(
    database: Database, pg_server: Any
) -> None:
    call(database, (OFFERS, "granted"), phone=PHONES[1])

    async def go(reader: pgasync.AsyncPg) -> tuple[list[Any], Any]:
        await reader.consents(PHONES[1], None)  # opens the only connection
        assert kill_connections(pg_server, database) == 1
        batch = [reader.consents(PHONES[1], None) for _ in range(5)]
        failed = await asyncio.gather(*batch, return_exceptions=True)
        return failed, await reader.consents(PHONES[1], None)

    failed, (rows, _) = with_reader(database, go, size=1)
    assert [type(f) for f in failed] == [psycopg.errors.AdminShutdown] * 5, failed
    assert [r.status for r in rows] == ["given"]


def kill_connections(pg_server: Any, database: Database) -> int:
    """Terminate the hot read's connections; once their backends are gone (termination is a
    signal: a backend may still answer a query sent at once), how many there were."""
    where = "WHERE datname = current_database() AND application_name = %s"
    with pg_server.connect(database.engine.url.database) as admin:
        killed = admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity {where}",
            (pgasync.APPLICATION,),
        ).fetchall()
        for _ in range(100):
            left = admin.execute(
                f"SELECT count(*) FROM pg_stat_activity {where}", (pgasync.APPLICATION,)
            ).fetchone()
            if left == (0,):
                break
            time.sleep(0.05)
        return len(killed)


def test_the_audit_log_copies_its_batches_and_keeps_a_failed_one(
    database: Database, pg_server: Any
) -> None:
    with database.session() as s:
        row, _ = tokens.create(s, "crm", ["read"], at(0), None)
        caller = tokens.Caller(row.id, row.name, frozenset(["read"]), None)

    async def go(pg: pgasync.AsyncPg) -> list[int]:
        log = audit.AuditLog(database, 60, pg)
        for n in range(3):
            log.record(audit.event(caller, "consents.read", PHONES[n], 200, at=at(n)))
        written = [await log.flush()]
        assert kill_connections(pg_server, database) == 1
        log.record(audit.event(caller, "records.read", "r-1", 404, {"why": "gone"}, at(4)))
        written.append(await log.flush())  # on the killed connection: kept for the next one
        written.append(await log.flush())
        return written

    assert with_reader(database, go) == [3, 0, 1]
    with database.session() as s:
        rows = s.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(r.action, r.target, r.status, r.detail, r.at) for r in rows] == [
        ("consents.read", PHONES[0], 200, None, at(0)),
        ("consents.read", PHONES[1], 200, None, at(1)),
        ("consents.read", PHONES[2], 200, None, at(2)),
        ("records.read", "r-1", 404, {"why": "gone"}, at(4)),
    ]
    assert {(r.token_id, r.token_name) for r in rows} == {(caller.token_id, "crm")}
