"""The consent store on real SQLite and PostgreSQL: migrations, the record round trip, atomic
decisions, the write-once outcome, tamper evidence of the event chain, derived status, listing,
concurrency and Unicode. Every test runs once per database (`db_url` is parametrized)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, func, inspect, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from consent_ivr.store import chain, records
from consent_ivr.store.db import MIGRATIONS_DIR, Database, make_engine, upgrade
from consent_ivr.store.models import Call, ConsentEvent, ConsentRecord, LedgerHead
from consent_ivr.store.records import Decided, Evidence, NewCall, NewRecord, RecordingInfo, Subject
from consent_ivr.store.schema import metadata

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
PHONE = "+79161234567"
CORE_TABLES = {"calls", "consent_records", "consent_events", "ledger_head", "checkpoints"}
PURPOSE = {
    "id": "marketing-calls",
    "text": "calls and text messages with offers of our services",
    "lawful_basis": "consent",
    "validity": "P1Y",
    "retention": "P5Y",
}
CONTROLLER = {"name": "Example Ltd", "contact": "privacy@example.com"}


# ---- helpers ----------------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_call(
    phone: str | None = PHONE,
    started_at: datetime = T0,
    channel_id: str = "PJSIP/trunk-00000001",
) -> NewCall:
    return NewCall(
        channel_id=channel_id,
        direction="inbound",
        campaign="default",
        language="ru",
        jurisdiction="RU",
        controller=CONTROLLER,
        started_at=started_at,
        subject=Subject(phone, "caller-id", phone, "+74951230000"),
    )


def prompt(t: float, name: str, step: str | None = None) -> Evidence:
    data = {"prompt": name, "sha256": name[0] * 64, "text": f"text of {name}", "version": "v1"}
    return Evidence(at(t), "prompt", step, data)


def key(t: float, digit: str, step: str) -> Evidence:
    return Evidence(at(t), "key", step, {"digit": digit})


def open_record(db: Database, purpose: dict[str, Any] | None = None, **kw: Any) -> tuple[str, str]:
    with db.session() as s:
        call_id, [record_id] = records.open_call(
            s,
            new_call(**kw),
            [NewRecord("consent", purpose or PURPOSE)],
            [prompt(0.5, "notice", "notice")],
        )
    return call_id, record_id


def decide(db: Database, record_id: str, outcome: str = "granted", t: float = 20.0) -> None:
    with db.session() as s:
        records.store_decision(
            s,
            record_id,
            outcome,
            at(t),
            [(record_id, key(10, "1", "ask")), (record_id, key(15, "1", "confirm"))],
        )


def view(db: Database, record_id: str) -> dict[str, Any]:
    with db.session() as s:
        v = records.record_view(s, record_id, at=at(3600))
    assert v is not None
    return v


def chain_problems(db: Database, record_id: str) -> list[str]:
    with db.session() as s:
        return chain.chain_problems(record_id, chain.events_of(s, record_id))


def kinds(v: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in v["events"]]


def assert_utc_iso(text: str | None, expected: datetime) -> None:
    """An ISO-8601 string with microseconds, timezone-aware, UTC, equal to `expected`."""
    assert text is not None
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, text
    assert parsed.utcoffset() == timedelta(0), text
    assert "." in text and len(text.split(".")[1].rstrip("Z").split("+")[0]) == 6, text
    assert parsed == expected, f"{text} != {expected.isoformat()}"


def drop_append_only_triggers(db: Database) -> None:
    """What an attacker with the database owner's rights does first."""
    with db.session() as s:
        if db.dialect == "postgresql":
            s.execute(text("DROP TRIGGER consent_events_no_change ON consent_events"))
        else:
            s.execute(text("DROP TRIGGER consent_events_no_update"))
            s.execute(text("DROP TRIGGER consent_events_no_delete"))


# ---- migrations -------------------------------------------------------------------------------


def schema_snapshot(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        insp = inspect(engine)
        return {
            t: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
                sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(t)),
                sorted(str(u["column_names"]) for u in insp.get_unique_constraints(t)),
            )
            for t in sorted(insp.get_table_names())
        }
    finally:
        engine.dispose()


