"""Fixtures for the SMS tests: databases with migrations applied, consent records written
through the store API (so their chains are valid), a private Kannel (started by
scripts/kannel.sh on free loopback ports, its inbound SMS sent to a port the tests serve the
inbound route on), and worker helpers."""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import SmsJob
from consent_ivr.sms.outbox import NO_CHANNELS, decision_hook
from consent_ivr.sms.promises import Channels
from consent_ivr.store import chain, records
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.records import NewCall, NewRecord, Subject
from tests.conftest import PgServer, free_port

REPO = Path(__file__).resolve().parents[2]

CONTROLLER = {"name": "ООО «Пример»", "contact": "privacy@example.com"}
PURPOSE = {
    "id": "marketing-calls",
    "text": "звонки и СМС с предложениями наших услуг",
    "data_categories": "номер телефона и запись этого разговора",
    "withdrawal": "позвоните по этому номеру и нажмите два",
    "lawful_basis": "consent",
    "validity": "P1Y",
    "retention": "P5Y",
}
NEWS = {**PURPOSE, "id": "news", "text": "новости компании"}
EN_CONTROLLER = {"name": "Example Ltd", "contact": "privacy@example.com"}
EN_PURPOSE = {
    **PURPOSE,
    "text": "calls and text messages with offers of our services",
    "withdrawal": "call this number and press two",
}
# One short GSM-7 part per message, so the fake SMSC's output can be counted per job.
SHORT_TEMPLATES = {
    "default": {
        lang: {
            **{d: f"{d} {{record_id}}" for d in ("granted", "declined", "withdrawn", "summary")},
            "stopped": "stopped {datetime}",
        }
        for lang in ("ru", "en")
    }
}


def new_phone() -> str:
    """A Russian mobile number of its own, so a test can count what was sent to it."""
    return f"+7900{random.randrange(10**7):07d}"


def consent_call(
    session: Session,
    sms: SmsConfig,
    decisions: Sequence[tuple[dict[str, Any], str]],
    *,
    phone: str | None = "+79001234567",
    language: str = "ru",
    campaign: str = "default",
    at: datetime | None = None,
    channels: Channels = NO_CHANNELS,
    end_call: bool = True,
) -> list[str]:
    """A consent call as the flow stores it: a record per (purpose, outcome), each decision
    with the outbox hook (the SMS held while the call goes on), and the call's end (which
    releases the SMS). Returns the record ids."""
    at = at or datetime.now(UTC)
    call = NewCall(
        channel_id=f"test-{uuid.uuid4()}",
        direction="inbound",
        campaign=campaign,
        language=language,
        jurisdiction="RU",
        controller=CONTROLLER if language == "ru" else EN_CONTROLLER,
        started_at=at - timedelta(seconds=30),
        subject=Subject(phone, "caller-id", phone, "100"),
    )
    opened = [NewRecord("consent", purpose) for purpose, _ in decisions]
    call_id, ids = records.open_call(session, call, opened)
    hooks = [decision_hook(sms, channels)]
    for record_id, (_, outcome) in zip(ids, decisions, strict=True):
        records.store_decision(session, record_id, outcome, at, hooks=hooks)
    if end_call:
        outcomes = {r: outcome for r, (_, outcome) in zip(ids, decisions, strict=True)}
        records.finish_call(session, call_id, outcomes, at, [], None)
    return ids


def consent(
    session: Session,
    sms: SmsConfig,
    *,
    purpose: dict[str, Any] | None = None,
    outcome: str = "granted",
    language: str = "ru",
    **kw: Any,
) -> str:
    """A one-purpose consent call (see `consent_call`); returns its record id."""
    purpose = purpose or (PURPOSE if language == "ru" else EN_PURPOSE)
    [record_id] = consent_call(session, sms, [(purpose, outcome)], language=language, **kw)
    return record_id


def decide(db: Database, sms: SmsConfig, count: int = 1, **kw: Any) -> list[str]:
    """Store ``count`` consents the way the call flow does, in one commit."""
    with db.session() as session:
        return [consent(session, sms, **kw) for _ in range(count)]


def event_kinds(db: Database, record_id: str) -> list[str]:
    with db.session() as session:
        return [e.kind for e in chain.events_of(session, record_id)]


def events(db: Database, record_id: str, kind: str) -> list[dict[str, Any]]:
    with db.session() as session:
        return [e.data for e in chain.events_of(session, record_id) if e.kind == kind]


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
    """A running private Kannel; ``delivered()`` is what the fake SMSC received, `inbound`
    sends an SMS from a phone, which Kannel hands to http://127.0.0.1:{inbound_port}."""

    env: dict[str, str]
    dir: Path
    inbound_port: int

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

    def delivered(self, to: str | None = None) -> list[str]:
        """Texts of the messages fakesmsc printed, one per part (UCS-2 decoded, UDH dropped),
        all of them or those `to` one number."""
        out = (self.dir / "fakesmsc.out").read_text(errors="replace")
        texts = []
        for m in re.finditer(r"Got message \d+: <\S+ (\S+) (\S+) (.*)>$", out, re.M):
            if to is not None and m.group(1).lstrip("+") != to.lstrip("+"):
                continue
            kind, rest = m.group(2), m.group(3)
            if kind == "udh":  # a part of a long message: "<udh> data|text <payload>"
                _, kind, rest = rest.split(" ", 2)
                kind = "ucs-2" if kind == "data" else kind
            if kind == "ucs-2":
                rest = unquote_to_bytes(rest.replace("+", "%20")).decode("utf-16-be")
            texts.append(rest)
        return texts

    def inbound(self, sender: str, text: str, to: str = "12345") -> None:
        """A person's SMS, through fakesmsc's stdin (one line per write: it reads one)."""
        fd = os.open(self.dir / "fakesmsc.in", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, f"{sender.lstrip('+')} {to} text {text}\n".encode())
        finally:
            os.close(fd)

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
    inbound_port = free_port()
    env["CONSENT_IVR_KANNEL_INBOUND_URL"] = f"http://127.0.0.1:{inbound_port}/sms/inbound"
    for secret in (
        "CONSENT_IVR_KANNEL_PASSWORD",
        "CONSENT_IVR_KANNEL_ADMIN_PASSWORD",
        "CONSENT_IVR_SMS_INBOUND_TOKEN",
    ):
        env.pop(secret, None)
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
    k = Kannel(env, Path(env["CONSENT_IVR_KANNEL_DIR"]), inbound_port)
    k.start()
    yield k
    k.stop()


@pytest.fixture
def kannel_env(kannel: Kannel, monkeypatch: pytest.MonkeyPatch) -> Kannel:
    """Kannel running, with its secrets in this process's environment (as in production)."""
    kannel.start()  # a no-op when running; restarts it after a test that stopped it
    for key in (
        "CONSENT_IVR_KANNEL_PASSWORD",
        "CONSENT_IVR_KANNEL_ADMIN_PASSWORD",
        "CONSENT_IVR_SMS_INBOUND_TOKEN",
    ):
        monkeypatch.setenv(key, kannel.env[key])
    return kannel


@asynccontextmanager
async def serving(routes: list[web.RouteDef], port: int) -> AsyncIterator[None]:
    """Serve `routes` on 127.0.0.1:`port` (the service's HTTP server, reduced to them)."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


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
