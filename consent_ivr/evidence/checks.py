"""The checks of one record's evidence that need nothing but the evidence: the same code checks
a record in the database (consent_ivr.evidence.verify) and in an exported bundle
(consent_ivr.evidence.bundle), so both say the same about the same record.

The events are the evidence; everything else about a record is a cache of them. `columns`
names those caches (the record's and its call's columns, as one flat dict that record.json
also carries) and `derived` recomputes them from the events; `check_record` compares the two,
walks the hash chain, ties the subject's numbers to the salted commitment of the first event,
and re-hashes the recording and every prompt the person heard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from consent_ivr.clock import iso, utc
from consent_ivr.evidence.report import Finding, Report
from consent_ivr.store import chain
from consent_ivr.store.models import Call, ConsentRecord
from consent_ivr.store.records import OUTCOME_OF_DECISION

PERSONAL = ("phone", "caller_number", "called_number")


class Event(NamedTuple):
    """One event row, as the database and a bundle's events.json both hold it."""

    record_id: str
    seq: int
    at: datetime
    kind: str
    step: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str
    ledger_seq: int
    ledger_prev: str
    ledger_hash: str


def event_json(ev: Event) -> dict[str, Any]:
    return {**ev._asdict(), "at": iso(ev.at)}


def event_from_json(item: dict[str, Any]) -> Event:
    """ValueError when `item` is not an event."""
    if not isinstance(item, dict) or set(item) != set(Event._fields):
        raise ValueError(f"an event has the keys {', '.join(Event._fields)}")
    return Event(**{**item, "at": utc(datetime.fromisoformat(item["at"]))})


# ---- the chain --------------------------------------------------------------------------------


def chain_findings(
    record_id: str, events: Sequence[Event], head_seq: int | None, head_hash: str | None
) -> list[Finding]:
    """Edited, removed or reordered events, and a chain that ends before the record says."""
    found = []
    prev, expected = chain.GENESIS, 1
    for ev in events:
        if ev.seq != expected:
            found.append(
                Finding("event", f"missing (the next event is {ev.seq})", record_id, expected)
            )
        if ev.prev_hash != prev:
            found.append(
                Finding(
                    "prev_hash",
                    "does not link to the event before it (events removed, replaced or reordered)",
                    record_id,
                    ev.seq,
                    prev,
                    ev.prev_hash,
                )
            )
        digest = chain.event_hash(record_id, ev.seq, ev.at, ev.kind, ev.step, ev.data, ev.prev_hash)
        if digest != ev.hash:
            found.append(
                Finding(
                    f"content of the {ev.kind} event (at, kind, step, data)",
                    "does not match its hash: the event was edited",
                    record_id,
                    ev.seq,
                    ev.hash,
                    digest,
                )
            )
        prev, expected = ev.hash, ev.seq + 1
    last = (events[-1].seq, events[-1].hash) if events else (0, chain.GENESIS)
    head = (head_seq or 0, head_hash or chain.GENESIS)
    if last != head:
        found.append(
            Finding(
                "head_seq, head_hash",
                f"the chain ends at event {last[0]}, the record at event {head[0]} "
                f"(newest events removed, or the head rewritten)",
                record_id,
                last[0],
                f"{head[0]} {head[1]}",
                f"{last[0]} {last[1]}",
            )
        )
    return found


# ---- caches -----------------------------------------------------------------------------------