def alembic_head() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_the_tables(db_url: str) -> None:
    assert schema_snapshot(db_url) == {}
    upgrade(db_url)
    tables = set(schema_snapshot(db_url))
    assert CORE_TABLES | {"alembic_version"} <= tables
    assert set(metadata.tables) | {"alembic_version"} == tables
    assert current_revision(db_url) == alembic_head()


def test_second_upgrade_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    before = schema_snapshot(db_url)
    db = Database(db_url)
    try:
        _, record_id = open_record(db)
        upgrade(db_url)
        assert schema_snapshot(db_url) == before
        assert current_revision(db_url) == alembic_head()
        assert kinds(view(db, record_id)) == ["requested", "prompt"]
    finally:
        db.close()


def test_migration_head_matches_the_models(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diffs == []


# ---- the record round trip --------------------------------------------------------------------


def test_upgrade_from_0002_links_old_events_into_the_ledger(db_url: str) -> None:
    """A database with records written before the ledger: the upgrade chains its events in the
    order they were written and leaves the old records' own chains intact."""
    upgrade(db_url, "0002")
    engine = make_engine(db_url)
    events = ConsentEvent.__table__
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO calls (call_id, channel_id, direction, campaign, language, "
                    "started_at) VALUES ('c1', 'ch', 'inbound', 'default', 'ru', :t)"
                ),
                {"t": T0},
            )
            conn.execute(
                text(
                    "INSERT INTO consent_records (record_id, schema_version, call_id, "
                    "pii_principal_id, jurisdiction, language, campaign, purpose_id, purpose, "
                    "controller, collection_method, direction, started_at, head_seq, head_hash) "
                    "VALUES ('r1', '1', 'c1', :p, 'RU', 'ru', 'default', 'marketing-calls', "
                    "'{}', '{}', 'ivr-keypad', 'inbound', :t, 2, :h)"
                ),
                {"p": PHONE, "t": T0, "h": "0" * 64},
            )
            prev = chain.GENESIS
            for seq, kind in ((1, "requested"), (2, "given")):
                digest = chain.event_hash("r1", seq, at(seq), kind, None, {}, prev)
                conn.execute(
                    events.insert().values(
                        record_id="r1",
                        seq=seq,
                        at=at(seq),
                        kind=kind,
                        step=None,
                        data={},
                        prev_hash=prev,
                        hash=digest,
                    )
                )
                prev = digest
    finally:
        engine.dispose()
    upgrade(db_url)
    db = Database(db_url)
    try:
        with db.session() as s:
            old = chain.events_of(s, "r1")
            head = s.get(LedgerHead, 1)
            record = s.get(ConsentRecord, "r1")
            assert record is not None and head is not None
            assert chain.chain_problems("r1", old) == []
            assert [e.ledger_seq for e in old] == [1, 2]
            assert old[0].ledger_prev == chain.GENESIS
            assert old[1].ledger_prev == old[0].ledger_hash
            assert (head.seq, head.hash) == (2, old[1].ledger_hash)
            assert (record.status, record.kind) == ("given", "consent")
        _, new_record = open_record(db)  # new events continue the same ledger
        with db.session() as s:
            first = chain.events_of(s, new_record)[0]
        assert first.ledger_seq == 3 and first.ledger_prev == old[1].ledger_hash
    finally:
        db.close()


# ---- the record round trip --------------------------------------------------------------------


