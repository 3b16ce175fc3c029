"""Marketing texts, sent only to people whose consent allows it, and never once they object.

A marketing job is queued only when `lifecycle.may_contact` allows an SMS for its purpose,
and the worker asks again just before it sends (`recheck`): a refusal, withdrawal or STOP that
arrived while the job waited ends it `suppressed`, never sent. Every refusal to contact is kept
as a `ContactAttempt` with the reason, so the refusal is shown to have been obeyed.
Confirmations are not marketing: they go out even to a person who withdrew (the confirmation
of that withdrawal is one).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from consent_ivr.sms import jobs, outbox
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import MARKETING, SmsJob
from consent_ivr.store import lifecycle


def enqueue(
    session: Session,
    *,
    phone: str,
    purpose: str,
    text: str,
    campaign: str,
    language: str,
    at: datetime,
    sms: SmsConfig,
    region: str | None = None,
) -> tuple[SmsJob | None, lifecycle.Permission]:
    """Queue a marketing SMS when the person's consent allows it; otherwise keep the refusal.
    Returns the job (None when not allowed) and the verdict with its reason."""
    verdict = lifecycle.may_contact(session, phone, purpose, "sms", at=at)
    if not verdict.allowed:
        lifecycle.suppressed(session, phone, purpose, "sms", verdict.reason, at, campaign=campaign)
        return None, verdict
    job = outbox.enqueue_text(
        session,
        kind=MARKETING,
        phone=phone,
        text=text,
        template=MARKETING,
        campaign=campaign,
        language=language,
        at=at,
        sms=sms,
        region=region,
        purpose_id=purpose,
    )
    return job, verdict


def recheck(session: Session, job_id: str, token: str, *, at: datetime) -> str | None:
    """Just before sending a claimed marketing job: the reason it may no longer go out (then
    it is suppressed), or None."""
    job = session.get(SmsJob, job_id)
    if job is None:
        return "the job is gone"
    purpose = job.purpose_id or ""
    verdict = lifecycle.may_contact(session, job.phone, purpose, "sms", at=at)
    if verdict.allowed:
        return None
    if jobs.suppress(session, job_id, token, reason=verdict.reason, now=at):
        lifecycle.suppressed(
            session, job.phone, purpose, "sms", verdict.reason, at, campaign=job.campaign
        )
    return verdict.reason
