"""Fixtures for the SMS tests: databases with migrations applied, consent records, a private
Kannel (started by scripts/kannel.sh on free loopback ports), and worker helpers."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from sqlalchemy import func, select

from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import SmsJob
from consent_ivr.sms.outbox import enqueue_confirmation
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.models import Call, ConsentRecord
from tests.conftest import PgServer, free_port

REPO = Path(__file__).resolve().parents[2]

CONTROLLER = {"name": "ООО «Пример»", "contact": "privacy@example.com"}
PURPOSE = {
    "id": "marketing-calls",
    "text": "звонки и СМС с предложениями наших услуг",
    "data_categories": "номер телефона и запись этого разговора",
    "retention": "пять лет",
    "withdrawal": "позвоните по этому номеру и нажмите два, или ответьте СТОП на наше СМС",
    "lawful_basis": "consent",
    "validity": "P1Y",
}
EN_CONTROLLER = {"name": "Example Ltd", "contact": "privacy@example.com"}
EN_PURPOSE = {
    **PURPOSE,
    "text": "calls and text messages with offers of our services",
    "withdrawal": "call this number and press two",
}
# One short GSM-7 part per message, so the fake SMSC's output can be counted per job.
SHORT_TEMPLATES = {
    "default": {
        lang: {d: f"{d} {{record_id}}" for d in ("granted", "declined", "withdrawn")}
        for lang in ("ru", "en")
    }
}


def new_record(
    session: Any, *, phone: str = "+79001234567", language: str = "ru", campaign: str = "default"
) -> ConsentRecord:
    started = datetime.now(UTC)
    call = Call(
        channel_id=f"test-{uuid.uuid4()}",
        direction="inbound",
        caller_number=phone,
        called_number="100",
        campaign=campaign,
        language=language,
        started_at=started,
    )
    record = ConsentRecord(
        record_id=str(uuid.uuid4()),
        call=call,
        pii_principal_id=phone,
        jurisdiction="RU",
        language=language,
        campaign=campaign,
        purpose_id="marketing-calls",
        purpose=PURPOSE if language == "ru" else EN_PURPOSE,
        controller=CONTROLLER if language == "ru" else EN_CONTROLLER,
        collection_method="ivr-keypad",
        direction="inbound",
        started_at=started,
    )
    session.add_all([call, record])
    return record


def decide(db: Database, sms: SmsConfig, count: int = 1, **record_kw: Any) -> list[str]:
    """Store ``count`` decisions the way the call flow does: record + outbox in one commit."""
    ids = []
    with db.session() as session:
        for _ in range(count):
            record = new_record(session, **record_kw)
            at = datetime.now(UTC)
            record.outcome, record.decided_at = "granted", at
            enqueue_confirmation(session, record, decision="granted", at=at, sms=sms)
            ids.append(record.record_id)
    return ids


def job_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(select(SmsJob.status, func.count()).group_by(SmsJob.status))
        return {status: n for status, n in rows}


async def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/consent.db"
    upgrade(url)
    db = Database(url)
    yield db
    db.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test (shadows the session-wide one)."""
    name = pg_server.create_database()
    try:
        url = pg_server.url(name)
        upgrade(url)
        yield url
    finally:
        pg_server.drop_database(name)