def test_open_decide_finish_round_trip(database: Database) -> None:
    with database.session() as s:
        call_id, [record_id] = records.open_call(
            s,
            new_call(),
            [NewRecord("consent", PURPOSE)],
            [prompt(0.5, "notice", "notice"), prompt(3, "purpose", "purpose")],
        )
    assert view(database, record_id)["status"] == "requested"
    with database.session() as s:
        records.store_decision(
            s,
            record_id,
            "granted",
            at(20),
            [
                (record_id, prompt(8, "ask", "ask")),
                (record_id, key(10, "1", "ask")),
                (record_id, key(15, "1", "confirm")),
            ],
        )
    rec = RecordingInfo(path="/var/rec/abc.wav", sha256="f" * 64, duration_s=42.5, format="wav")
    with database.session() as s:
        records.finish_call(
            s,
            call_id,
            {record_id: "granted"},
            at(30),
            [(record_id, prompt(22, "recorded_agree", "recorded"))],
            rec,
        )

    v = view(database, record_id)
    assert v["record_id"] == record_id
    assert v["kind"] == "consent"
    assert v["phone"] == PHONE and v["phone_source"] == "caller-id"
    assert v["campaign"] == "default"
    assert v["purpose"] == "marketing-calls"
    assert v["purpose_details"] == PURPOSE
    assert v["controller"] == CONTROLLER
    assert v["language"] == "ru"
    assert v["jurisdiction"] == "RU"
    assert v["direction"] == "inbound"
    assert v["collection_method"] == "ivr-keypad"
    assert v["outcome"] == "granted"
    assert v["status"] == "given"
    assert_utc_iso(v["expires_at"], datetime(2027, 3, 14, 9, 27, 13, 589793, tzinfo=UTC))
    assert v["call"]["call_id"] == call_id
    assert v["call"]["channel_id"] == "PJSIP/trunk-00000001"
    assert v["call"]["called_number"] == "+74951230000"
    assert_utc_iso(v["started_at"], T0)
    assert_utc_iso(v["decided_at"], at(20))
    assert_utc_iso(v["ended_at"], at(30))

    assert [(k["digit"], k["step"]) for k in v["keys"]] == [("1", "ask"), ("1", "confirm")]
    for k, t in zip(v["keys"], (10, 15), strict=True):
        assert_utc_iso(k["at"], at(t))
    assert [p["prompt"] for p in v["prompts"]] == ["notice", "purpose", "ask", "recorded_agree"]
    for p, t in zip(v["prompts"], (0.5, 3, 8, 22), strict=True):
        assert_utc_iso(p["at"], at(t))
        assert p["sha256"] == p["prompt"][0] * 64
        assert p["text"] == f"text of {p['prompt']}"
        assert p["version"] == "v1"
    assert v["recording"] == {
        "path": "/var/rec/abc.wav",
        "sha256": "f" * 64,
        "duration_s": 42.5,
        "format": "wav",
    }

    assert kinds(v) == [
        "requested",
        "prompt",
        "prompt",
        "prompt",
        "key",
        "key",
        "given",
        "prompt",
        "call_ended",
        "recording_stored",
    ]
    assert [e["seq"] for e in v["events"]] == list(range(1, 11))
    facts = v["events"][0]["data"]
    assert facts["purpose"] == PURPOSE and facts["controller"] == CONTROLLER
    assert facts["campaign"] == "default" and facts["direction"] == "inbound"
    assert facts["record_kind"] == "consent" and facts["call_id"] == call_id
    assert facts["subject"]["phone_source"] == "caller-id"
    assert PHONE not in str(facts), "the number must be committed to, not written in clear"
    assert v["events"][-1]["data"]["sha256"] == "f" * 64
    assert v["events"][-2]["data"] == {"outcome": "granted"}
    assert v["events"][6]["step"] == "saving"
    assert_utc_iso(v["events"][0]["at"], T0)
    assert_utc_iso(v["events"][6]["at"], at(20))
    assert all(len(e["hash"]) == 64 for e in v["events"])
    assert len({e["hash"] for e in v["events"]}) == 10
    assert v["integrity"] == {"chain_ok": True, "problems": []}


def test_the_subject_commitment_binds_the_numbers(database: Database) -> None:
    _, record_id = open_record(database)
    with database.session() as s:
        record = s.get(ConsentRecord, record_id)
        assert record is not None and record.subject_salt
        first = chain.events_of(s, record_id)[0]
        personal = Subject(PHONE, "caller-id", PHONE, "+74951230000").personal()
        assert first.data["subject"]["commitment"] == chain.commitment(
            record.subject_salt, personal
        )
        other = {**personal, "phone": "+79160000000"}
        assert first.data["subject"]["commitment"] != chain.commitment(record.subject_salt, other)


