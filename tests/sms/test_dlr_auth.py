"""Delivery reports are accepted only when signed for their job: a forged report (no or a wrong
signature), a malformed job id (which once wrote a fake line into the log) and a replay of a
real report change nothing; a signed one moves the job. Through the real HTTP route."""

from __future__ import annotations

import logging
import urllib.parse
from ipaddress import ip_network

import aiohttp
import pytest
from sqlalchemy import func, select

from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways.kannel import dlr_secret, dlr_signature
from consent_ivr.sms.http import routes
from consent_ivr.sms.models import SmsDeliveryReport, SmsJob
from consent_ivr.store.db import Database

from .conftest import decide, free_port, serving

pytestmark = pytest.mark.integration


@pytest.fixture
def sms(monkeypatch: pytest.MonkeyPatch) -> SmsConfig:
    monkeypatch.setenv("CONSENT_IVR_KANNEL_PASSWORD", "sendsms-secret")
    return SmsConfig(gateway="kannel")


def job_of(db: Database) -> tuple[str, str]:
    with db.session() as session:
        job = session.scalars(select(SmsJob)).one()
        reports = session.scalar(select(func.count()).select_from(SmsDeliveryReport))
        return job.id, f"{job.status}/{reports}"


async def get(port: int, path: str, **params: str) -> int:
    query = urllib.parse.urlencode(params)
    url = f"http://127.0.0.1:{port}{path}?{query}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status


async def test_only_signed_reports_move_a_job(
    sqlite_db: Database, sms: SmsConfig, caplog: pytest.LogCaptureFixture
) -> None:
    decide(sqlite_db, sms)
    job_id, before = job_of(sqlite_db)
    assert before == "queued/0"
    secret = dlr_secret(sms.kannel)
    assert secret is not None
    port, path = free_port(), sms.dlr.path
    good = dlr_signature(secret, job_id)
    async with serving(routes(sqlite_db, sms), port):
        assert await get(port, path, job=job_id, type="1", fid="x") == 403  # no signature
        assert await get(port, path, job=job_id, type="1", sig="0" * 32) == 403  # forged
        other = dlr_signature(secret, "00000000-0000-4000-8000-000000000000")
        assert await get(port, path, job=job_id, type="1", sig=other) == 403  # another job's
        with caplog.at_level(logging.INFO):
            injected = job_id + "\n2026-11-30 INFO consent_ivr: all SMS delivered"
            assert await get(port, path, job=injected, type="1", sig=good) == 400
        assert job_of(sqlite_db)[1] == "queued/0", "a refused report changed the job"
        assert not any("all SMS delivered" in r.getMessage() for r in caplog.records)

        assert await get(port, path, job=job_id, type="1", fid="m1", sig=good) == 200
        assert job_of(sqlite_db)[1] == "delivered/1"
        assert await get(port, path, job=job_id, type="1", fid="m1", sig=good) == 200  # replay
        assert job_of(sqlite_db)[1] == "delivered/1", "a replayed report was stored again"


def test_the_route_is_mounted_only_for_kannel_with_its_secret(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSENT_IVR_KANNEL_PASSWORD", raising=False)
    assert routes(sqlite_db, SmsConfig(gateway="log")) == []
    assert routes(sqlite_db, SmsConfig(gateway="kannel")) == []  # nothing to check them with
    monkeypatch.setenv("CONSENT_IVR_KANNEL_PASSWORD", "sendsms-secret")
    assert len(routes(sqlite_db, SmsConfig(gateway="kannel"))) == 1
    assert routes(sqlite_db, SmsConfig(gateway="smpp")) == []


async def test_reports_only_from_the_allowed_addresses(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_IVR_KANNEL_PASSWORD", "sendsms-secret")
    elsewhere = SmsConfig.model_validate(
        {"gateway": "kannel", "dlr": {"allow_from": ["192.0.2.0/24"]}}
    )
    decide(sqlite_db, elsewhere)
    job_id, _ = job_of(sqlite_db)
    secret = dlr_secret(elsewhere.kannel)
    assert secret is not None
    signed = dlr_signature(secret, job_id)
    port, path = free_port(), elsewhere.dlr.path
    async with serving(routes(sqlite_db, elsewhere), port):
        assert await get(port, path, job=job_id, type="1", sig=signed) == 403
    assert job_of(sqlite_db)[1] == "queued/0", "a report from elsewhere changed the job"
    here = elsewhere.model_copy(
        update={
            "dlr": elsewhere.dlr.model_copy(update={"allow_from": (ip_network("127.0.0.1/32"),)})
        }
    )
    port = free_port()
    async with serving(routes(sqlite_db, here), port):
        assert await get(port, path, job=job_id, type="1", sig=signed, fid="m" * 5000) == 200
    assert job_of(sqlite_db)[1] == "delivered/1"
    with sqlite_db.session() as session:
        report = session.scalars(select(SmsDeliveryReport)).one()
        assert len(report.detail["fid"]) == 200, "stored report data is bounded"
