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
import re
from collections.abc import Sequence
from pathlib import Path

from consent_ivr.ari.call import CallContext, CallSession
from consent_ivr.ari.client import AriClient, AriError, AriEvent, event_time
from consent_ivr.calls import CallSetup
from consent_ivr.config import Config
from consent_ivr.phone import mask, to_e164
from consent_ivr.prompts import Catalog
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook, Subject

log = logging.getLogger(__name__)

ARG_KEYS = ("campaign", "language", "recording", "called", "withdraw", "phone")
_SAFE = re.compile(r"^[A-Za-z0-9_.+-]{0,64}$")
WITHHELD = {"", "anonymous", "unknown", "restricted", "private", "unavailable", "withheld"}


class BadArgs(ValueError):
    """Stasis arguments that cannot describe a call; the message is safe to log."""


def parse_args(args: Sequence[str]) -> tuple[str, dict[str, str]]:
    direction = args[0] if args else "inbound"
    if direction not in ("inbound", "outbound"):
        raise BadArgs(f"first argument must be inbound or outbound, got {direction[:20]!r}")
    pairs: dict[str, str] = {}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in ARG_KEYS:
            raise BadArgs(f"expected key=value with key in {ARG_KEYS}, got {key[:20]!r}")
        if not _SAFE.match(value):
            raise BadArgs(f"{key}: unexpected characters")
        pairs[key] = value
    return direction, pairs


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
        )
        self.context = CallContext(
            self.ari, config, db, catalog, tuple(decision_hooks), self.recordings_dir
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

    def setup_for(self, event: AriEvent) -> CallSetup:
        """The call described by a StasisStart; BadArgs when it cannot be taken."""
        direction, args = parse_args(list(event.get("args") or []))
        try:
            name, campaign = self.config.campaign(args.get("campaign") or None)
        except KeyError:
            raise BadArgs(
                f"unknown campaign {args['campaign']!r} "
                f"(configured: {', '.join(sorted(self.config.campaigns))})"
            ) from None
        language = args.get("language") or campaign.language
        if language not in campaign.languages:
            raise BadArgs(f"campaign {name} has no language {language!r}")
        channel = event["channel"]
        region = self.config.default_region
        caller = (channel.get("caller") or {}).get("number") or ""
        exten = (channel.get("dialplan") or {}).get("exten") or ""
        if direction == "inbound":
            called = args.get("called") or (exten if exten != "s" else "") or None
            phone = None
            if caller.strip().lower() not in WITHHELD:
                phone = to_e164(caller, region)
            subject = Subject(phone, "caller-id", caller or None, called)
        else:
            raw = args.get("phone") or (channel.get("connected") or {}).get("number") or exten
            phone = to_e164(raw, region)
            if phone is None:
                raise BadArgs(f"outbound call to {mask(raw)}: not a phone number")
            subject = Subject(phone, "dialled", caller or None, phone)
        return CallSetup(
            direction=direction,
            campaign=name,
            language=language,
            subject=subject,
            channel_id=channel["id"],
            started_at=event_time(event),
            recording=args.get("recording") or None,
            withdraw=args.get("withdraw") == "1",
        )

    def _on_stasis_start(self, event: AriEvent) -> None:
        args = event.get("args") or []
        if args and args[0] == "snoop":
            return
        channel_id = event["channel"]["id"]
        try:
            setup = self.setup_for(event)
        except BadArgs as e:
            log.error("call on channel %s refused: Stasis arguments: %s", channel_id, e)
            self._spawn(self._refuse(channel_id))
            return
        session = CallSession(self.context, event, setup)
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
