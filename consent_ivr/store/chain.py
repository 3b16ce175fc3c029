"""The hashes that make the evidence tamper-evident, and the one way events are written.

Theory of operation
-------------------
Two chains run through the event table. Each record's events form its own chain: an event's
hash covers the record id, its sequence number, time, kind, step, data and the previous event's
hash, and the record keeps the newest (``head_seq``, ``head_hash``), so an edited, removed,
reordered or truncated event is found. The *ledger* chains every event of the database in one
global order (``ledger_seq``): each entry hashes the previous entry and the event's own hash, so
a whole record deleted, or an event removed together with its record's head, leaves a gap.
Signed checkpoints of the ledger head (consent_ivr.evidence.checkpoints) pin the ledger, so even a
database rewritten from scratch with recomputed hashes is found.

Every transaction that writes events calls `append`, which first takes the ledger head's row
lock (an UPDATE, so SQLite takes its write lock at once too): evidence writers are serialised,
the ledger never forks, and because the ledger lock is always the first lock such a transaction
takes, two of them can never deadlock. Nothing else writes ``consent_events``; database
triggers refuse UPDATE and DELETE on it.

Personal data is not hashed in the clear: the first event holds a salted commitment to the
subject's numbers, and the salt lives on the record. Erasure deletes the numbers and the salt,
which leaves the chain intact while the commitment can no longer be tied to a number.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, inspect, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from consent_ivr.clock import iso, utc
from consent_ivr.store.models import ConsentEvent, ConsentRecord, LedgerHead

GENESIS = "0" * 64

# Lifecycle events of a consent (DESIGN.md); the rest of the log is evidence of the call.
LIFECYCLE = ("requested", "given", "refused", "withdrawn", "expired")


@dataclass(frozen=True)
class Evidence:
    """One line of the event log, collected during the call and written in order."""

    at: datetime
    kind: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def canonical(value: Any) -> str:
    """The one serialisation every hash is taken over (sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def event_hash(
    record_id: str,
    seq: int,
    at: datetime,
    kind: str,
    step: str | None,
    data: dict[str, Any],
    prev_hash: str,
) -> str:
    body = {
        "record_id": record_id,
        "seq": seq,
        "at": iso(at),
        "kind": kind,
        "step": step,
        "data": data,
        "prev": prev_hash,
    }
    return sha256_text(canonical(body))


def ledger_hash(seq: int, prev: str, event: str) -> str:
    return sha256_text(canonical({"seq": seq, "prev": prev, "event": event}))


def new_salt() -> str:
    return secrets.token_hex(16)


def commitment(salt: str, personal: dict[str, Any]) -> str:
    """A salted SHA-256 of the subject's personal data, as the first event keeps it."""
    return sha256_text(salt + ":" + canonical(personal))


_LOCKED = "consent_ivr.ledger_locked"
_KNOWN_HEAD = "consent_ivr.ledger_head"  # (transaction, seq, hash) while nothing else wrote it
_HEAD = cast(Table, LedgerHead.__table__)
_EVENTS = cast(Table, ConsentEvent.__table__)
_RECORDS = cast(Table, ConsentRecord.__table__)


def lock(session: Session) -> None:
    """Take the ledger lock (see the module docstring). Once per transaction: the lock is held
    until it ends."""
    transaction = session.get_transaction()
    if session.info.get(_LOCKED) is not transaction or transaction is None:
        # The lock's own statement returns the head it holds: one statement fewer per write.
        head = session.execute(_LOCK).first()
        session.info[_LOCKED] = transaction
        if head is not None:
            session.info[_KNOWN_HEAD] = (transaction, head[0], head[1])
        _read_again_under_lock(session)


# A record's columns that change only with an event appended under the ledger lock.
_UNDER_LOCK = ("head_seq", "head_hash", "status", "status_at")


def _read_again_under_lock(session: Session) -> None:
    """Records this transaction read before it took the lock may be behind: another
    transaction (the SMS worker's `sms_sent`, a STOP's withdrawal, a CLI command in another
    process) can append to them and commit in between. Their chain columns are read again
    when next used, unless this transaction changed them itself."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, LedgerHead):
            session.expire(obj)
            continue
        if not isinstance(obj, ConsentRecord):
            continue
        state = inspect(obj)
        behind = [a for a in _UNDER_LOCK if not state.attrs[a].history.has_changes()]
        if state.persistent and behind:
            session.expire(obj, behind)


_DEFERRED = "consent_ivr.ledger_deferred"


def append(session: Session, items: Iterable[tuple[str, Evidence]]) -> None:
    """Append events to their records' chains and to the ledger, in the order given (inside
    `deferred`, at its end)."""
    queue = session.info.get(_DEFERRED)
    if queue is not None:
        queue.add(items)
        return
    batch = list(items)
    if batch:
        _write(session, batch)


class Deferred:
    """The events appended inside `deferred`, in order. A lifecycle event shows on its
    record's object at once: a withdrawal later in the batch must see the consent withdrawn."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[tuple[str, Evidence]] = []

    def add(self, items: Iterable[tuple[str, Evidence]]) -> None:
        for record_id, ev in items:
            self.events.append((record_id, ev))
            if ev.kind not in LIFECYCLE:
                continue
            record = self.session.identity_map.get(identity_key(ConsentRecord, record_id))
            if record is not None:
                set_committed_value(record, "status", ev.kind)
                set_committed_value(record, "status_at", utc(ev.at))


