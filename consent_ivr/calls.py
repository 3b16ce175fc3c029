"""What a call needs besides its front: what it is about, what it says, and what it writes.

Shared by the fronts (the ARI app, the FastAGI server), which only translate between their
protocol and the flow (consent_ivr.flow):

- `parse_args` and `describe_call`: what the dialplan says about the call (Stasis or AGI
  arguments), checked, as a `CallSetup`; `BadArgs` when the call cannot be taken.

- `CallSetup`: the call as the front received it (direction, campaign, language, the person).
- `CallPrompts`: the prompts of this call, static ones from the catalog and the per-call
  withdrawal prompts synthesized while the notice plays.
- `CallStore`: the database side: the active consents that make it a withdrawal call, the
  records it opens, the evidence it collects and writes, its decisions and its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from consent_ivr import audio, journal, metrics
from consent_ivr import flow as f
from consent_ivr.api import jsonlog
from consent_ivr.clock import now, utc
from consent_ivr.config import Campaign, Config
from consent_ivr.phone import mask, to_e164
from consent_ivr.prompts import ActiveConsent, Catalog, Prompt
from consent_ivr.store import lifecycle
from consent_ivr.store import records as store
from consent_ivr.store.chain import Evidence
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook, NewCall, NewRecord, RecordingInfo, Subject

log = logging.getLogger(__name__)

# How long the answer waits for the call's start to be stored (see CallStore.opened).
OPEN_BEFORE_ANSWER_S = 0.25

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
    node: str | None = None  # the service instance taking the call (see store.models.Call)


# ---- what the dialplan says about the call -------------------------------------------------

ARG_KEYS = ("campaign", "language", "recording", "called", "withdraw", "phone")
_SAFE = re.compile(r"^[A-Za-z0-9_.+-]{0,64}$")
WITHHELD = {"", "anonymous", "unknown", "restricted", "private", "unavailable", "withheld"}


class BadArgs(ValueError):
    """Call arguments that cannot describe a call; the message is safe to log. `key` names the
    argument at fault when there is one."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


