"""The consent lifecycle through a real Asterisk (22 with SQLite, 16 with PostgreSQL): withdrawal
by phone (one of two, all, or keep), the direct withdrawal entry, several purposes in one call,
the double tap that must not confirm, withheld caller IDs, and the number dialled.

Callers are scripted (`script` in dialplan/consent-sim.conf): each waits a time computed from
the real length of the prompts it will hear, then presses keys."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from consent_ivr.calls import active_consents
from consent_ivr.prompts import ActiveConsent
from consent_ivr.service import Service
from consent_ivr.simulate import (
    STATED_MARGIN_S,
    place_call,
    prompt_seconds,
    script,
    wait_for_records,
    withdrawal_steps,
)
from consent_ivr.sms.models import SmsJob
from consent_ivr.store import chain, lifecycle
from consent_ivr.store.records import record_view
from tests.e2e.conftest import assert_evidence, keys, prompts

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

LANG = "en"


def new_phone() -> str:
    return f"+7901{secrets.randbelow(10**7):07d}"


def seconds_of(
    svc: Service, name: str, campaign: str = "default", purpose: str | None = None
) -> float:
    return prompt_seconds(svc.app.catalog, campaign, LANG, name, purpose)


async def call(
    svc: Service,
    phone: str,
    scenario: str = "agree",
    *,
    campaign: str = "default",
    steps: list[tuple[float, str]] | None = None,
    extension: str | None = None,
) -> list[dict[str, Any]]:
    """One simulated call; the records it left once it ended."""
    channel_id = f"e2e-{uuid.uuid4().hex[:12]}"
    await place_call(
        svc.app.ari,
        svc.app.catalog,
        "script" if steps is not None else scenario,
        phone,
        channel_id=channel_id,
        campaign=campaign,
        language=LANG,
        extension=extension,
        variables=script(steps) if steps is not None else None,
    )
    return await wait_for_records(svc.db, channel_id, 150)


async def active(
    svc: Service, phone: str, purposes: list[str] | None = None
) -> list[ActiveConsent]:
    """The caller's active consents as the withdrawal menu will name them."""

    def read() -> list[ActiveConsent]:
        with svc.db.session() as s:
            return active_consents(s, phone, purposes)

    return await svc.db.run(read)


async def menu_steps(
    svc: Service, phone: str, menu_key: str, campaign: str = "default", direct: bool = False
) -> list[tuple[float, str]]:
    purposes = None if direct else list(svc.config.campaigns[campaign].purposes)
    consents = await active(svc, phone, purposes)
    return await asyncio.to_thread(
        withdrawal_steps, svc.app.catalog, campaign, LANG, consents, menu_key
    )


def events(svc: Service, record_id: str) -> list[Any]:
    with svc.db.session() as s:
        return chain.events_of(s, record_id)


def view(svc: Service, record_id: str) -> dict[str, Any]:
    with svc.db.snapshot() as s:  # the head and the events at one moment, as `show` reads them
        return record_view(s, record_id)


def sms_jobs(svc: Service, record_id: str) -> list[SmsJob]:
    with svc.db.session() as s:
        jobs = s.scalars(select(SmsJob).order_by(SmsJob.created_at)).all()
        return [j for j in jobs if record_id in j.record_ids]


async def sms_settled(svc: Service, record_id: str, template: str) -> SmsJob:
    """The record's SMS with `template`, once the worker has sent it through the log gateway."""
    for _ in range(100):
        found = [j for j in await svc.db.run(sms_jobs, svc, record_id) if j.decision == template]
        if found and found[0].status not in ("held", "queued", "sending"):
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no sent {template} SMS for record {record_id}")


def logged_texts(svc: Service) -> list[str]:
    file = svc.config.sms.log.file
    lines = file.read_text(encoding="utf-8").splitlines() if file.exists() else []
    return [json.loads(line)["text"] for line in lines]


# ---- withdrawal by phone ----------------------------------------------------------------------


