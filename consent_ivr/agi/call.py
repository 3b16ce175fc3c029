"""One call on the FastAGI front: flow actions become AGI commands, their answers flow events.

AGI is a conversation of one command at a time, so the translation is a loop: feed the flow an
event, carry out the actions it returns, and each command that waits for the caller (a prompt,
the wait for a key) answers with the next event. What the ARI front learns from events, this
front learns from answers: `STREAM FILE` with the keypad as escape digits ends early with the
key pressed during a question (barge-in); outside questions it has no escape digits, so keys
there are not even seen (on ARI they are noted and ignored); `WAIT FOR DIGIT` is the key timer;
a `-1`, a `511` or Asterisk's `HANGUP` notice is the caller gone. Prompts, evidence, the
decision and the records go through the same `CallPrompts` and `CallStore` as the ARI front
(consent_ivr.calls), so the records of both are the same in shape.

The recording is MixMonitor's, started by the first command after the answer. The file closes
when the channel is gone, which for FastAGI is only after this server lets go of it: the
connection is closed first, then the file is read from the shared recordings folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consent_ivr import flow as f
from consent_ivr.agi.config import AgiConfig
from consent_ivr.agi.protocol import AgiChannel, AgiResult
from consent_ivr.calls import (
    CallPrompts,
    CallSetup,
    CallStore,
    closed_copy,
    key_note,
    prompt_note,
    store_recording,
)
from consent_ivr.config import Config
from consent_ivr.phone import mask
from consent_ivr.prompts import Catalog
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook, RecordingInfo

log = logging.getLogger(__name__)

KEYPAD = "0123456789*#"


@dataclass(frozen=True)
class AgiContext:
    """What every call of the server shares."""

    config: Config
    db: Database
    catalog: Catalog
    hooks: tuple[DecisionHook, ...]
    recordings_dir: Path
    agi: AgiConfig


class AgiCall:
    def __init__(self, ctx: AgiContext, channel: AgiChannel, setup: CallSetup) -> None:
        self.ctx = ctx
        self.channel = channel
        self.setup = setup
        self.key = uuid.uuid4().hex
        self.log = logging.LoggerAdapter(log, {"call": self.key[:8]})
        self.store = CallStore(ctx.db, ctx.config, setup, ctx.hooks, self.log)
        _, campaign = ctx.config.campaign(setup.campaign)
        self.rules = campaign.rules(ctx.config.flow)
        self.flow = f.ConsentFlow(self.rules)
        self.prompts: CallPrompts | None = None
        self.recording = f"consent-{self.key}"
        self.recording_started = False
        self.hung_up = False

    async def run(self) -> None:
        self.log.info(
            "call %s %s over FastAGI campaign=%s lang=%s phone=%s",
            self.key[:8],
            self.setup.direction,
            self.setup.campaign,
            self.setup.language,
            mask(self.setup.subject.phone),
        )
        try:
            dialogue = await self.store.prepare()
            self.flow = f.ConsentFlow(self.rules, dialogue)
            self.prompts = CallPrompts(
                self.ctx.catalog, self.setup, dialogue.purposes, self.store.active
            )
            self.prompts.prepare()
            self.store.open()
            events: deque[f.Event] = deque([f.CallStarted()])
            while events and self.flow.step is not f.Step.DONE:
                for action in self._feed(events.popleft()):
                    event = await self._do(action)
                    if event is not None:
                        events.append(event)
        except Exception:
            self.log.exception("call handler crashed; closing the call")
            self.note("call_interrupted", {"reason": "the call handler failed"})
        finally:
            if self.prompts:
                self.prompts.close()
            # Let go of the channel: only then does Asterisk end it and close the recording.
            self.channel.close()
        recording = await self._collect_recording()
        outcomes = tuple(o for o in self.flow.outcomes if o is not None)
        if await self.store.finish(outcomes, recording):
            self.log.info("call %s ended: %s", self.key[:8], ",".join(o.value for o in outcomes))

    def _feed(self, event: f.Event) -> list[f.Action]:
        before = self.flow.step
        actions = self.flow.handle(event)
        if self.flow.step is not before:
            self.note("state", {"from": before.value, "to": self.flow.step.value}, step=before)
        return actions

    def note(self, kind: str, data: dict[str, Any], *, step: f.Step | None = None) -> None:
        self.store.note(kind, data, None, step or self.flow.step)

    # ---- flow actions -> AGI commands -> flow events ---------------------------------------

    async def _do(self, action: f.Action) -> f.Event | None:
        match action:
            case f.Answer():
                await self.store.opened()
                return self._gone(await self.channel.command("ANSWER"))
            case f.StartRecording():
                return await self._start_recording()
            case f.Play(prompt=name, play_id=pid, item=item):
                return await self._play(name, pid, item)
            case f.StartTimer(timer_id=tid, seconds=secs):
                answer = await self.channel.command(f"WAIT FOR DIGIT {int(secs * 1000)}")
                return await self._key_or(answer, f.TimerExpired(tid))
            case f.Persist():
                error = await self.store.decide(action)
                return f.Persisted(error is None, error or "")
            case f.Hangup():
                if not self.hung_up:
                    await self.channel.command("EXEC StopMixMonitor")
                    await self.channel.command("HANGUP")
            case f.Finish(outcomes=outcomes):
                self.note("finished", {"outcomes": [o.value for o in outcomes]})
        # StopPlayback, CancelTimer: a prompt or a wait that a key ended is over already.
        return None

    def _gone(self, answer: AgiResult) -> f.Event | None:
        """HungUp once, when the answer says the caller is gone."""
        if not (answer.dead or self.channel.hung_up) or self.hung_up:
            return None
        self.hung_up = True
        self.note("hangup", {"by": "caller" if self.flow.step is not f.Step.DONE else "us"})
        return f.HungUp()

    async def _start_recording(self) -> f.Event:
        path = self.ctx.agi.recordings_on_asterisk / f"{self.recording}.wav"
        answer = await self.channel.command(f"EXEC MixMonitor {path}")
        gone = self._gone(answer)
        if gone is not None:
            return gone
        if not answer.ok:
            reason = f"MixMonitor: {answer.line or 'no answer'}"
            self.log.error("could not start the recording: %s", reason)
            self.note("recording_failed", {"reason": reason})
            return f.RecordingFailed(reason)
        self.recording_started = True
        self.note("recording_started", {"name": self.recording, "method": "mixmonitor"})
        return f.RecordingStarted()

    async def _play(self, name: str, play_id: int, item: int | None) -> f.Event | None:
        assert self.prompts is not None
        try:
            prompt = await self.prompts.get(name, item)
        except Exception as e:
            self.log.error("could not prepare prompt %s: %s", name, e)
            return f.PromptFailed(play_id, str(e))
        media = self.ctx.catalog.media(prompt).removeprefix("sound:")
        escape = KEYPAD if self.flow.accepts_keys else ""
        self.note("prompt", prompt_note(prompt))
        answer = await self.channel.command(f'STREAM FILE {media} "{escape}"')
        event = await self._key_or(answer, f.PromptFinished(play_id))
        if isinstance(event, f.PromptFinished) and not answer.ok:
            self.note("prompt_failed", {"prompt": name})
            return f.PromptFailed(play_id, answer.line or "playback failed")
        return event

    async def _key_or(self, answer: AgiResult, otherwise: f.Event) -> f.Event | None:
        """A key when the answer carries one, HungUp when the caller is gone, else `otherwise`."""
        gone = self._gone(answer)
        if gone is not None:
            return gone
        if answer.code == 200 and answer.result == "-1":
            # Failed or hung up: only the channel's state tells which.
            gone = self._gone(await self.channel.command("CHANNEL STATUS"))
            if gone is not None:
                return gone
        if answer.ok and answer.number > 0:
            digit = chr(answer.number)
            self.note("key", key_note(self.flow, digit))
            return f.KeyPressed(digit)
        return otherwise

    # ---- recording -----------------------------------------------------------------------

    async def _collect_recording(self) -> RecordingInfo | None:
        if not self.recording_started:
            return None
        path = self.ctx.agi.local_recordings / f"{self.recording}.wav"
        timeout = self.ctx.config.flow.recording_stop_timeout_s
        copied = closed_copy(path, timeout, self.log)
        info = await store_recording(
            self.ctx.recordings_dir, self.setup.started_at, self.key, copied
        )
        if info is None:
            return None
        if not self.ctx.config.recordings.keep_on_asterisk:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.unlink)
        return info