def parse_args(args: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The direction (`inbound` or `outbound`) and the `key=value` pairs that follow it."""
    direction = args[0] if args else "inbound"
    if direction not in ("inbound", "outbound"):
        raise BadArgs(f"first argument must be inbound or outbound, got {direction[:20]!r}")
    pairs: dict[str, str] = {}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in ARG_KEYS:
            raise BadArgs(f"expected key=value with key in {ARG_KEYS}, got {key[:20]!r}")
        if not _SAFE.match(value):
            raise BadArgs(f"{key}: unexpected characters", key)
        pairs[key] = value
    return direction, pairs


def pick_campaign(
    config: Config, name: str | None, language: str | None
) -> tuple[str, Campaign, str]:
    """The campaign (the default one for None) and the language it speaks (its default for
    None); BadArgs naming what is wrong."""
    try:
        name, campaign = config.campaign(name or None)
    except KeyError:
        raise BadArgs(
            f"unknown campaign {name!r} (configured: {', '.join(sorted(config.campaigns))})",
            "campaign",
        ) from None
    language = language or campaign.language
    if language not in campaign.languages:
        raise BadArgs(
            f"campaign {name} has no language {language!r} "
            f"(it speaks {', '.join(campaign.languages)})",
            "language",
        )
    return name, campaign, language


def describe_call(
    config: Config,
    direction: str,
    args: dict[str, str],
    *,
    caller: str,
    exten: str,
    connected: str,
    channel_id: str,
    started_at: datetime,
    recording: str | None = None,
) -> CallSetup:
    """The call a front received: the person of an inbound call is the caller (a withheld or
    unusable number makes the call unidentified); of an outbound call, `phone=` or else the
    number dialled. BadArgs when the call cannot be taken."""
    name, _, language = pick_campaign(config, args.get("campaign"), args.get("language"))
    region = config.default_region
    if direction == "inbound":
        called = args.get("called") or (exten if exten != "s" else "") or None
        phone = None
        if caller.strip().lower() not in WITHHELD:
            phone = to_e164(caller, region)
        subject = Subject(phone, "caller-id", caller or None, called)
    else:
        raw = args.get("phone") or connected or exten
        phone = to_e164(raw, region)
        if phone is None:
            raise BadArgs(f"outbound call to {mask(raw)}: not a phone number", "phone")
        subject = Subject(phone, "dialled", caller or None, phone)
    return CallSetup(
        direction=direction,
        campaign=name,
        language=language,
        subject=subject,
        channel_id=channel_id,
        started_at=started_at,
        recording=recording,
        withdraw=args.get("withdraw") == "1",
    )


def journal_dir(config: Config) -> Path:
    """Where a call's end waits while the database is down: beside the recordings (the
    service's other durable local state), owner-only."""
    return Path(config.recordings.dir).resolve() / "journal"


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

    def ready(self, name: str, item: int | None) -> bool:
        """Whether `get` would answer at once (a per-call prompt may still be synthesizing)."""
        task = self._dynamic.get((name, item))
        return name not in f.DYNAMIC or (task is not None and task.done())

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
        for r in lifecycle.active_states(session, phone, purposes)
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
        self.jurisdiction = campaign.jurisdiction
        self.active: list[ActiveConsent] = []
        self.dialogue = f.Dialogue(purposes=tuple(self.purposes))
        self.pending: list[Evidence] = []
        self.ids: tuple[str, list[str]] | None = None  # (call_id, record_ids) once stored
        self.recording_name: str | None = setup.recording  # the front sets a snoop's name
        self._opening: asyncio.Task[None] | None = None
        # One write of this call at a time: each takes the pending evidence it writes.
        self._writing = asyncio.Lock()
        self.decided = False  # a decision of this call is stored

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
        active = active_consents(
            session, phone, wanted, config=self.config, language=self.setup.language
        )
        # What the decision's hooks can do ahead of it, off the ledger lock (in this thread).
        for hook in self.hooks:
            ahead = getattr(hook, "ahead", None)
            if ahead is not None:
                ahead(phone, self.jurisdiction)
        return active

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
            node=s.node,
            recording=self.recording_name,
        )

    def _ensure_open(self, session: Session) -> tuple[str, list[str]]:
        """The call's ids, opening it in this transaction if its start is not stored yet.
        Nothing here changes `self`: a transaction may be run again (see Database.batched),
        and `ids` is set only once one is committed."""
        if self.ids is None:
            return store.open_call(session, self._new_call(), self._new_records())
        return self.ids

    def open(self) -> None:
        """Store the call's start in the background, so that nothing waits for it."""
        self._opening = asyncio.ensure_future(self._open())

    async def opened(self, patience: float = OPEN_BEFORE_ANSWER_S) -> None:
        """Until the call's start is stored (or failed to be: the decision retries it), for at
        most `patience` seconds. A call is answered only then, so that an answered call has its
        record whatever happens to this process after the answer; when the database is slow (a
        burst of calls all waiting for it) the caller is not kept ringing for it."""
        if self._opening:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._opening), patience)

    async def _open(self) -> None:
        try:
            self.ids = call_id, record_ids = await self.db.batched(self._ensure_open)
            # In this call's task (the transaction ran in a database thread).
            jsonlog.bind(call_id=call_id, record_id=",".join(record_ids))
        except Exception as e:
            self.ids = None
            self.log.error(
                "could not store the call start (will retry with the decision): %s", brief(e)
            )

    async def _write(self, work: Any, *, later: bool = False, reads: bool = False) -> None:
        """Write the pending evidence and `work`'s changes in one transaction; keep the
        evidence pending if it fails. `later`: nobody waits for it; `reads`: `work` reads the
        call's records (see Database.batched)."""
        if self._opening:
            await self._opening
        async with self._writing:
            await self._write_pending(work, later, reads)

    async def _write_pending(self, work: Any, later: bool = False, reads: bool = False) -> None:
        batch = list(self.pending)
        records = self.ids[1] if reads and self.ids else ()

        def tx(session: Session) -> tuple[str, list[str]]:
            call_id, record_ids = self._ensure_open(session)
            items = [(r, ev) for r in record_ids for ev in batch]
            work(session, call_id, record_ids, items)
            return call_id, record_ids

        self.ids = await self.db.batched(tx, later=later, records=records)
        del self.pending[: len(batch)]

    async def flush(self) -> None:
        """Write the evidence collected so far, ahead of the decision: the decision's
        transaction, which the caller waits for, then carries only what came after (with
        many calls deciding at once, each waits for the others' transactions too). A failure
        keeps the evidence pending for the next write."""
        if not self.pending:
            return

        def evidence(session: Session, _call: str, _records: list[str], items: list[Any]) -> None:
            store.append_evidence(session, items)

        try:
            await self._write(evidence)
        except Exception as e:
            self.log.warning(
                "could not write the evidence yet (kept for the next write): %s", brief(e)
            )

    async def decide(self, persist: f.Persist) -> str | None:
        """Store a confirmed decision; None when stored, else the error (said as a failure)."""
        at = now()

        first = not self.decided

        def consent(session: Session, _call: str, records: list[str], items: list[Any]) -> None:
            outcome = DECIDED[persist.choice]
            record = records[persist.item]
            store.store_decision(
                session, record, outcome, at, items, self.hooks, first_in_call=first
            )

        def withdrawal(session: Session, _call: str, records: list[str], items: list[Any]) -> None:
            targets = [self.active[t].record_id for t in persist.targets]
            lifecycle.store_phone_withdrawal(session, records[0], targets, at, items, self.hooks)

        try:
            if persist.choice is f.Choice.WITHDRAW:
                await self._write(withdrawal)
            else:
                await self._write(consent, reads=True)
        except Exception as e:
            self.log.error("could not store the decision: %s", brief(e))
            what = {"outcome": DECIDED[persist.choice], "error": brief(e)}
            self.pending.append(Evidence(now(), "store_failed", f.Step.SAVING.value, what))
            return brief(e)
        self.decided = True
        return None

    async def finish(self, outcomes: Sequence[f.Outcome], recording: RecordingInfo | None) -> bool:
        """Store the call's end; when the database cannot take it, journal it (see
        consent_ivr.journal) for the service to write once it can. True when it is stored."""
        ended = now()

        def work(session: Session, call_id: str, records: list[str], items: list[Any]) -> None:
            by_record = {r: o.value for r, o in zip(records, outcomes, strict=False)}
            for r in records:
                by_record.setdefault(r, f.Outcome.FAILED.value)
            store.finish_call(session, call_id, by_record, ended, items, recording)

        try:
            await self._write(work, later=True, reads=True)
        except Exception as e:
            self.log.error(
                "could not store the end of the call (outcomes %s): %s; journaling it",
                ",".join(o.value for o in outcomes),
                brief(e),
            )
            await self._journal([o.value for o in outcomes], ended, recording)
            return False
        return True

    async def _journal(
        self, outcomes: list[str], ended: datetime, recording: RecordingInfo | None
    ) -> None:
        data = journal.entry(
            self._new_call(),
            self._new_records(),
            self.ids,
            list(self.pending),
            outcomes,
            ended,
            recording,
        )
        name = f"{self.setup.started_at:%Y%m%dT%H%M%S}-{self.setup.channel_id}"
        try:
            path = await asyncio.to_thread(journal.save, journal_dir(self.config), name, data)
        except OSError as e:
            self.log.error("could not journal the call either; its evidence is lost: %s", e)
            return
        self.pending.clear()
        self.log.warning("call journaled as %s: written once the database answers", path.name)


