"""The transactional outbox: what the call flow calls when it stores a decision.

The decision hook only adds rows to the caller's session, so the SMS job commits or rolls
back with the decision itself. A call's job is held until the call ends, so that a call that
decides on several purposes sends one SMS summing them up; its text is final, and written to the
evidence (`sms_enqueued`), when the call ends (`release_call`).
A number that cannot get an SMS still gets a job, already failed with the reason, so the record
shows why no confirmation went out; the consent record itself is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr.clock import iso, now, utc
from consent_ivr.sms import templates as tpl
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.encoding import measure
from consent_ivr.sms.models import FAILED, HELD, QUEUED, SmsJob
from consent_ivr.sms.phones import InvalidPhone, parse_mobile
from consent_ivr.store import chain
from consent_ivr.store.chain import Evidence
from consent_ivr.store.models import ConsentRecord, new_id
from consent_ivr.store.records import Decided, DecisionHook


def _text(value: Any, language: str) -> str:
    """Record fields are already in the record's language; tolerate per-language dicts too."""
    if isinstance(value, dict):
        return str(value.get(language) or next(iter(value.values()), ""))
    return "" if value is None else str(value)


def _values(record: ConsentRecord, sms: SmsConfig, zone: str, at: datetime) -> dict[str, Any]:
    language = record.language
    controller, purpose = record.controller or {}, record.purpose or {}
    return {
        "company": _text(controller.get("name"), language),
        "contact": _text(controller.get("contact"), language),
        "purpose": _text(purpose.get("text"), language),
        "data_categories": _text(purpose.get("data_categories"), language),
        "retention": _text(purpose.get("retention"), language),
        "withdrawal": _text(purpose.get("withdrawal"), language),
        "record_id": record.record_id,
        "reference": record.record_id[:8].upper(),
        **tpl.time_values(at, zone, sms.date_format.get(language, "%Y-%m-%d")),
    }


def render_confirmation(
    record: ConsentRecord, decision: str, at: datetime, sms: SmsConfig, zone: str
) -> str:
    language = record.language
    template = tpl.pick(sms.templates, record.campaign, language, decision)
    words = sms.decision_words.get(language, {})
    return tpl.render(
        template, {**_values(record, sms, zone, at), "decision": words.get(decision, decision)}
    )


def render_for(
    records: Sequence[ConsentRecord],
    decisions: Sequence[str],
    at: datetime,
    sms: SmsConfig,
    zone: str,
) -> tuple[str, str]:
    """The text confirming `decisions` (one per record) and the template it used: a single
    decision has its own template; several withdrawals name every purpose; several decisions
    of one call are summed up one line per purpose."""
    first = records[0]
    language = first.language
    words = sms.decision_words.get(language, {})
    if len(records) == 1:
        return render_confirmation(first, decisions[0], at, sms, zone), decisions[0]
    values = _values(first, sms, zone, at)
    purposes = [_text((r.purpose or {}).get("text"), language) for r in records]
    if set(decisions) == {"withdrawn"}:
        template = tpl.pick(sms.templates, first.campaign, language, "withdrawn")
        values |= {"purpose": "; ".join(purposes), "decision": words.get("withdrawn", "")}
        return tpl.render(template, values), "withdrawn"
    template = tpl.pick(sms.templates, first.campaign, language, "summary")
    lines = [f"{p}: {words.get(d, d)}" for p, d in zip(purposes, decisions, strict=True)]
    values |= {"purpose": "; ".join(purposes), "decision": "; ".join(lines)}
    return tpl.render(template, values), "summary"


def _recipient(record: ConsentRecord, sms: SmsConfig) -> tuple[str, str, list[str]]:
    """The number to send to (E.164), its time zone, and why it cannot get an SMS, if so."""
    phone, zone = record.pii_principal_id or "", sms.timezone
    try:
        mobile = parse_mobile(phone, record.jurisdiction)
        phone = mobile.e164
        if len(mobile.time_zones) == 1:
            zone = mobile.time_zones[0]
    except InvalidPhone as e:
        return phone, zone, [f"invalid recipient: {e}"]
    return phone, zone, []


def _fill(
    job: SmsJob, records: Sequence[ConsentRecord], decisions: Sequence[str], sms: SmsConfig
) -> None:
    """(Re)write a job's text and its verdict from the records it confirms."""
    phone, zone, errors = _recipient(records[0], sms)
    text, template = "", job.decision
    try:
        text, template = render_for(records, decisions, job.decided_at, sms, zone)
    except tpl.TemplateError as e:
        errors.append(str(e))
    size = measure(text)
    if text and size.segments > sms.max_segments:
        errors.append(
            f"text needs {size.segments} SMS parts ({size.encoding}, {size.units} units); "
            f"sms.max_segments is {sms.max_segments}: shorten the template"
        )
    job.phone, job.text, job.decision = phone[:32], text, template
    job.encoding, job.segments = size.encoding, size.segments
    job.record_ids = [r.record_id for r in records]
    if errors:
        job.status, job.failed_at, job.error = FAILED, job.created_at, "; ".join(errors)


