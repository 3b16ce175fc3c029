"""End-to-end fixtures: a real private Asterisk (22 in a chroot, 16 on the host, both started by
scripts/asterisk.sh), the real service in-process, simulated callers on Local channels."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from consent_ivr.config import Config
from consent_ivr.prompts import Catalog
from consent_ivr.service import Service, running
from consent_ivr.simulate import place_call, wait_for_record

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "asterisk.sh"
# Bind-mounted into the Asterisk 22 chroot at the same path, so `sound:/abs/path` plays there.
SHARE = REPO / "var" / "prompts"
E2E_PROMPTS = Path(__file__).resolve().parent / "prompts"

_started: set[str] = set()


def asterisk_script(*args: str) -> str:
    env = {**os.environ, "CONSENT_IVR_SHARE_DIRS": str(SHARE)}
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/asterisk.sh {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def asterisk_env(version: str) -> dict[str, str]:
    """Install (cached) and start a private Asterisk; its ARI coordinates."""
    SHARE.mkdir(parents=True, exist_ok=True)
    asterisk_script("install", version)
    asterisk_script("start", version)
    _started.add(version)
    env: dict[str, str] = {}
    for line in asterisk_script("env", version).splitlines():
        key, _, value = line.partition("=")
        if key:
            env[key] = shlex.split(value)[0] if value else ""
    _passwords[version] = env.get("CONSENT_IVR_ARI_PASSWORD", "")
    return env


class _Lines(logging.Handler):
    """Every line the service logs during the e2e session, formatted as it would be written."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# A phone number written in full (E.164 with or without +): what the log must never hold.
_FULL_NUMBER = re.compile(r"(?<![\w.-])\+?7\d{10}(?![\w-])")


@pytest.fixture(scope="session", autouse=True)
def _logs_hold_no_number_or_secret() -> Iterator[None]:
    """Scans every log line of every in-process e2e test (the process-run ones scan their own
    log) for a full phone number or an ARI password."""
    lines = _Lines()
    service = logging.getLogger("consent_ivr")
    service.addHandler(lines)
    previous = service.level
    service.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        service.removeHandler(lines)
        service.setLevel(previous)
    numbers = [line for line in lines.lines if _FULL_NUMBER.search(line)]
    assert not numbers, "full phone numbers in the log:\n" + "\n".join(numbers[:10])
    passwords = set(_passwords.values())
    leaked = [line for line in lines.lines for p in passwords if p and p in line]
    assert not leaked, "a password in the log:\n" + "\n".join(leaked[:5])


_passwords: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def _stop_asterisks() -> Iterator[None]:
    yield
    if os.environ.get("CONSENT_IVR_KEEP_ASTERISK"):
        return
    for version in sorted(_started):
        subprocess.run(["bash", str(SCRIPT), "stop", version], capture_output=True, timeout=120)


def e2e_config(
    ari: dict[str, str],
    database_url: str,
    tmp: Path,
    asterisk_folder: str | None = None,
    **flow: Any,
) -> Config:
    return Config.model_validate(
        {
            "ari": {
                "url": ari["CONSENT_IVR_ARI_URL"],
                "user": ari["CONSENT_IVR_ARI_USER"],
                "password": ari["CONSENT_IVR_ARI_PASSWORD"],
                "app": "consent-ivr",
            },
            "database": {"url": database_url},
            "recordings": {"dir": str(tmp / "recordings"), "asterisk_folder": asterisk_folder},
            "prompts": {"dir": str(E2E_PROMPTS), "audio_dir": str(SHARE / "e2e")},
            "http": {"enabled": False},
            "sms": {"log": {"file": str(tmp / "sms.jsonl"), "echo": False}},
            # Each database its own checkpoint file: another's would read as a rewrite.
            "evidence": {"checkpoints": str(tmp / "checkpoints.jsonl")},
            "flow": {"key_timeout_s": 1.5, "max_attempts": 3, "max_repeats": 2, **flow},
            "purposes": {
                "e2e-offers": purpose("offers", "предложения"),
                "e2e-news": purpose("news", "новости", validity="PT1M"),
            },
            "campaigns": {
                "default": campaign(["e2e-offers"]),
                "two": campaign(["e2e-offers", "e2e-news"]),
                "news": campaign(["e2e-news"]),
            },
        }
    )


