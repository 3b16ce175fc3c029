"""Tampering with the evidence, as someone with owner rights on the database would (dropping the
append-only triggers first), each caught by `consent-ivr verify` and named: the record, the
event, the field or file, what was expected and what was found. Every test runs on SQLite and
on PostgreSQL, and starts from evidence that verifies, so each can fail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from consent_ivr.clock import utc
from consent_ivr.evidence import checkpoints, keys, verify
from consent_ivr.evidence.report import Report
from consent_ivr.store import chain
from consent_ivr.store.chain import GENESIS, event_hash, ledger_hash
from consent_ivr.store.chain import Evidence as ChainEvidence
from consent_ivr.store.models import Call, Checkpoint, ConsentEvent, ConsentRecord, LedgerHead
from tests.evidence.conftest import T0, World, drop_triggers

pytestmark = pytest.mark.integration
LATER = T0 + timedelta(hours=1)


def checkpoint(world: World) -> dict[str, Any]:
    entry = checkpoints.checkpoint(
        world.db, Path(world.config.evidence.checkpoints), keys.signer(world.config)
    )
    assert entry is not None
    return entry


def verify_all(world: World) -> Report:
    with world.db.session() as s:
        return verify.verify_all(s, world.config)


def problems(report: Report) -> str:
    return "\n".join(str(p) for p in report.problems)


@pytest.fixture
def calls(world: World) -> tuple[World, str, str]:
    """Two calls, a checkpoint, and evidence that verifies."""
    first = world.store_call()
    second = world.store_call(outcome="declined", at=LATER)
    checkpoint(world)
    report = verify_all(world)
    assert report.ok, "\n".join(report.lines())
    return world, first.record_id, second.record_id


def event_of(s: Session, record_id: str, seq: int) -> ConsentEvent:
    found = s.scalars(
        select(ConsentEvent).where(ConsentEvent.record_id == record_id, ConsentEvent.seq == seq)
    ).one()
    return found


# ---- the triggers ---------------------------------------------------------------------------


def test_triggers_refuse_update_and_delete_of_events_and_checkpoints(world: World) -> None:
    stored = world.store_call()
    checkpoint(world)
    attempts = [
        (
            update(ConsentEvent)
            .where(ConsentEvent.record_id == stored.record_id)
            .values(kind="refused")
        ),
        delete(ConsentEvent).where(ConsentEvent.record_id == stored.record_id),
        update(Checkpoint).values(ledger_hash=GENESIS),
        delete(Checkpoint),
    ]
    for statement in attempts:
        with pytest.raises(DBAPIError, match="append-only"), world.db.session() as s:
            s.execute(statement)
    assert verify_all(world).ok


# ---- the record's cache columns --------------------------------------------------------------

RECORD_EDITS: dict[str, Callable[[Any], Any]] = {
    "kind": lambda v: "withdrawal",
    "campaign": lambda v: "other-campaign",
    "language": lambda v: "ru",
    "jurisdiction": lambda v: "US",
    "direction": lambda v: "outbound",
    "collection_method": lambda v: "web-form",
    "controller": lambda v: {**v, "name": "Someone Else Ltd"},
    "purpose": lambda v: {**v, "text": "anything we like"},
    "purpose_id": lambda v: "another-purpose",
    "started_at": lambda v: v + timedelta(days=1),
    "outcome": lambda v: "declined",
    "decided_at": lambda v: v - timedelta(minutes=5),
    "status": lambda v: "refused",
    "status_at": lambda v: v + timedelta(days=3),
    "phone_source": lambda v: "dialled",
    "pii_principal_id": lambda v: "+79990001122",
    "subject_salt": lambda v: "00" * 16,
    "erased_at": lambda v: v or utc(LATER),
    "head_seq": lambda v: v - 1,
    "schema_version": lambda v: "1",
}
CALL_EDITS: dict[str, Callable[[Any], Any]] = {
    "caller_number": lambda v: "+79990001122",
    "called_number": lambda v: "+74950000000",
    "channel_id": lambda v: "PJSIP/other-0001",
    "direction": lambda v: "outbound",
    "campaign": lambda v: "other-campaign",
    "language": lambda v: "ru",
    "started_at": lambda v: v - timedelta(hours=2),
    "ended_at": lambda v: v + timedelta(hours=2),
    "recording_path": lambda v: v.replace("call-1", "call-9"),
    "recording_sha256": lambda v: "f" * 64,
    "recording_duration_s": lambda v: v + 30,
    "recording_format": lambda v: "mp3",
    "erased_at": lambda v: utc(LATER),
}
# What the finding names for an edit that the commitment catches rather than a column.
NAMED = {
    "pii_principal_id": "pii_principal_id",
    "subject_salt": "subject_salt",
    "call.caller_number": "call.caller_number",
    "call.called_number": "call.called_number",
    "call.recording_path": "call.recording_file",
}


def _edit_each(
    world: World,
    model: Any,
    key: Any,
    edits: dict[str, Callable[[Any], Any]],
    record_id: str,
    prefix: str,
) -> None:
    for column, change in edits.items():
        with world.db.session() as s:
            row = s.get(model, key)
            before = getattr(row, column)
            setattr(row, column, change(before))
        report = verify_all(world)
        text = problems(report)
        name = NAMED.get(prefix + column, prefix + column)
        assert not report.ok, f"editing {prefix}{column} went unnoticed"
        assert any(p.record == record_id and name in p.what for p in report.problems), (
            f"editing {prefix}{column} was not named:\n{text}"
        )
        with world.db.session() as s:
            setattr(s.get(model, key), column, before)
        assert verify_all(world).ok, f"restoring {prefix}{column} did not restore the evidence"


def test_every_record_column_edit_is_named(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    _edit_each(world, ConsentRecord, record_id, RECORD_EDITS, record_id, "")


def test_every_call_column_edit_is_named(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    with world.db.session() as s:
        call_id = s.get(ConsentRecord, record_id).call_id  # type: ignore[union-attr]
    _edit_each(world, Call, call_id, CALL_EDITS, record_id, "call.")


def test_an_edited_phone_and_outcome_are_both_named(calls: tuple[World, str, str]) -> None:
    """The issue's own example: a declined record made to say another number agreed."""
    world, _, declined = calls
    with world.db.session() as s:
        record = s.get(ConsentRecord, declined)
        assert record is not None
        record.pii_principal_id, record.outcome, record.status = "+79990001122", "granted", "given"
    report = verify_all(world)
    fields = {p.what for p in report.problems if p.record == declined}
    assert "outcome" in fields and "status" in fields, fields
    assert any("pii_principal_id" in f for f in fields), fields