def enqueue_confirmation(
    session: Session,
    record: ConsentRecord,
    *,
    decision: str,
    at: datetime,
    sms: SmsConfig,
) -> SmsJob | None:
    """Add the confirmation job for ``decision`` to the caller's transaction (never commits).

    Idempotent per (record, decision, time): calling it twice for one decision adds one job.
    """
    if not sms.enabled:
        return None
    return _new_job(session, [record], [decision], at, sms, held_by=None)


def _new_job(
    session: Session,
    records: Sequence[ConsentRecord],
    decisions: Sequence[str],
    at: datetime,
    sms: SmsConfig,
    *,
    held_by: str | None,
) -> SmsJob | None:
    for d in decisions:
        if d not in tpl.DECISIONS:
            raise ValueError(f"decision must be one of {tpl.DECISIONS}, got {d!r}")
    first = records[0]
    if first.record_id is None:
        session.flush()
    at = utc(at)
    duplicate = session.scalar(
        select(SmsJob.id).where(
            SmsJob.record_id == first.record_id,
            SmsJob.decision == decisions[0],
            SmsJob.decided_at == at,
        )
    )
    if duplicate is not None:
        return None
    created = now()
    job = SmsJob(
        id=new_id(),
        record_id=first.record_id,
        call_id=held_by,
        decision=decisions[0],
        decided_at=at,
        campaign=first.campaign,
        language=first.language,
        status=HELD if held_by else QUEUED,
        attempts=0,
        in_doubt=False,
        created_at=created,
        next_attempt_at=created,
    )
    _fill(job, records, decisions, sms)
    session.add(job)
    return job


def enqueued_event(job: SmsJob, at: datetime) -> Evidence:
    return Evidence(
        at,
        "sms_enqueued",
        None,
        {
            "job_id": job.id,
            "text": job.text,
            "template": job.decision,
            "segments": job.segments,
            "status": job.status,
            **({"error": job.error} if job.error else {}),
        },
    )


def decision_hook(sms: SmsConfig) -> DecisionHook:
    """What the decision transaction calls: the outbox half of the transactional outbox."""

    def hook(session: Session, decided: Decided) -> list[tuple[str, Evidence]]:
        if not sms.enabled:
            return []
        records = [*decided.records]
        decisions = [decided.outcome] * len(records)
        held = None
        if decided.call_id is not None:
            held = session.scalars(
                select(SmsJob).where(SmsJob.call_id == decided.call_id, SmsJob.status == HELD)
            ).first()
        if held is not None:
            # A later decision of the same call: the held SMS now sums up both.
            earlier = [session.get(ConsentRecord, r) for r in held.record_ids]
            known = [r for r in earlier if r is not None]
            records = known + records
            decisions = [_decision_of(r) for r in known] + decisions
            _fill(held, records, decisions, sms)
            return []
        job = _new_job(session, records, decisions, decided.at, sms, held_by=decided.call_id)
        if job is None or job.status == HELD:
            return []  # its events come when the call ends and the text is final
        ids = [*decided.evidence_records, *job.record_ids]
        return [(r, enqueued_event(job, decided.at)) for r in ids]

    return hook


def _decision_of(record: ConsentRecord) -> str:
    return {"given": "granted", "refused": "declined", "withdrawn": "withdrawn"}.get(
        record.status or "", record.outcome or "granted"
    )


def release_call(session: Session, call_id: str, at: datetime) -> None:
    """The call is over: its held SMS goes out, and its final text joins the evidence."""
    jobs = session.scalars(
        select(SmsJob).where(SmsJob.call_id == call_id, SmsJob.status == HELD)
    ).all()
    items = []
    for job in jobs:
        job.status, job.next_attempt_at = QUEUED, utc(at)
        items += [(r, enqueued_event(job, at)) for r in job.record_ids]
    chain.append(session, items)


def sms_status(session: Session, record_id: str) -> dict[str, Any] | None:
    """The latest confirmation of a record, for ``consent-ivr show RECORD_ID --json``."""
    job = session.scalars(
        select(SmsJob)
        .where(SmsJob.record_id == record_id)
        .order_by(SmsJob.decided_at.desc(), SmsJob.created_at.desc())
        .limit(1)
    ).first()
    if job is None:
        return None
    return {
        "status": job.status,
        "message_id": job.message_id,
        "sent_at": iso(job.sent_at),
        "delivered_at": iso(job.delivered_at),
        "failed_at": iso(job.failed_at),
        "text": job.text,
        "error": job.error,
        "decision": job.decision,
        "job_id": job.id,
        "attempts": job.attempts,
    }
