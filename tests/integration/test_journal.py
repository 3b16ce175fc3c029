"""The journal of calls whose end the database could not take, on real SQLite and PostgreSQL:
a saved entry is durable and owner-only; replay writes it once the database answers (opening
the call when it never was), never twice, keeps a broken entry aside, and stops while the
database is still away."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consent_ivr import journal
from consent_ivr.store import chain, records
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call
from consent_ivr.store.records import NewCall, NewRecord, RecordingInfo, Subject

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PURPOSE = {"id": "offers", "text": "offers", "validity": "P1Y", "retention": "P5Y"}


def new_call(channel: str = "ch-1") -> NewCall:
    return NewCall(
        channel_id=channel,
        direction="inbound",
        campaign="default",
        language="en",
        jurisdiction="RU",
        controller={"name": "Acme"},
        started_at=T0,
        subject=Subject("+79161234567", "caller-id", "+79161234567", "100"),
        node="consent-ivr@test",
        recording="consent-ch-1",
    )


def an_entry(ids: tuple[str, list[str]] | None, channel: str = "ch-1") -> dict:
    evidence = [
        Evidence(T0 + timedelta(seconds=1), "prompt", "notice", {"prompt": "notice"}),
        Evidence(T0 + timedelta(seconds=9), "store_failed", "saving", {"error": "down"}),
    ]
    recording = RecordingInfo("/rec/a.wav", "a" * 64, 12.5, "wav", 200_000)
    return journal.entry(
        new_call(channel),
        [NewRecord("consent", PURPOSE)],
        ids,
        evidence,
        ["failed"],
        T0 + timedelta(seconds=20),
        recording,
    )


def view(db: Database, channel: str = "ch-1") -> dict:
    with db.session() as s:
        call = s.query(Call).filter(Call.channel_id == channel).one()
        [record] = records.records_of_call(s, call.call_id)
        return records.record_view(s, record.record_id)


def test_an_entry_is_saved_owner_only(tmp_path: Path) -> None:
    path = journal.save(tmp_path / "journal", "one", an_entry(None))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["outcomes"] == ["failed"]
    assert not list(path.parent.glob("*.part"))


def test_a_call_never_opened_is_opened_and_closed(database: Database, tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    journal.save(folder, "one", an_entry(None))
    [done] = journal.replay(database, folder)
    assert done["call"]["channel_id"] == "ch-1"
    assert journal.pending(folder) == []
    v = view(database)
    assert v["outcome"] == "failed" and v["ended_at"] is not None
    assert [e["kind"] for e in v["events"]] == [
        "requested",
        "prompt",
        "store_failed",
        "call_ended",
        "recording_stored",
    ]
    assert v["recording"]["sha256"] == "a" * 64
    assert v["events"][0]["data"]["recording"] == "consent-ch-1"
    assert v["integrity"]["chain_ok"]


def test_an_opened_call_is_closed_and_never_twice(database: Database, tmp_path: Path) -> None:
    with database.session() as s:
        ids = records.open_call(s, new_call(), [NewRecord("consent", PURPOSE)])
    folder = tmp_path / "journal"
    data = an_entry(ids)
    journal.save(folder, "one", data)
    assert len(journal.replay(database, folder)) == 1
    # A replay that died before removing the file: the same entry again changes nothing.
    journal.save(folder, "one", data)
    assert journal.replay(database, folder) == []
    assert journal.pending(folder) == []
    kinds = [e["kind"] for e in view(database)["events"]]
    assert kinds.count("call_ended") == 1 and kinds.count("prompt") == 1
    with database.session() as s:
        assert chain.chain_problems(ids[1][0], chain.events_of(s, ids[1][0])) == []


def test_a_broken_entry_is_kept_aside_and_the_rest_written(
    database: Database, tmp_path: Path
) -> None:
    folder = tmp_path / "journal"
    (folder).mkdir()
    (folder / "a-broken.json").write_text("{not json", encoding="utf-8")
    journal.save(folder, "b-good", an_entry(None, "ch-2"))
    assert [d["call"]["channel_id"] for d in journal.replay(database, folder)] == ["ch-2"]
    assert (folder / "a-broken.bad").exists() and journal.pending(folder) == []


def test_while_the_database_is_away_nothing_is_lost(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    journal.save(folder, "one", an_entry(None))
    away = Database("postgresql://root@127.0.0.1:1/nothing")  # nothing listens on port 1
    try:
        assert journal.replay(away, folder) == []
    finally:
        away.close()
    assert [p.name for p in journal.pending(folder)] == ["one.json"]
