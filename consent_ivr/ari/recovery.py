"""What the ARI app does at start so that no record stays open: calls left open by a crash of
this service instance are closed, and the journal of calls the database could not take is
written (consent_ivr.journal).

Theory of operation
-------------------
Several services may share one database, one per Asterisk, so each closes only its own calls:
a call row names the instance that took it (`node`: the ARI app @ Asterisk's entity id). At
start, every call of this node still open was cut short by a crash (SIGKILL, power loss):
its channel, if Asterisk still has it, is hung up politely; its recording, whose name the
record's first event keeps, is fetched once Asterisk has closed it; and each record is closed
with a `recovered` event and its outcome (a decision already stored stays; anything undecided
failed, on our side). The evidence collected in memory since the last write is lost with the
process; what the records hold was committed, with its hash chain intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_ivr import journal
from consent_ivr.ari.client import AriClient, AriError
from consent_ivr.calls import journal_dir, store_recording
from consent_ivr.clock import now, utc
from consent_ivr.config import Config
from consent_ivr.store import chain
from consent_ivr.store import records as store
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.models import Call

log = logging.getLogger(__name__)

REPLAY_EVERY_S = 10.0


async def node_of(ari: AriClient, app: str) -> str:
    """This instance's name in the calls it takes: the ARI app @ Asterisk's entity id."""
    try:
        info = await ari.info()
    except AriError:
        info = {}
    entity = (info.get("system") or {}).get("entity_id") or "asterisk"
    return f"{app}@{entity}"[:128]


@dataclass(frozen=True)
class OpenCall:
    call_id: str
    channel_id: str
    started_at: datetime
    records: dict[str, str | None]  # record id -> its outcome, if a decision was stored
    recording: str | None


def open_calls(session: Session, node: str) -> list[OpenCall]:
    found = []
    for call in session.scalars(
        select(Call).where(Call.node == node, Call.ended_at.is_(None)).order_by(Call.started_at)
    ):
        records = store.records_of_call(session, call.call_id)
        first = chain.events_of(session, records[0].record_id)[:1] if records else []
        recording = first[0].data.get("recording") if first else None
        found.append(
            OpenCall(
                call.call_id,
                call.channel_id,
                utc(call.started_at),
                {r.record_id: r.outcome for r in records},
                recording,
            )
        )
    return found


async def reconcile(
    ari: AriClient, db: Database, config: Config, node: str, recordings: Path
) -> int:
    """Close this node's calls left open by a crash (their recordings go to `recordings`, the
    resolved recordings folder); how many."""
    calls = await db.read(lambda s: open_calls(s, node))
    if not calls:
        return 0
    try:
        live = {c.get("id") for c in await ari.request("GET", "/channels")}
    except AriError:
        live = set()
    for call in calls:
        await _recover(ari, db, config, call, call.channel_id in live, recordings)
    log.warning("closed %d call(s) left open by an earlier run", len(calls))
    return len(calls)


async def _recover(
    ari: AriClient, db: Database, config: Config, call: OpenCall, live: bool, recordings: Path
) -> None:
    if live:
        with contextlib.suppress(AriError):
            await ari.hangup(call.channel_id)
    recording = None
    if call.recording:
        name, timeout = call.recording, config.flow.recording_stop_timeout_s
        try:
            recording = await store_recording(
                recordings,
                call.started_at,
                call.call_id,
                lambda writer: ari.closed_recording(name, timeout, writer),
            )
        except OSError as e:
            log.error("could not store the recovered recording %s: %s", call.recording, e)
    at = now()
    note = {
        "reason": "the service stopped without closing the call",
        "channel_found": live,
        "recording_recovered": recording is not None,
    }
    outcomes = {r: outcome or "failed" for r, outcome in call.records.items()}
    items = [(r, Evidence(at, "recovered", None, note)) for r in call.records]

    def close(session: Session) -> None:
        store.finish_call(session, call.call_id, outcomes, at, items, recording)

    try:
        await db.transaction(close)
    except Exception as e:
        log.error("could not close the call left open %s: %s", call.call_id, type(e).__name__)
        return
    if recording is not None and call.recording and not config.recordings.keep_on_asterisk:
        with contextlib.suppress(AriError):
            await ari.delete_stored_recording(call.recording)


async def replay_journal(ari: AriClient, db: Database, config: Config) -> int:
    """Write what the journal holds, if the database takes it now; how many calls."""
    folder = journal_dir(config)
    if not journal.pending(folder):
        return 0
    done = await asyncio.to_thread(journal.replay, db, folder)
    for data in done:
        name = data["call"].get("recording")
        if data.get("recording") and name and not config.recordings.keep_on_asterisk:
            with contextlib.suppress(AriError):
                await ari.delete_stored_recording(name)
    return len(done)


async def keep_replaying(ari: AriClient, db: Database, config: Config) -> None:
    """The journal, written as soon as the database answers again (runs until cancelled)."""
    while True:
        try:
            await replay_journal(ari, db, config)
        except Exception:
            log.exception("journal replay failed; trying again")
        await asyncio.sleep(REPLAY_EVERY_S)