@dataclass
class Kannel:
    """A running private Kannel; ``delivered()`` is what the fake SMSC received."""

    env: dict[str, str]
    dir: Path

    def _script(self, action: str) -> None:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "kannel.sh"), action],
            env=self.env,
            check=True,
            timeout=60,
            capture_output=True,
        )

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def delivered(self) -> list[str]:
        """Texts of the messages fakesmsc printed, one per part (UCS-2 decoded, UDH dropped)."""
        out = (self.dir / "fakesmsc.out").read_text(errors="replace")
        texts = []
        for m in re.finditer(r"Got message \d+: <\S+ \S+ (\S+) (.*)>$", out, re.M):
            kind, rest = m.group(1), m.group(2)
            if kind == "udh":  # a part of a long message: "<udh> data|text <payload>"
                _, kind, rest = rest.split(" ", 2)
                kind = "ucs-2" if kind == "data" else kind
            if kind == "ucs-2":
                rest = unquote_to_bytes(rest.replace("+", "%20")).decode("utf-16-be")
            texts.append(rest)
        return texts

    def sms_config(self, **overrides: Any) -> SmsConfig:
        base: dict[str, Any] = {
            "gateway": "kannel",
            "templates": SHORT_TEMPLATES,
            "kannel": {
                "sendsms_url": self.env["CONSENT_IVR_KANNEL_SENDSMS_URL"],
                "admin_url": self.env["CONSENT_IVR_KANNEL_ADMIN_URL"],
                "username": self.env["CONSENT_IVR_KANNEL_USERNAME"],
                "timeout_s": 2.0,
            },
            "dlr": {"port": free_port()},
            "lease_s": 5.0,
            "retry_base_s": 0.2,
            "retry_max_s": 1.0,
            "in_doubt_wait_s": 3.0,
            "poll_interval_s": 0.1,
        }
        base.update(overrides)
        return SmsConfig.model_validate(base)


@pytest.fixture(scope="session")
def kannel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kannel]:
    var = tmp_path_factory.mktemp("var")
    env = {
        **os.environ,
        "CONSENT_IVR_VAR": str(var),
        "CONSENT_IVR_KANNEL_ADMIN_PORT": str(free_port()),
        "CONSENT_IVR_KANNEL_SMSBOX_PORT": str(free_port()),
        "CONSENT_IVR_KANNEL_SMSC_PORT": str(free_port()),
        "CONSENT_IVR_KANNEL_SENDSMS_PORT": str(free_port()),
    }
    env.pop("CONSENT_IVR_KANNEL_PASSWORD", None)
    env.pop("CONSENT_IVR_KANNEL_ADMIN_PASSWORD", None)
    subprocess.run(["bash", str(REPO / "scripts/kannel.sh"), "install"], check=True, timeout=300)
    printed = subprocess.run(
        ["bash", str(REPO / "scripts/kannel.sh"), "env"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    for line in printed.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    k = Kannel(env, Path(env["CONSENT_IVR_KANNEL_DIR"]))
    k.start()
    yield k
    k.stop()


@pytest.fixture
def kannel_env(kannel: Kannel, monkeypatch: pytest.MonkeyPatch) -> Kannel:
    """Kannel running, with its passwords in this process's environment (as in production)."""
    kannel.start()  # a no-op when running; restarts it after a test that stopped it
    for key in ("CONSENT_IVR_KANNEL_PASSWORD", "CONSENT_IVR_KANNEL_ADMIN_PASSWORD"):
        monkeypatch.setenv(key, kannel.env[key])
    return kannel


class RunningWorker:
    def __init__(self, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.task, self.stop = task, stop

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., RunningWorker]]:
    from consent_ivr.sms.worker import run_worker

    running: list[RunningWorker] = []

    def start(db: Database, sms: SmsConfig, **kw: Any) -> RunningWorker:
        stop = asyncio.Event()
        worker = RunningWorker(asyncio.create_task(run_worker(db, sms, stop, **kw)), stop)
        running.append(worker)
        return worker

    yield start
    for worker in running:
        if not worker.task.done():
            await worker.close()


def worker_process(
    db_url: str, sms: SmsConfig, env: dict[str, str], *, crash_after: int = 0
) -> subprocess.Popen[bytes]:
    """The worker as its own process (tests/sms/worker_proc.py), for SIGKILL tests."""
    args = [sys.executable, "-m", "tests.sms.worker_proc", db_url, sms.model_dump_json()]
    if crash_after:
        args += ["--crash-after-send", str(crash_after)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
