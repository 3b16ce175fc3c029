"""Writing and reading consent records. Plain functions over a Session: the caller owns the
transaction (see `Database.transaction`), so a decision, its events and its SMS job commit or
roll back together.

A call opens one record per purpose it asks about (or one withdrawal record). The first event
of every record holds the record's facts: who (a salted commitment to the numbers, see
consent_ivr.store.chain), whom for, what purpose in which words, which campaign and language,
in which direction and how. Everything said and pressed in the call is written to every record
of the call, so each record is complete evidence on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from consent_ivr.clock import iso, now, utc
from consent_ivr.store import chain
from consent_ivr.store.chain import Evidence
from consent_ivr.store.models import SCHEMA_VERSION, Call, ConsentEvent, ConsentRecord, new_id

DECISION_EVENT = {"granted": "given", "declined": "refused", "withdrawn": "withdrawal"}
OUTCOME_OF_DECISION = {v: k for k, v in DECISION_EVENT.items()}


@dataclass(frozen=True)
class Subject:
    """Who the person is, as far as the call tells: their number and where it came from."""

    phone: str | None  # E.164; None when withheld
    source: str  # caller-id (inbound), dialled (outbound), operator, sms
    caller_number: str | None = None
    called_number: str | None = None

    def personal(self) -> dict[str, Any]:
        return {
            "phone": self.phone,
            "caller_number": self.caller_number,
            "called_number": self.called_number,
        }


@dataclass(frozen=True)
class NewCall:
    channel_id: str
    direction: str
    campaign: str
    language: str
    jurisdiction: str
    controller: dict[str, Any]
    started_at: datetime
    subject: Subject
    collection_method: str = "ivr-keypad"
    node: str | None = None  # which service instance takes the call
    recording: str | None = None  # the recording's name on Asterisk, once it is started


@dataclass(frozen=True)
class NewRecord:
    """One record a call opens: a consent for one purpose, or the withdrawal call's own."""

    kind: str  # consent | withdrawal
    purpose: dict[str, Any]  # the purpose snapshot (consent) or what was offered (withdrawal)

    @property
    def purpose_id(self) -> str | None:
        return self.purpose.get("id") if self.kind == "consent" else None


@dataclass(frozen=True)
class RecordingInfo:
    path: str
    sha256: str
    duration_s: float
    format: str
    size: int = 0


@dataclass(frozen=True)
class Decided:
    """A stored decision as the decision hooks (the SMS outbox) see it."""

    outcome: str  # granted, declined, withdrawn
    at: datetime
    records: tuple[ConsentRecord, ...]  # the records the decision is about
    channel: str = "phone"  # phone, sms, operator
    call_id: str | None = None  # set while the call that decided goes on
    evidence_records: tuple[str, ...] = ()  # also gets the hook's events (withdrawal call)
    # No earlier decision of this call is stored (so none of its SMS is held yet).
    first_in_call: bool = False


# A hook runs inside the decision's transaction and returns events to add to the chains.
DecisionHook = Callable[[Session, Decided], Iterable[tuple[str, Evidence]]]


def facts(
    record: dict[str, Any], call: dict[str, Any], subject: Subject, recording: str | None = None
) -> dict[str, Any]:
    """The content of a record's first event: everything the record is about (`record` and
    `call` as their rows' columns)."""
    return {
        "recording": recording,
        "schema_version": record["schema_version"],
        "record_kind": record["kind"],
        "call_id": call["call_id"],
        "channel_id": call["channel_id"],
        "subject": {
            "phone_source": subject.source,
            "commitment": chain.commitment(record["subject_salt"], subject.personal()),
        },
        "campaign": record["campaign"],
        "controller": record["controller"],
        "purpose": record["purpose"],
        "language": record["language"],
        "jurisdiction": record["jurisdiction"],
        "direction": record["direction"],
        "collection_method": record["collection_method"],
        "started_at": iso(record["started_at"]),
    }


_INSERT_CALL = insert(cast(Table, Call.__table__))
_INSERT_RECORDS = insert(cast(Table, ConsentRecord.__table__))


