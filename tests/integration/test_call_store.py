"""A call's evidence is written ahead of its decision (CallStore.flush): what the flush wrote is
on the record before the decision, nothing is written twice, and a flush that fails keeps the
evidence for the decision's transaction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consent_ivr import flow as f
from consent_ivr.calls import CallSetup, CallStore
from consent_ivr.config import Config
from consent_ivr.service import decision_hooks
from consent_ivr.sms.phones import parse_mobile
from consent_ivr.store import chain
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.models import Call
from consent_ivr.store.records import Subject

pytestmark = pytest.mark.integration


def store_for(
    tmp: Path, *, sms: bool = False, phone: str = "+79161234567"
) -> tuple[CallStore, Database]:
    """A call's store on a fresh SQLite database; `sms`: with the service's SMS hook."""
    url = f"sqlite:///{tmp / 'c.db'}"
    upgrade(url)
    config = Config.model_validate({"database": {"url": url}, "sms": {"enabled": sms}})
    db = Database(url)
    setup = CallSetup(
        direction="inbound",
        campaign="default",
        language="ru",
        subject=Subject(phone, "caller-id"),
        channel_id="ch-1",
        started_at=datetime.now(UTC),
    )
    log = logging.LoggerAdapter(logging.getLogger("test"), {})
    return CallStore(db, config, setup, decision_hooks(config), log), db


def kinds(db: Database, record_id: str) -> list[str]:
    with db.session() as session:
        return [e.kind for e in chain.events_of(session, record_id)]


async def test_flush_writes_the_evidence_once_ahead_of_the_decision(tmp_path: Path) -> None:
    store, db = store_for(tmp_path)
    await store.prepare()
    store.open()
    store.note("prompt", {"prompt": "notice"}, None, f.Step.NOTICE)
    store.note("key", {"digit": "1"}, None, f.Step.ASK)
    await store.flush()
    assert store.ids is not None
    record = store.ids[1][0]
    assert kinds(db, record)[-2:] == ["prompt", "key"]
    assert store.pending == []

    store.note("key", {"digit": "1"}, None, f.Step.CONFIRM)
    assert await store.decide(f.Persist(0, f.Choice.AGREE)) is None
    written = kinds(db, record)
    assert written.count("prompt") == 1 and written.count("key") == 2
    assert written[-2:] == ["key", "given"]
    db.close()


async def test_a_failed_flush_keeps_the_evidence_for_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, db = store_for(tmp_path)
    await store.prepare()
    store.open()
    store.note("prompt", {"prompt": "notice"}, None, f.Step.NOTICE)

    def down(_session: object, _items: object) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr("consent_ivr.store.records.append_evidence", down)
    await store.flush()  # logged, not raised
    assert [e.kind for e in store.pending] == ["prompt"]
    monkeypatch.undo()

    assert await store.decide(f.Persist(0, f.Choice.AGREE)) is None
    assert store.ids is not None
    assert kinds(db, store.ids[1][0])[-2:] == ["prompt", "given"]
    db.close()


async def test_a_call_opened_in_a_batch_that_failed_is_opened_once_when_run_again(
    tmp_path: Path,
) -> None:
    """Two calls open in one group commit and the other one fails: the batch is run again,
    each write alone; this call must then be opened by its own write (its ids from the first
    attempt were rolled back), once."""
    store, db = store_for(tmp_path)
    other = CallStore(db, store.config, store.setup, (), store.log)

    def broken() -> object:
        raise RuntimeError("cannot describe the call")

    other._new_call = broken  # type: ignore[method-assign]
    await store.prepare()
    await other.prepare()
    store.open()
    other.open()  # the same batch as store's opening
    await store.opened(patience=30)
    await other.opened(patience=30)
    assert store.ids is not None and other.ids is None
    store.note("key", {"digit": "1"}, None, f.Step.CONFIRM)
    assert await store.decide(f.Persist(0, f.Choice.AGREE)) is None
    assert kinds(db, store.ids[1][0]) == ["requested", "key", "given"]
    with db.session() as session:
        assert session.query(Call).count() == 1
    db.close()


async def test_the_sms_recipient_is_parsed_while_the_caller_listens(tmp_path: Path) -> None:
    """The SMS hook's number check runs at the call's start (`prepare`), so the decision's
    transaction, which holds the ledger lock, finds it done."""
    store, db = store_for(tmp_path, sms=True, phone="+79169876543")
    parse_mobile.cache_clear()
    await store.prepare()
    assert parse_mobile.cache_info().currsize == 1
    store.open()
    assert await store.decide(f.Persist(0, f.Choice.AGREE)) is None
    info = parse_mobile.cache_info()
    assert (info.hits, info.misses) == (1, 1)  # the decision's check found it parsed
    db.close()