def columns(record: ConsentRecord, call: Call | None) -> dict[str, Any]:
    """The record's and its call's cache columns, times as ISO text (record.json's `record`)."""
    cols: dict[str, Any] = {
        "record_id": record.record_id,
        "schema_version": record.schema_version,
        "kind": record.kind,
        "call_id": record.call_id,
        "phone_source": record.phone_source,
        "campaign": record.campaign,
        "controller": record.controller,
        "purpose": record.purpose,
        "purpose_id": record.purpose_id,
        "language": record.language,
        "jurisdiction": record.jurisdiction,
        "direction": record.direction,
        "collection_method": record.collection_method,
        "started_at": iso(record.started_at),
        "outcome": record.outcome,
        "decided_at": iso(record.decided_at),
        "status": record.status,
        "status_at": iso(record.status_at),
        "erased_at": iso(record.erased_at),
        "head_seq": record.head_seq,
        "head_hash": record.head_hash,
    }
    if call is not None:
        path = call.recording_path
        cols |= {
            "call.channel_id": call.channel_id,
            "call.direction": call.direction,
            "call.campaign": call.campaign,
            "call.language": call.language,
            "call.started_at": iso(call.started_at),
            "call.ended_at": iso(call.ended_at),
            "call.recording_file": path.replace("\\", "/").rsplit("/", 1)[-1] if path else None,
            "call.recording_sha256": call.recording_sha256,
            "call.recording_duration_s": call.recording_duration_s,
            "call.recording_format": call.recording_format,
            "call.erased_at": iso(call.erased_at),
        }
    return cols


def subject(record: ConsentRecord, call: Call | None) -> dict[str, Any]:
    """The personal data the first event's commitment covers, and its salt."""
    return {
        "phone": record.pii_principal_id,
        "caller_number": call.caller_number if call else None,
        "called_number": call.called_number if call else None,
        "salt": record.subject_salt,
    }


def _last(events: Iterable[Event], *kinds: str) -> Event | None:
    return next((e for e in reversed(list(events)) if e.kind in kinds), None)


def derived(events: Sequence[Event], *, facts: bool = True) -> dict[str, tuple[Any, int]]:
    """The cache columns recomputed from the events, each with the event it comes from.
    Without `facts` (schema_version 1: facts not chained) only what later events say."""
    out: dict[str, tuple[Any, int]] = {}
    if not events:
        return out
    first = events[0]
    if facts:
        f = first.data
        kind = f.get("record_kind")
        purpose = f.get("purpose") or {}
        values = {
            "schema_version": f.get("schema_version"),
            "kind": kind,
            "call_id": f.get("call_id"),
            "call.channel_id": f.get("channel_id"),
            "phone_source": (f.get("subject") or {}).get("phone_source"),
            "controller": f.get("controller"),
            "purpose": f.get("purpose"),
            "purpose_id": purpose.get("id") if kind == "consent" else None,
            "jurisdiction": f.get("jurisdiction"),
            "collection_method": f.get("collection_method"),
        }
        for name in ("campaign", "language", "direction", "started_at"):
            values[name] = values[f"call.{name}"] = f.get(name)
        out |= {name: (value, first.seq) for name, value in values.items()}
    last = events[-1].seq
    decision = next((e for e in events if e.kind in OUTCOME_OF_DECISION), None)
    ended = _last(events, "call_ended")
    if decision is not None:
        out["outcome"] = (OUTCOME_OF_DECISION[decision.kind], decision.seq)
        out["decided_at"] = (iso(decision.at), decision.seq)
    elif ended is not None:
        out["outcome"] = (ended.data.get("outcome"), ended.seq)
        out["decided_at"] = (None, ended.seq)
    else:
        out["outcome"] = out["decided_at"] = (None, last)
    if ended is not None:
        out["call.ended_at"] = (iso(ended.at), ended.seq)
    status = _last(events, *chain.LIFECYCLE)
    out["status"] = (status.kind if status else None, status.seq if status else last)
    out["status_at"] = (iso(status.at) if status else None, status.seq if status else last)
    erased = _last(events, "erased")
    out["erased_at"] = (iso(erased.at) if erased else None, erased.seq if erased else last)
    recording = _last(events, "recording_stored")
    if recording is not None:
        for name, key in (
            ("file", "file"),
            ("sha256", "sha256"),
            ("duration_s", "duration_s"),
            ("format", "format"),
        ):
            out[f"call.recording_{name}"] = (recording.data.get(key), recording.seq)
    return out


def compare(
    record_id: str, expected: dict[str, tuple[Any, int]], actual: dict[str, Any]
) -> list[Finding]:
    return [
        Finding(name, "differs from what its event says", record_id, seq, value, actual.get(name))
        for name, (value, seq) in expected.items()
        if actual.get(name) != value
    ]