async def test_granted_then_withdrawn_by_a_second_call(service: Service) -> None:
    phone = new_phone()
    [first] = await call(service, phone, "agree")
    assert first["outcome"] == "granted" and first["status"] == "given"

    [second] = await call(service, phone, steps=await menu_steps(service, phone, "1"))
    assert second["kind"] == "withdrawal" and second["outcome"] == "withdrawn"
    assert second["phone"] == phone
    assert prompts(second) == [
        "notice",
        "menu",
        "chosen_withdraw",
        "confirm",
        "recorded_withdraw",
        "goodbye",
    ]
    assert keys(second) == [("1", "menu", True), ("1", "confirm", True)]
    menu = next(p for p in second["prompts"] if p["prompt"] == "menu")
    assert "offers: press 1." in menu["text"]
    assert second["purpose_details"]["offered"][0]["record_id"] == first["record_id"]
    assert_evidence(second)

    again = view(service, first["record_id"])
    assert again["status"] == "withdrawn"
    withdrawn = [e for e in events(service, first["record_id"]) if e.kind == "withdrawn"]
    assert len(withdrawn) == 1
    assert withdrawn[0].data["via_record"] == second["record_id"]
    assert withdrawn[0].data["via_call"] == second["call"]["call_id"]
    assert withdrawn[0].data["channel"] == "phone"
    assert again["integrity"]["chain_ok"], again["integrity"]["problems"]

    def state() -> lifecycle.ConsentState:
        with service.db.session() as s:
            return lifecycle.states(s, phone)["e2e-offers"]

    assert (await service.db.run(state)).state == "withdrawn"
    job = await sms_settled(service, first["record_id"], "withdrawn")
    assert set(job.record_ids) == {second["record_id"], first["record_id"]}
    assert job.text in logged_texts(service)

    [third] = await call(service, phone, "agree")  # nothing active: asked for consent again
    assert third["kind"] == "consent" and third["outcome"] == "granted"


async def test_withdraw_one_of_two_then_all(service: Service) -> None:
    phone = new_phone()
    offers, news = await call(
        service, phone, steps=two_purpose_steps(service, "1", "1"), campaign="two"
    )
    assert (offers["outcome"], news["outcome"]) == ("granted", "granted")
    consents = await active(service, phone, ["e2e-offers", "e2e-news"])
    assert len(consents) == 2

    # Menu key 2 names the second active consent (the newest decision comes first).
    steps = await menu_steps(service, phone, "2", campaign="two")
    [w1] = await call(service, phone, steps=steps, campaign="two")
    assert w1["outcome"] == "withdrawn"
    decision = next(e for e in w1["events"] if e["kind"] == "withdrawal")
    assert decision["data"]["records"] == [consents[1].record_id]
    left = await active(service, phone)
    assert [c.record_id for c in left] == [consents[0].record_id]

    # Two consents are active again after offers is agreed to anew; then "all" (key 9).
    [again] = await call(service, phone, "agree")
    assert again["outcome"] == "granted" and again["purpose"] == "e2e-offers"
    steps = await menu_steps(service, phone, "9", campaign="two")
    [w2] = await call(service, phone, steps=steps, campaign="two")
    assert w2["outcome"] == "withdrawn"
    assert "chosen_withdraw_all" in prompts(w2)
    assert await active(service, phone) == []
    decision = next(e for e in w2["events"] if e["kind"] == "withdrawal")
    assert len(decision["data"]["records"]) == 2


async def test_keep_and_the_direct_entry(service: Service) -> None:
    phone = new_phone()
    nothing = await call(
        service, phone, steps=[(1.0, "1")], extension="withdraw"
    )  # nothing to withdraw
    assert [(v["kind"], v["outcome"]) for v in nothing] == [("withdrawal", "nothing_active")]
    assert prompts(nothing[0]) == ["notice", "nothing_active", "goodbye"]
    assert keys(nothing[0]) == [("1", "notice", False)]

    await call(service, phone, "agree")
    keep = await menu_steps(service, phone, "0")
    [kept] = await call(service, phone, steps=keep[:1])
    assert kept["outcome"] == "kept" and prompts(kept)[-2:] == ["kept", "goodbye"]
    assert len(await active(service, phone)) == 1

    steps = await menu_steps(service, phone, "1", campaign="news", direct=True)
    [direct] = await call(service, phone, steps=steps, extension="withdraw", campaign="news")
    assert direct["outcome"] == "withdrawn", "the direct entry offers every active consent"
    assert await active(service, phone) == []


# ---- one call, several purposes ---------------------------------------------------------------


def two_purpose_steps(svc: Service, first: str, second: str) -> list[tuple[float, str]]:
    s = lambda name, purpose=None: seconds_of(svc, name, "two", purpose)  # noqa: E731
    stated = max(s("chosen_agree"), s("chosen_decline"))
    t1 = s("notice") + s("purpose", "e2e-offers") + 0.8 * s("ask")
    recorded = s("recorded_agree") if first == "1" else s("recorded_decline")
    # After the confirm key: the decision's commit, "recorded", the next purpose, its question.
    t3 = 0.3 + recorded + s("purpose", "e2e-news") + 0.8 * s("ask")
    return [
        (t1, first),
        (stated + STATED_MARGIN_S, "1"),
        (t3, second),
        (stated + STATED_MARGIN_S, "1"),
    ]