def test_one_call_several_purposes_and_a_withheld_number(database: Database) -> None:
    second = {**PURPOSE, "id": "sms-news", "text": "news by SMS"}
    with database.session() as s:
        call_id, ids = records.open_call(
            s,
            new_call(phone=None),
            [NewRecord("consent", PURPOSE), NewRecord("consent", second)],
            [prompt(0.5, "notice", "notice")],
        )
        records.finish_call(s, call_id, dict.fromkeys(ids, "unidentified"), at(9), [], None)
    a, b = (view(database, r) for r in ids)
    assert (a["purpose"], b["purpose"]) == ("marketing-calls", "sms-news")
    assert a["call"]["call_id"] == b["call"]["call_id"] == call_id
    assert a["phone"] is None and a["outcome"] == "unidentified" == b["outcome"]
    assert kinds(a) == kinds(b) == ["requested", "prompt", "call_ended"]
    assert a["integrity"]["chain_ok"] and b["integrity"]["chain_ok"]


def test_timestamps_in_other_zones_are_stored_as_utc(database: Database) -> None:
    """A caller handing in Moscow time must get the same instant back, in UTC, everywhere."""
    msk = timezone(timedelta(hours=3))
    started = T0.astimezone(msk)
    with database.session() as s:
        call_id, [record_id] = records.open_call(
            s, new_call(started_at=started), [NewRecord("consent", PURPOSE)]
        )
        records.store_decision(s, record_id, "declined", at(20).astimezone(msk))
        records.finish_call(s, call_id, {record_id: "declined"}, at(30).astimezone(msk), [], None)
    v = view(database, record_id)
    assert_utc_iso(v["events"][0]["at"], T0)
    assert_utc_iso(v["started_at"], T0)
    assert_utc_iso(v["decided_at"], at(20))
    assert_utc_iso(v["ended_at"], at(30))


# ---- atomic decision and hooks ----------------------------------------------------------------


HOOK_CHANNEL = "hook-row"


def hook_row(session: Session) -> None:
    """What a decision hook (the SMS job) does: add a row of its own, flushed to the database."""
    session.add(
        Call(
            channel_id=HOOK_CHANNEL,
            direction="outbound",
            caller_number=None,
            called_number=None,
            campaign="default",
            language="ru",
            started_at=T0,
        )
    )
    session.flush()


def hook_rows(db: Database) -> int:
    with db.session() as s:
        return s.scalar(
            select(func.count()).select_from(Call).where(Call.channel_id == HOOK_CHANNEL)
        )


async def test_failing_hook_rolls_back_the_whole_decision(database: Database) -> None:
    _, record_id = open_record(database)
    before = view(database, record_id)

    def failing_hook(session: Session, decided: Decided) -> list[Any]:
        hook_row(session)
        raise RuntimeError("sms job could not be written")

    def work(session: Session) -> None:
        records.store_decision(
            session,
            record_id,
            "granted",
            at(20),
            [(record_id, key(10, "1", "ask"))],
            [failing_hook],
        )

    with pytest.raises(RuntimeError, match="sms job"):
        await database.transaction(work)

    after = view(database, record_id)
    assert after["outcome"] is None
    assert after["decided_at"] is None
    assert after["status"] == "requested"
    assert after["events"] == before["events"]
    assert "given" not in kinds(after) and "refused" not in kinds(after)
    assert hook_rows(database) == 0


