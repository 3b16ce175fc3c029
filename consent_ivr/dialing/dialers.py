"""Placing one call and learning what became of it, through ARI or through AMI.

Both dialers ring the person and, once they answer, hand the call to the dialplan, which runs
answering-machine detection when asked (CONSENT_AMD) and then the consent dialogue: through
ARI into `consent-outbound` (the service's Stasis app), through AMI into `consent-agi-outbound`
(the FastAGI server). Each returns an `Attempt` once the call is over: Asterisk's result and
hang-up cause. The dialogue's own outcome is the service's to store; the dialer only waits for
the channel to end so that a campaign knows when a line is free again.

ARI: the call is originated into a Stasis app of the dialer's own (so Asterisk reports the
ringing channel's fate to it from the first moment, busy and no answer included) and, once
answered, subscribed and sent on into the dialplan. AMI: `Originate` with our channel id,
its `OriginateResponse` and the channel's `Hangup` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from consent_ivr.ari.client import AriClient, AriError, AriEvent
from consent_ivr.clock import now
from consent_ivr.config import Config, ConfigError
from consent_ivr.dialing.config import Dialing
from consent_ivr.dialing.store import Attempt

log = logging.getLogger(__name__)

BUSY, NO_ANSWER = (17, 21), (18, 19, 20)
CONGESTION = (34, 38, 41, 42, 44, 47)
# OriginateResponse's Reason: the last control frame the ringing channel got.
ORIGINATE_REASONS = {1: "failed", 3: "no_answer", 4: "answered", 5: "busy", 8: "congestion"}


class DialError(Exception):
    """The dialer cannot place calls at all (not one call's fate); the message says why."""


def result_of(cause: int | None, answered: bool, amd: str | None, *, rang: bool = False) -> str:
    """The attempt's result from the hang-up cause; a call that rang out without a cause
    (Asterisk 16 gives 0 when the originate times out) went unanswered."""
    if amd is not None and amd.startswith("MACHINE"):
        return "machine"
    if answered:
        return "answered"
    if cause in BUSY:
        return "busy"
    if cause in NO_ANSWER or (rang and cause in (None, 0, 16)):
        return "no_answer"
    if cause in CONGESTION:
        return "congestion"
    return "failed"


@dataclass(frozen=True)
class Dial:
    """One call to place."""

    phone: str  # E.164
    channel_id: str
    campaign: str
    language: str
    dialing: Dialing

    def variables(self) -> dict[str, str]:
        """What the dialplan reads (dialplan/consent-inbound.conf, consent-agi.conf)."""
        return {
            "CONSENT_CAMPAIGN": self.campaign,
            "CONSENT_LANGUAGE": self.language,
            "CONSENT_AMD": self.dialing.amd.argument(),
            "CONSENT_AGI": self.dialing.ami.agi,
        }


class Dialer(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> None:
        """Raise DialError unless an answered call would reach the consent dialogue."""

    async def call(self, dial: Dial) -> Attempt: ...


def dialer_for(config: Config, dialing: Dialing) -> Dialer:
    if dialing.originate == "ami":
        return AmiDialer(dialing)
    return AriDialer(config)


class AriDialer:
    def __init__(self, config: Config) -> None:
        self.service_app = config.ari.app
        self.app = f"{config.ari.app}-dialer-{uuid.uuid4().hex[:8]}"
        self.ari = AriClient(
            config.ari.url,
            config.ari.user,
            config.ari.password,
            self.app,
            reconnect_max_s=config.ari.reconnect_max_s,
            connections=config.ari.connections,
        )

    async def start(self) -> None:
        try:
            await self.ari.start()
        except Exception as e:
            raise DialError(f"cannot connect to ARI at {self.ari.base}: {e}") from None

    async def close(self) -> None:
        await self.ari.close()

    async def ready(self) -> None:
        try:
            await self.ari.request("GET", f"/applications/{self.service_app}")
        except AriError as e:
            if e.status == 404:
                raise DialError(
                    f"the consent-ivr service is not connected to Asterisk (no ARI app "
                    f"{self.service_app!r}): start `consent-ivr run` first, or an answered "
                    f"call would meet silence"
                ) from None
            raise DialError(f"ARI: {e}") from None

    async def call(self, dial: Dial) -> Attempt:
        queue: asyncio.Queue[AriEvent] = asyncio.Queue()
        self.ari.route(dial.channel_id, queue)
        placed = now()
        amd: str | None = None
        answered = rang = False
        try:
            try:
                await self.ari.originate(
                    dial.dialing.dial_string(dial.phone),
                    channel_id=dial.channel_id,
                    app_args="dial",
                    caller_id=dial.dialing.caller_id,
                    variables=dial.variables(),
                    timeout=dial.dialing.ring_timeout_s,
                )
            except AriError as e:
                return Attempt(dial.channel_id, "failed", placed, None, str(e)[:200])
            deadline = dial.dialing.ring_timeout_s + dial.dialing.max_call_s + 30
            async with asyncio.timeout(deadline):
                while True:
                    ev = await queue.get()
                    kind = ev.get("type")
                    rang = rang or (ev.get("channel") or {}).get("state") == "Ringing"
                    if kind == "StasisStart" and not answered:
                        answered = True
                        await self._into_dialplan(dial)
                    elif kind == "ChannelUserevent" and ev.get("eventname") == "ConsentAMD":
                        amd = _amd((ev.get("userevent") or {}).get("Status"), ev.get("userevent"))
                    elif kind == "ChannelDestroyed":
                        cause = ev.get("cause")
                        return Attempt(
                            dial.channel_id,
                            result_of(cause, answered, amd, rang=rang),
                            placed,
                            cause,
                            ev.get("cause_txt") or "",
                            amd,
                        )
        except TimeoutError:
            with contextlib.suppress(AriError):
                await self.ari.hangup(dial.channel_id)
            return Attempt(dial.channel_id, result_of(None, answered, amd), placed, None, "timeout")
        finally:
            self.ari.unroute(dial.channel_id)

    async def _into_dialplan(self, dial: Dial) -> None:
        """The person answered: keep hearing of the channel, and send it to the dialogue."""
        cid = dial.channel_id
        with contextlib.suppress(AriError):
            await self.ari.request(
                "POST", f"/applications/{self.app}/subscription", {"eventSource": f"channel:{cid}"}
            )
            await self.ari.request(
                "POST",
                f"/channels/{cid}/continue",
                {"context": "consent-outbound", "extension": dial.phone.lstrip("+"), "priority": 1},
            )


def _amd(status: str | None, body: Any) -> str | None:
    if not status:
        return None
    cause = (body or {}).get("Cause") if isinstance(body, dict) else None
    return f"{status} {cause}".strip() if cause else status


class AmiDialer:
    """Through the Asterisk Manager Interface (panoramisk), into the FastAGI dialogue."""

    def __init__(self, dialing: Dialing) -> None:
        from panoramisk import Manager

        ami = dialing.ami
        password = os.environ.get(ami.password_env, "")
        if not password:
            raise ConfigError(f"dialing.ami: no password; export {ami.password_env}")
        self.agi = ami.agi
        self.manager = Manager(
            host=ami.host,
            port=ami.port,
            username=ami.user,
            secret=password,
            ping_delay=10,
            reconnect_timeout=2,
        )
        self.where = f"{ami.host}:{ami.port}"
        self.queues: dict[str, asyncio.Queue[Any]] = {}

    async def start(self) -> None:
        self.manager.loop = asyncio.get_running_loop()
        try:
            await self.manager.connect()
            for _ in range(100):
                if self.manager.authenticated_future is not None:
                    break
                await asyncio.sleep(0.05)
            login = self.manager.authenticated_future
            response = await asyncio.wait_for(login, 10) if login is not None else None
        except (OSError, TimeoutError) as e:
            raise DialError(f"cannot connect to AMI at {self.where}: {e}") from None
        if response is None or not response.success:
            raise DialError(
                f"AMI at {self.where} refused the login of {self.manager.config['username']}"
            )
        for event in ("Hangup", "UserEvent"):
            self.manager.register_event(event, self._on_event)

    async def close(self) -> None:
        self.manager.close()

    async def ready(self) -> None:
        host, _, port = self.agi.rpartition(":")
        try:
            # A bare connect and close: the FastAGI server takes it as a health check.
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
            writer.close()
        except (OSError, TimeoutError, ValueError) as e:
            raise DialError(
                f"the FastAGI server at {self.agi} does not answer ({e}): start `consent-ivr "
                f"agi` first, or an answered call would meet silence"
            ) from None

    def _on_event(self, _manager: Any, event: Any) -> None:
        queue = self.queues.get(event.get("Uniqueid") or "")
        if queue is not None:
            queue.put_nowait(event)

    async def call(self, dial: Dial) -> Attempt:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.queues[dial.channel_id] = queue
        placed = now()
        variables = [f"{k}={v}" for k, v in dial.variables().items()]
        action = {
            "Action": "Originate",
            "Channel": dial.dialing.dial_string(dial.phone),
            "Context": "consent-agi-outbound",
            "Exten": dial.phone.lstrip("+"),
            "Priority": "1",
            "Timeout": str(dial.dialing.ring_timeout_s * 1000),
            "ChannelId": dial.channel_id,
            "Async": "true",
            "Variable": variables,
        }
        if dial.dialing.caller_id:
            action["CallerID"] = dial.dialing.caller_id
        try:
            deadline = dial.dialing.ring_timeout_s + dial.dialing.max_call_s + 30
            async with asyncio.timeout(deadline):
                return await self._follow(dial, action, queue, placed)
        except TimeoutError:
            return Attempt(dial.channel_id, "failed", placed, None, "timeout")
        finally:
            self.queues.pop(dial.channel_id, None)

    async def _follow(
        self, dial: Dial, action: dict[str, Any], queue: asyncio.Queue[Any], placed: datetime
    ) -> Attempt:
        responses = await self.manager.send_action(action)
        final = responses[-1] if isinstance(responses, list) else responses
        reason = int(final.get("Reason") or 0) if final.get("Reason", "").isdigit() else 0
        answered = final.get("Response") == "Success"
        amd: str | None = None
        cause: int | None = None
        cause_text = "" if answered else str(final.get("Message") or "")
        # The ringing channel's Hangup comes before the response; an answered one's at its end.
        while True:
            try:
                timeout = None if answered else 2.0
                event = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                break
            if event.get("Event") == "UserEvent" and event.get("UserEvent") == "ConsentAMD":
                amd = _amd(event.get("Status"), {"Cause": event.get("Cause")})
            elif event.get("Event") == "Hangup":
                cause = int(event["Cause"]) if str(event.get("Cause", "")).isdigit() else None
                cause_text = str(event.get("Cause-txt") or "")
                break
        result = result_of(cause, answered, amd)
        if not answered and cause is None:
            result = ORIGINATE_REASONS.get(reason, "failed")
        return Attempt(dial.channel_id, result, placed, cause, cause_text, amd)
