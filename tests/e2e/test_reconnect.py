"""The ARI websocket survives Asterisk going away: the service reconnects with backoff, the app
is registered again, and the next call is taken as usual. The fault is real: Asterisk 16 is
stopped and started again under the running service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consent_ivr.service import running
from tests.e2e.conftest import assert_evidence, asterisk_env, asterisk_script, call_all, e2e_config

pytestmark = pytest.mark.e2e


async def until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_service_reconnects_after_asterisk_restarts(
    e2e_prompts_built: None, tmp_path: Path
) -> None:
    conf = e2e_config(asterisk_env("16"), f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
    async with running(conf, sms_worker=False) as svc:
        ari = svc.app.ari
        assert ari.connected.is_set()
        await asyncio.to_thread(asterisk_script, "stop", "16")
        await until(lambda: not ari.connected.is_set(), 15, "the websocket to drop")
        await asyncio.to_thread(asterisk_script, "start", "16")
        await until(ari.connected.is_set, 30, "the websocket to reconnect")
        apps = await ari.request("GET", "/applications")
        assert conf.ari.app in {a["name"] for a in apps}
        v = (await call_all(svc, ["agree"], "en"))["agree"]
    assert v["outcome"] == "granted"
    assert_evidence(v)
