"""Simulated customers: Local channels whose ;1 leg enters `consent-inbound` (the shipped
dialplan) and whose ;2 leg runs a scenario of `dialplan/consent-sim.conf`, pressing keys at
times derived from the real prompt lengths. Used by `consent-ivr demo`, the tests and the
benchmark."""

from __future__ import annotations

import asyncio
import wave
from typing import Any

from sqlalchemy import select

from consent_ivr.ari.client import AriClient
from consent_ivr.prompts import Catalog
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call, ConsentRecord
from consent_ivr.store.records import record_view

SCENARIOS = (
    "agree",
    "decline",
    "change",
    "silence",
    "wrong",
    "early",
    "hangup-notice",
    "hangup-between",
)


def prompt_seconds(catalog: Catalog, campaign: str, lang: str, name: str) -> float:
    with wave.open(str(catalog.get(campaign, lang, name).path)) as w:
        return w.getnframes() / w.getframerate()


def timings(catalog: Catalog, campaign: str, lang: str) -> dict[str, str]:
    """SIM_T1: the first key, late in the question prompt (still a barge-in) so that a call
    whose first prompt started up to that much late still answers the question; SIM_T2: the
    next keys, early in the prompt that follows."""
    statement = sum(prompt_seconds(catalog, campaign, lang, p) for p in ("notice", "purpose"))
    t1 = statement + 0.8 * prompt_seconds(catalog, campaign, lang, "ask")
    return {"__SIM_T1": f"{t1:.2f}", "__SIM_T2": "1.5"}


async def place_call(
    ari: AriClient,
    catalog: Catalog,
    scenario: str,
    phone: str,
    *,
    channel_id: str,
    campaign: str,
    language: str,
) -> None:
    """Start one simulated inbound call; the service sees caller `phone`."""
    variables = timings(catalog, campaign, language)
    variables["CONSENT_CAMPAIGN"] = campaign
    variables["CONSENT_LANGUAGE"] = language
    await ari.originate(
        f"Local/{scenario}@consent-sim",
        channel_id=channel_id,
        context="consent-inbound",
        extension=phone.lstrip("+"),
        caller_id=phone,
        variables=variables,
    )


def find_record(db: Database, channel_id: str, *, finished: bool = True) -> dict[str, Any] | None:
    with db.session() as session:
        row = session.execute(
            select(ConsentRecord.record_id, Call.ended_at)
            .join(Call, Call.call_id == ConsentRecord.call_id)
            .where(Call.channel_id == channel_id)
        ).first()
        if row is None or (finished and row.ended_at is None):
            return None
        return record_view(session, row.record_id)


async def wait_for_record(db: Database, channel_id: str, timeout: float) -> dict[str, Any]:
    """The record of the call on `channel_id` once the call has ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        view = await db.run(find_record, db, channel_id)
        if view is not None:
            return view
        await asyncio.sleep(0.25)
    raise TimeoutError(f"no finished record for channel {channel_id} within {timeout:.0f}s")
