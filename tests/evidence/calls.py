"""Consent calls stored the way the service stores them, for the evidence tests and
bench/verify.py: real WAV audio made with sox, and the store API (open_call, store_decision
with the prompts played and keys pressed, finish_call with the recording), so every chain,
ledger entry and cache is the real one."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from consent_ivr.config import Config
from consent_ivr.store import records
from consent_ivr.store.records import Evidence, NewCall, NewRecord, RecordingInfo, Subject

CALLED = "+74951230000"
# The prompts a call plays, in order; the last one after the decision.
PROMPTS = ("notice", "purpose", "ask", "confirm", "recorded_agree")


def sox(out: Path, seconds: float, frequency: int) -> Path:
    """A sine tone as an 8 kHz mono 16-bit WAV."""
    if shutil.which("sox") is None:
        raise RuntimeError("sox is missing: apt-get install sox")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(out), "synth", str(seconds)]
        + ["sine", str(frequency)],
        check=True,
        timeout=30,
    )
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive_prompts(archive: Path, work: Path, seconds: float) -> dict[str, str]:
    """Audio for each prompt in the archive under its SHA-256, as `prompts build` leaves it."""
    archive.mkdir(parents=True, exist_ok=True)
    shas = {}
    for i, name in enumerate(PROMPTS):
        wav = sox(work / f"{name}.wav", seconds, 400 + 50 * i)
        shas[name] = sha256(wav)
        shutil.copyfile(wav, archive / f"{shas[name]}.wav")
    return shas


def recording(path: Path, seconds: float) -> RecordingInfo:
    return RecordingInfo(str(path), sha256(path), seconds, "wav", path.stat().st_size)


def _prompt(at: datetime, name: str, step: str, sha: str) -> Evidence:
    data = {
        "prompt": name,
        "text": f"the words of {name}",
        "version": "t-1",
        "sha256": sha,
        "language": "en",
    }
    return Evidence(at, "prompt", step, data)


def store_call(
    session: Session,
    config: Config,
    *,
    channel_id: str,
    at: datetime,
    phone: str | None,
    prompt_sha: dict[str, str],
    outcome: str = "granted",
    purposes: Sequence[str] = ("marketing-calls",),
    played: RecordingInfo | None = None,
) -> tuple[str, list[str]]:
    """One inbound consent call in the caller's transaction: (call_id, record_ids)."""
    call_id, rids = records.open_call(
        session,
        NewCall(
            channel_id=channel_id,
            direction="inbound",
            campaign="default",
            language="en",
            jurisdiction="RU",
            controller=config.campaigns["default"].controller_view("en"),
            started_at=at,
            subject=Subject(phone, "caller-id", phone, CALLED),
        ),
        [NewRecord("consent", config.purpose_snapshot("default", p, "en")) for p in purposes],
    )
    for rid in rids:
        heard = [
            _prompt(at + timedelta(seconds=2 * i + 1), name, name, prompt_sha[name])
            for i, name in enumerate(PROMPTS[:-1])
        ]
        pressed = [
            Evidence(at + timedelta(seconds=6.5), "key", "ask", {"digit": "1"}),
            Evidence(at + timedelta(seconds=8.5), "key", "confirm", {"digit": "1"}),
        ]
        records.store_decision(
            session,
            rid,
            outcome,
            at + timedelta(seconds=9),
            [(rid, ev) for ev in heard + pressed],
            call_open=False,
        )
    goodbye = _prompt(at + timedelta(seconds=10), PROMPTS[-1], "recorded", prompt_sha[PROMPTS[-1]])
    records.finish_call(
        session,
        call_id,
        dict.fromkeys(rids, outcome),
        at + timedelta(seconds=12),
        [(rid, goodbye) for rid in rids],
        played,
    )
    return call_id, rids
