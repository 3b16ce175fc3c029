"""Through a real Kannel (bearerbox + smsbox) to its fake SMSC, with real delivery reports;
and from the fake SMSC's phones back through Kannel's sms-service to the inbound route."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from consent_ivr.config import Config
from consent_ivr.service import sms_routes
from consent_ivr.sms import promises
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import SmsDeliveryReport, SmsInbound, SmsJob
from consent_ivr.sms.outbox import sms_list, sms_status
from consent_ivr.store import chain, lifecycle
from consent_ivr.store.db import Database

from .conftest import (
    Kannel,
    decide,
    free_port,
    job_counts,
    new_phone,
    serving,
    wait_until,
    worker_process,
)

pytestmark = pytest.mark.integration


def texts_for(kannel: Kannel, record_ids: list[str]) -> Counter[str]:
    """How many times the fake SMSC got each record's (short, one-part) text."""
    got = Counter(kannel.delivered())
    return Counter({r: got[f"granted {r}"] for r in record_ids})


async def received_by_smsc(kannel: Kannel, record_ids: list[str]) -> Counter[str]:
    """Wait until the fake SMSC printed every record's text (its log lags the DLRs a little),
    then a little longer so that a duplicate would show too."""
    await wait_until(
        lambda: all(texts_for(kannel, record_ids).values()), 10, "the fake SMSC's output"
    )
    await asyncio.sleep(0.5)
    return texts_for(kannel, record_ids)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def status_of(db: Database, record_id: str) -> dict:
    with db.session() as session:
        status = sms_status(session, record_id)
    assert status is not None
    return status


async def test_decision_to_delivery_report(sqlite_db: Database, kannel_env: Kannel, start_worker):
    """Decision -> outbox -> worker -> Kannel -> fake SMSC -> report -> `delivered`, in Cyrillic."""
    sms = kannel_env.sms_config(templates={})  # the built-in Russian text: 4 UCS-2 parts
    [record_id] = decide(sqlite_db, sms)
    worker = start_worker(sqlite_db, sms)
    await wait_until(lambda: status_of(sqlite_db, record_id)["status"] == "delivered", 15, "DLR")
    await worker.close()

    status = status_of(sqlite_db, record_id)
    assert status["message_id"] and status["sent_at"] and status["delivered_at"]
    # Kannel split the text into 4 UCS-2 parts; glued back they are exactly the frozen text.
    await wait_until(lambda: status["text"] in "".join(kannel_env.delivered()), 10, "4 parts")
    await asyncio.sleep(0.3)
    received = "".join(kannel_env.delivered())
    assert received.count(status["text"]) == 1, received[-400:]
    with sqlite_db.session() as session:
        kinds = session.scalars(select(SmsDeliveryReport.gateway_status)).all()
    assert sorted(kinds) == ["kannel:1", "kannel:8"]


async def test_gateway_down_retries_then_delivers_each_once(
    sqlite_db: Database, kannel_env: Kannel, start_worker
):
    sms = kannel_env.sms_config()
    kannel_env.stop()
    record_ids = decide(sqlite_db, sms, count=6)
    worker = start_worker(sqlite_db, sms)

    def retried() -> bool:
        with sqlite_db.session() as session:
            return session.scalar(select(func.min(SmsJob.attempts))) >= 2

    await wait_until(retried, 15, "every job to be tried twice while Kannel is down")
    assert job_counts(sqlite_db).keys() <= {"queued", "sending"}
    with sqlite_db.session() as session:
        errors = session.scalars(select(SmsJob.error)).all()
    assert all("Kannel unreachable" in (e or "") for e in errors if e)

    kannel_env.start()
    await wait_until(lambda: job_counts(sqlite_db) == {"delivered": 6}, 20, "6 delivered")
    await worker.close()
    assert await received_by_smsc(kannel_env, record_ids) == Counter({r: 1 for r in record_ids})


async def test_too_old_to_send_is_failed_not_retried_forever(sqlite_db: Database, kannel_env):
    from consent_ivr.sms.worker import Worker, make_gateway

    sms = kannel_env.sms_config(max_age_s=0.5)
    sms = SmsConfig.model_validate(
        {
            **sms.model_dump(),
            "kannel": {
                **sms.kannel.model_dump(),
                "sendsms_url": f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms",
            },
        }
    )
    [record_id] = decide(sqlite_db, sms)
    worker = Worker(sqlite_db, sms, make_gateway(sms, dlr_url=sms.dlr_url()))
    await worker.gateway.start(worker.on_report)
    try:
        for _ in range(40):
            await worker.run_once()
            if status_of(sqlite_db, record_id)["status"] == "failed":
                break
            await asyncio.sleep(0.1)
    finally:
        await worker.gateway.close()
    status = status_of(sqlite_db, record_id)
    assert status["status"] == "failed" and status["error"].startswith("expired")
    assert status["attempts"] >= 2


