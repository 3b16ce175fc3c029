"""Retention and erasure by policy (`consent-ivr purge`, and the daily run of the service).

Each record is kept for its purpose's ``retention`` after its call, and a withdrawn consent
only for ``erase_after_withdrawal`` after the withdrawal (152-FZ art. 9: 30 days), both read
from the purpose snapshot the record holds (what the person was told). A withdrawal call's own
record is kept as long as the longest retention of the purposes it was about.

Erasing a record nulls its personal data (the number and the salt of its subject commitment,
so the commitment left in the chain can no longer be tied to anyone), sets ``erased_at`` and
appends an ``erased`` event saying by which policy, when, what was erased (phone,
subject_salt; and, once no other record needs them, caller_number, called_number, recording,
sms_phone) and the recording's hash. The tombstone (record id, purpose, dates, outcome,
hashes, the whole chain) stays, so `verify` passes and says "erased by policy on DATE". What
the records of a call share (the call's numbers, the recording, an SMS that summed up several
decisions) is erased when the last record that needs it is; the recording file is deleted
after the erasure committed.
The do-not-contact register keeps the number on purpose (see consent_ivr.store.lifecycle).

Given consents whose validity ran out also get their ``expired`` event here, dated when they
expired, so the chain says what `lifecycle.record_state` already derives at read time.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr import durations
from consent_ivr.clock import iso, now, utc
from consent_ivr.config import Config, Purpose
from consent_ivr.store import chain, lifecycle
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call, ConsentRecord
from consent_ivr.store.records import records_of_call

log = logging.getLogger(__name__)

DEFAULT_RETENTION = str(Purpose.model_fields["retention"].default)
DEFAULT_AFTER_WITHDRAWAL = str(Purpose.model_fields["erase_after_withdrawal"].default)
BATCH = 500


@dataclass(frozen=True)
class Erasure:
    record_id: str
    call_id: str
    policy: str  # retention | erase_after_withdrawal
    period: str  # the ISO 8601 duration that ran out
    since: datetime  # the call's end, or the withdrawal
    due: datetime

    def __str__(self) -> str:
        return (
            f"record {self.record_id} (call {self.call_id}): {self.policy} {self.period} "
            f"since {iso(self.since)}, due {iso(self.due)}"
        )


@dataclass(frozen=True)
class Expiry:
    record_id: str
    purpose_id: str | None
    at: datetime

    def __str__(self) -> str:
        return f"record {self.record_id} ({self.purpose_id}): expired on {iso(self.at)}"


@dataclass
class Plan:
    expiries: list[Expiry] = field(default_factory=list)
    erasures: list[Erasure] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # recording files deleted

    def __bool__(self) -> bool:
        return bool(self.expiries or self.erasures)


def _retentions(record: ConsentRecord, config: Config) -> list[str]:
    purpose = record.purpose or {}
    if record.kind == "withdrawal":
        ids = [o.get("purpose_id") for o in purpose.get("offered") or ()]
        if not ids and record.campaign in config.campaigns:
            ids = list(config.campaigns[record.campaign].purposes)
        return [config.purposes[p].retention for p in ids if p in config.purposes] or [
            DEFAULT_RETENTION
        ]
    configured = config.purposes.get(record.purpose_id or "")
    return [purpose.get("retention") or (configured.retention if configured else DEFAULT_RETENTION)]


def _after_withdrawal(record: ConsentRecord, config: Config) -> str:
    configured = config.purposes.get(record.purpose_id or "")
    fallback = configured.erase_after_withdrawal if configured else DEFAULT_AFTER_WITHDRAWAL
    return str((record.purpose or {}).get("erase_after_withdrawal") or fallback)


def due_erasure(record: ConsentRecord, ended_at: datetime | None, config: Config) -> Erasure:
    """The earliest policy that erases this record, whether due yet or not."""
    since = utc(ended_at or record.started_at)
    options = [
        ("retention", p, since, durations.parse(p).after(since))
        for p in _retentions(record, config)
    ]
    # The longest retention wins; a withdrawal's shorter period overrides it.
    best = max(options, key=lambda o: o[3])
    if record.kind == "consent" and record.status == "withdrawn" and record.status_at:
        p, at = _after_withdrawal(record, config), utc(record.status_at)
        withdrawn = ("erase_after_withdrawal", p, at, durations.parse(p).after(at))
        best = min(best, withdrawn, key=lambda o: o[3])
    return Erasure(record.record_id, record.call_id, *best)


def plan(session: Session, config: Config, at: datetime) -> Plan:
    """What is due at `at`: expirations to record, records to erase."""
    result = Plan()
    rows = session.execute(
        select(ConsentRecord, Call.ended_at)
        .join(Call, Call.call_id == ConsentRecord.call_id, isouter=True)
        .where(ConsentRecord.erased_at.is_(None))
        .order_by(ConsentRecord.call_id, ConsentRecord.record_id)
        .execution_options(yield_per=BATCH)
    )
    for record, ended_at in rows:
        if record.kind == "consent" and record.status == "given":
            end = lifecycle.expires_at(record)
            if end is not None and end <= at:
                result.expiries.append(Expiry(record.record_id, record.purpose_id, end))
        erasure = due_erasure(record, ended_at, config)
        if erasure.due <= at:
            result.erasures.append(erasure)
    return result


def expire(session: Session, items: list[Expiry], at: datetime) -> None:
    chain.lock(session)
    events = []
    for item in items:
        record = session.get(ConsentRecord, item.record_id)
        if record is None or record.status != "given":
            continue  # withdrawn or expired meanwhile
        data = {
            "purpose_id": record.purpose_id,
            "validity": (record.purpose or {}).get("validity"),
            "recorded_at": iso(at),
        }
        events.append((record.record_id, Evidence(item.at, "expired", None, data)))
    chain.append(session, events)


def _sms_phones(session: Session, record: ConsentRecord) -> list[str]:
    """Blank the number of the record's SMS whose every record is erased; their ids.
    The column is NOT NULL, so an erased number is the empty string."""
    if importlib.util.find_spec("consent_ivr.sms.models") is None:
        return []
    from consent_ivr.sms.models import SmsJob

    ids = {
        str(e.data["job_id"])
        for e in chain.events_of(session, record.record_id)
        if "job_id" in e.data
    }
    erased = []
    for job in session.scalars(select(SmsJob).where(SmsJob.id.in_(ids))):
        ids_of_job = {*(job.record_ids or ()), job.record_id} - {None}
        others = [session.get(ConsentRecord, r) for r in ids_of_job]
        if all(o is None or o.erased_at is not None for o in others) and job.phone:
            job.phone = ""
            erased.append(job.id)
    return erased


def _inbound(session: Session, record: ConsentRecord) -> list[str]:
    """Blank the sender and text of the STOP messages that withdrew the record, once every
    record they withdrew is erased; their ids."""
    ids = {
        str(e.data["via_sms"])
        for e in chain.events_of(session, record.record_id)
        if e.kind == "withdrawn" and e.data.get("via_sms")
    }
    if not ids:
        return []
    from consent_ivr.sms.models import SmsInbound

    erased = []
    for row in session.scalars(select(SmsInbound).where(SmsInbound.id.in_(ids))):
        others = [session.get(ConsentRecord, r) for r in row.record_ids or ()]
        if all(o is None or o.erased_at is not None for o in others) and row.sender:
            row.sender, row.text = "", ""
            erased.append(row.id)
    return erased


def erase(session: Session, call_id: str, items: list[Erasure], at: datetime) -> Path | None:
    """Erase these records of one call, in the caller's transaction; the recording file to
    delete once it committed (when no record of the call needs it any more)."""
    chain.lock(session)
    call = session.get(Call, call_id)
    todo = [
        (item, record)
        for item in items
        if (record := session.get(ConsentRecord, item.record_id)) is not None
        and record.erased_at is None
    ]
    for _, record in todo:
        record.pii_principal_id = record.subject_salt = None
        record.erased_at = utc(at)
    session.flush()
    last = call is not None and all(r.erased_at for r in records_of_call(session, call_id))
    shared = []
    if last and call is not None:
        shared = ["caller_number", "called_number"] + (["recording"] if call.recording_path else [])
    events = []
    for item, record in todo:
        sms = _sms_phones(session, record)
        inbound = _inbound(session, record)
        data = {
            "policy": item.policy,
            "period": item.period,
            "since": iso(item.since),
            "due": iso(item.due),
            "erased": [
                "phone",
                "subject_salt",
                *shared,
                *(["sms_phone"] if sms else []),
                *(["inbound_sms"] if inbound else []),
            ],
            "recording_sha256": call.recording_sha256 if call is not None else None,
        }
        if sms:
            data["sms_jobs"] = sms
        if inbound:
            data["inbound_sms"] = inbound
        events.append((record.record_id, Evidence(at, "erased", None, data)))
    doomed = None
    if last and call is not None:
        call.caller_number = call.called_number = None
        call.erased_at = utc(at)
        doomed = Path(call.recording_path) if call.recording_path else None
    chain.append(session, events)
    return doomed


Step = Callable[[Session], "Path | None"]


def steps(result: Plan, at: datetime) -> Iterator[tuple[str, Step]]:
    """The purge as short transactions, in order: expirations in batches, then each call's
    erasure (which may name a recording file to delete once it committed)."""
    for start in range(0, len(result.expiries), BATCH):
        batch = result.expiries[start : start + BATCH]
        yield "", partial(_expire_step, batch, at)
    by_call: dict[str, list[Erasure]] = {}
    for item in result.erasures:
        by_call.setdefault(item.call_id, []).append(item)
    for call_id, items in by_call.items():
        yield call_id, partial(erase_step, call_id, items, at)


def _expire_step(batch: list[Expiry], at: datetime, session: Session) -> None:
    expire(session, batch, at)


def erase_step(call_id: str, items: list[Erasure], at: datetime, session: Session) -> Path | None:
    return erase(session, call_id, items, at)


def delete_file(result: Plan, call_id: str, doomed: Path) -> None:
    try:
        doomed.unlink(missing_ok=True)
        result.deleted.append(str(doomed))
    except OSError as e:
        log.error("recording %s of erased call %s not deleted: %s", doomed, call_id, e)


def run(db: Database, config: Config, *, dry_run: bool = False, at: datetime | None = None) -> Plan:
    """Plan and (unless `dry_run`) carry out the purge: expirations, then erasures call by
    call, each in its own transaction. Blocking (for the CLI; the service runs the same
    steps through its database's writer, see consent_ivr.evidence.tasks)."""
    at = at or now()
    with db.session() as session:
        result = plan(session, config, at)
    if dry_run:
        return result
    for call_id, step in steps(result, at):
        with db.session() as session:
            doomed = step(session)
        if doomed is not None:
            delete_file(result, call_id, doomed)
    return result