@contextmanager
def deferred(session: Session) -> Iterator[Deferred]:
    """Appends inside this block are queued, and written together when it ends, in the order
    they were made (the group commit of consent_ivr.store.db: one INSERT for the events of
    all the calls in the batch). An exception inside it writes none of them."""
    queue = Deferred(session)
    session.info[_DEFERRED] = queue
    try:
        yield queue
    finally:
        del session.info[_DEFERRED]
    if queue.events:
        _write(session, queue.events)


_LEDGER_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)
_LOCK = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=_HEAD.c.seq)
    .returning(_HEAD.c.seq, _HEAD.c.hash)
)
_SET_LEDGER_HEAD = update(_HEAD).where(_HEAD.c.id == 1)
_RECORD_HEADS = select(_RECORDS.c.record_id, _RECORDS.c.head_seq, _RECORDS.c.head_hash)
_INSERT_EVENTS = insert(_EVENTS)
_SET_HEAD = (
    update(_RECORDS)
    .where(_RECORDS.c.record_id == bindparam("rid"))
    .values(head_seq=bindparam("hseq"), head_hash=bindparam("hhash"))
)
_SET_HEAD_AND_STATUS = _SET_HEAD.values(status=bindparam("st"), status_at=bindparam("st_at"))


def _write(session: Session, batch: list[tuple[str, Evidence]]) -> None:
    """The rows are written with plain INSERT and UPDATE statements (executemany), not through
    the ORM's unit of work: a call writes some 25 events, and that was most of what a call
    cost the service. The heads are read from the database under the lock, and the record
    and ledger-head objects this session holds are given the new values, so ORM code later in
    the transaction sees what was written."""
    lock(session)
    session.flush()  # records added through the ORM exist before their events
    conn = session.connection()
    known = session.info.pop(_KNOWN_HEAD, None)
    if known is not None and known[0] is session.get_transaction():
        ledger: Any = known[1:]  # read by the lock in this transaction; only _write changes it
    else:
        ledger = conn.execute(_LEDGER_HEAD).first()
    if ledger is None:  # a database whose head row was removed: the ledger starts again
        conn.execute(insert(_HEAD).values(id=1, seq=0, hash=GENESIS))
    seq, prev = ledger if ledger is not None else (0, GENESIS)
    ids = list(dict.fromkeys(record_id for record_id, _ in batch))
    heads: dict[str, list[Any]] = {}
    for chunk in range(0, len(ids), 500):
        wanted = _RECORDS.c.record_id.in_(ids[chunk : chunk + 500])
        for rid, hseq, hhash in conn.execute(_RECORD_HEADS.where(wanted)):
            heads[rid] = [hseq or 0, hhash or GENESIS, None, None]
    rows = []
    for record_id, ev in batch:
        head = heads.get(record_id)
        if head is None:
            raise LookupError(f"no consent record {record_id}")
        at = utc(ev.at)
        rseq, rprev = head[0] + 1, head[1]
        digest = event_hash(record_id, rseq, at, ev.kind, ev.step, ev.data, rprev)
        seq += 1
        link = ledger_hash(seq, prev, digest)
        rows.append(
            {
                "record_id": record_id,
                "seq": rseq,
                "at": at,
                "kind": ev.kind,
                "step": ev.step,
                "data": ev.data,
                "prev_hash": rprev,
                "hash": digest,
                "ledger_seq": seq,
                "ledger_prev": prev,
                "ledger_hash": link,
            }
        )
        head[0], head[1] = rseq, digest
        if ev.kind in LIFECYCLE:
            head[2], head[3] = ev.kind, at
        prev = link
    conn.execute(_INSERT_EVENTS, rows)
    plain = [{"rid": r, "hseq": h[0], "hhash": h[1]} for r, h in heads.items() if h[2] is None]
    changed = [
        {"rid": r, "hseq": h[0], "hhash": h[1], "st": h[2], "st_at": h[3]}
        for r, h in heads.items()
        if h[2] is not None
    ]
    if plain:
        conn.execute(_SET_HEAD, plain)
    if changed:
        conn.execute(_SET_HEAD_AND_STATUS, changed)
    conn.execute(_SET_LEDGER_HEAD.values(seq=seq, hash=prev))
    session.info[_KNOWN_HEAD] = (session.get_transaction(), seq, prev)
    _held_objects_follow(session, seq, prev, heads)


