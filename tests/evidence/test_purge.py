"""Retention and erasure: a withdrawn consent's recording and numbers are gone after
`erase_after_withdrawal`, a given one within its retention is untouched, `verify --all`
still passes and says "erased by policy on DATE", `--dry-run` changes nothing, a recording
shared by two records of a call goes with the last of them, and given consents whose
validity ran out get their `expired` event."""

from __future__ import annotations

import zipfile
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from consent_ivr.clock import utc
from consent_ivr.evidence import bundle, purge, verify
from consent_ivr.store import lifecycle
from consent_ivr.store.chain import events_of
from consent_ivr.store.models import Call, ConsentEvent, ConsentRecord, Suppression
from consent_ivr.store.records import Evidence, append_evidence
from tests.evidence.calls import CALLED, sha256
from tests.evidence.conftest import PHONE, T0, World

pytestmark = pytest.mark.integration

WITHDRAWN_AT = T0 + timedelta(days=2)
AFTER_30_DAYS = WITHDRAWN_AT + timedelta(days=30, seconds=1)


def snapshot(world: World) -> dict[str, Any]:
    """Everything a purge could change: rows, events, files."""
    with world.db.session() as s:
        rows = [
            (r.record_id, r.pii_principal_id, r.subject_salt, r.erased_at, r.status, r.head_seq)
            for r in s.scalars(select(ConsentRecord).order_by(ConsentRecord.record_id))
        ]
        calls = [
            (c.call_id, c.caller_number, c.called_number, c.erased_at)
            for c in s.scalars(select(Call).order_by(Call.call_id))
        ]
        events = s.scalar(select(func.count()).select_from(ConsentEvent))
    files = sorted(str(p) for p in (world.root / "recordings").iterdir())
    return {"records": rows, "calls": calls, "events": events, "files": files}


def verify_all(world: World, at: datetime) -> Any:
    with world.db.session() as s:
        return verify.verify_all(s, world.config)


def test_withdrawn_consent_is_erased_after_the_period_and_a_given_one_is_not(
    world: World,
) -> None:
    withdrawn = world.store_call()
    kept = world.store_call(at=T0 + timedelta(hours=1))
    world.withdraw(withdrawn.record_id, WITHDRAWN_AT)
    assert withdrawn.recording is not None and kept.recording is not None
    kept_sha = sha256(kept.recording)

    assert not purge.run(world.db, world.config, at=AFTER_30_DAYS - timedelta(days=1))
    before = snapshot(world)
    plan = purge.run(world.db, world.config, dry_run=True, at=AFTER_30_DAYS)
    assert [e.record_id for e in plan.erasures] == [withdrawn.record_id]
    assert plan.erasures[0].policy == "erase_after_withdrawal"
    assert plan.erasures[0].period == "P30D"
    assert snapshot(world) == before, "--dry-run changed something"

    done = purge.run(world.db, world.config, at=AFTER_30_DAYS)
    assert [e.record_id for e in done.erasures] == [withdrawn.record_id]
    assert done.deleted == [str(withdrawn.recording)]
    assert not withdrawn.recording.exists()
    with world.db.session() as s:
        record = s.get(ConsentRecord, withdrawn.record_id)
        assert record is not None
        call = s.get(Call, record.call_id)
        assert call is not None
        assert (record.pii_principal_id, record.subject_salt) == (None, None)
        assert utc(record.erased_at) == AFTER_30_DAYS  # type: ignore[arg-type]
        assert (call.caller_number, call.called_number) == (None, None)
        assert call.recording_sha256 is not None  # the tombstone keeps the hash
        erased = events_of(s, withdrawn.record_id)[-1]
        assert erased.kind == "erased"
        assert erased.data["policy"] == "erase_after_withdrawal"
        assert erased.data["recording_sha256"] == call.recording_sha256
        assert set(erased.data["erased"]) == {
            "phone",
            "subject_salt",
            "caller_number",
            "called_number",
            "recording",
        }
        # The do-not-contact register keeps the number: the withdrawal is still obeyed.
        assert s.scalars(select(Suppression.phone)).all() == [PHONE]
        assert lifecycle.may_contact(s, PHONE, "marketing-calls", "call").allowed is False
        untouched = s.get(ConsentRecord, kept.record_id)
        assert untouched is not None
        assert untouched.pii_principal_id == PHONE and untouched.erased_at is None
        assert [e.kind for e in events_of(s, kept.record_id)].count("erased") == 0
        assert s.get(Call, untouched.call_id).caller_number == PHONE  # type: ignore[union-attr]
    assert sha256(kept.recording) == kept_sha

    report = verify_all(world, AFTER_30_DAYS)
    assert report.ok, "\n".join(report.lines())
    notes = [str(n) for n in report.notes]
    assert notes == [
        f"record {withdrawn.record_id} event {erased.seq} erased: erased by policy on "
        f"{AFTER_30_DAYS.date().isoformat()} (erase_after_withdrawal P30D)"
    ]
    # A second run finds nothing more to do.
    assert not purge.run(world.db, world.config, at=AFTER_30_DAYS + timedelta(days=1))
    # The tombstone's bundle holds no number and no recording, and verifies.
    out = world.root / "erased.zip"
    assert bundle.export(world.db, world.config, withdrawn.record_id, out).ok
    with zipfile.ZipFile(out) as z:
        assert "recording.wav" not in z.namelist()
        assert PHONE not in z.read("record.json").decode()
    report = bundle.verify_bundle(out)
    assert report.ok and "erased by policy on" in str(report.notes[0])