async def test_successful_hook_commits_with_the_decision(database: Database) -> None:
    _, record_id = open_record(database)
    seen: list[tuple[tuple[str, ...], str, datetime, str | None]] = []

    def hook(session: Session, decided: Decided) -> list[tuple[str, Evidence]]:
        seen.append(
            (
                tuple(r.record_id for r in decided.records),
                decided.outcome,
                decided.at,
                decided.call_id,
            )
        )
        hook_row(session)
        return [(record_id, Evidence(decided.at, "sms_enqueued", None, {"job_id": "j1"}))]

    call_id = await database.transaction(
        lambda s: (
            records.store_decision(s, record_id, "declined", at(20), [], [hook])
            or s.get(ConsentRecord, record_id).call_id
        )  # type: ignore[union-attr]
    )
    assert seen == [((record_id,), "declined", at(20), call_id)]
    v = view(database, record_id)
    assert v["outcome"] == "declined"
    assert v["status"] == "refused"
    assert kinds(v)[-2:] == ["refused", "sms_enqueued"]
    assert hook_rows(database) == 1


# ---- the outcome is written once --------------------------------------------------------------


def test_second_decision_is_refused(database: Database) -> None:
    _, record_id = open_record(database)
    decide(database, record_id, "granted")
    before = view(database, record_id)
    with pytest.raises(ValueError, match="already has outcome granted"):
        decide(database, record_id, "declined", t=25)
    after = view(database, record_id)
    assert after["outcome"] == "granted"
    assert after["events"] == before["events"]
    assert_utc_iso(after["decided_at"], at(20))


def test_finish_call_keeps_the_stored_outcome(database: Database) -> None:
    call_id, record_id = open_record(database)
    decide(database, record_id, "granted")
    with database.session() as s:
        records.finish_call(s, call_id, {record_id: "failed"}, at(40), [], None)
    v = view(database, record_id)
    assert v["outcome"] == "granted"
    assert v["status"] == "given"
    assert_utc_iso(v["decided_at"], at(20))
    assert kinds(v)[-1] == "call_ended"
    assert v["events"][-1]["data"] == {"outcome": "granted"}


def test_decision_on_unknown_record(database: Database) -> None:
    with pytest.raises(LookupError), database.session() as s:
        records.store_decision(s, "no-such-record", "granted", at(1))


def test_end_of_unknown_call(database: Database) -> None:
    with pytest.raises(LookupError, match="no call no-such-call"), database.session() as s:
        records.finish_call(s, "no-such-call", {}, at(1), [], None)


# ---- append-only, and tamper evidence ---------------------------------------------------------


def decided_record(db: Database) -> str:
    """A record whose events are: 1 requested, 2 prompt, 3 key(ask), 4 key(confirm), 5 given."""
    _, record_id = open_record(db)
    decide(db, record_id)
    assert kinds(view(db, record_id)) == ["requested", "prompt", "key", "key", "given"]
    return record_id


def events_table(record_id: str, seq: int):  # type: ignore[no-untyped-def]
    t = ConsentEvent.__table__
    return t, (t.c.record_id == record_id) & (t.c.seq == seq)


@pytest.mark.parametrize("statement", ["update", "delete"])
def test_the_event_log_refuses_updates_and_deletes(database: Database, statement: str) -> None:
    record_id = decided_record(database)
    t, where = events_table(record_id, 3)
    change = (
        update(t).where(where).values(data={"digit": "2"})
        if statement == "update"
        else (delete(t).where(where))
    )
    with pytest.raises(DBAPIError, match="append-only"), database.session() as s:
        s.execute(change)
    assert view(database, record_id)["keys"][0]["digit"] == "1"
    assert chain_problems(database, record_id) == []


def test_untouched_chain_is_ok(database: Database) -> None:
    record_id = decided_record(database)
    assert chain_problems(database, record_id) == []
    assert view(database, record_id)["integrity"] == {"chain_ok": True, "problems": []}


def test_edited_event_data_is_detected(database: Database) -> None:
    record_id = decided_record(database)
    drop_append_only_triggers(database)
    t, where = events_table(record_id, 3)
    with database.session() as s:
        s.execute(update(t).where(where).values(data={"digit": "2"}))
    problems = chain_problems(database, record_id)
    assert len(problems) == 1 and problems[0].startswith("event 3 (key): content does not match")
    integrity = view(database, record_id)["integrity"]
    assert integrity == {"chain_ok": False, "problems": problems}


