"""The transactional outbox: what the call flow calls when it stores a decision, and how every
other SMS (a reply, a marketing text) joins the queue.

The decision hook only adds rows to the caller's session, so the SMS job commits or rolls
back with the decision itself. A call's job is held until the call ends, so that a call that
decides on several purposes sends one SMS summing them up; its text is final, and written to the
evidence (`sms_enqueued`), when the call ends (`release_call`), or when the worker finds it
held for longer than any call lasts (`release_stale`: the service died mid-call).
A number that cannot get an SMS still gets a job, already failed with the reason, so the record
shows why no confirmation went out; the consent record itself is never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, cast, or_, select, update
from sqlalchemy.orm import Session

from consent_ivr.clock import iso, now, utc
from consent_ivr.sms import templates as tpl
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.encoding import measure
from consent_ivr.sms.models import CONFIRMATION, FAILED, HELD, QUEUED, SmsJob
from consent_ivr.sms.phones import InvalidPhone, parse_mobile
from consent_ivr.sms.promises import Channels
from consent_ivr.store import chain
from consent_ivr.store.chain import Evidence
from consent_ivr.store.models import ConsentRecord, new_id
from consent_ivr.store.records import Decided, DecisionHook

NO_CHANNELS = Channels()


def _text(value: Any, language: str) -> str:
    """Record fields are already in the record's language; tolerate per-language dicts too."""
    if isinstance(value, dict):
        return str(value.get(language) or next(iter(value.values()), ""))
    return "" if value is None else str(value)


def _values(
    record: ConsentRecord, sms: SmsConfig, zone: str, at: datetime, channels: Channels
) -> dict[str, Any]:
    language = record.language
    controller, purpose = record.controller or {}, record.purpose or {}
    withdrawal = _text(purpose.get("withdrawal"), language)
    return {
        "company": _text(controller.get("name"), language),
        "contact": _text(controller.get("contact"), language),
        "purpose": _text(purpose.get("text"), language),
        "data_categories": _text(purpose.get("data_categories"), language),
        "retention": _text(purpose.get("retention"), language),
        "withdrawal": withdrawal,
        "how_to_withdraw": channels.how_to_withdraw(sms, record.campaign, language, withdrawal),
        "record_id": record.record_id,
        "reference": record.record_id[:8].upper(),
        **_time_values(at, sms, zone, language),
    }


def _time_values(at: datetime, sms: SmsConfig, zone: str, language: str) -> dict[str, str]:
    return tpl.time_values(at, zone, sms.date_format.get(language, "%Y-%m-%d"))


def render_for(
    records: Sequence[ConsentRecord],
    decisions: Sequence[str],
    at: datetime,
    sms: SmsConfig,
    zone: str,
    channels: Channels = NO_CHANNELS,
) -> tuple[str, str]:
    """The text confirming `decisions` (one per record) and the template it used: a single
    decision has its own template; several withdrawals name every purpose; several decisions
    of one call are summed up one line per purpose."""
    first = records[0]
    language = first.language
    words = sms.decision_words.get(language, {})
    values = _values(first, sms, zone, at, channels)
    if len(records) == 1:
        template = decisions[0]
        values["decision"] = words.get(template, template)
    elif set(decisions) == {"withdrawn"}:
        template = "withdrawn"
        purposes = [_text((r.purpose or {}).get("text"), language) for r in records]
        values |= {"purpose": "; ".join(purposes), "decision": words.get(template, "")}
    else:
        template = "summary"
        purposes = [_text((r.purpose or {}).get("text"), language) for r in records]
        lines = [f"{p}: {words.get(d, d)}" for p, d in zip(purposes, decisions, strict=True)]
        values |= {"purpose": "; ".join(purposes), "decision": "; ".join(lines)}
    text = tpl.pick(sms.templates, first.campaign, language, template)
    return tpl.render(text, values), template


def _recipient(phone: str | None, region: str | None, sms: SmsConfig) -> tuple[str, str, list[str]]:
    """The number to send to (E.164), its time zone, and why it cannot get an SMS, if so."""
    phone, zone = phone or "", sms.timezone
    try:
        mobile = parse_mobile(phone, region)
    except InvalidPhone as e:
        return phone, zone, [f"invalid recipient: {e}"]
    if len(mobile.time_zones) == 1:
        zone = mobile.time_zones[0]
    return mobile.e164, zone, []


def _set_text(job: SmsJob, phone: str, text: str, errors: list[str], sms: SmsConfig) -> None:
    """A job's recipient and text, and its failure when it cannot be sent as it is."""
    size = measure(text)
    if text and size.segments > sms.max_segments:
        errors.append(
            f"text needs {size.segments} SMS parts ({size.encoding}, {size.units} units); "
            f"sms.max_segments is {sms.max_segments}: shorten the text"
        )
    job.phone, job.text = phone[:32], text
    job.encoding, job.segments = size.encoding, size.segments
    if errors:
        job.status, job.failed_at, job.error = FAILED, job.created_at, "; ".join(errors)