def _held_objects_follow(
    session: Session, seq: int, prev: str, heads: dict[str, list[Any]]
) -> None:
    """The ORM objects of this session show what was just written."""
    held = session.identity_map.get(identity_key(LedgerHead, 1))
    if held is not None:
        set_committed_value(held, "seq", seq)
        set_committed_value(held, "hash", prev)
    for rid, (hseq, hhash, status, status_at) in heads.items():
        record = session.identity_map.get(identity_key(ConsentRecord, rid))
        if record is None:
            continue
        set_committed_value(record, "head_seq", hseq)
        set_committed_value(record, "head_hash", hhash)
        if status is not None:
            set_committed_value(record, "status", status)
            set_committed_value(record, "status_at", status_at)


def events_of(session: Session, record_id: str) -> list[ConsentEvent]:
    return list(
        session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.record_id == record_id)
            .order_by(ConsentEvent.seq)
        )
    )


def chain_problems(record_id: str, events: Iterable[ConsentEvent]) -> list[str]:
    """Breaks in one record's chain (empty when intact): edited, removed or reordered events."""
    problems = []
    prev, expected_seq = GENESIS, 1
    for ev in events:
        if ev.seq != expected_seq:
            problems.append(f"event {expected_seq} missing (found {ev.seq} next)")
        if ev.prev_hash != prev:
            problems.append(f"event {ev.seq}: previous hash does not match event {ev.seq - 1}")
        digest = event_hash(record_id, ev.seq, utc(ev.at), ev.kind, ev.step, ev.data, ev.prev_hash)
        if digest != ev.hash:
            problems.append(
                f"event {ev.seq} ({ev.kind}): content does not match its hash "
                f"(stored {ev.hash[:12]}, computed {digest[:12]})"
            )
        prev, expected_seq = ev.hash, ev.seq + 1
    return problems


def head_problems(record: ConsentRecord, events: list[ConsentEvent]) -> list[str]:
    """The chain must end where the record says it does: catches removed newest events."""
    last_seq, last_hash = (events[-1].seq, events[-1].hash) if events else (0, GENESIS)
    if (last_seq, last_hash) == (record.head_seq or 0, record.head_hash or GENESIS):
        return []
    return [
        f"head: the chain ends at event {last_seq}, the record at event {record.head_seq} "
        f"(events removed or replaced)"
    ]