def test_edited_event_time_is_detected(database: Database) -> None:
    record_id = decided_record(database)
    drop_append_only_triggers(database)
    t, where = events_table(record_id, 5)
    with database.session() as s:
        s.execute(update(t).where(where).values(at=at(-3600)))
    problems = chain_problems(database, record_id)
    assert len(problems) == 1 and problems[0].startswith("event 5 (given): content")
    assert not view(database, record_id)["integrity"]["chain_ok"]


@pytest.mark.parametrize("seq", [1, 3], ids=["first", "middle"])
def test_deleted_event_is_detected(database: Database, seq: int) -> None:
    record_id = decided_record(database)
    drop_append_only_triggers(database)
    t, where = events_table(record_id, seq)
    with database.session() as s:
        s.execute(delete(t).where(where))
    problems = chain_problems(database, record_id)
    assert f"event {seq} missing (found {seq + 1} next)" in problems
    assert f"event {seq + 1}: previous hash does not match event {seq}" in problems
    integrity = view(database, record_id)["integrity"]
    assert not integrity["chain_ok"]
    assert integrity["problems"] == problems


def test_swapped_events_are_detected(database: Database) -> None:
    record_id = decided_record(database)
    drop_append_only_triggers(database)
    t = ConsentEvent.__table__
    mine = t.c.record_id == record_id
    with database.session() as s:  # through a free number: (record_id, seq) is unique
        s.execute(update(t).where(mine & (t.c.seq == 3)).values(seq=-1))
        s.execute(update(t).where(mine & (t.c.seq == 4)).values(seq=3))
        s.execute(update(t).where(mine & (t.c.seq == -1)).values(seq=4))
    problems = chain_problems(database, record_id)
    assert "event 3: previous hash does not match event 2" in problems
    assert any(p.startswith("event 3 (key): content does not match") for p in problems)
    assert "event 4: previous hash does not match event 3" in problems
    assert not view(database, record_id)["integrity"]["chain_ok"]
    assert [k["step"] for k in view(database, record_id)["keys"]] == ["confirm", "ask"]


@pytest.mark.parametrize("which", ["last", "all"])
def test_truncated_chain_is_detected(database: Database, which: str) -> None:
    """Deleting the newest event (here: the withdrawal) silently revives the consent unless the
    record knows where its chain ends. DESIGN.md: "an edit or deletion is detectable"."""
    record_id = decided_record(database)
    with database.session() as s:
        records.append_evidence(
            s, [(record_id, Evidence(at(3600), "withdrawn", None, {"channel": "sms"}))]
        )
    assert view(database, record_id)["status"] == "withdrawn"
    drop_append_only_triggers(database)
    t = ConsentEvent.__table__
    where = t.c.record_id == record_id
    if which == "last":
        where = where & (t.c.seq == 6)
    with database.session() as s:
        s.execute(delete(t).where(where))
    integrity = view(database, record_id)["integrity"]
    assert not integrity["chain_ok"], "a truncated chain is reported intact"
    assert any(p.startswith("head: the chain ends at event") for p in integrity["problems"])


# ---- the ledger -------------------------------------------------------------------------------


def test_the_ledger_orders_every_event_of_every_record(database: Database) -> None:
    ids = [open_record(database, channel_id=f"c{i}")[1] for i in range(3)]
    for r in ids:
        decide(database, r)
    with database.session() as s:
        rows = s.scalars(select(ConsentEvent).order_by(ConsentEvent.ledger_seq)).all()
        head = s.get(LedgerHead, 1)
    assert [e.ledger_seq for e in rows] == list(range(1, len(rows) + 1))
    prev = chain.GENESIS
    for e in rows:
        assert e.ledger_prev == prev
        assert e.ledger_hash == chain.ledger_hash(e.ledger_seq, prev, e.hash)
        prev = e.ledger_hash
    assert head is not None and (head.seq, head.hash) == (len(rows), prev)
    assert {e.record_id for e in rows} == set(ids)


