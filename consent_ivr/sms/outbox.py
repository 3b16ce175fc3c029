"""The transactional outbox: what the call flow calls when it stores a decision.

``enqueue_confirmation`` only adds rows to the caller's session, so the SMS job commits or rolls
back with the decision itself. The text is rendered here, once, and frozen in the job.
A number that cannot get an SMS still gets a job, already failed with the reason, so the record
shows why no confirmation went out; the consent record itself is never touched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr.clock import iso, now, utc
from consent_ivr.sms import templates as tpl
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.encoding import measure
from consent_ivr.sms.models import FAILED, QUEUED, SmsJob
from consent_ivr.sms.phones import InvalidPhone, parse_mobile
from consent_ivr.store.models import ConsentRecord, new_id


def _text(value: Any, language: str) -> str:
    """Record fields are already in the record's language; tolerate per-language dicts too."""
    if isinstance(value, dict):
        return str(value.get(language) or next(iter(value.values()), ""))
    return "" if value is None else str(value)


def render_confirmation(
    record: ConsentRecord, decision: str, at: datetime, sms: SmsConfig, zone: str
) -> str:
    language = record.language
    template = tpl.pick(sms.templates, record.campaign, language, decision)
    controller, purpose = record.controller or {}, record.purpose or {}
    words = sms.decision_words.get(language, {})
    values = {
        "company": _text(controller.get("name"), language),
        "contact": _text(controller.get("contact"), language),
        "purpose": _text(purpose.get("text"), language),
        "data_categories": _text(purpose.get("data_categories"), language),
        "retention": _text(purpose.get("retention"), language),
        "withdrawal": _text(purpose.get("withdrawal"), language),
        "decision": words.get(decision, decision),
        "record_id": record.record_id,
        "reference": record.record_id[:8].upper(),
        **tpl.time_values(at, zone, sms.date_format.get(language, "%Y-%m-%d")),
    }
    return tpl.render(template, values)


def enqueue_confirmation(
    session: Session,
    record: ConsentRecord,
    *,
    decision: str,
    at: datetime,
    sms: SmsConfig,
) -> None:
    """Add the confirmation job for ``decision`` to the caller's transaction (never commits).

    Idempotent per (record, decision, time): calling it twice for one decision adds one job.
    """
    if not sms.enabled:
        return
    if decision not in tpl.DECISIONS:
        raise ValueError(f"decision must be one of {tpl.DECISIONS}, got {decision!r}")
    if record.record_id is None:
        session.flush()
    at = utc(at)
    duplicate = session.scalar(
        select(SmsJob.id).where(
            SmsJob.record_id == record.record_id,
            SmsJob.decision == decision,
            SmsJob.decided_at == at,
        )
    )
    if duplicate is not None:
        return
    created = now()
    errors: list[str] = []
    phone, zone = record.pii_principal_id, sms.timezone
    try:
        mobile = parse_mobile(record.pii_principal_id, record.jurisdiction)
        phone = mobile.e164
        if len(mobile.time_zones) == 1:
            zone = mobile.time_zones[0]
    except InvalidPhone as e:
        errors.append(f"invalid recipient: {e}")
    text = ""
    try:
        text = render_confirmation(record, decision, at, sms, zone)
    except tpl.TemplateError as e:
        errors.append(str(e))
    size = measure(text)
    if text and size.segments > sms.max_segments:
        errors.append(
            f"text needs {size.segments} SMS parts ({size.encoding}, {size.units} units); "
            f"sms.max_segments is {sms.max_segments}: shorten the template"
        )
    session.add(
        SmsJob(
            id=new_id(),
            record_id=record.record_id,
            decision=decision,
            decided_at=at,
            campaign=record.campaign,
            language=record.language,
            phone=phone[:32],
            text=text,
            encoding=size.encoding,
            segments=size.segments,
            status=FAILED if errors else QUEUED,
            attempts=0,
            in_doubt=False,
            created_at=created,
            next_attempt_at=created,
            failed_at=created if errors else None,
            error="; ".join(errors) or None,
        )
    )


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