async def test_crash_between_accepted_and_recorded_is_not_resent(
    sqlite_db: Database, kannel_env: Kannel
):
    """SIGKILL right after Kannel accepted the message, before the worker wrote `sent`."""
    sms = kannel_env.sms_config(lease_s=2.5, in_doubt_wait_s=4.0)
    [record_id] = decide(sqlite_db, sms)
    env = kannel_env.env
    crashing = worker_process(sqlite_db.url, sms, env, crash_after=1)
    assert crashing.wait(timeout=20) == -signal.SIGKILL
    # Restart only once the lease is over, so the new worker takes the job at once, in doubt;
    # Kannel keeps retrying the delivery reports meanwhile.
    await asyncio.sleep(sms.lease_s + 0.2)
    with sqlite_db.session() as session:
        job = session.scalars(select(SmsJob)).one()
    # The dead worker never recorded the send: the job is left `sending` under a lease.
    assert (job.status, job.sent_at, job.message_id) == ("sending", None, None)

    restarted = worker_process(sqlite_db.url, sms, env)
    try:
        await wait_until(
            lambda: status_of(sqlite_db, record_id)["status"] == "delivered", 20, "delivered"
        )
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=15)
    assert await received_by_smsc(kannel_env, [record_id]) == Counter({record_id: 1})
    with sqlite_db.session() as session:
        kinds = session.scalars(select(SmsDeliveryReport.gateway_status)).all()
    assert sorted(kinds) == ["kannel:1", "kannel:8"]  # the reports of the one message sent


async def test_worker_killed_mid_batch_each_job_delivered_once(
    sqlite_db: Database, kannel_env: Kannel
):
    # Enough jobs, sent one at a time, that the kill lands mid-batch even on a fast machine.
    total = 200
    sms = kannel_env.sms_config(batch_size=5, concurrency=1, lease_s=2.5)
    record_ids = decide(sqlite_db, sms, count=total)
    env = kannel_env.env
    first = worker_process(sqlite_db.url, sms, env)
    try:
        await wait_until(
            lambda: sum(texts_for(kannel_env, record_ids).values()) >= 8,
            20,
            "some sent",
            interval=0.02,
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    sent_before = sum(texts_for(kannel_env, record_ids).values())
    assert sent_before < total, "the worker finished before it could be killed"
    await asyncio.sleep(sms.lease_s)  # the cut-off jobs are then taken again at once, in doubt

    second = worker_process(sqlite_db.url, sms, env)
    try:
        await wait_until(lambda: job_counts(sqlite_db) == {"delivered": total}, 90, "all delivered")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)
    assert await received_by_smsc(kannel_env, record_ids) == Counter({r: 1 for r in record_ids})


async def test_two_workers_on_postgresql_never_send_a_job_twice(pg_url: str, kannel_env: Kannel):
    # Idle workers poll every 10 ms, so both are at the queue while it drains.
    sms = kannel_env.sms_config(batch_size=4, concurrency=4, poll_interval_s=0.01)
    db = Database(pg_url)
    try:
        env = kannel_env.env
        workers: list[subprocess.Popen[bytes]] = []
        ports = [free_port(), free_port()]
        for port in ports:
            own = sms.model_copy(update={"dlr": sms.dlr.model_copy(update={"port": port})})
            workers.append(worker_process(pg_url, own, env))
        try:
            # Both workers up (each serves its reports before it claims) before any job exists.
            await wait_until(lambda: all(port_open(p) for p in ports), 15, "two workers")
            record_ids = decide(db, sms, count=120)
            await wait_until(lambda: job_counts(db) == {"delivered": 120}, 40, "all delivered")
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(timeout=15)
        with db.session() as session:
            by_worker = Counter(session.scalars(select(SmsJob.claimed_by)).all())
            attempts = session.scalars(select(SmsJob.attempts)).all()
    finally:
        db.close()
    assert await received_by_smsc(kannel_env, record_ids) == Counter({r: 1 for r in record_ids})
    assert len(by_worker) == 2 and min(by_worker.values()) >= 5, by_worker
    assert set(attempts) == {1}