# ---- what every front notes and keeps -----------------------------------------------------


def prompt_note(prompt: Prompt) -> dict[str, Any]:
    """A played prompt as the evidence keeps it: its exact words, version and audio hash."""
    data = {
        "prompt": prompt.name,
        "text": prompt.text,
        "version": prompt.version,
        "sha256": prompt.sha256,
        "language": prompt.language,
    }
    if prompt.purpose:
        data["purpose"] = prompt.purpose
    return data


def key_note(flow: f.ConsentFlow, digit: str) -> dict[str, Any]:
    """A key as the evidence keeps it: whether it counted, and the purpose being asked."""
    data: dict[str, Any] = {"digit": digit, "acted_on": flow.accepts_keys}
    asking = (f.Step.PURPOSE, f.Step.ASK, f.Step.CHOSEN, f.Step.CONFIRM, f.Step.SAVING)
    if not flow.dialogue.withdrawal and flow.step in asking:
        data["purpose"] = flow.dialogue.purposes[flow.item]
    return data


def closed_copy(
    path: Path, timeout: float, log: logging.LoggerAdapter[logging.Logger]
) -> Callable[[audio.AudioWriter], Awaitable[bool]]:
    """A `store_recording` fill that copies Asterisk's file at `path` once MixMonitor has
    closed it (its WAV header written), in a worker thread; False when it is not closed in
    `timeout` seconds."""

    async def copied(writer: audio.AudioWriter) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await asyncio.to_thread(writer.copy_from, path):
            if loop.time() > deadline:
                log.error("recording %s was not closed in %.0fs", path.name, timeout)
                return False
            await asyncio.sleep(0.2)
        return True

    return copied


async def store_recording(
    recordings_dir: Path,
    started_at: datetime,
    name: str,
    fill: Callable[[audio.AudioWriter], Awaitable[bool]],
) -> RecordingInfo | None:
    """A call's recording written by `fill` (False: there was none to keep) as it is
    downloaded, under our own name in the folder of the call's day (encrypted when a recording
    key is set), then committed (fsync and rename, in a worker thread): what the record keeps
    of it. A write that fails (OSError: disk full, folder not writable) leaves nothing."""
    folder = recordings_dir / started_at.strftime("%Y/%m/%d")
    writer = audio.AudioWriter(folder, f"{name}.wav", audio.recording_key())
    try:
        if not await fill(writer):
            return None
        saved = await asyncio.to_thread(writer.commit)
    finally:
        writer.discard()
    metrics.recording_stored(saved.size)
    return RecordingInfo(
        path=str(saved.path),
        sha256=saved.sha256,
        duration_s=saved.duration_s,
        format="wav",
        size=saved.size,
    )
