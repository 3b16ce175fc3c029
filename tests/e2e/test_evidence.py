"""Evidence from real calls (Asterisk 22 with SQLite, 16 with PostgreSQL): the bundle of a real
call verifies alone and names any file changed by one byte; `verify --all` passes over every
call the module made; `show` reports the record verified; a recording encrypted at rest keeps
the hash of its plain audio and verifies with the key only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from consent_ivr import audio
from consent_ivr.evidence import bundle
from consent_ivr.evidence.verify import verify_all, verify_record
from consent_ivr.service import Service, running
from consent_ivr.simulate import place_call, wait_for_record
from tests.e2e.conftest import assert_evidence, asterisk_env, e2e_config

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def agreed(service: Service, *, plain: bool = True) -> dict[str, Any]:
    channel_id = f"e2e-{uuid.uuid4().hex[:12]}"
    await place_call(
        service.app.ari,
        service.app.catalog,
        "agree",
        f"+7902{secrets.randbelow(10**7):07d}",
        channel_id=channel_id,
        campaign="default",
        language="en",
    )
    view = await wait_for_record(service.db, channel_id, 120)
    assert view["outcome"] == "granted"
    if plain:  # assert_evidence hashes the file as it is on disk
        assert_evidence(view)
    return view


async def test_a_real_call_exports_a_bundle_that_verifies_alone(
    service: Service, tmp_path: Path
) -> None:
    view = await agreed(service)
    out = tmp_path / "bundle.zip"
    report = await service.db.run(bundle.export, service.db, service.config, view["record_id"], out)
    assert report.ok, report.lines()
    with zipfile.ZipFile(out) as z:
        files = {name: z.read(name) for name in z.namelist()}
    assert {"summary.html", "record.json", "events.json", "manifest.json"} <= set(files)
    recording = [n for n in files if n.startswith("recording.")]
    assert len(recording) == 1
    stored = await asyncio.to_thread(Path(view["recording"]["path"]).read_bytes)
    assert files[recording[0]] == stored
    prompts = {
        n.removeprefix("prompts/").removesuffix(".wav") for n in files if n.startswith("prompts/")
    }
    assert prompts == {p["sha256"] for p in view["prompts"]}

    assert bundle.verify_bundle(out).ok
    for name, data in files.items():
        if not data:
            continue
        changed = tmp_path / f"changed-{secrets.token_hex(4)}.zip"
        with zipfile.ZipFile(changed, "w") as z:
            for other, content in files.items():
                if other == name:
                    middle = len(content) // 2
                    content = (
                        content[:middle] + bytes([content[middle] ^ 0x01]) + content[middle + 1 :]
                    )
                z.writestr(other, content)
        broken = bundle.verify_bundle(changed)
        assert not broken.ok, f"a changed byte in {name} went unnoticed"
        assert any(name in str(p) for p in broken.problems), (name, broken.lines())


async def test_every_call_verifies_and_show_says_so(service: Service) -> None:
    view = await agreed(service)

    def check() -> tuple[Any, Any]:
        with service.db.snapshot() as s:
            return verify_record(s, service.config, view["record_id"]), verify_all(
                s, service.config
            )

    one, every = await service.db.run(check)
    assert one.ok, one.lines()
    assert every.ok, every.lines()
    assert every.counts.get("records", 0) >= 1


async def test_a_recording_encrypted_at_rest_verifies_with_its_key_only(
    e2e_prompts_built: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(32)
    monkeypatch.setenv(audio.KEY_ENV, base64.b64encode(key).decode())
    conf = e2e_config(asterisk_env("22"), f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
    async with running(conf, sms_worker=False) as svc:
        view = await agreed(svc, plain=False)

        def check() -> Any:
            with svc.db.snapshot() as s:
                return verify_record(s, conf, view["record_id"])

        verified = await svc.db.run(check)
        assert verified.ok, verified.lines()
        exported = await svc.db.run(
            bundle.export, svc.db, conf, view["record_id"], tmp_path / "b.zip"
        )
        assert exported.ok, exported.lines()
        monkeypatch.delenv(audio.KEY_ENV)
        unverified = await svc.db.run(check)
    assert not unverified.ok
    (problem,) = unverified.problems  # named as unreadable, not as missing or changed
    assert problem.what.startswith("recording ") and audio.KEY_ENV in problem.message

    path = Path(view["recording"]["path"])
    blob = await asyncio.to_thread(path.read_bytes)
    assert blob.startswith(audio.MAGIC) and b"RIFF" not in blob[:64]
    plain = audio.decrypt(blob, key)
    assert audio.wav_closed(plain) and view["recording"]["duration_s"] > 1
    assert hashlib.sha256(plain).hexdigest() == view["recording"]["sha256"]
    with zipfile.ZipFile(tmp_path / "b.zip") as z:  # the bundle carries the plain audio
        (name,) = [n for n in z.namelist() if n.startswith("recording.")]
        assert z.read(name) == plain
    assert bundle.verify_bundle(tmp_path / "b.zip").ok