# ---- inbound: a person's SMS through Kannel's sms-service to the service's route -------------


def inbound_rows(db: Database, phone: str) -> list[SmsInbound]:
    with db.session() as session:
        return list(session.scalars(select(SmsInbound).where(SmsInbound.sender == phone)))


@contextlib.asynccontextmanager
async def service_routes(db: Database, kannel: Kannel, start_worker) -> AsyncIterator[SmsConfig]:
    """The service's SMS routes (as `consent-ivr run` mounts them) where Kannel's get-url
    points, and a worker; a numeric sender, so replies reach us."""
    sms = kannel.sms_config(sender="12345")
    config = Config(sms=sms)
    assert promises.channels(config).replies
    async with serving(sms_routes(config, db), kannel.inbound_port):
        worker = start_worker(db, sms)
        yield sms
        await worker.close()


async def settled_texts(kannel: Kannel, phone: str, text: str) -> int:
    """How many times the fake SMSC got `text` for `phone`, once it got it at all."""
    await wait_until(lambda: text in kannel.delivered(phone), 15, f"{text!r} at the fake SMSC")
    await asyncio.sleep(1.0)  # a duplicate would show by now
    return kannel.delivered(phone).count(text)


async def test_stop_through_kannel_withdraws_and_confirms_once(
    sqlite_db: Database, kannel_env: Kannel, start_worker
):
    phone = new_phone()
    async with service_routes(sqlite_db, kannel_env, start_worker) as sms:
        [record_id] = decide(sqlite_db, sms, phone=phone)
        assert await settled_texts(kannel_env, phone, f"granted {record_id}") == 1

        kannel_env.inbound(phone, "Stop.")
        await wait_until(lambda: len(inbound_rows(sqlite_db, phone)) == 1, 15, "the STOP stored")
        assert await settled_texts(kannel_env, phone, f"withdrawn {record_id}") == 1

    [row] = inbound_rows(sqlite_db, phone)
    assert (row.gateway, row.text, row.action, row.record_ids) == (
        "kannel",
        "Stop.",
        "withdrawn",
        [record_id],
    )
    assert row.message_id and row.recipient == "12345"  # Kannel's own id of the message
    with sqlite_db.session() as session:
        state = lifecycle.states(session, phone)["marketing-calls"]
        [withdrawal] = [s for s in sms_list(session, record_id) if s["template"] == "withdrawn"]
        [event] = [e.data for e in chain.events_of(session, record_id) if e.kind == "withdrawn"]
    assert (state.state, state.channel) == ("withdrawn", "sms")
    assert event["channel"] == "sms" and event["via_sms"] == row.id
    assert withdrawal["job_id"] == row.reply_job_id and withdrawal["gateway"] == "kannel"


async def test_kannel_inbound_unknown_text_and_stop_without_consent(
    sqlite_db: Database, kannel_env: Kannel, start_worker
):
    phone, stranger = new_phone(), new_phone()
    async with service_routes(sqlite_db, kannel_env, start_worker) as sms:
        [record_id] = decide(sqlite_db, sms, phone=phone)
        assert await settled_texts(kannel_env, phone, f"granted {record_id}") == 1
        kannel_env.inbound(phone, "СТОП звонкам после девяти")
        await wait_until(lambda: inbound_rows(sqlite_db, phone) != [], 15, "the text stored")

        kannel_env.inbound(stranger, "СТОП")
        await wait_until(lambda: inbound_rows(sqlite_db, stranger) != [], 15, "the STOP stored")
        await wait_until(lambda: kannel_env.delivered(stranger) != [], 15, "the reply")
        await asyncio.sleep(1.0)

    [other] = inbound_rows(sqlite_db, phone)
    assert (other.action, other.text, other.reply_job_id) == (
        "other",
        "СТОП звонкам после девяти",  # Cyrillic arrives as UTF-8 (mo-recode)
        None,
    )
    assert kannel_env.delivered(phone) == [f"granted {record_id}"]  # nothing else sent
    [stop] = inbound_rows(sqlite_db, stranger)
    assert stop.action == "stopped"
    [reply] = kannel_env.delivered(stranger)
    assert reply.startswith("stopped ")
    with sqlite_db.session() as session:
        assert lifecycle.states(session, phone)["marketing-calls"].state == "given"
        [entry] = lifecycle.register(session, stranger)
    assert (entry.source, entry.purpose_id) == ("stop", None)