def _fill(
    job: SmsJob,
    records: Sequence[ConsentRecord],
    decisions: Sequence[str],
    sms: SmsConfig,
    channels: Channels,
) -> None:
    """(Re)write a job's text and its verdict from the records it confirms."""
    first = records[0]
    phone, zone, errors = _recipient(first.pii_principal_id, first.jurisdiction, sms)
    text, template = "", job.decision
    try:
        text, template = render_for(records, decisions, job.decided_at, sms, zone, channels)
    except tpl.TemplateError as e:
        errors.append(str(e))
    job.decision = template
    job.record_ids = [r.record_id for r in records]
    _set_text(job, phone, text, errors, sms)


def _job(
    *, kind: str, template: str, campaign: str, language: str, at: datetime, held_by: str | None
) -> SmsJob:
    created = now()
    return SmsJob(
        id=new_id(),
        kind=kind,
        call_id=held_by,
        decision=template,
        decided_at=utc(at),
        campaign=campaign,
        language=language,
        status=HELD if held_by else QUEUED,
        attempts=0,
        in_doubt=False,
        created_at=created,
        next_attempt_at=created,
        record_ids=[],
    )


def enqueue_confirmation(
    session: Session,
    record: ConsentRecord,
    *,
    decision: str,
    at: datetime,
    sms: SmsConfig,
    channels: Channels = NO_CHANNELS,
) -> SmsJob | None:
    """Add the confirmation job for ``decision`` to the caller's transaction (never commits).

    Idempotent per (record, decision, time): calling it twice for one decision adds one job.
    """
    if not sms.enabled:
        return None
    return _new_job(session, [record], [decision], at, sms, channels, held_by=None)


def _new_job(
    session: Session,
    records: Sequence[ConsentRecord],
    decisions: Sequence[str],
    at: datetime,
    sms: SmsConfig,
    channels: Channels,
    *,
    held_by: str | None,
    new_decision: bool = False,
) -> SmsJob | None:
    """`new_decision`: the decision was stored in this transaction (a record's outcome, a
    consent's withdrawal, each made once under the ledger lock), so no job can be there for it
    yet and the look for one is skipped."""
    for d in decisions:
        if d not in tpl.DECISIONS:
            raise ValueError(f"decision must be one of {tpl.DECISIONS}, got {d!r}")
    first = records[0]
    if first.record_id is None:
        session.flush()
    if not new_decision:
        duplicate = session.scalar(
            select(SmsJob.id).where(
                SmsJob.record_id == first.record_id,
                SmsJob.decision == decisions[0],
                SmsJob.decided_at == utc(at),
            )
        )
        if duplicate is not None:
            return None
    job = _job(
        kind=CONFIRMATION,
        template=decisions[0],
        campaign=first.campaign,
        language=first.language,
        at=at,
        held_by=held_by,
    )
    job.record_id = first.record_id
    _fill(job, records, decisions, sms, channels)
    session.add(job)
    return job


def enqueue_text(
    session: Session,
    *,
    kind: str,
    phone: str,
    text: str | None,
    template: str,
    campaign: str,
    language: str,
    at: datetime,
    sms: SmsConfig,
    region: str | None = None,
    purpose_id: str | None = None,
) -> SmsJob:
    """An SMS about no record: a reply (`text` None: the `template`, e.g. stopped, in
    `language`) or a marketing text. Added to the caller's transaction."""
    phone, zone, errors = _recipient(phone, region, sms)
    if text is None:
        text = ""
        try:
            body = tpl.pick(sms.templates, campaign, language, template)
            text = tpl.render(body, _time_values(at, sms, zone, language))
        except tpl.TemplateError as e:
            errors.append(str(e))
    job = _job(
        kind=kind, template=template, campaign=campaign, language=language, at=at, held_by=None
    )
    job.purpose_id = purpose_id
    _set_text(job, phone, text, errors, sms)
    session.add(job)
    return job


def enqueued_event(job: Any, at: datetime, *, status: str | None = None) -> Evidence:
    """`job`: an SmsJob, or a row of its columns with the `status` it now has."""
    return Evidence(
        at,
        "sms_enqueued",
        None,
        {
            "job_id": job.id,
            "text": job.text,
            "template": job.decision,
            "segments": job.segments,
            "status": status or job.status,
            **({"error": job.error} if job.error else {}),
        },
    )


def decision_hook(sms: SmsConfig, channels: Channels = NO_CHANNELS) -> DecisionHook:
    """What the decision transaction calls: the outbox half of the transactional outbox."""
    return _ConfirmationHook(sms, channels)