def subject_findings(
    record_id: str, first: Event, personal: dict[str, Any], erased: bool
) -> list[Finding]:
    """The numbers must be those the first event committed to (unless erased)."""
    committed = (first.data.get("subject") or {}).get("commitment")
    salt = personal.get("salt")
    what = "pii_principal_id, call.caller_number, call.called_number, subject_salt"
    if erased:
        if salt is not None or personal.get("phone") is not None:
            return [Finding(what, "personal data still held after the erasure", record_id)]
        return []
    if salt is None:
        return [
            Finding(
                "subject_salt",
                "missing: the numbers can no longer be tied to the commitment in the first event",
                record_id,
                first.seq,
            )
        ]
    computed = chain.commitment(salt, {k: personal.get(k) for k in PERSONAL})
    if computed != committed:
        return [
            Finding(
                what,
                "the subject's numbers do not match the commitment in the first event",
                record_id,
                first.seq,
                committed,
                computed,
            )
        ]
    return []


# ---- audio ------------------------------------------------------------------------------------


class Unreadable(str):
    """In place of a hash: the file is there but cannot be read, and why (an encrypted
    recording without its key)."""


# Given a recording_stored event's data or a prompt's sha256: where the audio is (a path or
# a bundle member, to name it) and its SHA-256, None when it is not there.
AudioLookup = Callable[[Any], tuple[str, str | None]]


def audio_findings(
    report: Report,
    record_id: str,
    events: Sequence[Event],
    recording: AudioLookup,
    prompt: AudioLookup,
    *,
    recording_gone: bool,
) -> None:
    """Re-hash the call's recording and every prompt audio an event names."""
    for ev in events:
        sha = ev.data.get("sha256") if ev.kind == "prompt" else None
        if not sha:
            continue
        name, found = prompt(sha)
        label = f"prompt audio {name} ({ev.data.get('prompt')})"
        if found is None:
            report.problems.append(Finding(label, "missing", record_id, ev.seq, sha, None))
        elif found != sha:
            report.problems.append(
                Finding(label, "changed: its SHA-256 differs", record_id, ev.seq, sha, found)
            )
    stored = _last(events, "recording_stored")
    if stored is None:
        return
    name, found = recording(stored.data)
    expected = stored.data.get("sha256")
    if found is None:
        if not recording_gone:
            report.problems.append(
                Finding(f"recording {name}", "missing", record_id, stored.seq, expected, None)
            )
    elif isinstance(found, Unreadable):
        report.problems.append(
            Finding(
                f"recording {name}", f"cannot be read: {found}", record_id, stored.seq, expected
            )
        )
    elif found != expected:
        report.problems.append(
            Finding(
                f"recording {name}",
                "changed: its SHA-256 differs",
                record_id,
                stored.seq,
                expected,
                found,
            )
        )


# ---- one record -------------------------------------------------------------------------------


def check_record(
    report: Report,
    record_id: str,
    events: Sequence[Event],
    cols: dict[str, Any],
    personal: dict[str, Any],
) -> bool:
    """Chain, caches and subject of one record; returns whether it was erased by policy."""
    report.count("records")
    report.count("events", len(events))
    report.problems += chain_findings(
        record_id, events, cols.get("head_seq"), cols.get("head_hash")
    )
    if not events:
        return False
    # A record of schema 1 has no facts in its first event; one whose first event holds them
    # is checked in full whatever its row says (an edit to "1" must not switch checks off).
    v1 = cols.get("schema_version") == "1" and "record_kind" not in events[0].data
    if v1:
        report.warnings.append(
            Finding(
                "schema_version",
                "1: this record's facts (number, purpose, outcome) were written before they "
                "were chained; only its events are verified",
                record_id,
            )
        )
    report.problems += compare(record_id, derived(events, facts=not v1), cols)
    erased = _last(events, "erased")
    if not v1:
        report.problems += subject_findings(record_id, events[0], personal, erased is not None)
    if erased is not None:
        rule = " ".join(str(erased.data.get(k, "")) for k in ("policy", "period")).strip()
        day = erased.at.date().isoformat()
        report.notes.append(
            Finding(
                "erased", f"erased by policy on {day} ({rule or 'policy'})", record_id, erased.seq
            )
        )
    return erased is not None
