"""The outbox on a real SQLite database, and the worker with the default log gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from consent_ivr.phone import mask
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import SmsDeliveryReport, SmsJob
from consent_ivr.sms.outbox import enqueue_confirmation, sms_status
from consent_ivr.store.db import Database
from consent_ivr.store.models import ConsentRecord

from .conftest import decide, job_counts, new_record, wait_until

pytestmark = pytest.mark.integration


def test_rollback_leaves_no_job_and_commit_freezes_the_text(sqlite_db: Database) -> None:
    sms = SmsConfig()
    at = datetime(2026, 11, 30, 9, 5, tzinfo=UTC)
    with pytest.raises(RuntimeError), sqlite_db.session() as session:
        record = new_record(session)
        enqueue_confirmation(session, record, decision="granted", at=at, sms=sms)
        raise RuntimeError("the decision's transaction fails")
    assert job_counts(sqlite_db) == {}

    with sqlite_db.session() as session:
        record = new_record(session)
        enqueue_confirmation(session, record, decision="granted", at=at, sms=sms)
        enqueue_confirmation(session, record, decision="granted", at=at, sms=sms)  # idempotent
        record_id = record.record_id
    with sqlite_db.session() as session:
        status = sms_status(session, record_id)
        jobs = session.scalars(select(SmsJob)).all()
    assert len(jobs) == 1 and status is not None
    text = status["text"]
    assert status["status"] == "queued" and status["sent_at"] is None
    # The +7 900 number spans many zones, so the configured Europe/Moscow is used.
    assert text.startswith("ООО «Пример»: вы дали согласие на звонки и СМС")
    assert "30.11.2026 12:05 (UTC+3)" in text and record_id in text
    assert "ответьте СТОП" in text
    assert (jobs[0].encoding, jobs[0].segments) == ("ucs2", 4)


def test_english_decline_and_later_withdrawal_are_two_jobs(sqlite_db: Database) -> None:
    sms = SmsConfig()
    at = datetime(2026, 11, 30, 9, 5, tzinfo=UTC)
    with sqlite_db.session() as session:
        record = new_record(session, phone="+4915112345678", language="en")
        enqueue_confirmation(session, record, decision="declined", at=at, sms=sms)
        record_id = record.record_id
    with sqlite_db.session() as session:
        record = session.get(ConsentRecord, record_id)
        later = at + timedelta(days=3)
        enqueue_confirmation(session, record, decision="withdrawn", at=later, sms=sms)
    with sqlite_db.session() as session:
        status = sms_status(session, record_id)
        assert session.query(SmsJob).count() == 2
    assert status is not None
    assert status["text"].startswith("Example Ltd: you withdrew your consent to calls")
    assert "03 Dec 2026 10:05 (UTC+1)" in status["text"]  # Berlin, from the number


@pytest.mark.parametrize(
    ("phone", "reason"),
    [("+74951234567", "not a mobile"), ("+7900", "not a valid"), ("n/a", "not a phone")],
)
def test_number_without_sms_gets_a_failed_job_and_the_record_stays(
    sqlite_db: Database, phone: str, reason: str
) -> None:
    [record_id] = decide(sqlite_db, SmsConfig(), phone=phone)
    with sqlite_db.session() as session:
        status = sms_status(session, record_id)
        record = session.get(ConsentRecord, record_id)
    assert record is not None and record.outcome == "granted"
    assert status is not None and status["status"] == "failed"
    assert "invalid recipient" in status["error"] and reason in status["error"]
    assert status["failed_at"] is not None


def test_too_many_parts_is_a_permanent_failure(sqlite_db: Database) -> None:
    [record_id] = decide(sqlite_db, SmsConfig(max_segments=2))
    with sqlite_db.session() as session:
        status = sms_status(session, record_id)
    assert status is not None and status["status"] == "failed"
    assert "needs 4 SMS parts" in status["error"] and "max_segments is 2" in status["error"]


def test_disabled_adds_nothing(sqlite_db: Database) -> None:
    decide(sqlite_db, SmsConfig(enabled=False))
    assert job_counts(sqlite_db) == {}


async def test_log_gateway_delivers_each_job_once(
    sqlite_db: Database, tmp_path: Path, start_worker, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "sms.jsonl"
    sms = SmsConfig(log={"file": outbox}, poll_interval_s=0.05)
    record_ids = decide(sqlite_db, sms, count=5)
    worker = start_worker(sqlite_db, sms)
    await wait_until(lambda: job_counts(sqlite_db) == {"delivered": 5}, 10, "5 delivered")
    await worker.close()

    lines = [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["job_id"] for line in lines) == sorted(
        sms_status_of(sqlite_db, r)["job_id"] for r in record_ids
    )
    assert all(line["to"] == mask("+79001234567") for line in lines)  # masked, even in the file
    assert all("900123" not in line["to"] for line in lines)
    printed = capsys.readouterr().out
    assert "+79001234567" not in printed and "вы дали согласие" in printed
    status = sms_status_of(sqlite_db, record_ids[0])
    assert status["message_id"].startswith("log-") and status["delivered_at"]
    with sqlite_db.session() as session:
        assert session.query(SmsDeliveryReport).count() == 5


def sms_status_of(db: Database, record_id: str) -> dict:
    with db.session() as session:
        status = sms_status(session, record_id)
    assert status is not None
    return status
