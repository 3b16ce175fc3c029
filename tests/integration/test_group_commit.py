"""Group commit (`Database.batched`) on real SQLite and PostgreSQL: the writes of calls that wait
at the same moment share a transaction, their evidence is one ledger with no gap and every
record's chain intact; a write that fails, while it runs or when its events are written at the
batch's end, fails alone: the others are stored, its events are not."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from consent_ivr import metrics
from consent_ivr.store import chain, lifecycle, records
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call, ConsentEvent, ConsentRecord
from consent_ivr.store.records import NewCall, NewRecord, Subject

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PURPOSE = {"id": "offers", "text": "offers by phone", "validity": "P1Y", "retention": "P5Y"}


def new_call(i: int) -> NewCall:
    return NewCall(
        channel_id=f"ch-{i}",
        direction="inbound",
        campaign="default",
        language="en",
        jurisdiction="RU",
        controller={"name": "Example Ltd"},
        started_at=T0,
        subject=Subject(f"+7916{i:07d}", "caller-id"),
    )


def a_call(i: int, *, fail: bool = False):  # type: ignore[no-untyped-def]
    """One call's write: open it, note what it heard, decide; `fail` raises after all that."""

    def write(session: Session) -> str:
        call_id, (record_id,) = records.open_call(
            session, new_call(i), [NewRecord("consent", PURPOSE)]
        )
        keys = [Evidence(T0 + timedelta(seconds=s), "key", "ask", {"digit": "1"}) for s in (1, 2)]
        at = T0 + timedelta(seconds=3)
        records.store_decision(session, record_id, "granted", at, [(record_id, k) for k in keys])
        if fail:
            raise RuntimeError(f"call {i} failed")
        return record_id

    return write


def batches() -> tuple[float, float]:
    """(transactions, writes) the group commit has made so far in this process."""
    count = sum = 0.0
    for metric in metrics.DB_BATCH.collect():
        for s in metric.samples:
            if s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                sum = s.value
    return count, sum


def intact(db: Database) -> tuple[int, list[str]]:
    """The ledger's length and every problem found in it and in the records' chains."""
    problems: list[str] = []
    with db.session() as s:
        prev = chain.GENESIS
        events = list(s.scalars(select(ConsentEvent).order_by(ConsentEvent.ledger_seq)))
        for n, ev in enumerate(events, 1):
            if ev.ledger_seq != n or ev.ledger_prev != prev:
                problems.append(f"ledger entry {n}: gap or fork")
            if ev.ledger_hash != chain.ledger_hash(ev.ledger_seq, ev.ledger_prev, ev.hash):
                problems.append(f"ledger entry {n}: hash")
            prev = ev.ledger_hash
        for record in s.scalars(select(ConsentRecord)):
            mine = chain.events_of(s, record.record_id)
            problems += chain.chain_problems(record.record_id, mine)
            problems += chain.head_problems(record, mine)
    return len(events), problems


async def test_calls_waiting_together_share_a_transaction(database: Database) -> None:
    count0, sum0 = batches()
    ids = await asyncio.gather(*(database.batched(a_call(i)) for i in range(30)))
    count, sum = batches()
    assert sum - sum0 == 30
    assert count - count0 < 30  # fewer transactions than writes: they were grouped
    assert len(set(ids)) == 30
    length, problems = intact(database)
    assert problems == []
    assert length == 30 * 4  # requested, two keys, given
    with database.session() as s:
        statuses = s.execute(select(ConsentRecord.status, ConsentRecord.outcome)).all()
    assert set(statuses) == {("given", "granted")}


async def test_a_failing_write_is_rolled_back_alone_with_its_events(database: Database) -> None:
    results = await asyncio.gather(
        *(database.batched(a_call(i, fail=i == 5)) for i in range(10)), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, Exception)]
    assert [str(e) for e in failed] == ["call 5 failed"]
    length, problems = intact(database)
    assert problems == []
    assert length == 9 * 4
    with database.session() as s:
        channels = set(s.scalars(select(Call.channel_id)))
    assert "ch-5" not in channels and len(channels) == 9