def open_call(
    session: Session, new: NewCall, records: Sequence[NewRecord], first: Iterable[Evidence] = ()
) -> tuple[str, list[str]]:
    """Insert the call and its records, each with its facts as the first event. Plain INSERT
    statements, not the ORM's unit of work: a call's opening is on every call's path."""
    chain.lock(session)
    subject = new.subject
    started_at = utc(new.started_at)
    call_id = new_id()
    call: dict[str, Any] = {
        "call_id": call_id,
        "channel_id": new.channel_id,
        "direction": new.direction,
        "caller_number": subject.caller_number,
        "called_number": subject.called_number,
        "campaign": new.campaign,
        "language": new.language,
        "started_at": started_at,
        "node": new.node,
    }
    opened: list[dict[str, Any]] = [
        {
            "record_id": new_id(),
            "schema_version": SCHEMA_VERSION,
            "kind": item.kind,
            "call_id": call_id,
            "pii_principal_id": subject.phone,
            "phone_source": subject.source,
            "subject_salt": chain.new_salt(),
            "jurisdiction": new.jurisdiction,
            "language": new.language,
            "campaign": new.campaign,
            "purpose_id": item.purpose_id,
            "purpose": item.purpose,
            "controller": new.controller,
            "collection_method": new.collection_method,
            "direction": new.direction,
            "started_at": started_at,
        }
        for item in records
    ]
    session.flush()  # what the ORM holds goes first, as it would have
    conn = session.connection()
    conn.execute(_INSERT_CALL, [call])
    if opened:
        conn.execute(_INSERT_RECORDS, opened)
    first = list(first)
    chain.append(
        session,
        [
            (r["record_id"], ev)
            for r in opened
            for ev in [
                Evidence(new.started_at, "requested", None, facts(r, call, subject, new.recording)),
                *first,
            ]
        ],
    )
    return call_id, [r["record_id"] for r in opened]


def _record(session: Session, record_id: str) -> ConsentRecord:
    record = session.get(ConsentRecord, record_id)
    if record is None:
        raise LookupError(f"no consent record {record_id}")
    return record


def store_decision(
    session: Session,
    record_id: str,
    outcome: str,
    at: datetime,
    evidence: Iterable[tuple[str, Evidence]] = (),
    hooks: Iterable[DecisionHook] = (),
    *,
    call_open: bool = True,
    first_in_call: bool = False,
) -> None:
    """A consent decision: the call's evidence so far, the lifecycle event, the outcome, a
    refusal on the do-not-contact register, and whatever the hooks add (the SMS job), all in
    the caller's transaction."""
    from consent_ivr.store import lifecycle

    chain.lock(session)
    record = _record(session, record_id)
    if record.outcome is not None:
        raise ValueError(f"record {record_id} already has outcome {record.outcome}")
    event = Evidence(at, DECISION_EVENT[outcome], "saving", {"purpose_id": record.purpose_id})
    items = [*evidence, (record_id, event)]
    record.outcome, record.decided_at = outcome, utc(at)
    if outcome == "declined" and record.pii_principal_id:
        lifecycle.suppress(
            session, record.pii_principal_id, record.purpose_id, "refused", at, record=record_id
        )
    call_id = record.call_id if call_open else None
    decided = Decided(outcome, at, (record,), "phone", call_id, first_in_call=first_in_call)
    for hook in hooks:
        items += list(hook(session, decided))
    chain.append(session, items)


def append_evidence(session: Session, items: Iterable[tuple[str, Evidence]]) -> None:
    chain.append(session, items)


_END_CALL = update(cast(Table, Call.__table__)).where(Call.call_id == bindparam("id"))


def finish_call(
    session: Session,
    call_id: str,
    outcomes: dict[str, str],
    ended_at: datetime,
    evidence: Iterable[tuple[str, Evidence]],
    recording: RecordingInfo | None,
) -> None:
    """Close the call: remaining evidence, each record's outcome (unless a decision stored
    one), the recording; and release the SMS the call's decisions were holding. The call's row
    by a plain UPDATE: loading it as an object took a query of its own on every call's end."""
    chain.lock(session)
    ended: dict[str, Any] = {"ended_at": utc(ended_at)}
    if recording is not None:
        ended |= {
            "recording_path": recording.path,
            "recording_sha256": recording.sha256,
            "recording_duration_s": recording.duration_s,
            "recording_format": recording.format,
        }
    done = session.connection().execute(_END_CALL, {"id": call_id, **ended})
    if done.rowcount != 1:
        raise LookupError(f"no call {call_id}")
    items = list(evidence)
    for record_id, outcome in outcomes.items():
        record = _record(session, record_id)
        if record.outcome is None:
            record.outcome = outcome
        items.append(
            (record_id, Evidence(ended_at, "call_ended", None, {"outcome": record.outcome}))
        )
        if recording is not None:
            items.append((record_id, recording_event(ended_at, recording)))
    chain.append(session, items)
    release_held_sms(session, call_id, ended_at)