# ---- status is derived from events ------------------------------------------------------------


def test_status_follows_lifecycle_events(database: Database) -> None:
    _, record_id = open_record(database)
    assert view(database, record_id)["status"] == "requested"
    decide(database, record_id, "granted")
    assert view(database, record_id)["status"] == "given"
    with database.session() as s:
        records.append_evidence(
            s,
            [
                (record_id, Evidence(at(100), "prompt", "result", {"prompt": "goodbye"})),
                (record_id, Evidence(at(1800), "withdrawn", None, {"channel": "sms"})),
                (record_id, Evidence(at(1801), "sms_sent", None, {"message_id": "m1"})),
            ],
        )
    v = view(database, record_id)
    assert v["status"] == "withdrawn"
    assert v["outcome"] == "granted"
    assert [e["seq"] for e in v["events"]] == list(range(1, len(v["events"]) + 1))
    assert kinds(v)[-3:] == ["prompt", "withdrawn", "sms_sent"]
    assert v["withdrawals"] == [{"at": v["events"][-2]["at"], "channel": "sms"}]
    assert v["integrity"]["chain_ok"]


def test_refusal_status(database: Database) -> None:
    _, record_id = open_record(database)
    decide(database, record_id, "declined")
    v = view(database, record_id)
    assert (v["status"], v["outcome"]) == ("refused", "declined")


# ---- listing ----------------------------------------------------------------------------------


def test_list_records_by_phone_newest_first(database: Database) -> None:
    other = "+447911123456"
    ids = {}
    for name, phone, hours in [
        ("a1", PHONE, 0),
        ("b1", other, 1),
        ("a3", PHONE, 5),
        ("a2", PHONE, 2),
    ]:
        ids[name] = open_record(database, phone=phone, started_at=at(hours * 3600))[1]
    with database.session() as s:
        mine = [r.record_id for r in records.list_records(s, phone=PHONE)]
        everyone = [r.record_id for r in records.list_records(s)]
        newest = [r.record_id for r in records.list_records(s, phone=PHONE, limit=1)]
        theirs = [r.record_id for r in records.list_records(s, phone=other)]
        nobody = records.list_records(s, phone="+15550100000")
    assert mine == [ids["a3"], ids["a2"], ids["a1"]]
    assert everyone == [ids["a3"], ids["a2"], ids["b1"], ids["a1"]]
    assert newest == [ids["a3"]]
    assert theirs == [ids["b1"]]
    assert nobody == []


# ---- concurrency ------------------------------------------------------------------------------


async def test_concurrent_calls_through_the_thread_pool(database: Database) -> None:
    n = 50

    async def one_call(i: int) -> str:
        phone = f"+7916{i:07d}"
        call = new_call(phone=phone, started_at=at(i), channel_id=f"chan-{i}")
        _, [record_id] = await database.transaction(
            lambda s: records.open_call(
                s, call, [NewRecord("consent", PURPOSE)], [prompt(i + 0.5, "notice", "notice")]
            )
        )
        outcome = "granted" if i % 2 else "declined"
        digit = "1" if i % 2 else "2"
        await database.transaction(
            lambda s: records.store_decision(
                s,
                record_id,
                outcome,
                at(i + 20),
                [(record_id, key(i + 10, digit, "ask")), (record_id, key(i + 15, "1", "confirm"))],
            )
        )
        return record_id

    ids = await asyncio.gather(*(one_call(i) for i in range(n)))
    assert len(set(ids)) == n

    def check(session: Session) -> list[dict[str, Any]]:
        assert session.scalar(select(func.count()).select_from(ConsentRecord)) == n
        assert session.scalar(select(func.count()).select_from(ConsentEvent)) == n * 5
        seqs = session.scalars(select(ConsentEvent.ledger_seq).order_by(ConsentEvent.ledger_seq))
        assert list(seqs) == list(range(1, n * 5 + 1)), "the ledger forked or has gaps"
        return [records.record_view(session, r) for r in ids]

    views = await database.transaction(check)
    for i, v in enumerate(views):
        assert v["phone"] == f"+7916{i:07d}"
        assert v["outcome"] == ("granted" if i % 2 else "declined")
        assert [e["seq"] for e in v["events"]] == [1, 2, 3, 4, 5]
        assert v["integrity"] == {"chain_ok": True, "problems": []}


