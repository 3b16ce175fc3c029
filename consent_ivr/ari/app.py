"""The Stasis application: accepts calls entering the app and runs one CallSession each.

Stasis arguments (dialplan `Stasis(app,ARGS)` or ARI originate `appArgs`): the direction
(`inbound` or `outbound`), then `key=value` pairs, all optional:
`campaign=`, `language=`, `recording=NAME` (the dialplan already records the call with
MixMonitor into the ARI recording folder as NAME.wav, see dialplan/consent-inbound.conf;
without it the app records through a snoop channel), `called=` (the number the person dialled),
`withdraw=1` (the caller came to withdraw), and for outbound calls `phone=` (the person's
number; else the dialled number). The person of an inbound call is the caller's number; a
withheld or unusable caller number makes the call `unidentified`. Channels we create ourselves
(the snoop) enter with `snoop`. Arguments are checked, never trusted: an unknown campaign or
language, or a malformed value, is logged (numbers masked) and the call is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from consent_ivr import metrics
from consent_ivr.ari import recovery
from consent_ivr.ari.call import CallContext, CallSession
from consent_ivr.ari.client import AriClient, AriError, AriEvent, event_time
from consent_ivr.calls import BadArgs, CallSetup, describe_call, parse_args
from consent_ivr.config import Config
from consent_ivr.prompts import Catalog
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook

# MixMonitor writes a refused call's file until the channel is gone: its delete is tried
# after each of these pauses while Asterisk answers 404.
REFUSAL_PAUSES_S = (0.5, 2.0, 5.0)
REFUSAL_RETRIES_S = sum(REFUSAL_PAUSES_S)

log = logging.getLogger(__name__)


def mixmonitor_name(channel_id: str) -> str:
    """The recording dialplan/consent-inbound.conf starts for a channel:
    consent-${REPLACE(UNIQUEID,.,-)} (a channel's id is its unique id)."""
    return "consent-" + channel_id.replace(".", "-")


def own_recording(event: AriEvent) -> str | None:
    """The recording a StasisStart's arguments name, if it is the channel's own (the only one
    a call not taken may delete: a forged name would have it delete another call's)."""
    name = mixmonitor_name(event["channel"]["id"])
    return name if f"recording={name}" in (event.get("args") or []) else None


class ConsentApp:
    def __init__(
        self,
        config: Config,
        db: Database,
        catalog: Catalog,
        decision_hooks: Sequence[DecisionHook] = (),
    ) -> None:
        self.config = config
        self.db = db
        self.catalog = catalog
        self.recordings_dir = Path(config.recordings.dir).resolve()
        self.ari = AriClient(
            config.ari.url,
            config.ari.user,
            config.ari.password,
            config.ari.app,
            reconnect_max_s=config.ari.reconnect_max_s,
            connections=config.ari.connections,
        )
        self.context = CallContext(
            self.ari, config, db, catalog, tuple(decision_hooks), self.recordings_dir
        )
        self.calls: dict[str, CallSession] = {}
        self.draining = False
        self.node: str | None = None
        self._replaying: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ari.on_stasis_start = self._on_stasis_start
        self.ari.on_reconnect = self._resync
        await self.ari.start()
        self.node = await recovery.node_of(self.ari, self.config.ari.app)
        # A crash left calls open, a database outage left calls in the journal: both are
        # closed in the background while new calls are taken.
        self._spawn(self._recover())
        self._replaying = asyncio.ensure_future(
            recovery.keep_replaying(self.ari, self.db, self.config)
        )

    async def _recover(self) -> None:
        assert self.node is not None
        try:
            await recovery.reconcile(self.ari, self.db, self.config, self.node, self.recordings_dir)
        except Exception:
            log.exception("could not close the calls an earlier run left open")

    async def stop(self, grace_s: float = 20.0) -> None:
        """Drain: take no new call, let calls in progress finish (up to `grace_s`), then hang
        up the rest, so that they are stored as ended (the caller gone, `abandoned`; what was
        interrupted on our side, `failed`) and no channel is left waiting in Stasis for an app
        that is gone. A call still not closed after that is cancelled, which closes it too."""
        self.draining = True
        if self._tasks:
            log.info("stopping: waiting up to %.0fs for %d call(s)", grace_s, len(self.calls))
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        if self.calls:
            log.warning("stopping: hanging up %d call(s) still in progress", len(self.calls))
            for channel_id in list(self.calls):
                with contextlib.suppress(AriError):
                    await self.ari.hangup(channel_id)
            closing = self.config.flow.recording_stop_timeout_s + 15
            await asyncio.wait(list(self._tasks), timeout=closing)
        if self._refusing:
            # A call refused while stopping: its recording's delete is given its retries.
            await asyncio.wait(list(self._refusing), timeout=REFUSAL_RETRIES_S + 5)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=15)
        if self._replaying is not None:
            self._replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replaying
        await self.ari.close()

    def setup_for(self, event: AriEvent) -> CallSetup:
        """The call described by a StasisStart; BadArgs when it cannot be taken."""
        direction, args = parse_args(list(event.get("args") or []))
        channel = event["channel"]
        recording = args.get("recording") or None
        if recording is not None and recording != mixmonitor_name(channel["id"]):
            # Only this channel's own recording: a forged name would have the app fetch (and
            # delete) another call's recording.
            raise BadArgs(f"recording {recording[:40]!r} is not this channel's")
        setup = describe_call(
            self.config,
            direction,
            args,
            caller=(channel.get("caller") or {}).get("number") or "",
            exten=(channel.get("dialplan") or {}).get("exten") or "",
            connected=(channel.get("connected") or {}).get("number") or "",
            channel_id=channel["id"],
            started_at=event_time(event),
            recording=recording,
        )
        return replace(setup, node=self.node)

    def _on_stasis_start(self, event: AriEvent) -> None:
        args = event.get("args") or []
        if args and args[0] == "snoop":
            return
        channel_id = event["channel"]["id"]
        if self.draining:
            log.warning("call on channel %s refused: the service is stopping", channel_id)
            self._refuse(channel_id, "stopping", recording=own_recording(event))
            return
        try:
            setup = self.setup_for(event)
        except BadArgs as e:
            log.error("call on channel %s refused: Stasis arguments: %s", channel_id, e)
            self._refuse(channel_id, "bad_args", recording=own_recording(event))
            return
        limit = self.config.ari.max_calls
        if (
            limit is not None
            and len(self.calls) >= limit
            and setup.direction == "inbound"
            and not setup.withdraw
        ):
            log.warning(
                "call on channel %s turned away: %d calls in progress (ari.max_calls)",
                channel_id,
                len(self.calls),
            )
            self._refuse(channel_id, "busy", "congestion", setup.recording)
            return
        session = CallSession(self.context, event, setup)
        self.calls[channel_id] = session
        self._spawn(self._run(session))

    async def _run(self, session: CallSession) -> None:
        try:
            await session.run()
        finally:
            self.calls.pop(session.channel_id, None)

    def _refuse(
        self, channel_id: str, why: str, reason: str = "normal", recording: str | None = None
    ) -> None:
        task = self._spawn(self._turn_away(channel_id, why, reason, recording))
        self._refusing.add(task)
        task.add_done_callback(self._refusing.discard)

    async def _turn_away(
        self, channel_id: str, why: str, reason: str, recording: str | None
    ) -> None:
        """Hang up a call not taken, before a word is said: `reason` is what the caller's
        network is told ("congestion": SIP 503, the caller may try again). The `recording`
        the dialplan started for it (checked to be the channel's own) is deleted: nothing of
        a call not taken is kept. MixMonitor writes its file until the channel is gone, so
        the delete is tried again for a few seconds."""
        metrics.CALLS_TURNED_AWAY.labels(why).inc()
        with contextlib.suppress(AriError):
            await self.ari.hangup(channel_id, reason)
        if recording is None:
            return
        for pause_s in REFUSAL_PAUSES_S:
            await asyncio.sleep(pause_s)
            try:
                await self.ari.delete_stored_recording(recording)
                return
            except AriError as e:
                if e.status != 404:
                    log.warning("recording of turned-away channel %s: %s", channel_id, e)
                    return

    async def _resync(self) -> None:
        """After a reconnect: events may have been lost; end calls whose channel is gone."""
        metrics.ari_reconnected()
        from consent_ivr.flow import HungUp

        for channel_id, session in list(self.calls.items()):
            try:
                await self.ari.get_channel(channel_id)
            except AriError as e:
                if e.status == 404:
                    log.warning("call %s: channel gone while disconnected", session.key[:8])
                    session.post(HungUp())

    def _spawn(self, coro) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
