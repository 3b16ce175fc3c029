"""Prompts for an Asterisk that does not share our filesystem: with `prompts.media_url` set,
Asterisk fetches each prompt from the service's HTTP server through its HTTP media cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ivr.service import running
from tests.conftest import free_port
from tests.e2e.conftest import assert_evidence, asterisk_env, call_all, e2e_config, keys, prompts

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("version", ["22", "16"])
async def test_prompts_over_http_media_cache(
    version: str, e2e_prompts_built: None, tmp_path: Path
) -> None:
    port = free_port()
    base = e2e_config(asterisk_env(version), f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
    conf = base.model_copy(
        update={
            "http": base.http.model_copy(update={"enabled": True, "port": port}),
            "prompts": base.prompts.model_copy(
                update={"media_url": f"http://127.0.0.1:{port}/prompts"}
            ),
        }
    )
    async with running(conf, sms_worker=False) as svc:
        media = svc.app.catalog.media(svc.app.catalog.get("default", "en", "notice"))
        sha = svc.app.catalog.get("default", "en", "notice").sha256
        assert media == f"sound:http://127.0.0.1:{port}/prompts/archive/{sha}.wav"
        v = (await call_all(svc, ["agree"], "en"))["agree"]
    assert v["outcome"] == "granted", (v["outcome"], keys(v), prompts(v))
    assert prompts(v)[:5] == ["notice", "purpose", "ask", "chosen_agree", "confirm"]
    assert not [e for e in v["events"] if e["kind"] == "prompt_failed"]
    assert_evidence(v)