def recording_event(at: datetime, recording: RecordingInfo) -> Evidence:
    return Evidence(
        at,
        "recording_stored",
        None,
        {
            "file": recording.path.rsplit("/", 1)[-1],
            "sha256": recording.sha256,
            "duration_s": recording.duration_s,
            "format": recording.format,
            "bytes": recording.size,
        },
    )


def release_held_sms(session: Session, call_id: str, at: datetime) -> None:
    """The SMS of a call's decisions waits for the call's end (one SMS sums them up)."""
    try:
        from consent_ivr.sms.outbox import release_call
    except ImportError:  # the SMS part is optional
        return
    release_call(session, call_id, at)


# ---- reading ----------------------------------------------------------------------------------


def records_of_call(session: Session, call_id: str) -> list[ConsentRecord]:
    """A call's records in the order it opened them (the order of its purposes)."""
    first = (
        select(ConsentEvent.record_id, func.min(ConsentEvent.ledger_seq).label("seq"))
        .group_by(ConsentEvent.record_id)
        .subquery()
    )
    return list(
        session.scalars(
            select(ConsentRecord)
            .join(first, first.c.record_id == ConsentRecord.record_id)
            .where(ConsentRecord.call_id == call_id)
            .order_by(first.c.seq)
        )
    )


def record_view(session: Session, record_id: str, *, at: datetime | None = None) -> dict[str, Any]:
    """The record as `consent-ivr show --json` prints it, or None when there is none."""
    from consent_ivr.store import lifecycle

    record = session.get(ConsentRecord, record_id)
    if record is None:
        return None  # type: ignore[return-value]
    call = record.call
    events = chain.events_of(session, record_id)
    problems = chain.chain_problems(record.record_id, events)
    problems += chain.head_problems(record, events)
    recording = None
    if call.recording_sha256:
        recording = {
            "path": call.recording_path,
            "sha256": call.recording_sha256,
            "duration_s": call.recording_duration_s,
            "format": call.recording_format,
        }
    first = events[0].data if events else {}
    erased = next((e for e in events if e.kind == "erased"), None)
    view: dict[str, Any] = {
        "record_id": record.record_id,
        "schema_version": record.schema_version,
        "kind": record.kind,
        "phone": record.pii_principal_id,
        "phone_source": record.phone_source,
        "campaign": record.campaign,
        "purpose": record.purpose_id,
        "purpose_details": record.purpose,
        "controller": record.controller,
        "jurisdiction": record.jurisdiction,
        "language": record.language,
        "direction": record.direction,
        "collection_method": record.collection_method,
        "outcome": record.outcome,
        "status": lifecycle.record_state(record, at or now()) if record.kind == "consent" else None,
        "expires_at": iso(lifecycle.expires_at(record)),
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
                "purpose": e.data.get("purpose"),
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
        "withdrawals": [{"at": iso(e.at), **e.data} for e in events if e.kind == "withdrawn"],
        "withdrew": next(
            ({"at": iso(e.at), **e.data} for e in events if e.kind == "withdrawal"), None
        ),
        "erased": {"at": iso(erased.at), **erased.data} if erased else None,
        "subject_commitment": (first.get("subject") or {}).get("commitment"),
        "events": [
            {
                "seq": e.seq,
                "at": iso(e.at),
                "kind": e.kind,
                "step": e.step,
                "data": e.data,
                "hash": e.hash,
                "ledger_seq": e.ledger_seq,
            }
            for e in events
        ],
        "integrity": {"chain_ok": not problems, "problems": problems},
    }
    return view


def list_records(
    session: Session,
    phone: str | None = None,
    limit: int = 100,
    *,
    campaign: str | None = None,
    since: datetime | None = None,
) -> list[ConsentRecord]:
    query = select(ConsentRecord).order_by(ConsentRecord.started_at.desc()).limit(limit)
    if phone:
        query = query.where(ConsentRecord.pii_principal_id == phone)
    if campaign:
        query = query.where(ConsentRecord.campaign == campaign)
    if since:
        query = query.where(ConsentRecord.started_at >= utc(since))
    return list(session.scalars(query))


def events_by_ledger(session: Session, start: int, end: int) -> list[ConsentEvent]:
    return list(
        session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.ledger_seq > start, ConsentEvent.ledger_seq <= end)
            .order_by(ConsentEvent.ledger_seq)
        )
    )


__all__ = [
    "DecisionHook",
    "Decided",
    "Evidence",
    "NewCall",
    "NewRecord",
    "RecordingInfo",
    "Subject",
    "append_evidence",
    "facts",
    "field",
    "finish_call",
    "list_records",
    "open_call",
    "record_view",
    "records_of_call",
    "store_decision",
]
