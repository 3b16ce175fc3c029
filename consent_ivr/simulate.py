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
from consent_ivr.prompts import ActiveConsent, Catalog
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call
from consent_ivr.store.records import record_view, records_of_call

# The confirm key comes this long after the choice said back should have ended: late enough
# for a loaded Asterisk's late playback, early in the confirmation prompt (barge-in).
STATED_MARGIN_S = 1.5

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
    return {"__SIM_T1": f"{t1:.2f}", "__SIM_T2": f"{stated + STATED_MARGIN_S:.2f}"}


def withdrawal_steps(
    catalog: Catalog, campaign: str, lang: str, consents: list[ActiveConsent], key: str
) -> list[tuple[float, str]]:
    """A caller with `consents` active: through the notice and half the menu, press `key`;
    once the choice is stated back, confirm. Blocking (synthesizes the per-call prompts the
    service will play, to know their length)."""
    keys = catalog.config.campaigns[campaign].keys
    menu = catalog.speak(campaign, lang, "menu", catalog.menu_text(campaign, lang, consents))
    if key == keys.withdraw_all:
        stated = prompt_seconds(catalog, campaign, lang, "chosen_withdraw_all")
    elif key.isdigit() and 1 <= int(key) <= len(consents):
        text = catalog.chosen_withdraw_text(campaign, lang, consents[int(key) - 1])
        stated = seconds(catalog.speak(campaign, lang, "chosen_withdraw", text).path)
    else:
        return [(prompt_seconds(catalog, campaign, lang, "notice") + seconds(menu.path) / 2, key)]
    first = prompt_seconds(catalog, campaign, lang, "notice") + 0.6 * seconds(menu.path)
    return [(first, key), (stated + STATED_MARGIN_S, keys.confirm)]


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


def find_records(
    db: Database, channel_id: str, *, finished: bool = True
) -> list[dict[str, Any]] | None:
    """The records of the call on `channel_id` (one per purpose), once the call has ended
    (or, with `finished` false, once its start is stored)."""
    with db.snapshot() as session:
        call = session.scalars(select(Call).where(Call.channel_id == channel_id)).first()
        if call is None or (finished and call.ended_at is None):
            return None
        return [record_view(session, r.record_id) for r in records_of_call(session, call.call_id)]


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
