"""Database transitions of an SMS job, each one short transaction run by the worker.

Theory of operation. A worker *claims* due jobs in one statement that sets them to ``sending``
with a lease and a claim token; on PostgreSQL the candidate rows are locked with
``FOR UPDATE SKIP LOCKED`` so concurrent workers take disjoint batches, and on SQLite the single
UPDATE statement holds the database's one write lock. The claim is committed *before* anything
is sent. A job whose lease ran out while ``sending`` was claimed by a worker that died or hung
at some unknown point of its send: it is claimed again with ``in_doubt`` set, and the next
worker asks the gateway (and waits for a delivery report carrying the job id) before it ever
sends that text again. Delivery reports move a job forward from any state but a final one, so
a report that overtakes the worker's own "sent" write is not lost; a report for a job already
final is stored and changes nothing.

The SMS steps are evidence too: `mark_sent`, `apply_report` and `fail` append `sms_sent`,
`sms_report` and `sms_failed` to the chain of every record the job is about. Those
transactions take the ledger lock (consent_ivr.store.chain) before they touch the job row, the
lock order every evidence writer keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from consent_ivr.clock import utc
from consent_ivr.sms.gateways import DeliveryReport, Outgoing
from consent_ivr.sms.models import (
    DELIVERED,
    FAILED,
    FINAL,
    QUEUED,
    SENDING,
    SENT,
    SUPPRESSED,
    SmsDeliveryReport,
    SmsJob,
)
from consent_ivr.store import chain
from consent_ivr.store.chain import Evidence
from consent_ivr.store.models import new_id


@dataclass(frozen=True)
class Claimed:
    """A job as the worker holds it between claim and outcome."""

    sms: Outgoing
    token: str
    attempts: int
    in_doubt: bool
    created_at: datetime
    attempt_started_at: datetime
    kind: str  # a marketing job is checked against the person's consent before it is sent


def claim(
    session: Session, *, worker: str, limit: int, lease_s: float, now: datetime
) -> list[Claimed]:
    due = or_(
        and_(SmsJob.status == QUEUED, SmsJob.next_attempt_at <= now),
        and_(SmsJob.status == SENDING, SmsJob.lease_until <= now),
    )
    candidates = select(SmsJob.id).where(due).order_by(SmsJob.next_attempt_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    # A CTE is evaluated once; as an IN (subquery) PostgreSQL may run the SKIP LOCKED select
    # again per row and claim far more than `limit` rows.
    picked = candidates.cte("picked")
    token = new_id()
    # SET expressions see the row as it was: a job still `sending` here has lost its worker.
    was_cut_off = SmsJob.status == SENDING
    stmt = (
        update(SmsJob)
        # `due` again: a row another worker claimed meanwhile is no longer due.
        .where(SmsJob.id.in_(select(picked.c.id)), due)
        .values(
            status=SENDING,
            claim_token=token,
            claimed_by=worker,
            lease_until=now + timedelta(seconds=lease_s),
            attempts=SmsJob.attempts + 1,
            in_doubt=or_(SmsJob.in_doubt, was_cut_off),
            # For a job in doubt this is when the doubt began: the wait for a report that
            # could settle it counts from a moment when a report receiver was surely up.
            attempt_started_at=case(
                (and_(SmsJob.in_doubt, ~was_cut_off), SmsJob.attempt_started_at), else_=now
            ),
        )
        .returning(
            SmsJob.id,
            SmsJob.phone,
            SmsJob.text,
            SmsJob.encoding,
            SmsJob.segments,
            SmsJob.attempts,
            SmsJob.in_doubt,
            SmsJob.created_at,
            SmsJob.attempt_started_at,
            SmsJob.kind,
        )
        .execution_options(synchronize_session=False)
    )
    return [
        Claimed(
            sms=Outgoing(row.id, row.phone, row.text, row.encoding, row.segments),
            token=token,
            attempts=row.attempts,
            in_doubt=bool(row.in_doubt),
            created_at=utc(row.created_at),
            attempt_started_at=utc(row.attempt_started_at or now),
            kind=row.kind,
        )
        for row in session.execute(stmt)
    ]


def _held(job_id: str, token: str):  # type: ignore[no-untyped-def]
    return and_(SmsJob.id == job_id, SmsJob.claim_token == token, SmsJob.status == SENDING)


def restart_attempt(
    session: Session, job_id: str, token: str, *, lease_s: float, now: datetime
) -> bool:
    """Before resending an in-doubt job: a new attempt starts now, under a fresh lease."""
    result = session.execute(
        update(SmsJob)
        .where(_held(job_id, token))
        .values(
            attempt_started_at=now,
            lease_until=now + timedelta(seconds=lease_s),
            in_doubt=False,
        )
        .returning(SmsJob.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


def _evidence(
    session: Session, record_ids: list[str], at: datetime, kind: str, data: dict[str, Any]
) -> None:
    chain.append(session, [(r, Evidence(at, kind, None, data)) for r in record_ids])


def mark_sent(
    session: Session,
    job_id: str,
    *,
    gateway: str,
    message_id: str | None,
    now: datetime,
    status: str = SENT,
) -> None:
    """The gateway has the message (`status` sent; logged for a gateway that only writes it
    down). A fact, so it is recorded whoever holds the claim."""
    chain.lock(session)
    row = session.execute(
        update(SmsJob)
        .where(SmsJob.id == job_id)
        .values(
            status=case((SmsJob.status.in_((QUEUED, SENDING)), status), else_=SmsJob.status),
            sent_at=func.coalesce(SmsJob.sent_at, now),
            message_id=func.coalesce(SmsJob.message_id, message_id),
            gateway=gateway,
            in_doubt=False,
            lease_until=None,
            error=case((SmsJob.status == FAILED, SmsJob.error), else_=None),
        )
        .returning(SmsJob.record_ids, SmsJob.message_id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is not None:
        data = {"job_id": job_id, "gateway": gateway, "message_id": row.message_id}
        _evidence(session, row.record_ids, now, "sms_sent", data)


def retry_later(
    session: Session,
    job_id: str,
    token: str,
    *,
    at: datetime,
    error: str,
    in_doubt: bool,
) -> None:
    session.execute(
        update(SmsJob)
        .where(_held(job_id, token))
        .values(
            status=QUEUED,
            next_attempt_at=at,
            error=error,
            in_doubt=in_doubt,
            lease_until=None,
            claim_token=None,
        )
        .execution_options(synchronize_session=False)
    )


def fail(session: Session, job_id: str, token: str, *, error: str, now: datetime) -> None:
    chain.lock(session)
    row = session.execute(
        update(SmsJob)
        .where(_held(job_id, token))
        .values(status=FAILED, failed_at=now, error=error, lease_until=None, claim_token=None)
        .returning(SmsJob.record_ids)
        .execution_options(synchronize_session=False)
    ).first()
    if row is not None:
        _evidence(session, row.record_ids, now, "sms_failed", {"job_id": job_id, "error": error})


def suppress(session: Session, job_id: str, token: str, *, reason: str, now: datetime) -> bool:
    """A marketing text the person may no longer be sent: final, never sent."""
    result = session.execute(
        update(SmsJob)
        .where(_held(job_id, token))
        .values(status=SUPPRESSED, error=reason, lease_until=None, claim_token=None)
        .returning(SmsJob.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


def apply_report(session: Session, report: DeliveryReport, *, now: datetime) -> str | None:
    """Store a delivery report and move its job forward; returns the job id, None if unknown."""
    query = select(SmsJob).with_for_update()
    if report.job_id:
        query = query.where(SmsJob.id == report.job_id)
    elif report.message_id:
        query = query.where(SmsJob.message_id == report.message_id)
    else:
        return None
    chain.lock(session)
    job = session.scalars(query.limit(1)).first()
    if job is None:
        return None
    replayed = session.scalar(
        select(SmsDeliveryReport.id).where(
            SmsDeliveryReport.job_id == job.id,
            SmsDeliveryReport.gateway_status == report.gateway_status,
        )
    )
    if replayed is not None:
        return job.id  # the same report again (a retry or a replay): kept once
    session.add(
        SmsDeliveryReport(
            job_id=job.id,
            received_at=now,
            status=report.status,
            gateway_status=report.gateway_status,
            message_id=report.message_id,
            detail=dict(report.detail),
        )
    )
    data = {
        "job_id": job.id,
        "status": report.status,
        "gateway_status": report.gateway_status,
        "message_id": report.message_id,
    }
    _evidence(session, job.record_ids, now, "sms_report", data)
    if job.status in FINAL:
        return job.id  # stored, but nothing changes a final job
    if report.message_id and not job.message_id:
        job.message_id = report.message_id
    if job.sent_at is None:
        job.sent_at = now  # any report proves the gateway had the message
    if report.status == "delivered":
        job.status, job.delivered_at, job.error = DELIVERED, now, None
    elif report.status == "failed":
        job.status, job.failed_at = FAILED, now
        job.error = f"not delivered: the gateway reported {report.gateway_status}"
    else:
        job.status = SENT
    job.in_doubt, job.lease_until, job.claim_token = False, None, None
    return job.id
