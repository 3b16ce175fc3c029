"""What a call needs besides its front: what it is about, what it says, and what it writes.

Shared by the fronts (the ARI app; the FastAGI server to come), which only translate between
their protocol and the flow (consent_ivr.flow):

- `CallSetup`: the call as the front received it (direction, campaign, language, the person).
- `CallPrompts`: the prompts of this call, static ones from the catalog and the per-call
  withdrawal prompts synthesized while the notice plays.
- `CallStore`: the database side: the active consents that make it a withdrawal call, the
  records it opens, the evidence it collects and writes, its decisions and its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from consent_ivr import flow as f
from consent_ivr.clock import now, utc
from consent_ivr.config import Config
from consent_ivr.prompts import ActiveConsent, Catalog, Prompt
from consent_ivr.store import lifecycle
from consent_ivr.store import records as store
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook, NewCall, NewRecord, RecordingInfo, Subject

log = logging.getLogger(__name__)

DECIDED = {f.Choice.AGREE: "granted", f.Choice.DECLINE: "declined", f.Choice.WITHDRAW: "withdrawn"}


@dataclass(frozen=True)
class CallSetup:
    direction: str  # inbound | outbound
    campaign: str
    language: str
    subject: Subject
    channel_id: str
    started_at: datetime
    recording: str | None = None  # the MixMonitor recording the dialplan started
    withdraw: bool = False  # the caller came to withdraw (a direct entry)


def brief(e: BaseException) -> str:
    """An exception in one line, without the SQL statement and parameters it may carry."""
    # SQLAlchemy wraps the driver's error; its own first line may be only a hint such as
    # "(raised as a result of Query-invoked autoflush; ...)", without the cause.
    orig = getattr(e, "orig", None)
    if isinstance(orig, BaseException):
        e = orig
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


class CallPrompts:
    """Resolves the flow's `Play(name, item)` to the prompt (text, audio, hash) of this call."""

    def __init__(
        self,
        catalog: Catalog,
        setup: CallSetup,
        purposes: Sequence[str],
        active: Sequence[ActiveConsent],
    ) -> None:
        self.catalog = catalog
        self.setup = setup
        self.purposes = list(purposes)
        self.active = list(active)
        self._dynamic: dict[tuple[str, int | None], asyncio.Task[Prompt]] = {}

    def prepare(self) -> None:
        """Start synthesizing the per-call prompts (in worker threads) before they are due."""
        if not self.active:
            return
        c, lang = self.setup.campaign, self.setup.language
        menu = self.catalog.menu_text(c, lang, self.active[: f.MENU_SIZE])
        self._spawn((f.MENU, None), menu)
        for i, consent in enumerate(self.active[: f.MENU_SIZE]):
            text = self.catalog.chosen_withdraw_text(c, lang, consent)
            self._spawn((f.CHOSEN_WITHDRAW, i), text)

    def _spawn(self, key: tuple[str, int | None], text: str) -> None:
        c, lang = self.setup.campaign, self.setup.language
        work = partial(self.catalog.speak, c, lang, key[0], text)
        self._dynamic[key] = asyncio.ensure_future(asyncio.to_thread(work))

    async def get(self, name: str, item: int | None) -> Prompt:
        if name in f.DYNAMIC:
            return await self._dynamic[(name, item)]
        purpose = self.purposes[item] if name == f.PURPOSE and item is not None else None
        return self.catalog.get(self.setup.campaign, self.setup.language, name, purpose)

    def close(self) -> None:
        for task in self._dynamic.values():
            task.cancel()


def active_consents(
    session: Session,
    phone: str,
    purposes: Sequence[str] | None = None,
    *,
    config: Config | None = None,
    language: str | None = None,
) -> list[ActiveConsent]:
    """The person's active consents as the withdrawal menu names them, in menu order: each
    purpose in the call's language when the config has it, else in its record's words."""

    def text(r: Any) -> str:
        configured = config.purposes.get(r.purpose_id or "") if config else None
        if configured is not None and language in configured.text:
            return configured.text[language]
        return str(r.purpose.get("text", ""))

    return [
        ActiveConsent(
            record_id=r.record_id,
            purpose_id=r.purpose_id or "",
            text=text(r),
            given_at=utc(r.status_at or r.started_at),
        )
        for r in lifecycle.active(session, phone, purposes)
    ]