def test_records_past_retention_are_erased(world: World) -> None:
    old = world.store_call()
    declined = world.store_call(outcome="declined")
    five_years = datetime(2031, 3, 14, 9, 27, 10, tzinfo=T0.tzinfo)
    assert not purge.run(world.db, world.config, at=five_years - timedelta(days=1)).erasures
    done = purge.run(world.db, world.config, at=five_years)
    assert {e.record_id for e in done.erasures} == {old.record_id, declined.record_id}
    assert {e.policy for e in done.erasures} == {"retention"}
    assert verify_all(world, five_years).ok


def test_a_recording_shared_by_two_records_goes_with_the_last(world: World) -> None:
    stored = world.store_call(purposes=("marketing-calls", "marketing-calls"))
    first, second = stored.record_ids
    assert stored.recording is not None
    world.withdraw(first, WITHDRAWN_AT)
    purge.run(world.db, world.config, at=AFTER_30_DAYS)
    assert stored.recording.exists(), "deleted while another record still holds it"
    with world.db.session() as s:
        call = s.get(Call, stored.call_id)
        assert call is not None
        assert (call.caller_number, call.called_number, call.erased_at) == (PHONE, CALLED, None)
        erased = events_of(s, first)[-1]
        assert set(erased.data["erased"]) == {"phone", "subject_salt"}
    assert verify_all(world, AFTER_30_DAYS).ok
    world.withdraw(second, AFTER_30_DAYS)
    later = AFTER_30_DAYS + timedelta(days=31)
    purge.run(world.db, world.config, at=later)
    assert not stored.recording.exists()
    report = verify_all(world, later)
    assert report.ok and len(report.notes) == 2, "\n".join(report.lines())


def test_given_consents_get_their_expired_event(world: World) -> None:
    stored = world.store_call()
    year_later = T0 + timedelta(days=366)
    assert not purge.run(world.db, world.config, at=T0 + timedelta(days=300)).expiries
    plan = purge.run(world.db, world.config, at=year_later)
    assert [e.record_id for e in plan.expiries] == [stored.record_id]
    with world.db.session() as s:
        record = s.get(ConsentRecord, stored.record_id)
        assert record is not None
        expected = lifecycle.expires_at(record)
        assert record.status == "expired" and utc(record.status_at) == expected  # type: ignore[arg-type]
        last = events_of(s, stored.record_id)[-1]
        assert (last.kind, last.data["validity"]) == ("expired", "P1Y")
        assert lifecycle.record_state(record, year_later) == "expired"
    assert not purge.run(world.db, world.config, at=year_later).expiries
    assert verify_all(world, year_later).ok


def test_purge_command_dry_run_and_run(world: World, capsys: Any) -> None:
    stored = world.store_call(at=datetime(2019, 1, 10, tzinfo=T0.tzinfo))
    before = snapshot(world)
    assert world.cli("purge", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would erase: record {stored.record_id}" in out and "retention P5Y" in out, out
    assert snapshot(world) == before
    assert world.cli("purge") == 0
    out = capsys.readouterr().out
    assert f"erase: record {stored.record_id}" in out and f"deleted {stored.recording}" in out
    assert world.cli("verify", "--all") == 0
    assert "erased by policy on" in capsys.readouterr().out


def test_the_sms_number_goes_when_every_record_it_confirmed_is_erased(world: World) -> None:
    from consent_ivr.sms.models import SmsJob

    stored = world.store_call(purposes=("marketing-calls", "marketing-calls"))
    first, second = stored.record_ids
    decided = T0 + timedelta(seconds=9)
    with world.db.session() as s:
        job = SmsJob(
            record_id=first,
            record_ids=[first, second],
            call_id=stored.call_id,
            decision="granted",
            decided_at=decided,
            campaign="default",
            language="en",
            phone=PHONE,
            text="Your consents are recorded.",
            encoding="gsm7",
            segments=1,
            status="delivered",
            created_at=decided,
            next_attempt_at=decided,
        )
        s.add(job)
        s.flush()
        data = {"job_id": job.id, "text": job.text, "status": "queued"}
        enqueued = Evidence(decided, "sms_enqueued", None, data)
        append_evidence(s, [(first, enqueued), (second, enqueued)])
        job_id = job.id
    world.withdraw(first, WITHDRAWN_AT)
    purge.run(world.db, world.config, at=AFTER_30_DAYS)
    with world.db.session() as s:
        assert s.get(SmsJob, job_id).phone == PHONE  # type: ignore[union-attr]
    world.withdraw(second, AFTER_30_DAYS)
    later = AFTER_30_DAYS + timedelta(days=31)
    purge.run(world.db, world.config, at=later)
    with world.db.session() as s:
        assert s.get(SmsJob, job_id).phone == ""  # type: ignore[union-attr]
        erased = events_of(s, second)[-1]
        assert "sms_phone" in erased.data["erased"] and erased.data["sms_jobs"] == [job_id]
    assert verify_all(world, later).ok
