"""Writing and reading consent records. Plain functions over a Session: the caller owns the
transaction (see `Database.transaction`), so a decision, its events and its SMS job commit or
roll back together."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr.clock import iso, utc
from consent_ivr.store.models import SCHEMA_VERSION, Call, ConsentEvent, ConsentRecord

GENESIS = "0" * 64

# Lifecycle events of a consent (DESIGN.md); the rest of the log is call evidence.
LIFECYCLE = ("requested", "given", "refused", "withdrawn", "expired")
DECISION_EVENT = {"granted": "given", "declined": "refused"}


@dataclass(frozen=True)
class Evidence:
    """One line of the event log, collected during the call and written in order."""

    at: datetime
    kind: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewCall:
    channel_id: str
    direction: str
    caller_number: str | None
    called_number: str | None
    phone: str
    campaign: str
    language: str
    jurisdiction: str
    purpose: dict[str, Any]
    controller: dict[str, Any]
    started_at: datetime
    collection_method: str = "ivr-keypad"


@dataclass(frozen=True)
class RecordingInfo:
    path: str
    sha256: str
    duration_s: float
    format: str


DecisionHook = Callable[[Session, ConsentRecord, str, datetime], None]


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
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def open_call(session: Session, new: NewCall, first: Iterable[Evidence] = ()) -> tuple[str, str]:
    """Insert the call and its consent record with a `requested` event; return both ids."""
    call = Call(
        channel_id=new.channel_id,
        direction=new.direction,
        caller_number=new.caller_number,
        called_number=new.called_number,
        campaign=new.campaign,
        language=new.language,
        started_at=utc(new.started_at),
    )
    session.add(call)
    session.flush()
    record = ConsentRecord(
        schema_version=SCHEMA_VERSION,
        call_id=call.call_id,
        pii_principal_id=new.phone,
        jurisdiction=new.jurisdiction,
        language=new.language,
        campaign=new.campaign,
        purpose_id=new.purpose["id"],
        purpose=new.purpose,
        controller=new.controller,
        collection_method=new.collection_method,
        direction=new.direction,
        started_at=utc(new.started_at),
    )
    session.add(record)
    session.flush()
    requested = Evidence(new.started_at, "requested", None, {"purpose_id": new.purpose["id"]})
    append(session, record.record_id, [requested, *first])
    return call.call_id, record.record_id


def append(session: Session, record_id: str, evidence: Iterable[Evidence]) -> None:
    """Append events to a record's chain, each hashing the one before."""
    items = list(evidence)
    if not items:
        return
    # Lock the record row: concurrent writers on one record queue up here instead of both
    # reading the same last event and colliding on (record_id, seq).
    record = session.get(ConsentRecord, record_id, with_for_update=True)
    if record is None:
        raise LookupError(f"no consent record {record_id}")
    last = session.execute(
        select(ConsentEvent.seq, ConsentEvent.hash)
        .where(ConsentEvent.record_id == record_id)
        .order_by(ConsentEvent.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (last[0], last[1]) if last else (0, GENESIS)
    for ev in items:
        seq += 1
        at = utc(ev.at)
        digest = event_hash(record_id, seq, at, ev.kind, ev.step, ev.data, prev)
        session.add(
            ConsentEvent(
                record_id=record_id,
                seq=seq,
                at=at,
                kind=ev.kind,
                step=ev.step,
                data=ev.data,
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
    record.head_seq, record.head_hash = seq, prev


def store_decision(
    session: Session,
    record_id: str,
    outcome: str,
    at: datetime,
    evidence: Iterable[Evidence],
    hooks: Iterable[DecisionHook] = (),
) -> None:
    """Commit-worthy decision: the evidence so far, the lifecycle event, the outcome, and
    whatever the hooks add (the SMS job) all in the caller's transaction."""
    record = session.get(ConsentRecord, record_id, with_for_update=True)
    if record is None:
        raise LookupError(f"no consent record {record_id}")
    if record.outcome is not None:
        raise ValueError(f"record {record_id} already has outcome {record.outcome}")
    event = Evidence(at, DECISION_EVENT[outcome], "saving", {"purpose_id": record.purpose_id})
    append(session, record_id, [*evidence, event])
    record.outcome = outcome
    record.decided_at = utc(at)
    for hook in hooks:
        hook(session, record, outcome, at)


def finish_call(
    session: Session,
    call_id: str,
    record_id: str,
    outcome: str,
    ended_at: datetime,
    evidence: Iterable[Evidence],
    recording: RecordingInfo | None,
) -> None:
    """Close the call: remaining evidence, the outcome if no decision was stored, the recording."""
    record = session.get(ConsentRecord, record_id)
    call = session.get(Call, call_id)
    if record is None or call is None:
        raise LookupError(f"no call {call_id} / record {record_id}")
    append(session, record_id, evidence)
    if record.outcome is None:
        record.outcome = outcome
    call.ended_at = utc(ended_at)
    if recording is not None:
        call.recording_path = recording.path
        call.recording_sha256 = recording.sha256
        call.recording_duration_s = recording.duration_s
        call.recording_format = recording.format


def verify_chain(record_id: str, events: Iterable[ConsentEvent]) -> list[str]:
    """Problems found in a record's chain (empty when intact): edited, removed or reordered."""
    problems = []
    prev, expected_seq = GENESIS, 1
    for ev in events:
        if ev.seq != expected_seq:
            problems.append(f"event {expected_seq} missing (found {ev.seq})")
        if ev.prev_hash != prev:
            problems.append(f"event {ev.seq}: previous hash does not match")
        digest = event_hash(record_id, ev.seq, utc(ev.at), ev.kind, ev.step, ev.data, ev.prev_hash)
        if digest != ev.hash:
            problems.append(f"event {ev.seq}: content does not match its hash")
        prev, expected_seq = ev.hash, ev.seq + 1
    return problems


def verify_head(record: ConsentRecord, events: list[ConsentEvent]) -> list[str]:
    """The chain must end where the record says it does: catches removed newest events."""
    if record.head_seq is None:  # written before the head was kept
        return []
    last_seq, last_hash = (events[-1].seq, events[-1].hash) if events else (0, GENESIS)
    if (last_seq, last_hash) == (record.head_seq, record.head_hash):
        return []
    return [
        f"event {record.head_seq}: the chain ends at event {last_seq}, the record at "
        f"event {record.head_seq} (events removed or replaced)"
    ]


def status(events: Iterable[ConsentEvent]) -> str:
    """The consent's current state: its latest lifecycle event, never a stored field."""
    state = "requested"
    for ev in events:
        if ev.kind in LIFECYCLE:
            state = ev.kind
    return state


def record_view(session: Session, record_id: str) -> dict[str, Any] | None:
    """The record as `consent-ivr show --json` prints it."""
    record = session.get(ConsentRecord, record_id)
    if record is None:
        return None
    call = record.call
    events = list(record.events)
    problems = verify_chain(record.record_id, events)
    problems += verify_head(record, events)
    recording = None
    if call.recording_path:
        recording = {
            "path": call.recording_path,
            "sha256": call.recording_sha256,
            "duration_s": call.recording_duration_s,
            "format": call.recording_format,
        }
    view: dict[str, Any] = {
        "record_id": record.record_id,
        "schema_version": record.schema_version,
        "phone": record.pii_principal_id,
        "campaign": record.campaign,
        "purpose": record.purpose_id,
        "purpose_details": record.purpose,
        "controller": record.controller,
        "jurisdiction": record.jurisdiction,
        "language": record.language,
        "direction": record.direction,
        "collection_method": record.collection_method,
        "outcome": record.outcome,
        "status": status(events),
        "started_at": iso(record.started_at),
        "decided_at": iso(record.decided_at),
        "ended_at": iso(call.ended_at),
        "call": {
            "call_id": call.call_id,
            "channel_id": call.channel_id,
            "caller_number": call.caller_number,
            "called_number": call.called_number,
        },
        "keys": [
            {
                "digit": e.data["digit"],
                "at": iso(e.at),
                "step": e.step,
                "acted_on": e.data.get("acted_on", True),
            }
            for e in events
            if e.kind == "key"
        ],
        "prompts": [
            {
                "prompt": e.data["prompt"],
                "at": iso(e.at),
                "sha256": e.data.get("sha256"),
                "text": e.data.get("text"),
                "version": e.data.get("version"),
            }
            for e in events
            if e.kind == "prompt"
        ],
        "recording": recording,
        "events": [
            {
                "seq": e.seq,
                "at": iso(e.at),
                "kind": e.kind,
                "step": e.step,
                "data": e.data,
                "hash": e.hash,
            }
            for e in events
        ],
        "integrity": {"chain_ok": not problems, "problems": problems},
    }
    return view


def list_records(
    session: Session, phone: str | None = None, limit: int = 100
) -> list[ConsentRecord]:
    query = select(ConsentRecord).order_by(ConsentRecord.started_at.desc()).limit(limit)
    if phone:
        query = query.where(ConsentRecord.pii_principal_id == phone)
    return list(session.scalars(query))
