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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import inspect, select, update
from sqlalchemy.orm import Session

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


def lock(session: Session) -> LedgerHead:
    """Take the ledger lock (see the module docstring) and return the head row. Once per
    transaction: the lock is held until it ends."""
    transaction = session.get_transaction()
    if session.info.get(_LOCKED) is not transaction or transaction is None:
        session.execute(update(LedgerHead).where(LedgerHead.id == 1).values(seq=LedgerHead.seq))
        session.info[_LOCKED] = transaction
        _read_again_under_lock(session)
        head = session.get(LedgerHead, 1, populate_existing=True)
    else:
        head = session.get(LedgerHead, 1)
    if head is None:  # the first event of a new database
        head = LedgerHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    return head


# A record's columns that change only with an event appended under the ledger lock.
_UNDER_LOCK = ("head_seq", "head_hash", "status", "status_at")


def _read_again_under_lock(session: Session) -> None:
    """Records this transaction read before it took the lock may be behind: another
    transaction (the SMS worker's `sms_sent`, a STOP's withdrawal, a CLI command in another
    process) can append to them and commit in between. Their chain columns are read again
    when next used, unless this transaction changed them itself."""
    for obj in list(session.identity_map.values()):
        if not isinstance(obj, ConsentRecord):
            continue
        state = inspect(obj)
        behind = [a for a in _UNDER_LOCK if not state.attrs[a].history.has_changes()]
        if state.persistent and behind:
            session.expire(obj, behind)


def append(session: Session, items: Iterable[tuple[str, Evidence]]) -> list[ConsentEvent]:
    """Append events to their records' chains and to the ledger, in the order given."""
    batch = list(items)
    if not batch:
        return []
    ledger = lock(session)
    seq, prev = ledger.seq, ledger.hash
    records: dict[str, ConsentRecord] = {}
    written = []
    for record_id, ev in batch:
        record = records.get(record_id) or session.get(ConsentRecord, record_id)
        if record is None:
            raise LookupError(f"no consent record {record_id}")
        records[record_id] = record
        at = utc(ev.at)
        rseq = (record.head_seq or 0) + 1
        rprev = record.head_hash or GENESIS
        digest = event_hash(record_id, rseq, at, ev.kind, ev.step, ev.data, rprev)
        seq += 1
        link = ledger_hash(seq, prev, digest)
        event = ConsentEvent(
            record_id=record_id,
            seq=rseq,
            at=at,
            kind=ev.kind,
            step=ev.step,
            data=ev.data,
            prev_hash=rprev,
            hash=digest,
            ledger_seq=seq,
            ledger_prev=prev,
            ledger_hash=link,
        )
        session.add(event)
        written.append(event)
        record.head_seq, record.head_hash = rseq, digest
        if ev.kind in LIFECYCLE:
            record.status, record.status_at = ev.kind, at
        prev = link
    ledger.seq, ledger.hash = seq, prev
    session.flush()
    return written


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
