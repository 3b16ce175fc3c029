"""The database fails at the moment of the decision, for real: while an "agree" caller answers,
the test holds an exclusive lock on the SQLite file from its own connection, so the decision's
transaction (the `given` event, the outcome and the SMS job) fails after the busy timeout. The
caller must then hear the failure prompt, never "your consent is recorded", and the record must
end `failed`, with its evidence and recording stored once the lock is gone."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from consent_ivr.service import running
from consent_ivr.simulate import find_records, place_call, wait_for_record
from consent_ivr.sms.config import LogGatewayConfig, SmsConfig
from consent_ivr.sms.outbox import sms_status
from consent_ivr.store.db import Database
from tests.e2e.conftest import assert_evidence, asterisk_env, e2e_config, keys, prompts
from tests.e2e.stasis_app import wait_until_free

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

T = TypeVar("T")
DECISION_FAILED = "could not store the decision"


class Messages(logging.Handler):
    """The service's log lines, as it writes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class LockedCall:
    view: dict[str, Any]
    sms: dict[str, Any] | None
    sms_file: Path
    log: list[str]


async def until(fn: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await fn()) is None:
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.1)
    return value


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def locked(e2e_prompts_built: None, tmp_path_factory: pytest.TempPathFactory) -> LockedCall:
    ari = asterisk_env("22")
    tmp = tmp_path_factory.mktemp("store-failure")
    db_file = tmp / "consent.db"
    conf = e2e_config(ari, f"sqlite:///{db_file}", tmp).model_copy(
        update={"sms": SmsConfig(log=LogGatewayConfig(file=tmp / "sms.jsonl"))}
    )
    messages = Messages()
    call_log = logging.getLogger("consent_ivr.ari.call")
    call_log.addHandler(messages)
    await asyncio.to_thread(wait_until_free, ari)
    channel_id = f"e2e-lock-{uuid.uuid4().hex[:12]}"
    try:
        async with running(conf) as svc:
            await place_call(
                svc.app.ari,
                svc.app.catalog,
                "agree",
                f"+7900{secrets.randbelow(10**7):07d}",
                channel_id=channel_id,
                campaign="default",
                language="en",
            )

            async def call_started() -> list[dict[str, Any]] | None:
                return await svc.db.run(lambda: find_records(svc.db, channel_id, finished=False))

            # The call start is stored; the caller presses 1 at SIM_T1 (about 5 s) and confirms
            # 1.5 s later: lock before that, for as long as the decision is being written.
            await until(call_started, 10, "the call start stored")
            lock = sqlite3.connect(
                db_file, isolation_level=None, timeout=10, check_same_thread=False
            )
            try:
                await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")

                async def decision_failed() -> bool | None:
                    return any(DECISION_FAILED in line for line in messages.lines) or None

                await until(decision_failed, 30, "the service logged that the decision failed")
            finally:
                # Released while the failure prompt and goodbye play, so that the end of the
                # call (the evidence and the recording) is stored.
                await asyncio.to_thread(_release, lock)
            view = await wait_for_record(svc.db, channel_id, 60)
            sms = await svc.db.run(lambda: _sms(svc.db, view["record_id"]))
    finally:
        call_log.removeHandler(messages)
    return LockedCall(view, sms, tmp / "sms.jsonl", messages.lines)


def _release(lock: sqlite3.Connection) -> None:
    if lock.in_transaction:
        lock.execute("ROLLBACK")
    lock.close()


def _sms(db: Database, record_id: str) -> dict[str, Any] | None:
    with db.session() as session:
        return sms_status(session, record_id)


def _store_failed(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in view["events"] if e["kind"] == "store_failed"]


async def test_outcome_is_failed_never_granted(locked: LockedCall) -> None:
    v = locked.view
    assert keys(v) == [("1", "ask", True), ("1", "confirm", True)]
    assert v["outcome"] == "failed" and v["status"] == "requested"
    assert v["decided_at"] is None
    assert "given" not in [e["kind"] for e in v["events"]]
    failed = _store_failed(v)
    assert len(failed) == 1 and failed[0]["step"] == "saving"
    assert failed[0]["data"]["outcome"] == "granted"
    ended = next(e for e in v["events"] if e["kind"] == "call_ended")
    assert ended["data"]["outcome"] == "failed"


async def test_caller_hears_the_failure_not_recorded(locked: LockedCall) -> None:
    v = locked.view
    assert "recorded_agree" not in prompts(v)
    assert prompts(v)[-2:] == ["failure", "goodbye"]
    told = next(
        e for e in v["events"] if e["kind"] == "prompt" and e["data"]["prompt"] == "failure"
    )
    failed = _store_failed(v)[0]
    assert failed["seq"] < told["seq"]
    # Asterisk stamps the playback in whole milliseconds, the service its own events in
    # microseconds: "after" within that resolution.
    lag = datetime.fromisoformat(told["at"]) - datetime.fromisoformat(failed["at"])
    assert lag > -timedelta(milliseconds=1), (failed["at"], told["at"])


async def test_no_confirmation_sms_for_a_consent_never_stored(locked: LockedCall) -> None:
    # The SMS job was part of the decision's transaction and rolled back with it.
    assert locked.sms is None
    assert not locked.sms_file.exists() or locked.sms_file.read_text() == ""


async def test_evidence_and_recording_still_stored(locked: LockedCall) -> None:
    assert_evidence(locked.view)  # hash chain intact, recording stored and hashed


async def test_the_cause_of_the_failure_is_recorded(locked: LockedCall) -> None:
    """Compliance and ops must see WHY the decision was lost, in the record and in the log."""
    error = _store_failed(locked.view)[0]["data"]["error"]
    assert "database is locked" in error, error
    logged = next(line for line in locked.log if DECISION_FAILED in line)
    assert "database is locked" in logged, logged
