"""The SMS steps in the evidence, on SQLite and PostgreSQL: what the worker records is appended
to every record's chain, a late report changes nothing, and a call that never ended does not
hold its SMS forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from consent_ivr.clock import now
from consent_ivr.sms import jobs
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways import DeliveryReport
from consent_ivr.sms.gateways.log import LogGateway
from consent_ivr.sms.models import SmsDeliveryReport, SmsJob
from consent_ivr.sms.outbox import sms_list
from consent_ivr.sms.worker import Worker
from consent_ivr.store import records
from consent_ivr.store.db import Database

from .conftest import (
    NEWS,
    PURPOSE,
    consent,
    consent_call,
    decide,
    event_kinds,
    events,
    job_counts,
)

pytestmark = pytest.mark.integration


def chain_ok(db: Database, record_id: str) -> bool:
    with db.session() as session:
        view = records.record_view(session, record_id)
    return bool(view["integrity"]["chain_ok"])


def log_worker(db: Database, tmp_path: Path, **kw) -> Worker:
    sms = SmsConfig.model_validate({"log": {"file": tmp_path / "sms.jsonl", "echo": False}, **kw})
    return Worker(db, sms, LogGateway(sms.log.file, echo=False))


async def test_worker_steps_join_every_record_of_the_sms(database: Database, tmp_path: Path):
    decisions = [(PURPOSE, "granted"), (NEWS, "granted")]
    with database.session() as session:
        ids = consent_call(session, SmsConfig(), decisions)
    worker = log_worker(database, tmp_path)
    assert await worker.run_once() == 1
    with database.session() as session:
        [sms] = sms_list(session, ids[0])
    assert sms["status"] == "logged" and sms["gateway"] == "log"
    for record_id in ids:
        assert event_kinds(database, record_id)[-2:] == ["sms_enqueued", "sms_sent"]
        [sent] = events(database, record_id, "sms_sent")
        assert sent == {"job_id": sms["job_id"], "gateway": "log", "message_id": sms["message_id"]}
        assert chain_ok(database, record_id)


def test_a_report_for_a_final_job_is_stored_once_and_changes_nothing(database: Database) -> None:
    """A late report (Kannel's "accepted" after "delivered") is kept; the same one again (a
    retry, or a replay of a signed URL) is not stored twice."""
    [record_id] = decide(database, SmsConfig())
    with database.session() as session:
        job_id = session.scalars(select(SmsJob.id)).one()
        jobs.mark_sent(session, job_id, gateway="kannel", message_id=None, now=now())
    delivered = DeliveryReport("delivered", "kannel:1", job_id=job_id, message_id="smsc-7")
    late = DeliveryReport("failed", "kannel:16", job_id=job_id, message_id="smsc-8")
    for report in (delivered, late, late, delivered):
        with database.session() as session:
            assert jobs.apply_report(session, report, now=now()) == job_id
    with database.session() as session:
        job = session.get(SmsJob, job_id)
        assert job is not None
        assert (job.status, job.message_id, job.error) == ("delivered", "smsc-7", None)
        assert session.scalar(select(func.count()).select_from(SmsDeliveryReport)) == 2
    reports = events(database, record_id, "sms_report")
    assert [(r["status"], r["gateway_status"], r["message_id"]) for r in reports] == [
        ("delivered", "kannel:1", "smsc-7"),
        ("failed", "kannel:16", "smsc-8"),
    ]
    assert event_kinds(database, record_id)[-3:] == ["sms_sent", "sms_report", "sms_report"]
    assert chain_ok(database, record_id)


def test_a_failed_job_is_written_to_the_chain(database: Database) -> None:
    [record_id] = decide(database, SmsConfig())
    with database.session() as session:
        [claimed] = jobs.claim(session, worker="w", limit=1, lease_s=30, now=now())
    with database.session() as session:
        jobs.fail(session, claimed.sms.job_id, "a stale token", error="no", now=now())
        jobs.fail(session, claimed.sms.job_id, claimed.token, error="rejected", now=now())
    assert events(database, record_id, "sms_failed") == [
        {"job_id": claimed.sms.job_id, "error": "rejected"}
    ]
    assert chain_ok(database, record_id)


async def test_sms_of_a_call_that_never_ended_goes_out_after_hold_max_s(
    database: Database, tmp_path: Path
) -> None:
    sms = SmsConfig()
    with database.session() as session:
        record_id = consent(session, sms, end_call=False)
    assert job_counts(database) == {"held": 1}
    patient = log_worker(database, tmp_path, hold_max_s=3600)
    assert await patient.run_once() == 0
    assert job_counts(database) == {"held": 1}
    assert events(database, record_id, "sms_enqueued") == []

    await asyncio.sleep(0.3)
    worker = log_worker(database, tmp_path, hold_max_s=0.2)
    assert await worker.run_once() == 1
    assert job_counts(database) == {"logged": 1}
    [enqueued] = events(database, record_id, "sms_enqueued")
    assert enqueued["status"] == "queued"
    assert event_kinds(database, record_id)[-2:] == ["sms_enqueued", "sms_sent"]
    assert chain_ok(database, record_id)
