"""`consent-ivr api`: processes that answer the HTTP API without taking calls, several on one
port (SO_REUSEPORT), on a real SQLite database; the record they answer about is written with
the store API, as a call would (the helper of the lifecycle commands' tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from consent_ivr.config import Config
from consent_ivr.store.db import Database, upgrade
from tests.conftest import free_port
from tests.integration.test_cli_lifecycle import decided

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "consent-ivr"
PHONE = "+79161234567"
PURPOSE = "marketing-calls"


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def post(url: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_several_api_processes_share_one_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    upgrade(url)
    port = free_port()
    # The default campaign, able to dial (so that a call asked of the API gets that far).
    campaign = Config().campaigns["default"].model_dump(mode="json", exclude_defaults=True)
    campaign.setdefault("dialing", {})["endpoint"] = "PJSIP/{digits}@trunk"
    settings = {
        "sms": {"log": {"file": str(tmp_path / "sms.jsonl")}},
        "recordings": {"dir": str(tmp_path / "rec")},
        "prompts": {"audio_dir": str(tmp_path / "audio")},
        "campaigns": {"default": campaign},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    env = {
        **clean,
        "CONSENT_IVR_CONFIG": str(tmp_path / "config.yaml"),
        "CONSENT_IVR_DATABASE_URL": url,
        "CONSENT_IVR_HTTP_PORT": str(port),
        "CONSENT_IVR_ARI_PASSWORD": "unused",
    }
    db = Database(url)
    try:
        record_id = decided(db, "granted", PHONE)  # a consent given 48 hours ago
    finally:
        db.close()
    made = subprocess.run(
        [str(CLI), "tokens", "create", "--name", "crm", "--scope", "read", "--scope", "call"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()

    logs = [(tmp_path / f"api-{n}.log").open("w") for n in range(2)]
    procs = [
        subprocess.Popen([str(CLI), "api"], env=env, stdout=log, stderr=log, cwd=tmp_path)
        for log in logs
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        ready: set[int] = set()
        while len(ready) < 2:  # until both log that they listen
            assert time.monotonic() < deadline, [p.read_text() for p in tmp_path.glob("api-*")]
            for n, proc in enumerate(procs):
                assert proc.poll() is None, (tmp_path / f"api-{n}.log").read_text()
                if "consent-ivr api on 127.0.0.1" in (tmp_path / f"api-{n}.log").read_text():
                    ready.add(n)
            time.sleep(0.1)

        # Each request on a new connection: the kernel hands the connections to both.
        answered = {get(f"{base}/healthz")[1]["pid"] for _ in range(60)}
        assert answered == {p.pid for p in procs}

        status, body = get(f"{base}/v1/consents?phone={PHONE}&purpose={PURPOSE}", token)
        assert status == 200, body
        [row] = body["purposes"]
        assert (row["state"], row["record_id"]) == ("given", record_id)
        assert row["may_contact"]["call"]["allowed"]

        # Ready without ARI: an API process takes no calls, so it does not check for them.
        status, body = get(f"{base}/readyz")
        assert status == 200 and "ari" not in body["checks"], body

        # A call asked of a process that places none: refused, and told where to ask.
        status, body = post(f"{base}/v1/calls", token, {"phone": PHONE})
        assert status == 503 and "consent-ivr run" in body["detail"], body
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=15) for proc in procs]
        for log in logs:
            log.close()
    assert codes == [0, 0], [p.read_text() for p in tmp_path.glob("api-*")]
    # Only the number's mask reaches the logs.
    assert all(PHONE not in p.read_text() for p in tmp_path.glob("api-*"))
