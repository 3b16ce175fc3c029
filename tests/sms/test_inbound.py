"""SMS people send us, on SQLite and PostgreSQL: a stop word withdraws consent, a repeated
delivery counts once, other texts are only stored, and the HTTP route needs its token."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import func, select

from consent_ivr.clock import now
from consent_ivr.sms import inbound, jobs
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways import Incoming
from consent_ivr.sms.http import inbound_routes
from consent_ivr.sms.models import SmsInbound, SmsJob
from consent_ivr.sms.outbox import NO_CHANNELS, sms_list
from consent_ivr.store import lifecycle, records
from consent_ivr.store.db import Database

from .conftest import NEWS, PURPOSE, decide, events, free_port, new_phone, serving

pytestmark = pytest.mark.integration


def receive(db: Database, sender: str, text: str, sms: SmsConfig | None = None, **kw) -> dict:
    message = Incoming(kw.pop("gateway", "kannel"), sender, "12345", text, kw.pop("id", None))
    with db.session() as session:
        row = inbound.handle(session, message, at=now(), sms=sms or SmsConfig(), region="RU")
        return {
            "id": row.id,
            "action": row.action,
            "sender": row.sender,
            "record_ids": list(row.record_ids),
            "reply_job_id": row.reply_job_id,
        }


def state_of(db: Database, phone: str) -> dict[str, tuple[str, str | None]]:
    with db.session() as session:
        return {p: (s.state, s.channel) for p, s in lifecycle.states(session, phone).items()}


def jobs_to(db: Database, phone: str) -> list[SmsJob]:
    with db.session() as session:
        return list(session.scalars(select(SmsJob).where(SmsJob.phone == phone)))


def test_stop_withdraws_every_active_consent_with_one_confirmation(database: Database) -> None:
    phone, bystander = new_phone(), new_phone()
    [first] = decide(database, SmsConfig(), phone=phone, purpose=PURPOSE)
    [second] = decide(database, SmsConfig(), phone=phone, purpose=NEWS)
    [other] = decide(database, SmsConfig(), phone=bystander)

    got = receive(database, phone.lstrip("+"), " Стоп! ")

    assert got["action"] == "withdrawn" and got["sender"] == phone
    assert sorted(got["record_ids"]) == sorted([first, second])
    assert state_of(database, phone) == {
        "marketing-calls": ("withdrawn", "sms"),
        "news": ("withdrawn", "sms"),
    }
    assert state_of(database, bystander) == {"marketing-calls": ("given", "phone")}
    for record_id in (first, second):
        [withdrawn] = events(database, record_id, "withdrawn")
        assert withdrawn["channel"] == "sms" and withdrawn["via_sms"] == got["id"]
        with database.session() as session:
            view = records.record_view(session, record_id)
        assert view["integrity"]["chain_ok"], view["integrity"]
    confirmations = [j for j in jobs_to(database, phone) if j.decision == "withdrawn"]
    assert len(confirmations) == 1
    [job] = confirmations
    assert job.id == got["reply_job_id"] and sorted(job.record_ids) == sorted([first, second])
    assert "звонки и СМС" in job.text and "новости компании" in job.text
    with database.session() as session:
        assert [s["job_id"] for s in sms_list(session, second)][-1] == job.id
        verdict = lifecycle.may_contact(session, phone, "news", "sms")
    assert not verdict.allowed and "withdrew" in verdict.reason
    assert other not in got["record_ids"]


def test_a_repeated_delivery_is_handled_once(database: Database) -> None:
    phone = new_phone()
    decide(database, SmsConfig(), phone=phone)
    first = receive(database, phone, "STOP", id="kannel-1")
    again = receive(database, phone, "STOP", id="kannel-1")
    assert again == first
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(SmsInbound)) == 1
    assert [j.decision for j in jobs_to(database, phone)] == ["granted", "withdrawn"]


def test_unknown_text_is_stored_and_not_acted_on(database: Database) -> None:
    phone = new_phone()
    [record_id] = decide(database, SmsConfig(), phone=phone)
    got = receive(database, phone, "stop calling me at night please")
    assert got["action"] == "other" and got["record_ids"] == [] and got["reply_job_id"] is None
    assert state_of(database, phone) == {"marketing-calls": ("given", "phone")}
    assert events(database, record_id, "withdrawn") == []
    assert [j.decision for j in jobs_to(database, phone)] == ["granted"]
    with database.session() as session:
        row = session.get(SmsInbound, got["id"])
        assert row is not None and row.text == "stop calling me at night please"

    answering = SmsConfig.model_validate(
        {"inbound": {"replies": {"ru": "Мы получили ваше сообщение."}}}
    )
    got = receive(database, phone, "Когда перезвоните?", answering)
    assert got["action"] == "other" and got["reply_job_id"] is not None
    reply = [j for j in jobs_to(database, phone) if j.id == got["reply_job_id"]]
    assert [(j.kind, j.text) for j in reply] == [("reply", "Мы получили ваше сообщение.")]


def test_stop_without_consent_goes_on_the_register_and_is_answered_once(
    database: Database,
) -> None:
    phone = new_phone()
    got = receive(database, phone, "ОТПИСКА")
    assert got["action"] == "stopped" and got["record_ids"] == []
    with database.session() as session:
        [entry] = lifecycle.register(session, phone)
        asking = lifecycle.may_contact(session, phone, "marketing-calls", "call", asking=True)
    assert (entry.source, entry.purpose_id, entry.channel) == ("stop", None, "all")
    assert not asking.allowed and "sent STOP" in asking.reason
    [reply] = jobs_to(database, phone)
    assert (reply.id, reply.kind, reply.decision) == (got["reply_job_id"], "reply", "stopped")
    assert reply.text.startswith("Мы больше не будем звонить и писать вам.")


def test_scope_last_withdraws_the_purposes_of_the_last_sms(database: Database) -> None:
    phone = new_phone()
    sms = SmsConfig.model_validate({"inbound": {"scope": "last"}})
    [older] = decide(database, sms, phone=phone, purpose=PURPOSE)
    [newer] = decide(database, sms, phone=phone, purpose=NEWS)
    # The confirmation of the older consent went out last.
    by_record = {j.record_id: j.id for j in jobs_to(database, phone)}
    with database.session() as session:
        for record_id, delay in ((newer, 0), (older, 5)):
            at = now() + timedelta(seconds=delay)
            jobs.mark_sent(session, by_record[record_id], gateway="log", message_id=None, now=at)
    got = receive(database, phone, "stop", sms)
    assert got["record_ids"] == [older]
    assert state_of(database, phone) == {
        "marketing-calls": ("withdrawn", "sms"),
        "news": ("given", "phone"),
    }
    # Nothing active of the last SMS's purpose: a STOP is never ignored, it takes the rest.
    assert receive(database, phone, "stop", sms)["record_ids"] == [newer]


def test_a_sender_that_is_not_a_number_is_only_stored(database: Database) -> None:
    got = receive(database, "MEGAFON", "STOP")
    assert (got["action"], got["sender"], got["reply_job_id"]) == ("other", "MEGAFON", None)
    with database.session() as session:
        assert lifecycle.register(session, "MEGAFON") == []


async def test_inbound_route_refuses_calls_without_the_token(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_IVR_SMS_INBOUND_TOKEN", "s3cret-token")
    sms = SmsConfig()
    phone = new_phone()
    decide(sqlite_db, sms, phone=phone)
    port = free_port()
    url = f"http://127.0.0.1:{port}/sms/inbound"
    stop = {"from": phone.lstrip("+"), "to": "12345", "text": "STOP", "id": "m-1"}
    async with (
        serving(inbound_routes(sqlite_db, sms, NO_CHANNELS, "RU"), port),
        aiohttp.ClientSession() as http,
    ):
        answers = []
        for params, headers in (
            (stop, {}),
            ({**stop, "token": "s3cret-tokeX"}, {}),
            ({**stop, "token": ""}, {}),
            (stop, {"Authorization": "Bearer wrong"}),
        ):
            async with http.get(url, params=params, headers=headers) as resp:
                answers.append(resp.status)
        assert answers == [401, 403, 401, 403]
        with sqlite_db.session() as session:
            assert session.scalar(select(func.count()).select_from(SmsInbound)) == 0
        assert state_of(sqlite_db, phone) == {"marketing-calls": ("given", "phone")}

        async with http.get(url, params={**stop, "token": "s3cret-token"}) as resp:
            assert resp.status == 200
        async with http.get(url, params={"token": "s3cret-token", "text": "STOP"}) as resp:
            assert resp.status == 400
    assert state_of(sqlite_db, phone) == {"marketing-calls": ("withdrawn", "sms")}


def test_no_token_no_route(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CONSENT_IVR_SMS_INBOUND_TOKEN", raising=False)
    sms = SmsConfig(gateway="kannel", lease_s=30)
    with caplog.at_level("WARNING"):
        assert inbound_routes(sqlite_db, sms, NO_CHANNELS, "RU") == []
    assert "not mounted" in caplog.text and "CONSENT_IVR_SMS_INBOUND_TOKEN" in caplog.text
    monkeypatch.setenv("CONSENT_IVR_SMS_INBOUND_TOKEN", "t")
    off = SmsConfig.model_validate({"inbound": {"enabled": False}})
    assert inbound_routes(sqlite_db, off, NO_CHANNELS, "RU") == []
    assert len(inbound_routes(sqlite_db, sms, NO_CHANNELS, "RU")) == 1


def test_a_nul_in_an_sms_is_stored_as_a_replacement_character(database: Database) -> None:
    """PostgreSQL cannot store U+0000 in text; the SMS is stored (not refused again and again),
    the character kept as U+FFFD, and a STOP with it still counts."""
    phone = new_phone()
    got = receive(database, phone, "STOP\x00")
    assert got["action"] == "stopped"
    with database.session() as session:
        row = session.get(SmsInbound, got["id"])
        assert row is not None and row.text == "STOP\ufffd"
        [entry] = lifecycle.register(session, phone)
    assert entry.source == "stop"