# ---- events ---------------------------------------------------------------------------------


def test_edited_event_data_is_named(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    drop_triggers(world)
    with world.db.session() as s:
        key = next(
            e
            for e in s.scalars(
                select(ConsentEvent).where(
                    ConsentEvent.record_id == record_id, ConsentEvent.kind == "key"
                )
            )
        )
        key.data = {**key.data, "digit": "2"}
        seq = key.seq
    report = verify_all(world)
    assert any(
        p.record == record_id and p.seq == seq and "content" in p.what for p in report.problems
    ), problems(report)


def test_edited_event_time_is_named(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    drop_triggers(world)
    with world.db.session() as s:
        ev = event_of(s, record_id, 2)
        ev.at = ev.at + timedelta(seconds=30)
    report = verify_all(world)
    assert any(p.record == record_id and p.seq == 2 for p in report.problems), problems(report)


def test_deleted_event_is_named_in_the_chain_and_the_ledger(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    drop_triggers(world)
    with world.db.session() as s:
        ledger_seq = event_of(s, record_id, 4).ledger_seq
        s.execute(
            delete(ConsentEvent).where(ConsentEvent.record_id == record_id, ConsentEvent.seq == 4)
        )
    report = verify_all(world)
    text = problems(report)
    assert any(
        p.record == record_id and p.seq == 4 and p.what == "event" for p in report.problems
    ), text
    assert f"ledger entry {ledger_seq}: missing" in text, text
    with world.db.session() as s:
        alone = verify.verify_record(s, world.config, record_id)
    assert f"ledger entry {ledger_seq}: missing" in problems(alone), problems(alone)


def test_newest_events_deleted_with_every_head_rewritten_are_caught_by_the_checkpoint(
    calls: tuple[World, str, str],
) -> None:
    """Removing the tail of the ledger and fixing every head leaves only the signed
    checkpoint to say that the ledger was longer."""
    world, _, record_id = calls
    drop_triggers(world)
    with world.db.session() as s:
        head = s.get(LedgerHead, 1)
        assert head is not None
        newest = s.scalars(select(ConsentEvent).where(ConsentEvent.ledger_seq == head.seq)).one()
        assert newest.record_id == record_id
        previous = event_of(s, record_id, newest.seq - 1)
        s.delete(newest)
        record = s.get(ConsentRecord, record_id)
        assert record is not None
        record.head_seq, record.head_hash = previous.seq, previous.hash
        head.seq, head.hash = previous.ledger_seq, previous.ledger_hash
    report = verify_all(world)
    text = problems(report)
    assert "signs more entries than the ledger holds" in text, text


def test_deleted_record_leaves_a_gap_in_the_ledger(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    drop_triggers(world)
    with world.db.session() as s:
        seqs = sorted(
            s.scalars(select(ConsentEvent.ledger_seq).where(ConsentEvent.record_id == record_id))
        )
        record = s.get(ConsentRecord, record_id)
        assert record is not None
        call_id = record.call_id
        s.execute(delete(ConsentEvent).where(ConsentEvent.record_id == record_id))
        s.execute(delete(ConsentRecord).where(ConsentRecord.record_id == record_id))
        s.execute(delete(Call).where(Call.call_id == call_id))
    report = verify_all(world)
    text = problems(report)
    assert f"ledger entries {seqs[0]}..{seqs[-1]}: missing" in text, text


def test_reordered_events_are_named(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    drop_triggers(world)
    with world.db.session() as s:
        a, b = event_of(s, record_id, 5), event_of(s, record_id, 6)
        a.seq = -1
        s.flush()
        b.seq = 5
        s.flush()
        a.seq = 6
    report = verify_all(world)
    named = {p.seq for p in report.problems if p.record == record_id}
    assert {5, 6} <= named, problems(report)


def test_reordered_ledger_is_named(calls: tuple[World, str, str]) -> None:
    world, record_id, _ = calls
    drop_triggers(world)
    with world.db.session() as s:
        a, b = event_of(s, record_id, 2), event_of(s, record_id, 3)
        x, y = a.ledger_seq, b.ledger_seq
        a.ledger_seq = -1
        s.flush()
        b.ledger_seq = x
        s.flush()
        a.ledger_seq = y
    report = verify_all(world)
    assert any(f"ledger entry {x}" in p.what for p in report.problems), problems(report)


# ---- files ----------------------------------------------------------------------------------


def flip(path: Path, at: int = 60) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_changed_recording_file_is_named(world: World) -> None:
    stored = world.store_call()
    assert stored.recording is not None
    flip(stored.recording)
    report = verify_all(world)
    assert any(
        p.record == stored.record_id and str(stored.recording) in p.what and "changed" in p.message
        for p in report.problems
    ), problems(report)
    stored.recording.unlink()
    report = verify_all(world)
    assert any(
        str(stored.recording) in p.what and "missing" in p.message for p in report.problems
    ), problems(report)


def test_changed_prompt_audio_is_named(world: World) -> None:
    stored = world.store_call()
    path = world.archive / f"{world.prompt_sha['ask']}.wav"
    flip(path)
    report = verify_all(world)
    hits = [p for p in report.problems if str(path) in p.what]
    assert hits and all(p.record == stored.record_id and p.seq for p in hits), problems(report)
    assert "(ask)" in hits[0].what


# ---- the whole database rewritten ------------------------------------------------------------


def rewrite(world: World, signer: keys.Signer | None, *, strip: bool = False) -> None:
    """Make a granted record say it was refused, then recompute every hash of the database
    as an attacker would: the chains, the ledger, its head and the checkpoints (re-signed
    when the attacker has the key, else left with their old signatures or stripped)."""
    drop_triggers(world)
    with world.db.session() as s:
        record = s.scalars(select(ConsentRecord).where(ConsentRecord.outcome == "granted")).first()
        assert record is not None
        for ev in record.events:
            if ev.kind == "given":
                ev.kind = "refused"
            if ev.kind == "call_ended":
                ev.data = {"outcome": "declined"}
        record.outcome, record.status = "declined", "refused"
        s.flush()
        for r in s.scalars(select(ConsentRecord)):
            prev = GENESIS
            for ev in s.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.record_id == r.record_id)
                .order_by(ConsentEvent.seq)
            ):
                ev.prev_hash = prev
                ev.hash = event_hash(
                    r.record_id, ev.seq, utc(ev.at), ev.kind, ev.step, ev.data, prev
                )
                prev = ev.hash
            r.head_hash = prev
        link, at_seq = GENESIS, {}
        for ev in s.scalars(select(ConsentEvent).order_by(ConsentEvent.ledger_seq)):
            ev.ledger_prev = link
            link = ev.ledger_hash = ledger_hash(ev.ledger_seq, link, ev.hash)
            at_seq[ev.ledger_seq] = link
        head = s.get(LedgerHead, 1)
        assert head is not None
        head.hash = link
        for cp in s.scalars(select(Checkpoint)):
            cp.ledger_hash = at_seq[cp.ledger_seq]
            if signer is not None:
                cp.signature = signer.sign(checkpoints.message(checkpoints.as_dict(cp)))
            elif strip:
                cp.signature = cp.key_id = None


def test_rewritten_without_the_key_fails_the_signatures(calls: tuple[World, str, str]) -> None:
    world, _, _ = calls
    rewrite(world, None)
    report = verify_all(world)
    text = problems(report)
    assert "the signature does not verify" in text, text


def test_rewritten_without_the_key_and_signatures_stripped(calls: tuple[World, str, str]) -> None:
    world, _, _ = calls
    rewrite(world, None, strip=True)
    Path(world.config.evidence.checkpoints).unlink()  # and the external file out of reach
    report = verify_all(world)
    assert "none is signed although evidence.public_keys is configured" in problems(report)


def test_rewritten_with_the_key_disagrees_with_the_checkpoint_file(
    calls: tuple[World, str, str],
) -> None:
    world, _, _ = calls
    rewrite(world, keys.signer(world.config))
    report = verify_all(world)
    path = world.config.evidence.checkpoints
    assert report.problems, "a database rewritten with the key went unnoticed"
    assert all(f"checkpoint file {path} line 1" in p.what for p in report.problems), problems(
        report
    )
    assert any("ledger_hash" in p.message for p in report.problems), problems(report)
    # The database alone is consistent: only the file outside it catches this rewrite.
    Path(path).rename(world.root / "elsewhere.jsonl")
    assert verify_all(world).ok


def test_checkpoint_deleted_from_the_database_is_named_by_the_file(
    calls: tuple[World, str, str],
) -> None:
    world, _, _ = calls
    drop_triggers(world)
    with world.db.session() as s:
        s.execute(delete(Checkpoint))
    report = verify_all(world)
    assert "checkpoint 1 is not in the database" in problems(report)


def test_verify_cli_exit_codes_and_names(calls: tuple[World, str, str], capsys: Any) -> None:
    world, record_id, _ = calls
    assert world.cli("verify", "--all") == 0
    assert world.cli("verify", record_id) == 0
    assert "OK" in capsys.readouterr().out
    with world.db.session() as s:
        record = s.get(ConsentRecord, record_id)
        assert record is not None
        record.outcome = "declined"
    assert world.cli("verify", "--all") == 1
    out = capsys.readouterr().out
    assert f"PROBLEM record {record_id} event" in out and "outcome" in out, out
    assert world.cli("verify", record_id) == 1
    assert world.cli("verify", "no-such-record") == 1
    assert "no consent record no-such-record" in capsys.readouterr().err


def test_schema_1_records_are_verified_with_a_warning(world: World) -> None:
    """Records from before the facts were chained: their events are checked, their facts
    cannot be, and verify says so."""
    with world.db.session() as s:
        call = Call(
            channel_id="old-1",
            direction="inbound",
            caller_number=None,
            called_number=None,
            campaign="default",
            language="ru",
            started_at=T0,
        )
        s.add(call)
        s.flush()
        record = ConsentRecord(
            schema_version="1",
            kind="consent",
            call_id=call.call_id,
            pii_principal_id="+79161234567",
            jurisdiction="RU",
            language="ru",
            campaign="default",
            purpose_id="marketing-calls",
            purpose={"id": "marketing-calls"},
            controller={"name": "X"},
            collection_method="ivr-keypad",
            direction="inbound",
            started_at=T0,
        )
        s.add(record)
        s.flush()
        chain.append(
            s,
            [
                (
                    record.record_id,
                    ChainEvidence(T0, "requested", None, {"purpose_id": "marketing-calls"}),
                )
            ],
        )
        rid = record.record_id
    report = verify_all(world)
    assert report.ok, problems(report)
    assert [(w.record, w.what) for w in report.warnings] == [(rid, "schema_version")]
