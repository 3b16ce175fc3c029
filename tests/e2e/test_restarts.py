"""The service as operators run it (`consent-ivr run`, its own process) stopped under calls: a
SIGTERM drains (no new call taken, calls in progress finish, exit 0); a SIGKILL leaves calls
open, which the next start closes, with their recording and a `recovered` event. No record is
ever left open, and no full number or password reaches the service's log."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sqlalchemy import select

from consent_ivr import config as cfg
from consent_ivr.ari.client import AriClient
from consent_ivr.phone import mask
from consent_ivr.prompts import Catalog
from consent_ivr.simulate import find_records, place_call
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call
from tests.e2e.conftest import E2E_PROMPTS, REPO, assert_evidence, asterisk_env, e2e_config
from tests.e2e.stasis_app import APP, wait_for_app, wait_until_free

pytestmark = pytest.mark.e2e

CLI = REPO / ".venv" / "bin" / "consent-ivr"
T = TypeVar("T")


@dataclass
class Deployment:
    """A config file, an environment and a working folder, as an operator would set them."""

    ari: dict[str, str]
    env: dict[str, str]
    dir: Path
    db: Database
    config: cfg.Config
    phones: list[str]

    def start(self) -> subprocess.Popen[bytes]:
        wait_until_free(self.ari)
        with (self.dir / "service.log").open("ab") as log:
            proc = subprocess.Popen([str(CLI), "run"], env=self.env, cwd=self.dir, stderr=log)

        def alive() -> None:
            if proc.poll() is not None:
                raise AssertionError(f"consent-ivr run exited: {self.log()[-3000:]}")

        wait_for_app(self.ari, present=True, timeout=30, alive=alive)
        return proc

    def log(self) -> str:
        return (self.dir / "service.log").read_text(errors="replace")

    def with_ari(self, use: Callable[[AriClient], Awaitable[T]]) -> T:
        """`use` run with an ARI connection of its own (no events), as another program would."""

        async def go() -> T:
            ari = AriClient(
                self.config.ari.url, self.config.ari.user, self.config.ari.password, APP
            )
            await ari.start(events=False)
            try:
                return await use(ari)
            finally:
                await ari.close()

        return asyncio.run(go())

    def call(self, scenario: str = "agree") -> str:
        channel_id = f"e2e-{uuid.uuid4().hex[:12]}"
        number = f"+7904{secrets.randbelow(10**7):07d}"
        self.phones.append(number)
        self.with_ari(
            lambda ari: place_call(
                ari,
                Catalog(self.config),
                scenario,
                number,
                channel_id=channel_id,
                campaign="default",
                language="en",
            )
        )
        return channel_id

    def stored_recordings(self) -> set[str]:
        async def names(ari: AriClient) -> set[str]:
            return {r["name"] for r in await ari.request("GET", "/recordings/stored")}

        return self.with_ari(names)

    def records(self, channel_id: str, *, finished: bool = True) -> list[dict[str, Any]] | None:
        return find_records(self.db, channel_id, finished=finished)

    def open_calls(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(Call.channel_id).where(Call.ended_at.is_(None))))


def poll(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.3)
    return value


@pytest.fixture
def deployment(e2e_prompts_built: None, tmp_path: Path) -> Iterator[Deployment]:
    ari = asterisk_env("22")
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    config = e2e_config(ari, url, tmp_path)
    data = config.model_dump(mode="json", exclude={"sms"})
    data["ari"].pop("password", None)  # excluded from dumps; comes from the environment
    data["prompts"]["dir"] = str(E2E_PROMPTS)
    data["sms"] = {"log": {"file": str(tmp_path / "sms.jsonl"), "echo": False}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    env |= {
        "CONSENT_IVR_CONFIG": str(tmp_path / "config.yaml"),
        "CONSENT_IVR_ARI_PASSWORD": ari["CONSENT_IVR_ARI_PASSWORD"],
    }
    from consent_ivr.store.db import upgrade

    upgrade(url)
    db = Database(url)
    deployment = Deployment(ari, env, tmp_path, db, config, [])
    try:
        yield deployment
    finally:
        db.close()
        log = deployment.log() if (tmp_path / "service.log").exists() else ""
        assert ari["CONSENT_IVR_ARI_PASSWORD"] not in log, "the ARI password in the log"
        for number in deployment.phones:
            assert number not in log and number.lstrip("+") not in log, "a full number logged"


def test_sigterm_drains_calls_then_exits(deployment: Deployment) -> None:
    proc = deployment.start()
    calls = [deployment.call(), deployment.call()]
    poll(lambda: all(deployment.records(c, finished=False) for c in calls), 20, "the calls start")
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    late = deployment.call()  # while draining: refused, no record
    assert proc.wait(timeout=90) == 0, deployment.log()[-3000:]
    log = deployment.log()
    assert "stopping: waiting up to" in log and "refused: the service is stopping" in log
    for channel in calls:
        [v] = deployment.records(channel) or [None]
        assert v is not None, "a call in progress was not closed"
        assert v["outcome"] == "granted", (v["outcome"], [e["kind"] for e in v["events"]])
        assert_evidence(v)
    assert deployment.records(late, finished=False) is None
    assert f"consent-{late}" not in deployment.stored_recordings(), "a refused call's recording"
    assert deployment.open_calls() == []
    assert mask(deployment.phones[0]) in log


def test_sigkill_mid_call_is_recovered_at_the_next_start(deployment: Deployment) -> None:
    proc = deployment.start()
    channel = deployment.call()
    poll(lambda: deployment.records(channel, finished=False), 20, "the call start stored")
    time.sleep(2.0)  # during the notice and purpose: nothing decided
    proc.kill()
    proc.wait(timeout=30)
    assert deployment.open_calls() == [channel]

    again = deployment.start()
    try:
        [v] = poll(lambda: deployment.records(channel), 90, "the call closed by the next start")
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=90) == 0
    assert v["outcome"] == "failed", "undecided, and cut short on our side"
    [recovered] = [e for e in v["events"] if e["kind"] == "recovered"]
    # Asterisk ends a channel whose Stasis app went away (the dialplan hangs up after
    # Stasis()), so the next start usually finds it gone; had it stayed, it was hung up.
    assert isinstance(recovered["data"]["channel_found"], bool)
    assert recovered["data"]["recording_recovered"] is True
    assert_evidence(v)  # the recording fetched after the crash, whole and hashed
    assert deployment.open_calls() == []
    assert "closed 1 call(s) left open by an earlier run" in deployment.log()