class CallStore:
    """The database side of one call. Evidence is collected in memory as it happens and
    written with the next write (the records' opening, a decision, the end), to every record
    of the call, in order; what a failed write could not store stays pending for the next."""

    def __init__(
        self,
        db: Database,
        config: Config,
        setup: CallSetup,
        hooks: Sequence[DecisionHook],
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.db = db
        self.config = config
        self.setup = setup
        self.hooks = list(hooks)
        self.log = log
        _, campaign = config.campaign(setup.campaign)
        self.purposes = list(campaign.purposes)
        self.active: list[ActiveConsent] = []
        self.dialogue = f.Dialogue(purposes=tuple(self.purposes))
        self.pending: list[Evidence] = []
        self.ids: tuple[str, list[str]] | None = None  # (call_id, record_ids) once stored
        self._opening: asyncio.Task[None] | None = None

    async def prepare(self) -> f.Dialogue:
        """What the call is about: a withdrawal call when the caller has active consents."""
        identified = self.setup.subject.phone is not None
        if identified:
            try:
                self.active = await self.db.read(self._read_active)
            except Exception as e:
                # Without the database we cannot know; the consent question is the safe path.
                self.log.error("could not read the caller's active consents: %s", brief(e))
        self.dialogue = f.Dialogue(
            purposes=tuple(self.purposes),
            active=tuple(a.record_id for a in self.active[: f.MENU_SIZE]),
            withdraw=self.setup.withdraw,
            identified=identified,
        )
        return self.dialogue

    def _read_active(self, session: Session) -> list[ActiveConsent]:
        phone = self.setup.subject.phone
        assert phone is not None
        # Through the direct entry every active consent may go; else this campaign's.
        wanted = None if self.setup.withdraw else self.purposes
        return active_consents(
            session, phone, wanted, config=self.config, language=self.setup.language
        )

    def note(self, kind: str, data: dict[str, Any], at: datetime | None, step: f.Step) -> None:
        self.pending.append(Evidence(at or now(), kind, step.value, data))

    # ---- records ------------------------------------------------------------------------------

    def _new_records(self) -> list[NewRecord]:
        s = self.setup
        if self.dialogue.withdrawal:
            offered = [
                {"record_id": a.record_id, "purpose_id": a.purpose_id, "text": a.text}
                for a in self.active[: f.MENU_SIZE]
            ]
            return [NewRecord("withdrawal", {"offered": offered})]
        return [
            NewRecord("consent", self.config.purpose_snapshot(s.campaign, pid, s.language))
            for pid in self.purposes
        ]

    def _new_call(self) -> NewCall:
        s = self.setup
        _, campaign = self.config.campaign(s.campaign)
        return NewCall(
            channel_id=s.channel_id,
            direction=s.direction,
            campaign=s.campaign,
            language=s.language,
            jurisdiction=campaign.jurisdiction,
            controller=campaign.controller_view(s.language),
            started_at=s.started_at,
            subject=s.subject,
        )

    def _ensure_open(self, session: Session) -> tuple[str, list[str]]:
        if self.ids is None:
            self.ids = store.open_call(session, self._new_call(), self._new_records())
        return self.ids

    def open(self) -> None:
        """Store the call's start in the background, so that nothing waits for it."""
        self._opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        try:
            await self.db.transaction(self._ensure_open)
        except Exception as e:
            self.ids = None
            self.log.error(
                "could not store the call start (will retry with the decision): %s", brief(e)
            )

    async def _write(self, work: Any) -> None:
        """Write the pending evidence and `work`'s changes in one transaction; keep the
        evidence pending if it fails."""
        if self._opening:
            await self._opening
        batch = list(self.pending)
        opened_before = self.ids

        def tx(session: Session) -> None:
            call_id, record_ids = self._ensure_open(session)
            items = [(r, ev) for r in record_ids for ev in batch]
            work(session, call_id, record_ids, items)

        try:
            await self.db.transaction(tx)
        except Exception:
            self.ids = opened_before  # the insert rolled back with everything else
            raise
        del self.pending[: len(batch)]

    async def decide(self, persist: f.Persist) -> str | None:
        """Store a confirmed decision; None when stored, else the error (said as a failure)."""
        at = now()

        def consent(session: Session, _call: str, records: list[str], items: list[Any]) -> None:
            outcome = DECIDED[persist.choice]
            store.store_decision(session, records[persist.item], outcome, at, items, self.hooks)

        def withdrawal(session: Session, _call: str, records: list[str], items: list[Any]) -> None:
            targets = [self.active[t].record_id for t in persist.targets]
            lifecycle.store_phone_withdrawal(session, records[0], targets, at, items, self.hooks)

        try:
            await self._write(withdrawal if persist.choice is f.Choice.WITHDRAW else consent)
        except Exception as e:
            self.log.error("could not store the decision: %s", brief(e))
            what = {"outcome": DECIDED[persist.choice], "error": brief(e)}
            self.pending.append(Evidence(now(), "store_failed", f.Step.SAVING.value, what))
            return brief(e)
        return None

    async def finish(self, outcomes: Sequence[f.Outcome], recording: RecordingInfo | None) -> bool:
        ended = now()

        def work(session: Session, call_id: str, records: list[str], items: list[Any]) -> None:
            by_record = {r: o.value for r, o in zip(records, outcomes, strict=False)}
            for r in records:
                by_record.setdefault(r, f.Outcome.FAILED.value)
            store.finish_call(session, call_id, by_record, ended, items, recording)

        try:
            await self._write(work)
        except Exception as e:
            self.log.error(
                "could not store the end of the call (outcomes %s): %s",
                ",".join(o.value for o in outcomes),
                brief(e),
            )
            return False
        return True