async def test_two_purposes_agree_to_one_decline_the_other(service: Service) -> None:
    phone = new_phone()
    offers, news = await call(
        service, phone, steps=two_purpose_steps(service, "1", "2"), campaign="two"
    )
    assert (offers["purpose"], news["purpose"]) == ("e2e-offers", "e2e-news")
    assert (offers["outcome"], news["outcome"]) == ("granted", "declined")
    assert (offers["status"], news["status"]) == ("given", "refused")
    assert offers["call"]["call_id"] == news["call"]["call_id"]
    assert offers["recording"] == news["recording"], "one call, one recording"
    assert [p["prompt"] for p in offers["prompts"]] == [
        "notice",
        "purpose",
        "ask",
        "chosen_agree",
        "confirm",
        "recorded_agree",
        "purpose",
        "ask",
        "chosen_decline",
        "confirm",
        "recorded_decline",
        "goodbye",
    ]
    assert [k["purpose"] for k in offers["keys"]] == ["e2e-offers"] * 2 + ["e2e-news"] * 2
    for v in (offers, news):
        assert_evidence(v)
    job = await sms_settled(service, offers["record_id"], "summary")
    assert job.record_ids == [offers["record_id"], news["record_id"]]
    assert "offers: you gave your consent" in job.text and "news: you declined" in job.text
    assert sum(job.text == t for t in logged_texts(service)) == 1


async def test_expiry_by_validity(service: Service) -> None:
    [news] = await call(service, new_phone(), campaign="news")  # validity PT1M
    assert news["outcome"] == "granted"
    decided = datetime.fromisoformat(news["decided_at"])
    assert datetime.fromisoformat(news["expires_at"]) == decided + timedelta(minutes=1)
    with service.db.snapshot() as s:
        assert (
            record_view(s, news["record_id"], at=decided + timedelta(seconds=59))["status"]
            == "given"
        )
        later = record_view(s, news["record_id"], at=decided + timedelta(seconds=61))
        assert later["status"] == "expired"
        state = lifecycle.states(s, news["phone"], "e2e-news", decided + timedelta(seconds=61))
        assert state["e2e-news"].state == "expired"


# ---- the double tap ---------------------------------------------------------------------------


async def test_a_double_tap_does_not_confirm(service: Service) -> None:
    s = lambda name, purpose=None: seconds_of(service, name, "default", purpose)  # noqa: E731
    t1 = s("notice") + s("purpose", "e2e-offers") + 0.8 * s("ask")
    stated = s("chosen_agree")
    tapped, confirmed = await asyncio.gather(
        call(service, new_phone(), steps=[(t1, "11")]),
        call(service, new_phone(), steps=[(t1, "11"), (stated + STATED_MARGIN_S, "1")]),
    )
    only = tapped[0]
    assert only["outcome"] == "no_response", keys(only)
    assert keys(only)[:2] == [("1", "ask", True), ("1", "chosen", False)]
    first, second = (datetime.fromisoformat(k["at"]) for k in only["keys"][:2])
    assert second - first < timedelta(milliseconds=150), "the two keys were not a double tap"
    assert "given" not in [e["kind"] for e in only["events"]]

    v = confirmed[0]
    assert v["outcome"] == "granted"
    assert keys(v) == [("1", "ask", True), ("1", "chosen", False), ("1", "confirm", True)]
    assert_evidence(v)


# ---- who called whom --------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["", "anonymous"], ids=["empty", "anonymous"])
async def test_a_withheld_number_is_never_a_consent_subject(service: Service, caller: str) -> None:
    [v] = await call(service, caller, "agree", extension="74951230000")
    assert v["outcome"] == "unidentified" and v["phone"] is None
    assert prompts(v) == ["notice", "unidentified", "goodbye"]
    assert all(not acted for _, _, acted in keys(v))
    assert v["call"]["called_number"] == "74951230000"
    assert v["phone_source"] == "caller-id"
    assert_evidence(v)


async def test_the_dialled_number_is_stored(service: Service) -> None:
    phone = new_phone()
    [v] = await call(service, phone, "agree", extension="74951230000")
    assert v["outcome"] == "granted"
    assert v["call"]["called_number"] == "74951230000"
    assert v["call"]["caller_number"] == phone
