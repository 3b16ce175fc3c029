"""What the API and the console do, as plain functions over a Session (the caller owns the
transaction and runs them off the event loop): a person's consents, a page of records, a
recording's file, the refusals that stop an outbound call, an operator's withdrawal."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from consent_ivr.api.schemas import RecordsQuery
from consent_ivr.clock import iso, utc
from consent_ivr.config import Campaign, Config
from consent_ivr.store import lifecycle, pgasync
from consent_ivr.store.models import Call, ConsentRecord
from consent_ivr.store.records import DecisionHook

# A `status` filter is applied after the query (expiry is derived when read): one request
# looks at this many records at most, then hands back a cursor to go on from.
SCAN_MAX = 5000


class UnknownPurpose(ValueError):
    pass


def consent_status(
    session: Session, config: Config, phone: str, purpose: str | None, at: datetime
) -> dict[str, Any]:
    """Per purpose (every configured one, or `purpose`): the person's state, and whether
    they may be called or texted for it, with the reason; and their do-not-contact entries."""
    found = lifecycle.states(session, phone, purpose, at)
    check_purpose(config, purpose, found)
    return consent_answer(config, phone, purpose, found, lifecycle.register(session, phone))


def consent_status_of(
    config: Config,
    phone: str,
    purpose: str | None,
    rows: Iterable[pgasync.RecordState],
    entries: Sequence[lifecycle.Entry],
    at: datetime,
) -> dict[str, Any]:
    """`consent_status` from what `pgasync.AsyncPg` read in one statement."""
    found = lifecycle.derive(rows, at, lambda r: r.withdrawal_channel or "phone")
    check_purpose(config, purpose, found)
    return consent_answer(config, phone, purpose, found, entries)


def check_purpose(config: Config, purpose: str | None, found: Iterable[str]) -> None:
    if purpose is not None and purpose not in config.purposes and purpose not in found:
        raise UnknownPurpose(
            f"unknown purpose {purpose!r} (configured: {', '.join(sorted(config.purposes))})"
        )


def consent_answer(
    config: Config,
    phone: str,
    purpose: str | None,
    found: dict[str, lifecycle.ConsentState],
    entries: Sequence[lifecycle.Entry],
) -> dict[str, Any]:
    """The answer `consent_status` gives, from what was read: the states and the register."""
    purposes = [purpose] if purpose else sorted(set(config.purposes) | set(found))
    rows = []
    for pid in purposes:
        state = found.get(pid) or lifecycle.ConsentState.none(pid)
        row = state.as_dict()
        row["may_contact"] = {
            ch: lifecycle.decide(state, entries, pid, ch).as_dict() for ch in lifecycle.CHANNELS
        }
        rows.append(row)
    dnc = [
        {
            "id": e.id,
            "purpose": e.purpose_id,
            "channel": e.channel,
            "source": e.source,
            "since": iso(e.created_at),
            "reason": e.reason,
            "by": e.by,
        }
        for e in entries
    ]
    return {"phone": phone, "purposes": rows, "do_not_contact": dnc}


# ---- records ----------------------------------------------------------------------------------


class BadCursor(ValueError):
    pass


def encode_cursor(record: ConsentRecord) -> str:
    raw = json.dumps([iso(record.started_at), record.record_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        started, record_id = json.loads(raw)
        return utc(datetime.fromisoformat(started)), str(record_id)
    except (ValueError, TypeError) as e:
        raise BadCursor("not a cursor this API handed out") from e


def summary(record: ConsentRecord, at: datetime) -> dict[str, Any]:
    return {
        "record_id": record.record_id,
        "kind": record.kind,
        "phone": record.pii_principal_id,
        "campaign": record.campaign,
        "purpose": record.purpose_id,
        "outcome": record.outcome,
        "status": lifecycle.record_state(record, at) if record.kind == "consent" else None,
        "direction": record.direction,
        "language": record.language,
        "call_id": record.call_id,
        "started_at": iso(record.started_at),
        "decided_at": iso(record.decided_at),
    }


def _records_query(q: RecordsQuery, phone: str | None) -> Any:
    query = select(ConsentRecord)
    for column, value in (
        (ConsentRecord.pii_principal_id, phone),
        (ConsentRecord.campaign, q.campaign),
        (ConsentRecord.purpose_id, q.purpose),
        (ConsentRecord.outcome, q.outcome),
        (ConsentRecord.kind, "consent" if q.status else q.kind),
    ):
        if value is not None:
            query = query.where(column == value)
    if q.status in ("given", "expired"):
        # The cache says given until a purge marks it expired: the rest is decided when read.
        query = query.where(ConsentRecord.status.in_(("given", "expired")))
    elif q.status == "requested":
        query = query.where(
            or_(ConsentRecord.status == "requested", ConsentRecord.status.is_(None))
        )
    elif q.status is not None:
        query = query.where(ConsentRecord.status == q.status)
    if q.from_ is not None:
        query = query.where(ConsentRecord.started_at >= utc(q.from_))
    if q.to is not None:
        query = query.where(ConsentRecord.started_at < utc(q.to))
    return query.order_by(ConsentRecord.started_at.desc(), ConsentRecord.record_id.desc())


def record_page(
    session: Session, q: RecordsQuery, phone: str | None, limit: int, at: datetime
) -> dict[str, Any]:
    """One page, newest first, and the cursor of the next (keyset: stable while records are
    added)."""
    base = _records_query(q, phone)
    after = decode_cursor(q.cursor) if q.cursor else None
    items: list[dict[str, Any]] = []
    scanned = 0
    last: ConsentRecord | None = None
    batch = limit + 1 if q.status is None else max(2 * limit, 100)
    while True:
        query = base
        if after is not None:
            started, rid = after
            query = query.where(
                or_(
                    ConsentRecord.started_at < started,
                    and_(ConsentRecord.started_at == started, ConsentRecord.record_id < rid),
                )
            )
        rows = list(session.scalars(query.limit(batch)))
        for record in rows:
            if len(items) == limit and last is not None:  # full, and there is more
                return {"items": items, "next_cursor": encode_cursor(last)}
            scanned += 1
            last = record
            item = summary(record, at)
            if q.status is None or item["status"] == q.status:
                items.append(item)
        if len(rows) < batch:
            return {"items": items, "next_cursor": None}
        if scanned >= SCAN_MAX and last is not None:
            return {"items": items, "next_cursor": encode_cursor(last)}
        after = (utc(last.started_at), last.record_id) if last else after


@dataclass(frozen=True)
class RecordingFile:
    path: Path
    format: str


class Erased(LookupError):
    pass


def recording_file(session: Session, record_id: str) -> RecordingFile:
    """The call recording of a record: LookupError when there is none, Erased when the
    retention policy deleted it."""
    record = session.get(ConsentRecord, record_id)
    if record is None:
        raise LookupError(f"no record {record_id}")
    call = session.get(Call, record.call_id)
    if call is not None and call.erased_at is not None:
        raise Erased(f"the recording of record {record_id} was erased on {iso(call.erased_at)}")
    if call is None or not call.recording_path or not Path(call.recording_path).is_file():
        raise LookupError(f"record {record_id} has no recording")
    return RecordingFile(Path(call.recording_path), call.recording_format or "wav")


# ---- changes ----------------------------------------------------------------------------------


def refusals(
    session: Session, phone: str, name: str, campaign: Campaign, at: datetime
) -> list[dict[str, Any]]:
    """Why each purpose of the campaign stops a call that asks for consent (none: call); see
    lifecycle.refusals."""
    refused = lifecycle.refusals(session, phone, campaign.purposes, name, at)
    return [
        {"purpose": pid, "reason": verdict.reason, "record_id": verdict.record_id}
        for pid, verdict in refused
    ]


def withdraw(
    session: Session,
    config: Config,
    phone: str,
    purpose: str | None,
    *,
    by: str,
    reason: str,
    hooks: Iterable[DecisionHook],
    at: datetime,
) -> list[ConsentRecord]:
    """An operator withdraws a person's consent to `purpose` (None: every active one)."""
    if purpose is not None and purpose not in config.purposes:
        raise UnknownPurpose(
            f"unknown purpose {purpose!r} (configured: {', '.join(sorted(config.purposes))})"
        )
    targets = lifecycle.active(session, phone, [purpose] if purpose else None, at)
    return lifecycle.withdraw(
        session, targets, at, channel="operator", hooks=hooks, by=by, reason=reason
    )


def withdrawn(records: Sequence[ConsentRecord]) -> list[dict[str, Any]]:
    return [{"record_id": r.record_id, "purpose": r.purpose_id} for r in records]
