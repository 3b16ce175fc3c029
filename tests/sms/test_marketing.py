"""Refusals obeyed: `consent-ivr sms send` queues a marketing text only with consent, and the
worker checks again before it sends; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from consent_ivr import cli
from consent_ivr.sms import marketing
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import SmsJob
from consent_ivr.sms.outbox import decision_hook
from consent_ivr.store import lifecycle
from consent_ivr.store.db import Database
from consent_ivr.store.models import ContactAttempt

from .conftest import consent, decide, new_phone, wait_until

pytestmark = pytest.mark.integration


def withdraw(db: Database, phone: str, sms: SmsConfig) -> None:
    with db.session() as session:
        at = datetime.now(UTC)
        targets = lifecycle.active(session, phone, at=at)
        assert lifecycle.withdraw(
            session, targets, at, channel="operator", by="t", reason="r", hooks=[decision_hook(sms)]
        )


def suppressed(db: Database, phone: str) -> list[tuple[str | None, str, str | None]]:
    with db.session() as session:
        rows = session.scalars(select(ContactAttempt).where(ContactAttempt.phone == phone))
        return [(r.purpose_id, r.channel, r.reason) for r in rows if r.result == "suppressed"]


def marketing_jobs(db: Database, phone: str) -> list[SmsJob]:
    with db.session() as session:
        query = select(SmsJob).where(SmsJob.phone == phone, SmsJob.kind == "marketing")
        return list(session.scalars(query))


def test_sms_send_refuses_withdrawn_refused_and_unknown_numbers(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database:\n  url: {database.url}\n", encoding="utf-8")
    sms = SmsConfig()
    withdrawn, refused, unknown, given = (new_phone() for _ in range(4))
    decide(database, sms, phone=withdrawn)
    withdraw(database, withdrawn, sms)
    decide(database, sms, phone=refused, outcome="declined")
    decide(database, sms, phone=given)

    def send(phone: str) -> int:
        args = ["-c", str(config), "sms", "send", "--phone", phone]
        return cli.main([*args, "--purpose", "marketing-calls", "--text", "Скидка 10%"])

    for phone, why in (
        (withdrawn, "withdrew consent"),
        (refused, "refused"),
        (unknown, "no consent to marketing-calls"),
    ):
        assert send(phone) == 3
        err = capsys.readouterr().err
        assert f"not sending to {phone}" in err and why in err
        [(purpose, channel, reason)] = suppressed(database, phone)
        assert (purpose, channel) == ("marketing-calls", "sms") and why in (reason or "")
        assert marketing_jobs(database, phone) == []

    assert send(given) == 0
    job_id = capsys.readouterr().out.strip()
    [job] = marketing_jobs(database, given)
    assert (job.id, job.status, job.text, job.purpose_id) == (
        job_id,
        "queued",
        "Скидка 10%",
        "marketing-calls",
    )
    assert job.record_id is None and job.record_ids == []
    assert suppressed(database, given) == []


async def test_worker_never_sends_marketing_after_a_withdrawal_or_refusal(
    database: Database, tmp_path: Path, start_worker
) -> None:
    outbox = tmp_path / "sms.jsonl"
    sms = SmsConfig(log={"file": outbox, "echo": False}, poll_interval_s=0.05)
    stays, leaves, declines = new_phone(), new_phone(), new_phone()
    with database.session() as session:
        for phone in (stays, leaves, declines):
            consent(session, sms, phone=phone)
            at = datetime.now(UTC)
            job, verdict = marketing.enqueue(
                session,
                phone=phone,
                purpose="marketing-calls",
                text=f"offer for {phone[-4:]}",
                campaign="default",
                language="ru",
                at=at,
                sms=sms,
            )
            assert job is not None and verdict.allowed
    # While the offers wait in the queue, one person withdraws, another declines in a new call.
    withdraw(database, leaves, sms)
    decide(database, sms, phone=declines, outcome="declined")

    worker = start_worker(database, sms)

    def statuses() -> list[list[str]]:
        return [[j.status for j in marketing_jobs(database, p)] for p in (stays, leaves, declines)]

    await wait_until(
        lambda: statuses() == [["logged"], ["suppressed"], ["suppressed"]],
        15,
        "one offer logged, two suppressed",
    )
    await worker.close()

    for phone, why in ((leaves, "withdrew consent"), (declines, "refused")):
        [kept] = marketing_jobs(database, phone)
        assert kept.sent_at is None and why in (kept.error or "")
        [(purpose, _, reason)] = suppressed(database, phone)
        assert purpose == "marketing-calls" and reason == kept.error
    logged = [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]
    texts = [line["text"] for line in logged]
    assert f"offer for {stays[-4:]}" in texts
    assert f"offer for {leaves[-4:]}" not in texts and f"offer for {declines[-4:]}" not in texts
    # The confirmation of the withdrawal itself always goes out.
    with database.session() as session:
        confirmations = session.scalars(
            select(SmsJob.status).where(SmsJob.phone == leaves, SmsJob.decision == "withdrawn")
        ).all()
    assert confirmations == ["logged"]
