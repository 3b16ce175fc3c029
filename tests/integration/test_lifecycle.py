"""A consent's life after the call, on real SQLite and PostgreSQL: its derived state, expiry,
`may_contact`, withdrawal by every channel, the do-not-contact register, and the SMS that
confirms decisions (one per call, held until the call ends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import SmsJob
from consent_ivr.sms.outbox import decision_hook
from consent_ivr.store import chain, lifecycle, records
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.models import ConsentRecord, Suppression
from consent_ivr.store.records import NewCall, NewRecord, Subject

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
PHONE = "+79161234567"
CONTROLLER = {"name": "Example Ltd", "contact": "privacy@example.com"}
OFFERS = {"id": "offers", "text": "offers by phone", "validity": "P1Y", "retention": "P5Y"}
NEWS = {"id": "news", "text": "news by SMS", "validity": "P1D", "retention": "P5Y"}
SMS = SmsConfig(
    templates={
        "default": {
            lang: {
                d: f"{d}: {{purpose}} | {{decision}}"
                for d in ("granted", "declined", "withdrawn", "summary")
            }
            for lang in ("ru", "en")
        }
    }
)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def call(
    db: Database,
    *decisions: tuple[dict[str, Any], str | None],
    t: float = 0,
    phone: str = PHONE,
    hooks: list[Any] | None = None,
    finish: bool = True,
) -> list[str]:
    """One call deciding on each purpose given (None: no decision); the record ids."""
    new = NewCall(
        "ch",
        "inbound",
        "default",
        "en",
        "RU",
        CONTROLLER,
        at(t),
        Subject(phone, "caller-id", phone, "100"),
    )
    with db.session() as s:
        call_id, ids = records.open_call(s, new, [NewRecord("consent", p) for p, _ in decisions])
    for (_, outcome), record_id in zip(decisions, ids, strict=True):
        if outcome is not None:
            with db.session() as s:
                records.store_decision(
                    s, record_id, outcome, at(t) + timedelta(seconds=30), hooks=hooks or []
                )
    if finish:
        with db.session() as s:
            outcomes = {r: o or "abandoned" for r, (_, o) in zip(ids, decisions, strict=True)}
            records.finish_call(s, call_id, outcomes, at(t) + timedelta(minutes=1), [], None)
    return ids


def state(db: Database, purpose: str, hours: float, phone: str = PHONE) -> str:
    with db.session() as s:
        found = lifecycle.states(s, phone, purpose, at(hours)).get(purpose)
    return found.state if found else "none"


def may(db: Database, purpose: str, channel: str, hours: float, asking: bool = False) -> Any:
    with db.session() as s:
        return lifecycle.may_contact(s, PHONE, purpose, channel, asking=asking, at=at(hours))


def withdraw(db: Database, hours: float, purposes: list[str] | None = None, **kw: Any) -> list[str]:
    with db.session() as s:
        targets = lifecycle.active(s, PHONE, purposes, at(hours))
        # A call's start reads the same through Core (its withdrawal menu, in this order).
        rows = lifecycle.active_states(s, PHONE, purposes, at(hours))
        assert [r.record_id for r in rows] == [r.record_id for r in targets]
        done = lifecycle.withdraw(s, targets, at(hours), **{"channel": "operator", **kw})
        return [r.record_id for r in done]


def events(db: Database, record_id: str) -> list[Any]:
    with db.session() as s:
        return chain.events_of(s, record_id)


# ---- state ------------------------------------------------------------------------------------


def test_no_record_is_none_and_asking_is_allowed(database: Database) -> None:
    assert state(database, "offers", 1) == "none"
    no = may(database, "offers", "call", 1)
    assert (no.allowed, no.state, no.reason) == (False, "none", "no consent to offers")
    yes = may(database, "offers", "call", 1, asking=True)
    assert (yes.allowed, yes.state) == (True, "none")


def test_a_call_without_a_decision_changes_nothing(database: Database) -> None:
    call(database, (OFFERS, None))
    assert state(database, "offers", 1) == "none"


def test_given_allows_contact_on_both_channels(database: Database) -> None:
    [record_id] = call(database, (OFFERS, "granted"))
    assert state(database, "offers", 1) == "given"
    for channel in ("call", "sms"):
        verdict = may(database, "offers", channel, 1)
        assert verdict.allowed and verdict.record_id == record_id
    assert state(database, "news", 1) == "none"  # another purpose is another consent


def test_refused_blocks_even_asking(database: Database) -> None:
    [record_id] = call(database, (OFFERS, "declined"))
    assert state(database, "offers", 1) == "refused"
    verdict = may(database, "offers", "call", 1, asking=True)
    assert not verdict.allowed and verdict.record_id == record_id
    assert verdict.reason.startswith("refused (offers, all) on 2026-03-14T09:00:30")


def test_the_latest_decision_wins(database: Database) -> None:
    call(database, (OFFERS, "declined"))
    assert not may(database, "offers", "call", 2).allowed
    [later] = call(database, (OFFERS, "granted"), t=24)
    assert state(database, "offers", 25) == "given"
    verdict = may(database, "offers", "sms", 25)
    assert verdict.allowed and verdict.record_id == later
    call(database, (OFFERS, "declined"), t=48)
    assert state(database, "offers", 49) == "refused"


def test_expiry_is_derived_at_read_time(database: Database) -> None:
    [record_id] = call(database, (NEWS, "granted"))  # validity P1D
    assert state(database, "news", 23) == "given"
    assert state(database, "news", 25) == "expired"
    verdict = may(database, "news", "sms", 25)
    assert (verdict.allowed, verdict.state) == (False, "expired")
    assert verdict.reason == "the consent expired on 2026-03-15T09:00:30.000000Z"
    assert may(database, "news", "call", 25, asking=True).allowed
    with database.session() as s:
        assert records.record_view(s, record_id, at=at(25))["status"] == "expired"
        assert records.record_view(s, record_id, at=at(23))["status"] == "given"
        assert lifecycle.active(s, PHONE, at=at(25)) == []
        assert lifecycle.active_states(s, PHONE, at=at(25)) == []
        assert [r.record_id for r in lifecycle.active_states(s, PHONE, at=at(23))] == [record_id]


# ---- withdrawal -------------------------------------------------------------------------------


def test_operator_withdrawal_is_an_event_and_a_register_entry(database: Database) -> None:
    [record_id] = call(database, (OFFERS, "granted"))
    done = withdraw(database, 5, by="Anna", reason="letter of 2026-03-14")
    assert done == [record_id]
    assert state(database, "offers", 6) == "withdrawn"
    last = events(database, record_id)[-1]
    assert last.kind == "withdrawn"
    assert last.data == {
        "channel": "operator",
        "by": "Anna",
        "reason": "letter of 2026-03-14",
        "purpose_id": "offers",
    }
    verdict = may(database, "offers", "call", 6, asking=True)
    assert not verdict.allowed and "withdrew consent" in verdict.reason
    assert "letter of 2026-03-14" in verdict.reason
    with database.session() as s:
        found = lifecycle.states(s, PHONE, "offers", at(6))["offers"]
    assert (found.channel, found.since) == ("operator", at(5))
    assert withdraw(database, 7) == [], "nothing left to withdraw"
    assert [e.kind for e in events(database, record_id)].count("withdrawn") == 1


def test_a_withdrawal_follows_what_was_appended_while_it_waited(database: Database) -> None:
    """A withdrawal read the record, then another transaction appended to it and committed
    (the SMS worker's `sms_sent`, a STOP): the withdrawal goes after that event, and a record
    withdrawn meanwhile is not withdrawn twice."""
    [record_id] = call(database, (OFFERS, "granted"))
    with database.session() as s:
        targets = lifecycle.active(s, PHONE, None, at(5))
        with database.session() as other:
            chain.append(other, [(record_id, Evidence(at(4), "sms_sent", None, {"id": "j1"}))])
        done = lifecycle.withdraw(s, targets, at(5), channel="operator", by="Anna")
    assert [r.record_id for r in done] == [record_id]
    written = events(database, record_id)
    assert [e.kind for e in written][-2:] == ["sms_sent", "withdrawn"]
    assert chain.chain_problems(record_id, written) == []

    [again] = call(database, (OFFERS, "granted"), t=6)
    with database.session() as s:
        targets = lifecycle.active(s, PHONE, None, at(8))
        assert withdraw(database, 7) == [again]  # by another channel, meanwhile
        assert lifecycle.withdraw(s, targets, at(8), channel="operator", by="Anna") == []
    assert [e.kind for e in events(database, again)].count("withdrawn") == 1


def test_withdraw_one_of_two_purposes(database: Database) -> None:
    offers, news = call(database, (OFFERS, "granted"), (NEWS, "granted"))
    assert withdraw(database, 2, ["news"]) == [news]
    assert state(database, "offers", 3) == "given" and state(database, "news", 3) == "withdrawn"
    assert withdraw(database, 3) == [offers]
    assert state(database, "offers", 4) == "withdrawn"


def test_the_refusal_register_outlives_the_records(database: Database) -> None:
    """After erasure the records no longer name the number; the register still does."""
    [record_id] = call(database, (OFFERS, "granted"))
    withdraw(database, 2)
    with database.session() as s:
        record = s.get(ConsentRecord, record_id)
        assert record is not None
        record.pii_principal_id = None  # what erasure does to the record
    assert state(database, "offers", 3) == "none"
    verdict = may(database, "offers", "call", 3, asking=True)
    assert not verdict.allowed and "withdrew consent" in verdict.reason


def test_a_new_consent_replaces_an_old_refusal_but_not_an_operator_entry(
    database: Database,
) -> None:
    call(database, (OFFERS, "declined"))
    call(database, (OFFERS, "granted"), t=24)
    assert may(database, "offers", "sms", 25).allowed
    with database.session() as s:
        entry = lifecycle.suppress(
            s, PHONE, None, "operator", at(26), channel="sms", reason="complaint", by="Oleg"
        )
        s.flush()
        entry_id = entry.id
    blocked = may(database, "offers", "sms", 27)
    assert (
        not blocked.allowed and "do-not-contact" in blocked.reason and "complaint" in blocked.reason
    )
    assert may(database, "offers", "call", 27).allowed, "an sms-only entry leaves calls alone"
    with database.session() as s, pytest.raises(ValueError, match="only a new consent"):
        own = s.scalars(select(Suppression).where(Suppression.source == "refused")).one()
        lifecycle.lift(s, own.id, at(28))
    with database.session() as s:
        lifecycle.lift(s, entry_id, at(28))
    assert may(database, "offers", "sms", 29).allowed


def test_phone_withdrawal_points_at_the_call_that_carried_it(database: Database) -> None:
    offers, news = call(database, (OFFERS, "granted"), (NEWS, "granted"))
    new = NewCall(
        "ch2",
        "inbound",
        "default",
        "en",
        "RU",
        CONTROLLER,
        at(10),
        Subject(PHONE, "caller-id", PHONE, "100"),
    )
    with database.session() as s:
        call_id, [wrecord] = records.open_call(
            s, new, [NewRecord("withdrawal", {"offered": [offers, news]})]
        )
    with database.session() as s:
        done = lifecycle.store_phone_withdrawal(s, wrecord, [offers, news], at(10))
        assert [r.record_id for r in done] == [offers, news]
    with database.session() as s:
        records.finish_call(s, call_id, {wrecord: "withdrawn"}, at(10.1), [], None)
        w = records.record_view(s, wrecord)
    assert (w["kind"], w["outcome"], w["purpose"]) == ("withdrawal", "withdrawn", None)
    decision = next(e for e in w["events"] if e["kind"] == "withdrawal")
    assert decision["data"] == {"records": [offers, news], "purposes": ["offers", "news"]}
    for record_id in (offers, news):
        last = [e for e in events(database, record_id) if e.kind == "withdrawn"]
        assert len(last) == 1
        assert last[0].data["via_record"] == wrecord and last[0].data["via_call"] == call_id
        assert last[0].data["channel"] == "phone"
    assert state(database, "offers", 11) == state(database, "news", 11) == "withdrawn"


# ---- the confirmation SMS ---------------------------------------------------------------------


def jobs(db: Database) -> list[SmsJob]:
    with db.session() as s:
        return list(s.scalars(select(SmsJob).order_by(SmsJob.created_at)))


def test_one_sms_sums_up_a_call_and_waits_for_its_end(database: Database) -> None:
    hook = decision_hook(SMS)
    offers, news = call(
        database, (OFFERS, "granted"), (NEWS, "declined"), hooks=[hook], finish=False
    )
    [job] = jobs(database)
    assert job.status == "held" and job.record_ids == [offers, news]
    assert job.text == (
        "summary: offers by phone; news by SMS | offers by phone: you gave your "
        "consent; news by SMS: you declined"
    )
    assert "sms_enqueued" not in [e.kind for e in events(database, offers)]
    with database.session() as s:
        record = s.get(ConsentRecord, offers)
        assert record is not None
        records.finish_call(
            s, record.call_id, {offers: "granted", news: "declined"}, at(1), [], None
        )
    [job] = jobs(database)
    assert job.status == "queued"
    for record_id in (offers, news):
        enq = [e for e in events(database, record_id) if e.kind == "sms_enqueued"]
        assert len(enq) == 1 and enq[0].data["text"] == job.text and enq[0].data["job_id"] == job.id


def test_a_withdrawal_of_two_consents_is_one_sms_at_once(database: Database) -> None:
    offers, news = call(database, (OFFERS, "granted"), (NEWS, "granted"))
    withdraw(database, 3, hooks=[decision_hook(SMS)])
    [job] = jobs(database)
    assert job.status == "queued" and sorted(job.record_ids) == sorted([offers, news])
    assert job.text.startswith("withdrawn: ") and "offers by phone" in job.text
    assert "news by SMS" in job.text
    for record_id in (offers, news):
        kinds = [e.kind for e in events(database, record_id)]
        assert kinds[-2:] == ["withdrawn", "sms_enqueued"]
