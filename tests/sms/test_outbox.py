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
from consent_ivr.sms.outbox import decision_hook, enqueue_confirmation, sms_list, sms_status
from consent_ivr.sms.promises import Channels
from consent_ivr.store import lifecycle, records
from consent_ivr.store.db import Database
from consent_ivr.store.models import ConsentRecord

from .conftest import (
    NEWS,
    PURPOSE,
    consent,
    consent_call,
    decide,
    event_kinds,
    events,
    job_counts,
    wait_until,
)

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 30, 9, 5, tzinfo=UTC)


def test_rollback_leaves_no_job_and_commit_freezes_the_text(sqlite_db: Database) -> None:
    sms = SmsConfig()
    with pytest.raises(RuntimeError), sqlite_db.session() as session:
        consent(session, sms, at=AT)
        raise RuntimeError("the decision's transaction fails")
    assert job_counts(sqlite_db) == {}

    [record_id] = decide(sqlite_db, sms, at=AT)
    with sqlite_db.session() as session:
        status = sms_status(session, record_id)
        jobs = session.scalars(select(SmsJob)).all()
    assert len(jobs) == 1 and status is not None
    text = status["text"]
    assert status["status"] == "queued" and status["sent_at"] is None
    assert (status["kind"], status["template"], status["gateway"]) == (
        "confirmation",
        "granted",
        None,
    )
    # The +7 900 number spans many zones, so the configured Europe/Moscow is used.
    assert text.startswith("ООО «Пример»: вы дали согласие на звонки и СМС")
    assert "30.11.2026 12:05 (UTC+3)" in text and record_id in text
    # No reply channel and no campaign number: the purpose's own withdrawal text.
    assert text.endswith("Отозвать согласие: позвоните по этому номеру и нажмите два")
    assert (jobs[0].encoding, jobs[0].segments) == ("ucs2", 4)
    # Written to the evidence when the call ended and the text was final.
    [enqueued] = events(sqlite_db, record_id, "sms_enqueued")
    assert enqueued["job_id"] == jobs[0].id and enqueued["text"] == text


def test_enqueue_is_idempotent_per_decision(sqlite_db: Database) -> None:
    sms = SmsConfig()
    with sqlite_db.session() as session:
        record_id = consent(session, sms, at=AT)
        record = session.get(ConsentRecord, record_id)
        assert record is not None
        later = AT + timedelta(days=1)
        assert enqueue_confirmation(session, record, decision="granted", at=later, sms=sms)
        assert enqueue_confirmation(session, record, decision="granted", at=later, sms=sms) is None
    assert job_counts(sqlite_db) == {"queued": 2}


@pytest.mark.parametrize(
    ("replies", "numbers", "expected"),
    [
        (True, {"default": "+74951234567"}, "Отозвать согласие: ответьте СТОП на это СМС"),
        (False, {"default": "+74951234567"}, "Отозвать согласие: позвоните на +74951234567"),
        (False, {"other": "+74951234567"}, "Отозвать согласие: позвоните по этому номеру"),
    ],
)
def test_how_to_withdraw_names_a_channel_that_works(
    sqlite_db: Database, replies: bool, numbers: dict[str, str], expected: str
) -> None:
    [record_id] = decide(sqlite_db, SmsConfig(), channels=Channels(replies, numbers))
    with sqlite_db.session() as session:
        status = sms_status(session, record_id)
    assert status is not None and expected in status["text"]


def test_withdrawal_confirmation_follows_the_consent_in_the_list(sqlite_db: Database) -> None:
    sms = SmsConfig()
    with sqlite_db.session() as session:
        record_id = consent(session, sms, phone="+4915112345678", language="en", at=AT)
    with sqlite_db.session() as session:
        record = session.get(ConsentRecord, record_id)
        assert record is not None
        lifecycle.withdraw(
            session,
            [record],
            AT + timedelta(days=3),
            channel="operator",
            by="test",
            reason="asked by letter",
            hooks=[decision_hook(sms)],
        )
    with sqlite_db.session() as session:
        listed = sms_list(session, record_id)
        status = sms_status(session, record_id)
    assert [s["template"] for s in listed] == ["granted", "withdrawn"]
    assert status == listed[-1]
    assert listed[1]["text"].startswith("Example Ltd: you withdrew your consent to calls")
    assert "03 Dec 2026 10:05 (UTC+1)" in listed[1]["text"]  # Berlin, from the number
    assert event_kinds(sqlite_db, record_id)[-2:] == ["withdrawn", "sms_enqueued"]


def test_one_sms_sums_up_a_call_and_every_record_lists_it(sqlite_db: Database) -> None:
    """Two purposes in one call: the SMS is held until the call ends, then sums up both."""
    decisions = [(PURPOSE, "granted"), (NEWS, "declined")]
    with sqlite_db.session() as session:
        ids = consent_call(session, SmsConfig(), decisions, at=AT, end_call=False)
    assert job_counts(sqlite_db) == {"held": 1}
    with sqlite_db.session() as session:
        record = session.get(ConsentRecord, ids[0])
        assert record is not None
        records.finish_call(session, record.call_id, dict.fromkeys(ids, ""), AT, [], None)
    with sqlite_db.session() as session:
        first, second = sms_list(session, ids[0]), sms_list(session, ids[1])
    assert first == second and len(first) == 1 and first[0]["template"] == "summary"
    assert "вы дали согласие" in first[0]["text"] and "вы отказались" in first[0]["text"]


@pytest.mark.parametrize(
    ("phone", "reason"),
    [("+74951234567", "not a mobile"), ("+7900", "not a valid"), (None, "not a phone")],
)
def test_number_without_sms_gets_a_failed_job_and_the_record_stays(
    sqlite_db: Database, phone: str | None, reason: str
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


async def test_log_gateway_logs_each_job_once_and_never_says_delivered(
    sqlite_db: Database, tmp_path: Path, start_worker, capsys: pytest.CaptureFixture[str]
) -> None:
    outbox = tmp_path / "sms.jsonl"
    sms = SmsConfig(log={"file": outbox}, poll_interval_s=0.05)
    record_ids = decide(sqlite_db, sms, count=5)
    worker = start_worker(sqlite_db, sms)
    await wait_until(lambda: job_counts(sqlite_db) == {"logged": 5}, 10, "5 logged")
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
    assert status["message_id"].startswith("log-") and status["sent_at"]
    assert status["gateway"] == "log" and status["delivered_at"] is None
    with sqlite_db.session() as session:
        assert session.query(SmsDeliveryReport).count() == 0
    [sent] = events(sqlite_db, record_ids[0], "sms_sent")
    assert sent == {
        "job_id": status["job_id"],
        "gateway": "log",
        "message_id": status["message_id"],
    }


def sms_status_of(db: Database, record_id: str) -> dict:
    with db.session() as session:
        status = sms_status(session, record_id)
    assert status is not None
    return status
