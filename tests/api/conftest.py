"""A running web app for the API, metrics and console tests: the real aiohttp application of
consent_ivr.http on 127.0.0.1 (aiohttp's test server), on a migrated SQLite or PostgreSQL
database (`db_url`), with consent calls stored through the store API as the service stores
them: open_call, store_decision with the SMS outbox's decision hook, finish_call with a real
WAV recording, and withdrawals through lifecycle.withdraw, so every chain verifies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from consent_ivr import config as cfg
from consent_ivr import http
from consent_ivr.api import tokens
from consent_ivr.api.config import ApiConfig
from consent_ivr.evidence import keys
from consent_ivr.service import decision_hooks
from consent_ivr.sms.outbox import decision_hook
from consent_ivr.store import lifecycle, records
from consent_ivr.store.db import Database
from consent_ivr.store.models import ConsentRecord
from consent_ivr.store.records import Evidence, NewCall, NewRecord, Subject
from tests.evidence.calls import CALLED, PROMPTS, archive_prompts, recording, sox

T0 = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
PHONE = "+79161234567"
OFFERS, NEWS = "marketing-calls", "sms-news"
KEY_ENV = "CONSENT_IVR_SIGNING_KEY"


def with_api(config: cfg.Config, api: dict[str, Any], **sections: Any) -> cfg.Config:
    """`config` with the api section, and `sections` in place of its own (the others as they
    are, secrets included)."""
    values = {name: getattr(config, name) for name in cfg.Config.model_fields}
    return cfg.Config.model_validate({**values, **sections, "api": ApiConfig(**api)})


def purpose(en: str, ru: str, validity: str | None = "P1Y") -> dict[str, Any]:
    return {
        "text": {"en": en, "ru": ru},
        "data_categories": {"en": "your phone number", "ru": "номер телефона"},
        "withdrawal": {"en": "call us", "ru": "позвоните нам"},
        "validity": validity,
    }


def campaign(purposes: Sequence[str], endpoint: str | None = None) -> dict[str, Any]:
    return {
        "language": "en",
        "languages": ["en", "ru"],
        "controller": {"name": {"en": "Example Ltd", "ru": "ООО «Пример»"}, "contact": "dpo@ex"},
        "purposes": list(purposes),
        "dialing": {"endpoint": endpoint},
    }


def site_config(root: Path, database_url: str, public_key: str) -> dict[str, Any]:
    return {
        "database": {"url": database_url},
        "prompts": {"audio_dir": str(root / "audio")},
        "recordings": {"dir": str(root / "recordings")},
        "evidence": {"checkpoints": str(root / "checkpoints.jsonl"), "public_keys": [public_key]},
        "sms": {"log": {"file": str(root / "sms.jsonl"), "echo": False}},
        "purposes": {
            OFFERS: purpose("calls with offers", "звонки с предложениями"),
            NEWS: purpose("news by SMS", "новости в СМС", validity="P30D"),
        },
        "campaigns": {
            "default": campaign([OFFERS]),
            "two": campaign([OFFERS, NEWS]),
            "dial": campaign([OFFERS], endpoint="Local/{digits}@nowhere"),
        },
    }


def _prompt(at: datetime, name: str, sha: str) -> Evidence:
    data = {"prompt": name, "text": f"the words of {name}", "version": "t-1", "sha256": sha}
    return Evidence(at, "prompt", name, {**data, "language": "en"})


@dataclass
class Site:
    db: Database
    config: cfg.Config
    root: Path
    server: TestServer
    http: aiohttp.ClientSession
    prompt_sha: dict[str, str] = field(default_factory=dict)
    calls: int = 0

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def token(self, *scopes: str, name: str = "test", rate: float | None = None) -> str:
        with self.db.session() as s:
            _, token = tokens.create(s, name, scopes or ("read",), T0, rate)
        return token

    def store_call(
        self,
        phone: str | None = PHONE,
        outcome: str = "granted",
        *,
        at: datetime = T0,
        campaign: str = "default",
        direction: str = "inbound",
    ) -> list[str]:
        """A whole consent call as the service stores it, with its recording and SMS."""
        self.calls += 1
        config = self.config
        wav = sox(self.root / "recordings" / f"call-{self.calls}.wav", 0.4, 300 + self.calls)
        purposes = config.campaigns[campaign].purposes
        hooks = [decision_hook(config.sms)]
        with self.db.session() as s:
            call_id, rids = records.open_call(
                s,
                NewCall(
                    channel_id=f"PJSIP/trunk-{self.calls:08d}",
                    direction=direction,
                    campaign=campaign,
                    language="en",
                    jurisdiction="RU",
                    controller=config.campaigns[campaign].controller_view("en"),
                    started_at=at,
                    subject=Subject(phone, "caller-id", phone, CALLED),
                ),
                [
                    NewRecord("consent", config.purpose_snapshot(campaign, p, "en"))
                    for p in purposes
                ],
            )
        heard = [
            _prompt(at + timedelta(seconds=2 * n + 1), name, self.prompt_sha[name])
            for n, name in enumerate(PROMPTS[:-1])
        ]
        pressed = [
            Evidence(at + timedelta(seconds=6.5), "key", "ask", {"digit": "1"}),
            Evidence(at + timedelta(seconds=8.5), "key", "confirm", {"digit": "1"}),
        ]
        said = [(rid, ev) for rid in rids for ev in heard + pressed]
        if outcome in records.DECISION_EVENT:  # else the call ends without a decision
            for i, rid in enumerate(rids):
                with self.db.session() as s:
                    mine = [item for item in said if item[0] == rid]
                    records.store_decision(
                        s, rid, outcome, at + timedelta(seconds=9 + i), mine, hooks
                    )
            said = []
        goodbye = _prompt(at + timedelta(seconds=12), PROMPTS[-1], self.prompt_sha[PROMPTS[-1]])
        with self.db.session() as s:
            records.finish_call(
                s,
                call_id,
                dict.fromkeys(rids, outcome),
                at + timedelta(seconds=14),
                [*said, *((rid, goodbye) for rid in rids)],
                recording(wav, 0.4),
            )
        return rids

    def withdraw(self, record_id: str, at: datetime) -> None:
        with self.db.session() as s:
            record = s.get(ConsentRecord, record_id)
            assert record is not None
            done = lifecycle.withdraw(
                s,
                [record],
                at,
                channel="operator",
                hooks=[decision_hook(self.config.sms)],
                by="desk",
                reason="asked by letter",
            )
            assert [r.record_id for r in done] == [record_id]

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One request: status, headers, and the body (JSON when it is JSON)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.url(path), params=params, json=json, headers=sent
        ) as response:
            raw = await response.read()
            kind = response.headers.get("Content-Type", "")
            body: Any = raw
            if "json" in kind:
                body = await response.json(content_type=None)
            elif kind.startswith("text/"):
                body = raw.decode()
            return response.status, dict(response.headers), body


async def start_site(
    db: Database, root: Path, public: str, settings: dict[str, Any]
) -> tuple[TestServer, aiohttp.ClientSession, cfg.Config]:
    config = cfg.Config.model_validate({**site_config(root, db.url, public), "api": settings})
    server = TestServer(http.make_app(config, db, hooks=decision_hooks(config)), host="127.0.0.1")
    await server.start_server()
    return server, aiohttp.ClientSession(), config


@pytest.fixture
def site_settings() -> dict[str, Any]:
    """The api section of the site; a test changes it with
    `@pytest.mark.parametrize("site_settings", [{...}])`."""
    return {}


@pytest_asyncio.fixture(loop_scope="session")
async def site(
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    site_settings: dict[str, Any],
) -> AsyncIterator[Site]:
    """The web app on 127.0.0.1 over the test's database (by default a revoked token stops at
    once, and the audit is written every 0.1 s)."""
    private, public = keys.generate()
    monkeypatch.setenv(KEY_ENV, private)
    settings = {"token_cache_s": 0.0, "audit_flush_s": 0.1, **site_settings}
    server, session, config = await start_site(database, tmp_path, public, settings)
    s = Site(database, config, tmp_path, server, session)
    s.prompt_sha = archive_prompts(tmp_path / "audio" / "archive", tmp_path / "made", 0.3)
    try:
        yield s
    finally:
        await session.close()
        await server.close()
