"""Simulated customers: Local channels whose ;1 leg enters `consent-inbound` (the shipped
dialplan) and whose ;2 leg runs a scenario of `dialplan/consent-sim.conf`, pressing keys at
times derived from the real prompt lengths. Used by `consent-ivr demo`, the tests and the
benchmark."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
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


def seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def prompt_seconds(
    catalog: Catalog, campaign: str, lang: str, name: str, purpose: str | None = None
) -> float:
    return seconds(catalog.get(campaign, lang, name, purpose).path)


def timings(catalog: Catalog, campaign: str, lang: str) -> dict[str, str]:
    """SIM_T1: the first key, late in the question prompt (still a barge-in) so that a call
    whose first prompt started up to that much late still answers the question; SIM_T2: the
    next keys, once the choice has been stated back (keys during that statement do not count)
    and early in the prompt that follows."""
    first = catalog.config.campaigns[campaign].purposes[0]
    statement = prompt_seconds(catalog, campaign, lang, "notice") + prompt_seconds(
        catalog, campaign, lang, "purpose", first
    )
    t1 = statement + 0.8 * prompt_seconds(catalog, campaign, lang, "ask")
    stated = max(
        prompt_seconds(catalog, campaign, lang, p) for p in ("chosen_agree", "chosen_decline")
    )
    return {"__SIM_T1": f"{t1:.2f}", "__SIM_T2": f"{stated + 0.7:.2f}"}


def script(steps: list[tuple[float, str]]) -> dict[str, str]:
    """Variables of the `script` caller: after each wait (seconds), press those keys (several
    keys in one step go 100 ms apart: a double tap)."""
    return {
        "__SIM_WAITS": "/".join(f"{w:.2f}" for w, _ in steps),
        "__SIM_KEYS": "/".join(k for _, k in steps),
    }


async def place_call(
    ari: AriClient,
    catalog: Catalog,
    scenario: str,
    phone: str,
    *,
    channel_id: str,
    campaign: str,
    language: str,
    extension: str | None = None,
    variables: dict[str, str] | None = None,
) -> None:
    """Start one simulated inbound call; the service sees caller `phone` (empty: withheld)
    dialling `extension` (default: the caller's own digits)."""
    values = timings(catalog, campaign, language)
    values["CONSENT_CAMPAIGN"] = campaign
    values["CONSENT_LANGUAGE"] = language
    values.update(variables or {})
    await ari.originate(
        f"Local/{scenario}@consent-sim",
        channel_id=channel_id,
        context="consent-inbound",
        extension=extension or phone.lstrip("+") or "100",
        caller_id=phone or None,
        variables=values,
    )


def find_records(db: Database, channel_id: str) -> list[dict[str, Any]] | None:
    """The records of the call on `channel_id` (one per purpose), once the call has ended."""
    with db.session() as session:
        rows = session.execute(
            select(ConsentRecord.record_id, Call.ended_at)
            .join(Call, Call.call_id == ConsentRecord.call_id)
            .where(Call.channel_id == channel_id)
            .order_by(ConsentRecord.started_at, ConsentRecord.record_id)
        ).all()
        if not rows or any(r.ended_at is None for r in rows):
            return None
        return [record_view(session, r.record_id) for r in rows]


async def wait_for_records(db: Database, channel_id: str, timeout: float) -> list[dict[str, Any]]:
    """The records of the call on `channel_id` once the call has ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        views = await db.run(find_records, db, channel_id)
        if views is not None:
            return views
        await asyncio.sleep(0.25)
    raise TimeoutError(f"no finished record for channel {channel_id} within {timeout:.0f}s")


async def wait_for_record(db: Database, channel_id: str, timeout: float) -> dict[str, Any]:
    """The record of a one-purpose call (the first record of any call)."""
    return (await wait_for_records(db, channel_id, timeout))[0]