async def test_a_write_whose_events_fail_at_the_end_fails_alone(database: Database) -> None:
    def orphan_events(session: Session) -> None:
        chain.append(session, [("no-such-record", Evidence(T0, "key", "ask", {"digit": "1"}))])

    results = await asyncio.gather(
        database.batched(a_call(1)),
        database.batched(orphan_events),
        database.batched(a_call(2)),
        return_exceptions=True,
    )
    assert isinstance(results[1], LookupError), results
    assert isinstance(results[0], str) and isinstance(results[2], str), results
    length, problems = intact(database)
    assert (length, problems) == (2 * 4, [])
    with database.session() as s:
        assert set(s.scalars(select(Call.channel_id))) == {"ch-1", "ch-2"}


async def test_a_withdrawal_sees_what_the_batch_did_before_it(database: Database) -> None:
    """Three withdrawals of one consent in one batch, the first rolled back: the second
    withdraws it, the third finds it withdrawn already."""
    record_id = await database.batched(a_call(1))

    def withdraw(n: int, *, fail: bool = False):  # type: ignore[no-untyped-def]
        def write(session: Session) -> int:
            record = session.get(ConsentRecord, record_id)
            at = T0 + timedelta(minutes=n)
            done = lifecycle.withdraw(session, [record], at, channel="operator", by=f"op{n}")
            if fail:
                raise RuntimeError("operator's write failed")
            return len(done)

        return write

    results = await asyncio.gather(
        database.batched(withdraw(1, fail=True)),
        database.batched(withdraw(2)),
        database.batched(withdraw(3)),
        return_exceptions=True,
    )
    assert [r if isinstance(r, int) else type(r).__name__ for r in results] == [
        "RuntimeError",
        1,
        0,
    ]
    with database.session() as s:
        events = chain.events_of(s, record_id)
        assert [e.data.get("by") for e in events if e.kind == "withdrawn"] == ["op2"]
        assert s.get(ConsentRecord, record_id).status == "withdrawn"  # type: ignore[union-attr]
    assert intact(database)[1] == []


async def test_the_records_a_batch_reads_are_loaded_by_one_query(database: Database) -> None:
    """Decisions that name their record (`records=`) find it loaded with the batch's others:
    no query per record; those that do not name it each query it."""
    opened = await asyncio.gather(*(database.batched(opening(i)) for i in range(10)))
    lookups: list[str] = []

    def seen(_conn, _cursor, statement: str, *_args) -> None:  # type: ignore[no-untyped-def]
        if "FROM consent_records" in statement and "consent_records.kind" in statement:
            lookups.append(statement)

    def deciding(record_id: str):  # type: ignore[no-untyped-def]
        def write(session: Session) -> None:
            records.store_decision(session, record_id, "granted", T0 + timedelta(seconds=3))

        return write

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        await asyncio.gather(*(database.batched(deciding(r), records=[r]) for r in opened[:5]))
        named = len(lookups)
        await asyncio.gather(*(database.batched(deciding(r)) for r in opened[5:]))
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert (named, len(lookups) - named) == (1, 5)
    with database.session() as s:
        outcomes = s.scalars(select(ConsentRecord.outcome))
        assert list(outcomes) == ["granted"] * 10
    assert intact(database)[1] == []


def opening(i: int):  # type: ignore[no-untyped-def]
    def write(session: Session) -> str:
        _, (record_id,) = records.open_call(session, new_call(i), [NewRecord("consent", PURPOSE)])
        return record_id

    return write


def test_a_snapshot_sees_a_record_and_its_events_at_one_moment(database: Database) -> None:
    """A record read while a call appends to it: its head and its events come from two
    statements. In a snapshot they agree (the chain is intact); in a plain session, on
    PostgreSQL, the event committed in between makes the record look tampered with."""
    with database.session() as s:
        record_id = a_call(1)(s)

    def append(n: int) -> None:
        with database.session() as s:
            at = T0 + timedelta(minutes=n)
            chain.append(s, [(record_id, Evidence(at, "sms_sent", None, {"n": n}))])

    with database.snapshot() as s:
        record = s.get(ConsentRecord, record_id)
        assert record is not None
        append(1)  # committed between the two reads
        events = chain.events_of(s, record_id)
        assert chain.head_problems(record, events) == []
        assert records.record_view(s, record_id)["integrity"]["chain_ok"]
    if database.dialect == "postgresql":
        with database.session() as s:
            record = s.get(ConsentRecord, record_id)
            assert record is not None
            append(2)
            assert chain.head_problems(record, chain.events_of(s, record_id)) != []
    with database.snapshot() as s:
        assert records.record_view(s, record_id)["integrity"]["chain_ok"]
