"""Asterisk 16 restarted in the middle of a call: the call is closed with its partial evidence
and the service takes the next call once ARI is back.

In a module of its own: a restart makes every service connected to Asterisk reconnect, and
the dialplan hands calls to one app name (consent-ivr). Another module's service still
connected (a module-scoped fixture) could win the app back after the restart and take the next
call into its own database; CI saw that race when this test lived in test_faults.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consent_ivr.service import running
from consent_ivr.simulate import wait_for_record
from tests.e2e.conftest import (
    assert_evidence,
    asterisk_env,
    asterisk_script,
    e2e_config,
    prompts,
)
from tests.e2e.test_faults import call, until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_asterisk_restarted_mid_call(e2e_prompts_built: None, tmp_path: Path) -> None:
    conf = e2e_config(asterisk_env("16"), f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
    async with running(conf, sms_worker=False) as svc:
        channel = await call(svc)
        await asyncio.sleep(3)  # during the purpose statement
        await asyncio.to_thread(asterisk_script, "stop", "16")
        await asyncio.to_thread(asterisk_script, "start", "16")
        v = await wait_for_record(svc.db, channel, 120)
        assert v["outcome"] in ("abandoned", "failed")
        assert v["integrity"]["chain_ok"], v["integrity"]["problems"]
        assert prompts(v)[:1] == ["notice"], "the partial evidence is kept"
        await until(lambda: asyncio.sleep(0, result=svc.app.ari.connected.is_set()), 30, "ARI")
        after = await wait_for_record(svc.db, await call(svc), 120)
    assert after["outcome"] == "granted"
    assert_evidence(after)
