"""The Stasis application: accepts calls entering the app and runs one CallSession each.

Stasis arguments (dialplan `Stasis(app,ARGS)` or ARI originate `appArgs`):
``direction[,campaign[,language[,phone[,mixmonitor:NAME]]]]`` with direction `inbound` or
`outbound`. The phone defaults to the caller's number (inbound) or the dialled number
(outbound). `mixmonitor:NAME` says the dialplan already records the call (MixMonitor into the
ARI recording folder as NAME.wav, see dialplan/consent-inbound.conf); without it the app
records through a snoop channel. Channels we create ourselves (the snoop) enter with `snoop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from consent_ivr.ari.call import CallSession, CallSetup
from consent_ivr.ari.client import AriClient, AriError, AriEvent
from consent_ivr.config import Config
from consent_ivr.phone import to_e164
from consent_ivr.prompts import Catalog
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook

log = logging.getLogger(__name__)


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
        self.decision_hooks = list(decision_hooks)
        self.recordings_dir = Path(config.recordings.dir).resolve()
        self.ari = AriClient(
            config.ari.url,
            config.ari.user,
            config.ari.password,
            config.ari.app,
            reconnect_max_s=config.ari.reconnect_max_s,
        )
        self.calls: dict[str, CallSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self.ari.on_stasis_start = self._on_stasis_start
        self.ari.on_reconnect = self._resync
        await self.ari.start()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let calls in progress finish (bounded), then hang up the rest so that they are
        stored as ended and no channel is left waiting in Stasis for an app that is gone."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        if self.calls:
            log.warning("stopping: hanging up %d call(s) still in progress", len(self.calls))
            for channel_id in list(self.calls):
                with contextlib.suppress(AriError):
                    await self.ari.hangup(channel_id)
            await asyncio.wait(list(self._tasks), timeout=grace_s + 10)
        for task in list(self._tasks):
            task.cancel()
        await self.ari.close()

    def setup_for(self, event: AriEvent) -> CallSetup | None:
        args = list(event.get("args") or [])
        direction = args[0] if args else "inbound"
        if direction not in ("inbound", "outbound"):
            log.error("Stasis args %r: first argument must be inbound or outbound", args)
            return None
        campaign_name = args[1] if len(args) > 1 and args[1] else self.config.default_campaign
        try:
            name, campaign = self.config.campaign(campaign_name)
        except KeyError:
            log.error(
                "Stasis args %r: unknown campaign %r (configured: %s)",
                args,
                campaign_name,
                ", ".join(sorted(self.config.campaigns)),
            )
            return None
        language = args[2] if len(args) > 2 and args[2] else campaign.language
        if language not in campaign.languages:
            log.error("Stasis args %r: campaign %s has no language %r", args, name, language)
            return None
        channel = event["channel"]
        if len(args) > 3 and args[3]:
            raw = args[3]
        elif direction == "inbound":
            raw = channel.get("caller", {}).get("number", "")
        else:
            raw = channel.get("connected", {}).get("number") or channel.get("dialplan", {}).get(
                "exten", ""
            )
        phone = to_e164(raw, self.config.default_region) or raw or "unknown"
        recording = None
        if len(args) > 4 and args[4].startswith("mixmonitor:"):
            recording = args[4].split(":", 1)[1] or None
        return CallSetup(
            direction=direction, campaign=name, language=language, phone=phone, recording=recording
        )

    def _on_stasis_start(self, event: AriEvent) -> None:
        args = event.get("args") or []
        if args and args[0] == "snoop":
            return
        channel_id = event["channel"]["id"]
        setup = self.setup_for(event)
        if setup is None:
            self._spawn(self._refuse(channel_id))
            return
        session = CallSession(self, event, setup)
        self.calls[channel_id] = session
        self._spawn(self._run(session))

    async def _run(self, session: CallSession) -> None:
        try:
            await session.run()
        finally:
            self.calls.pop(session.channel_id, None)

    async def _refuse(self, channel_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.ari.hangup(channel_id)

    async def _resync(self) -> None:
        """After a reconnect: events may have been lost; end calls whose channel is gone."""
        from consent_ivr.flow import HungUp

        for channel_id, session in list(self.calls.items()):
            try:
                await self.ari.get_channel(channel_id)
            except AriError as e:
                if e.status == 404:
                    log.warning("call %s: channel gone while disconnected", session.key[:8])
                    session.post(HungUp())

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