class _ConfirmationHook:
    def __init__(self, sms: SmsConfig, channels: Channels) -> None:
        self.sms, self.channels = sms, channels

    def ahead(self, phone: str, region: str | None) -> None:
        """Before the decision, while the caller listens: the recipient's number parsed and
        checked (remembered by parse_mobile), so that the decision's transaction, which holds
        the ledger lock, does not spend its time on it."""
        if self.sms.enabled:
            with contextlib.suppress(InvalidPhone):
                parse_mobile(phone, region)

    def __call__(self, session: Session, decided: Decided) -> list[tuple[str, Evidence]]:
        sms, channels = self.sms, self.channels
        if not sms.enabled:
            return []
        records = [*decided.records]
        decisions = [decided.outcome] * len(records)
        held = None
        if decided.call_id is not None and not decided.first_in_call:
            held = session.scalars(
                select(SmsJob).where(SmsJob.call_id == decided.call_id, SmsJob.status == HELD)
            ).first()
        if held is not None:
            # A later decision of the same call: the held SMS now sums up both.
            earlier = [session.get(ConsentRecord, r) for r in held.record_ids]
            known = [r for r in earlier if r is not None]
            records = known + records
            decisions = [_decision_of(r) for r in known] + decisions
            _fill(held, records, decisions, sms, channels)
            return []
        job = _new_job(
            session,
            records,
            decisions,
            decided.at,
            sms,
            channels,
            held_by=decided.call_id,
            new_decision=True,
        )
        if job is None:
            return []
        # The withdrawal call's own record follows the SMS too (its events go to every id).
        job.record_ids = [*decided.evidence_records, *job.record_ids]
        if job.status == HELD:
            return []  # its events come when the call ends and the text is final
        return [(r, enqueued_event(job, decided.at)) for r in job.record_ids]


def _decision_of(record: ConsentRecord) -> str:
    return {"given": "granted", "refused": "declined", "withdrawn": "withdrawn"}.get(
        record.status or "", record.outcome or "granted"
    )


_HELD = select(
    SmsJob.id, SmsJob.record_ids, SmsJob.text, SmsJob.decision, SmsJob.segments, SmsJob.error
).where(SmsJob.status == HELD)
_HELD_BY_CALL = _HELD.where(SmsJob.call_id == bindparam("call_id"))
_HELD_SINCE = _HELD.where(SmsJob.next_attempt_at <= bindparam("before"))
_QUEUE = (
    update(SmsJob)
    .where(SmsJob.id == bindparam("job"))
    .values(status=QUEUED, next_attempt_at=bindparam("due"))
)


def _queue(session: Session, jobs: Sequence[Any], at: datetime) -> None:
    """Held jobs (rows of `_HELD`'s columns) go out now, and their final text joins the
    evidence. Plain statements, not objects: a call's end does this on every call."""
    if not jobs:
        return
    session.connection().execute(_QUEUE, [{"job": job.id, "due": utc(at)} for job in jobs])
    items = []
    for job in jobs:
        event = enqueued_event(job, at, status=QUEUED)
        items += [(r, event) for r in job.record_ids]
    chain.append(session, items)


def release_call(session: Session, call_id: str, at: datetime) -> None:
    """The call is over: its held SMS goes out. The job was made by an earlier transaction
    (the decision's), so it is in the database to be found."""
    chain.lock(session)  # before the job rows (see consent_ivr.store.chain)
    _queue(session, session.connection().execute(_HELD_BY_CALL, {"call_id": call_id}).all(), at)


def any_held_since(session: Session, before: datetime) -> bool:
    """Read only, so the worker need not take the ledger lock on every poll."""
    found = session.connection().execute(_HELD_SINCE.limit(1), {"before": utc(before)})
    return found.first() is not None


def release_stale(session: Session, before: datetime, at: datetime) -> int:
    """Send the SMS of calls that never ended (held since `before`); returns how many."""
    chain.lock(session)
    jobs = session.connection().execute(_HELD_SINCE, {"before": utc(before)}).all()
    _queue(session, jobs, at)
    return len(jobs)


def _view(job: SmsJob) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "kind": job.kind,
        "template": job.decision,
        "decision": job.decision,
        "status": job.status,
        "gateway": job.gateway,
        "message_id": job.message_id,
        "text": job.text,
        "sent_at": iso(job.sent_at),
        "delivered_at": iso(job.delivered_at),
        "failed_at": iso(job.failed_at),
        "error": job.error,
        "attempts": job.attempts,
    }


def sms_status(session: Session, record_id: str) -> dict[str, Any] | None:
    """The latest SMS of a record, for ``consent-ivr show RECORD_ID --json``."""
    listed = sms_list(session, record_id)
    return listed[-1] if listed else None


def sms_list(session: Session, record_id: str) -> list[dict[str, Any]]:
    """Every SMS about a record (its own, and those it shares with the other records of its
    call or of its withdrawal), oldest first, each with the gateway that carried it."""
    jobs = session.scalars(
        select(SmsJob)
        .where(
            or_(
                SmsJob.record_id == record_id,
                cast(SmsJob.record_ids, String).contains(record_id),
            )
        )
        .order_by(SmsJob.decided_at, SmsJob.created_at)
    )
    return [_view(job) for job in jobs if job.record_id == record_id or record_id in job.record_ids]