async def test_concurrent_appends_to_one_record(database: Database) -> None:
    """Two writers on one record (a withdrawal arriving while the call is being closed) must
    both land, one after the other, on one unbroken chain."""
    _, record_id = open_record(database)
    n = 12

    def note(i: int):  # type: ignore[no-untyped-def]
        return lambda s: records.append_evidence(
            s, [(record_id, Evidence(at(100 + i), "note", None, {"i": i}))]
        )

    results = await asyncio.gather(
        *(database.transaction(note(i)) for i in range(n)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], f"{len(errors)} of {n} concurrent appends failed: {errors[0]!r}"
    v = view(database, record_id)
    assert [e["seq"] for e in v["events"]] == list(range(1, n + 3))
    assert sorted(e["data"]["i"] for e in v["events"] if e["kind"] == "note") == list(range(n))
    assert v["integrity"]["chain_ok"]


def test_a_record_read_before_the_lock_is_appended_to_at_its_current_head(
    database: Database,
) -> None:
    """A transaction holds a record object read before it took the ledger lock; another
    appends to that record and commits in between. The first one's append must chain onto
    the other's event, not onto the head it read earlier (the lock makes it read the head
    again; the write takes heads from held objects only when they were read under the lock)."""
    _, record_id = open_record(database)
    with database.session() as first:
        held = first.get(ConsentRecord, record_id)
        assert held is not None and held.head_seq == 2
        with database.session() as other:
            records.append_evidence(other, [(record_id, Evidence(at(50), "note", None, {"i": 1}))])
        records.append_evidence(first, [(record_id, Evidence(at(60), "note", None, {"i": 2}))])
        assert held.head_seq == 4
    v = view(database, record_id)
    assert [e["seq"] for e in v["events"]] == [1, 2, 3, 4]
    assert [e["data"].get("i") for e in v["events"][2:]] == [1, 2]
    assert v["integrity"] == {"chain_ok": True, "problems": []}


async def test_concurrent_decisions_on_one_record(database: Database) -> None:
    """Decisions racing on one record: exactly one wins, the record tells one story.
    (Several rounds, since a lost race needs a particular interleaving.)"""
    for _ in range(15):
        _, record_id = open_record(database)

        def decision(outcome: str, record_id: str = record_id):  # type: ignore[no-untyped-def]
            return lambda s: records.store_decision(s, record_id, outcome, at(20))

        results = await asyncio.gather(
            *(database.transaction(decision(o)) for o in ("granted", "declined") * 3),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1, results
        v = view(database, record_id)
        decisions = [k for k in kinds(v) if k in ("given", "refused")]
        assert len(decisions) == 1, kinds(v)
        assert records.DECISION_EVENT[v["outcome"]] == decisions[0]
        assert v["integrity"]["chain_ok"]


# ---- Unicode ----------------------------------------------------------------------------------


def test_russian_texts_round_trip(database: Database) -> None:
    purpose = {
        "id": "marketing-calls",
        "text": "звонки и СМС с предложениями наших услуг",
        "data_categories": "номер телефона и запись этого разговора",
        "controller": "ООО «Пример»",
    }
    spoken = "Здравствуйте. Этот разговор записывается — «ёлка» №5."
    _, record_id = open_record(database, purpose=purpose)
    with database.session() as s:
        records.append_evidence(
            s,
            [
                (
                    record_id,
                    Evidence(at(1), "prompt", "notice", {"prompt": "notice", "text": spoken}),
                )
            ],
        )
    v = view(database, record_id)
    assert v["purpose_details"] == purpose
    assert v["prompts"][-1]["text"] == spoken
    assert v["events"][-1]["data"] == {"prompt": "notice", "text": spoken}
    assert v["integrity"]["chain_ok"]