def purpose(en: str, ru: str, validity: str = "P1Y") -> dict[str, Any]:
    return {
        "text": {"en": en, "ru": ru},
        "data_categories": {"en": "phone", "ru": "телефон"},
        "withdrawal": {"en": "call us", "ru": "позвоните нам"},
        "validity": validity,
    }


def campaign(purposes: list[str]) -> dict[str, Any]:
    return {
        "language": "en",
        "languages": ["en", "ru"],
        "controller": {"name": {"en": "Acme", "ru": "Акме"}},
        "purposes": purposes,
    }


@pytest.fixture(scope="session")
def e2e_prompts_built() -> None:
    """Build the short test prompts once (cached on disk by text)."""
    dummy = {
        "CONSENT_IVR_ARI_URL": "http://127.0.0.1:1",
        "CONSENT_IVR_ARI_USER": "x",
        "CONSENT_IVR_ARI_PASSWORD": "x",
    }
    Catalog(e2e_config(dummy, "sqlite://", SHARE)).build()


# Each backend pairs an Asterisk line with a database, so both of each are covered.
BACKENDS = [("22", "sqlite"), ("16", "postgresql")]


def database_url(request: pytest.FixtureRequest, database: str, tmp: Path) -> str:
    """A fresh SQLite file in `tmp`, or the session's PostgreSQL database."""
    if database == "sqlite":
        return f"sqlite:///{tmp / 'consent.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest_asyncio.fixture(
    loop_scope="session", scope="module", params=BACKENDS, ids=["ast22-sqlite", "ast16-pg"]
)
async def service(
    request: pytest.FixtureRequest,
    e2e_prompts_built: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Service]:
    """The service on the module's (asterisk version, database) pair."""
    version, database = request.param
    ari = asterisk_env(version)
    tmp = tmp_path_factory.mktemp(f"ast{version}-{database}")
    url = database_url(request, database, tmp)
    # Asterisk 16's recordings are copied from its folder, Asterisk 22's downloaded by ARI:
    # both ways run every e2e call flow.
    folder = f"{ari['ASTERISK_SPOOL']}/recording" if version == "16" else None
    async with running(e2e_config(ari, url, tmp, folder)) as svc:
        yield svc


def assert_evidence(view: dict[str, Any]) -> None:
    """What every stored call must prove, whatever its outcome."""
    assert view["integrity"]["chain_ok"], view["integrity"]["problems"]
    kinds = [e["kind"] for e in view["events"]]
    assert kinds[0] == "requested"
    assert "call_ended" in kinds
    # Recording both directions started before the first word was played.
    if "prompt" in kinds:
        assert "recording_started" in kinds
        assert kinds.index("recording_started") < kinds.index("prompt")
        rec_at = next(e["at"] for e in view["events"] if e["kind"] == "recording_started")
        assert rec_at <= view["prompts"][0]["at"]
        assert view["prompts"][0]["prompt"] == "notice"
    for p in view["prompts"]:
        assert p["sha256"] and len(p["sha256"]) == 64
    rec = view["recording"]
    assert rec is not None, "no recording stored"
    data = Path(rec["path"]).read_bytes()
    assert len(data) > 44, "recording is empty"
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    assert rec["duration_s"] > 0


def keys(view: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(k["digit"], k["step"], k["acted_on"]) for k in view["keys"]]


def timeline(view: dict[str, Any]) -> list[tuple[str, str]]:
    """A record's prompts and keys in time order (for a failed assertion's message)."""
    said = [(p["at"], p["prompt"]) for p in view["prompts"]]
    pressed = [(k["at"], f"key {k['digit']} in {k['step']}") for k in view["keys"]]
    return [(str(at)[11:23], what) for at, what in sorted(said + pressed)]


def prompts(view: dict[str, Any]) -> list[str]:
    return [p["prompt"] for p in view["prompts"]]


async def call_all(svc: Service, scenarios: list[str], language: str) -> dict[str, Any]:
    """Place one simulated call per scenario (a `#suffix` makes names unique), all at once,
    and return each finished record by scenario name."""
    ids = {}
    for scenario in scenarios:
        ids[scenario] = f"e2e-{uuid.uuid4().hex[:12]}"
        await place_call(
            svc.app.ari,
            svc.app.catalog,
            scenario.split("#")[0],
            f"+7900{secrets.randbelow(10**7):07d}",
            channel_id=ids[scenario],
            campaign="default",
            language=language,
        )
    views = await asyncio.gather(*(wait_for_record(svc.db, cid, 120) for cid in ids.values()))
    return dict(zip(ids, views, strict=True))
