"""SMS people send us: every one is stored, and a stop word withdraws consent.

Theory of operation
-------------------
Kannel (its sms-service calls the route in consent_ivr.sms.http) and SMPP (a deliver_sm that
is not a receipt, consent_ivr.sms.gateways.smpp) hand each message to `handle`, one
transaction per message. What happens depends on the text and on the sender's consents:

- a stop word (consent_ivr.sms.stopwords) from a number with active consents withdraws them
  (`sms.inbound.scope`: all of them, or those of the purposes of the last SMS we sent to the
  number, or all when that tells none that is active: a STOP is never ignored) through
  `lifecycle.withdraw` with the outbox's decision hook, so each record's chain gets a
  `withdrawn` event naming this message (`via_sms`) and one SMS confirms the withdrawal;
- a stop word from a number with nothing active puts it on the do-not-contact register
  (every purpose) and gets one short reply (the `stopped` template);
- anything else is stored and logged, and answered when `sms.inbound.replies` has a text in
  the person's language.

A transaction that may withdraw takes the ledger lock before any other row (see
consent_ivr.store.chain). A message the gateway delivers twice (Kannel retries a call whose
answer was lost) carries the same gateway message id and is handled once. A sender that is
not a phone number (a name) cannot be answered and has no consents: its message is stored.
"""

from __future__ import annotations

import logging
from datetime import datetime

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr.phone import mask, to_e164
from consent_ivr.sms import outbox, stopwords
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways import Incoming
from consent_ivr.sms.models import (
    MARKETING,
    OTHER,
    REPLY,
    STOPPED,
    WITHDRAWN,
    SmsInbound,
    SmsJob,
)
from consent_ivr.sms.promises import Channels
from consent_ivr.store import chain, lifecycle
from consent_ivr.store.models import ConsentRecord, new_id

log = logging.getLogger(__name__)


def sender_e164(raw: str, region: str | None) -> str | None:
    """The sender in E.164: gateways give international numbers with or without their +,
    national ones only in the configured region. None: not a phone number."""
    digits = raw.strip()
    if digits.isdigit():
        try:
            international = phonenumbers.parse("+" + digits)
        except phonenumbers.NumberParseException:
            international = None
        if international is not None and phonenumbers.is_valid_number(international):
            return phonenumbers.format_number(international, phonenumbers.PhoneNumberFormat.E164)
    if digits.startswith("+") or region:
        return to_e164(digits, region or "ZZ")
    return None


def _last_purposes(session: Session, phone: str) -> list[str]:
    """The purposes of the last SMS about purposes that was sent to `phone`."""
    job = session.scalars(
        select(SmsJob)
        .where(SmsJob.phone == phone, SmsJob.kind != REPLY, SmsJob.sent_at.is_not(None))
        .order_by(SmsJob.sent_at.desc())
        .limit(1)
    ).first()
    if job is None:
        return []
    if job.kind == MARKETING:
        return [job.purpose_id] if job.purpose_id else []
    records = (session.get(ConsentRecord, r) for r in job.record_ids)
    return [r.purpose_id for r in records if r is not None and r.purpose_id]


def _targets(session: Session, phone: str, scope: str, at: datetime) -> list[ConsentRecord]:
    active = lifecycle.active(session, phone, at=at)
    if scope == "last":
        purposes = set(_last_purposes(session, phone))
        return [r for r in active if r.purpose_id in purposes] or active
    return active


def handle(
    session: Session,
    message: Incoming,
    *,
    at: datetime,
    sms: SmsConfig,
    channels: Channels = outbox.NO_CHANNELS,
    region: str | None = None,
) -> SmsInbound:
    """Store one inbound SMS and act on it (see the module docstring), in the caller's
    transaction. Returns the stored row (the earlier one for a repeated delivery)."""
    stop = stopwords.is_stop(message.text, sms.inbound.stop_words)
    if stop:
        chain.lock(session)
    if message.message_id:
        seen = session.scalars(
            select(SmsInbound).where(
                SmsInbound.gateway == message.gateway,
                SmsInbound.message_id == message.message_id,
            )
        ).first()
        if seen is not None:
            return seen
    phone = sender_e164(message.sender, region)
    row = SmsInbound(
        id=new_id(),
        received_at=at,
        gateway=message.gateway[:16],
        sender=(phone or message.sender)[:64],
        recipient=message.recipient[:64],
        text=message.text,
        message_id=message.message_id[:64] if message.message_id else None,
        action=OTHER,
        record_ids=[],
    )
    session.add(row)
    if phone is not None and stop:
        _stop(session, row, phone, at, sms, channels, region)
    elif phone is not None:
        _reply(session, row, phone, at, sms, region, stopped=False)
    log.info(
        "inbound SMS %s from %s via %s: %s%s",
        row.id,
        mask(row.sender),
        row.gateway,
        row.action,
        f" ({len(row.record_ids)} consent(s))" if row.record_ids else "",
    )
    return row


def _stop(
    session: Session,
    row: SmsInbound,
    phone: str,
    at: datetime,
    sms: SmsConfig,
    channels: Channels,
    region: str | None,
) -> None:
    targets = _targets(session, phone, sms.inbound.scope, at)
    hook = outbox.decision_hook(sms, channels)
    done = lifecycle.withdraw(session, targets, at, channel="sms", via_sms=row.id, hooks=[hook])
    if done:
        row.action, row.record_ids = WITHDRAWN, [r.record_id for r in done]
        row.reply_job_id = session.scalar(
            select(SmsJob.id).where(
                SmsJob.record_id == done[0].record_id,
                SmsJob.decision == "withdrawn",
                SmsJob.decided_at == at,
            )
        )
        return
    lifecycle.suppress(session, phone, None, "stop", at, reason=f"inbound SMS {row.id}")
    row.action = STOPPED
    _reply(session, row, phone, at, sms, region, stopped=True)


def _reply(
    session: Session,
    row: SmsInbound,
    phone: str,
    at: datetime,
    sms: SmsConfig,
    region: str | None,
    *,
    stopped: bool,
) -> None:
    """Answer the sender in the language of their latest record (`sms.inbound.language`
    without one): the `stopped` template after a stop word, else the configured reply."""
    latest = next(iter(lifecycle.consent_records(session, phone)), None)
    language = latest.language if latest else sms.inbound.language
    text = None if stopped else sms.inbound.replies.get(language)
    if not stopped and not text:
        return
    job = outbox.enqueue_text(
        session,
        kind=REPLY,
        phone=phone,
        text=text,
        template="stopped" if stopped else REPLY,
        campaign=latest.campaign if latest else "default",
        language=language,
        at=at,
        sms=sms,
        region=region,
    )
    session.flush()  # the job's row first: the inbound row refers to it
    row.reply_job_id = job.id
