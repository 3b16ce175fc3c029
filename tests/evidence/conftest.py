"""A small world for the evidence tests: a migrated database (SQLite or PostgreSQL, from
`db_url`), a signing key pair in the environment, prompt audio in the archive, and consent
calls stored through the store API with real WAV recordings (tests.evidence.calls)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from consent_ivr.config import Config
from consent_ivr.evidence import keys
from consent_ivr.store import lifecycle
from consent_ivr.store.db import Database
from consent_ivr.store.models import ConsentRecord
from tests.evidence.calls import archive_prompts, recording, sox, store_call

T0 = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
PHONE = "+79161234567"
PURPOSE = "marketing-calls"
KEY_ENV = "CONSENT_IVR_SIGNING_KEY"


@dataclass
class Stored:
    call_id: str
    record_ids: list[str]
    recording: Path

    @property
    def record_id(self) -> str:
        return self.record_ids[0]


@dataclass
class World:
    db: Database
    config: Config
    root: Path
    config_file: Path
    raw: dict[str, Any]
    public: str
    private: str
    prompt_sha: dict[str, str] = field(default_factory=dict)
    calls: int = 0

    @property
    def archive(self) -> Path:
        return self.root / "audio" / "archive"

    def store_call(
        self,
        *,
        phone: str | None = PHONE,
        outcome: str = "granted",
        at: datetime = T0,
        purposes: Sequence[str] = (PURPOSE,),
    ) -> Stored:
        """A consent call as the service stores it, with its own recording."""
        self.calls += 1
        path = sox(self.root / "recordings" / f"call-{self.calls}.wav", 0.3, 200 + 10 * self.calls)
        with self.db.session() as s:
            call_id, rids = store_call(
                s,
                self.config,
                channel_id=f"PJSIP/trunk-{self.calls:08d}",
                at=at,
                phone=phone,
                prompt_sha=self.prompt_sha,
                outcome=outcome,
                purposes=purposes,
                played=recording(path, 0.3),
            )
        return Stored(call_id, rids, path)

    def withdraw(self, record_id: str, at: datetime) -> None:
        with self.db.session() as s:
            record = s.get(ConsentRecord, record_id)
            assert record is not None
            done = lifecycle.withdraw(
                s, [record], at, channel="operator", by="test", reason="asked"
            )
            assert [r.record_id for r in done] == [record_id]

    def reconfigure(self, **evidence: Any) -> Config:
        """The config with other evidence settings (also written to the config file)."""
        self.raw = {**self.raw, "evidence": {**self.raw["evidence"], **evidence}}
        self.config_file.write_text(yaml.safe_dump(self.raw), encoding="utf-8")
        self.config = Config.model_validate(self.raw)
        return self.config

    def cli(self, *argv: str) -> int:
        from consent_ivr.cli import main

        return main(["-c", str(self.config_file), *argv])

    def sql(self, statement: str, **params: Any) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(text(statement), params)


def drop_triggers(world: World) -> None:
    """What an attacker with owner rights does first."""
    for table in ("consent_events", "checkpoints"):
        if world.db.dialect == "postgresql":
            world.sql(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        else:
            world.sql(f"DROP TRIGGER IF EXISTS {table}_no_update")
            world.sql(f"DROP TRIGGER IF EXISTS {table}_no_delete")


@pytest.fixture
def world(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    private, public = keys.generate()
    monkeypatch.setenv(KEY_ENV, private)
    monkeypatch.chdir(tmp_path)
    data = {
        "database": {"url": database.url},
        "prompts": {"audio_dir": str(tmp_path / "audio")},
        "recordings": {"dir": str(tmp_path / "recordings")},
        "evidence": {
            "checkpoints": str(tmp_path / "checkpoints.jsonl"),
            "public_keys": [public],
        },
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    w = World(database, Config.model_validate(data), tmp_path, config_file, data, public, private)
    w.prompt_sha = archive_prompts(w.archive, tmp_path / "made", 0.2)
    yield w
