"""One call on the ARI front: translate ARI events into flow events and flow actions into ARI
requests. All decisions are the flow's (consent_ivr.flow); what is said comes from
`CallPrompts`, what is stored goes through `CallStore` (consent_ivr.calls)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from consent_ivr import audio, metrics
from consent_ivr import flow as f
from consent_ivr.api import jsonlog
from consent_ivr.ari.client import RECEIVED, AriClient, AriError, AriEvent, event_time
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
from consent_ivr.prompts import Catalog, Prompt
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook

log = logging.getLogger(__name__)

HANGUP_EVENTS = ("StasisEnd", "ChannelDestroyed", "ChannelHangupRequest")
# A playback whose end never came counts as played after this many times its length, plus:
WATCHDOG_FACTOR, WATCHDOG_MARGIN_S = 3.0, 10.0


@dataclass(frozen=True)
class _LostPlayback:
    play_id: int


@dataclass
class _Playlist:
    """One ARI playback: the prompt that plays now (the flow's play id, name and item), then the
    prompts queued behind it in the same request, which the flow has not asked for yet (it
    names them in advance with `following()`). Asterisk announces each with its own
    PlaybackStarted; that is when the one before has ended, for the flow."""

    play_id: int
    name: str
    item: int | None
    prompt: Prompt
    rest: list[tuple[str, int | None, Prompt]]
    at: datetime | None = None  # when the prompt that plays now started; None: not yet
    advancing: bool = False  # the next item has started; the flow is asked for it


@dataclass(frozen=True)
class CallContext:
    """What every call of the app shares: passed to each session instead of the app."""

    ari: AriClient
    config: Config
    db: Database
    catalog: Catalog
    hooks: tuple[DecisionHook, ...]
    recordings_dir: Path


def play_before_stop(actions: list[f.Action]) -> list[f.Action]:
    """A barge-in (stop the prompt, play the next) sent as "play the next, then stop".

    Asterisk queues a play request behind the channel's running playback, and the stop then
    starts it at once. Sent the other way round, the request reaches an idle channel, which
    Asterisk 16 looks at only when a frame arrives (the caller's audio) or, when the caller is
    silent, after up to 200 ms. What the caller hears is the same."""
    stops = [a for a in actions if isinstance(a, f.StopPlayback)]
    first_play = next((i for i, a in enumerate(actions) if isinstance(a, f.Play)), None)
    if not stops or first_play is None:
        return actions
    before = [a for a in actions[: first_play + 1] if not isinstance(a, f.StopPlayback)]
    return before + stops + [a for a in actions[first_play + 1 :] if a not in stops]


class CallSession:
    def __init__(self, ctx: CallContext, start: AriEvent, setup: CallSetup) -> None:
        self.ctx = ctx
        self.ari = ctx.ari
        self.setup = setup
        self.channel: dict[str, Any] = start["channel"]
        self.channel_id: str = self.channel["id"]
        self.key = uuid.uuid4().hex
        self.snoop_id = f"snoop-{self.key}"
        self.recording_name = setup.recording or f"consent-{self.key}"
        self.log = logging.LoggerAdapter(log, {"call": self.key[:8]})
        self.store = CallStore(ctx.db, ctx.config, setup, ctx.hooks, self.log)
        _, campaign = ctx.config.campaign(setup.campaign)
        self.rules = campaign.rules(ctx.config.flow)
        self.flow = f.ConsentFlow(self.rules)
        self.prompts: CallPrompts | None = None
        self.queue: asyncio.Queue[AriEvent | f.Event | _LostPlayback] = asyncio.Queue()
        self.playbacks: dict[str, _Playlist] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.recording_state: str | None = None  # started / done / failed / mixmonitor
        self.recording_done = asyncio.Event()
        self.hung_up = False
        self.interrupted = False
        self.key_at: datetime | None = None  # a key that counted, until the next prompt starts
        # That key's kind (menu / decision), when its handling began and when the next play
        # request went out (time.time()): the stages of metrics.KEYPRESS_STAGE.
        self.key_trace: tuple[str, float, float | None] | None = None
        self.watchdogs: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.ari.route(self.channel_id, self.queue)
        self.ari.route(self.snoop_id, self.queue)

    # ---- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        jsonlog.bind(call=self.key[:8], channel_id=self.channel_id)
        self.log.info(
            "call %s %s campaign=%s lang=%s phone=%s",
            self.key[:8],
            self.setup.direction,
            self.setup.campaign,
            self.setup.language,
            mask(self.setup.subject.phone),
        )
        try:
            await self._converse()
        except asyncio.CancelledError:
            # The service is stopping: whatever happens, the call ends with a closed record.
            self.log.warning("call %s interrupted: the service is stopping", self.key[:8])
            await asyncio.shield(asyncio.ensure_future(self._close("the service stopped")))
            raise
        except Exception:
            self.log.exception("call handler crashed; closing the call")
            await self._close("the call handler failed")
        else:
            await self._finalize()
        finally:
            for handle in [*self.timers.values(), *self.watchdogs.values()]:
                handle.cancel()
            if self.prompts:
                self.prompts.close()
            self.ari.unroute(self.channel_id)
            self.ari.unroute(self.snoop_id)

    async def _converse(self) -> None:
        dialogue = await self.store.prepare()
        self.flow = f.ConsentFlow(self.rules, dialogue)
        self.prompts = CallPrompts(
            self.ctx.catalog, self.setup, dialogue.purposes, self.store.active
        )
        self.prompts.prepare()
        self.store.open()
        await self._feed(f.CallStarted())
        while self.flow.step is not f.Step.DONE:
            item = await self.queue.get()
            if isinstance(item, dict):
                await self._on_ari(item)
            elif isinstance(item, f.HungUp):
                await self._hung_up()
            elif isinstance(item, f.RecordingFailed) and self.flow.step is not f.Step.RECORDING:
                continue  # the watchdog fired after all went well
            elif isinstance(item, _LostPlayback):
                await self._lost_playback(item.play_id)
            else:
                await self._feed(item)

    async def _close(self, why: str) -> None:
        """End a call the flow did not finish: what is undecided is our failure, and the
        record says why."""
        self.note("call_interrupted", {"reason": why})
        self.interrupted = True
        try:
            await self._finalize()
        except Exception:
            self.log.exception("could not close the interrupted call %s", self.key[:8])

    async def _feed(self, event: f.Event) -> None:
        before = self.flow.step
        actions = self.flow.handle(event)
        if self.flow.step is not before:
            self.note("state", {"from": before.value, "to": self.flow.step.value}, step=before)
            if self.flow.step is f.Step.CHOSEN:
                # The choice is stated back in full before a key counts again: time to
                # store the evidence so far, so that the decision's commit is small.
                self._spawn(self.store.flush())
        ordered = play_before_stop(actions)
        persist = [a for a in ordered if isinstance(a, f.Persist)]
        if persist and any(isinstance(a, f.StopPlayback) for a in ordered):
            # The decision's commit starts first (it runs as its own task): it need not wait
            # for Asterisk to answer the stop, which under load takes as long as the commit.
            for commit in persist:
                await self._do(commit)
            ordered = [a for a in ordered if a not in persist]
            # The decision's prompt comes after the commit, to a channel that has stopped
            # playing: silence keeps Asterisk 16 looking at the channel's queue (every 20 ms)
            # instead of up to 200 ms when the caller sends no audio. Heard: the same silence.
            # A failure changes nothing (a caller who hung up is noticed by the events).
            with contextlib.suppress(AriError):
                await self.ari.start_silence(self.channel_id)
        for action in ordered:
            await self._do(action)

    def note(self, kind: str, data: dict[str, Any], *, at: Any = None, step: Any = None) -> None:
        self.store.note(kind, data, at, step or self.flow.step)

    def post(self, event: f.Event | _LostPlayback) -> None:
        self.queue.put_nowait(event)

    # ---- ARI events -> flow events ---------------------------------------------------------

    async def _on_ari(self, ev: AriEvent) -> None:
        try:
            await self._translate(ev)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            # Asterisk versions differ in what they send: one malformed event must not end
            # the call; it is logged (by type only: events carry numbers) and ignored.
            self.log.warning(
                "ignored a malformed ARI event %r: %s", str(ev.get("type"))[:40], type(e).__name__
            )

    async def _translate(self, ev: AriEvent) -> None:
        kind = ev.get("type")
        channel = (ev.get("channel") or {}).get("id")
        if kind == "StasisStart" and channel == self.snoop_id:
            await self._record_snoop()
        elif kind == "ChannelDtmfReceived" and channel == self.channel_id:
            digit = str(ev["digit"])
            note = key_note(self.flow, digit)
            self.note("key", note, at=event_time(ev))
            if note["acted_on"]:
                self.key_at = event_time(ev)
                self._trace_key(ev, digit)
            await self._feed(f.KeyPressed(digit))
        elif kind == "PlaybackStarted":
            playback_id = ev["playback"]["id"]
            play = self.playbacks.get(playback_id)
            if play:
                at = event_time(ev)
                if play.at is not None and not await self._next_in_list(playback_id, play, at):
                    return
                play.at = at
                self.note("prompt", prompt_note(play.prompt), at=at)
                if self.key_at is not None:
                    metrics.keypress_answered(self.key_at, event_time(ev))
                    self.key_at = None
                sent = self.key_trace[2] if self.key_trace is not None else None
                if self.key_trace is not None and sent is not None:
                    started = event_time(ev).timestamp() - sent
                    metrics.keypress_stage("started", self.key_trace[0], started)
                    self.key_trace = None
        elif kind == "PlaybackFinished":
            play = self.playbacks.pop(ev["playback"]["id"], None)
            if play:
                watchdog = self.watchdogs.pop(play.play_id, None)
                if watchdog:
                    watchdog.cancel()
                if ev["playback"].get("state") == "failed":
                    self.note("prompt_failed", {"prompt": play.name})
                    await self._feed(f.PromptFailed(play.play_id, "playback failed"))
                else:
                    await self._feed(f.PromptFinished(play.play_id))
        elif kind == "RecordingStarted":
            self.recording_state = "started"
            watchdog = self.timers.pop(-1, None)
            if watchdog:
                watchdog.cancel()
            self.note(
                "recording_started",
                {"name": self.recording_name, "method": "snoop"},
                at=event_time(ev),
            )
            if self.flow.step is f.Step.RECORDING:
                await self._feed(f.RecordingStarted())
        elif kind in ("RecordingFinished", "RecordingFailed"):
            failed = kind == "RecordingFailed"
            self.recording_state = "failed" if failed else "done"
            self.recording_done.set()
            self.note(
                "recording_failed" if failed else "recording_finished",
                {"name": self.recording_name},
                at=event_time(ev),
            )
            if failed and self.flow.step is f.Step.RECORDING:
                await self._feed(f.RecordingFailed("Asterisk reported RecordingFailed"))
        elif kind in HANGUP_EVENTS and channel == self.channel_id:
            await self._hung_up(ev)

    def _trace_key(self, ev: AriEvent, digit: str) -> None:
        """The first stages of an acted-on key: Asterisk -> our reader -> this call's task."""
        decision = self.flow.step is f.Step.CONFIRM and digit == self.rules.confirm
        kind = "decision" if decision else "menu"
        handled = time.time()
        received = ev.get(RECEIVED, handled)
        assert self.key_at is not None
        metrics.keypress_stage("read", kind, received - self.key_at.timestamp())
        metrics.keypress_stage("queued", kind, handled - received)
        self.key_trace = (kind, handled, None)

    async def _hung_up(self, ev: AriEvent | None = None) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        self.note(
            "hangup",
            {"by": "caller" if self.flow.step is not f.Step.DONE else "us"},
            at=event_time(ev) if ev else None,
        )
        await self._feed(f.HungUp())

    # ---- flow actions -> ARI requests -------------------------------------------------------

    async def _do(self, action: f.Action) -> None:
        match action:
            case f.Answer():
                await self.store.opened()
                if self.channel.get("state") != "Up":
                    await self._request(self.ari.answer(self.channel_id))
            case f.StartRecording():
                await self._start_recording()
            case f.Play(prompt=name, play_id=pid, item=item):
                await self._play(name, pid, item)
            case f.StopPlayback(play_id=pid):
                watchdog = self.watchdogs.pop(pid, None)
                if watchdog:
                    watchdog.cancel()
                for pb_id, play in list(self.playbacks.items()):
                    if play.play_id == pid:
                        self.playbacks.pop(pb_id)
                        await self._stop_playlist(pb_id)
            case f.StartTimer(timer_id=tid, seconds=secs):
                loop = asyncio.get_running_loop()
                self.timers[tid] = loop.call_later(secs, self.post, f.TimerExpired(tid))
            case f.CancelTimer(timer_id=tid):
                handle = self.timers.pop(tid, None)
                if handle:
                    handle.cancel()
            case f.Persist():
                self._spawn(self._persist(action))
            case f.Hangup():
                with contextlib.suppress(AriError):
                    await self.ari.hangup(self.channel_id)
            case f.Finish(outcomes=outcomes):
                self.note("finished", {"outcomes": [o.value for o in outcomes]})

    async def _request(self, coro: Any) -> bool:
        """Run an ARI request; a vanished channel means the caller hung up."""
        try:
            await coro
            return True
        except AriError as e:
            if e.status == 404:
                await self._hung_up()
            else:
                self.log.warning("%s", e)
            return False

    async def _start_recording(self) -> None:
        """The dialplan's MixMonitor already records (cheap: no extra channel); otherwise snoop
        both directions and record the snoop once it is in Stasis (earlier is refused, 409)."""
        if self.setup.recording:
            self.recording_state = "mixmonitor"
            # MixMonitor ran in the dialplan before the call entered the app.
            self.note(
                "recording_started",
                {"name": self.recording_name, "method": "mixmonitor"},
                at=self.setup.started_at,
            )
            self.post(f.RecordingStarted())
            return
        try:
            await self.ari.snoop(self.channel_id, self.snoop_id, "snoop")
        except AriError as e:
            self._recording_failed(str(e))
            return
        timeout = self.ctx.config.flow.recording_stop_timeout_s
        watchdog = f.RecordingFailed("the recording did not start in time")
        self.timers[-1] = asyncio.get_running_loop().call_later(timeout, self.post, watchdog)

    async def _record_snoop(self) -> None:
        try:
            await self.ari.record(self.snoop_id, self.recording_name, "wav")
        except AriError as e:
            self._recording_failed(str(e))

    def _recording_failed(self, reason: str) -> None:
        self.log.error("could not start the recording: %s", reason)
        self.note("recording_failed", {"reason": reason})
        self.post(f.RecordingFailed(reason))

    async def _play(self, name: str, play_id: int, item: int | None) -> None:
        assert self.prompts is not None
        listed = next((p for p in self.playbacks.values() if p.advancing), None)
        if listed is not None and listed.rest[0][:2] == (name, item):
            # Already queued in the running playlist, which has just reached it.
            listed.play_id, (listed.name, listed.item, listed.prompt) = play_id, listed.rest.pop(0)
            listed.advancing = False
            self._watch(play_id, listed.prompt)
            return
        try:
            prompt = await self.prompts.get(name, item)
            rest = [(n, i, await self.prompts.get(n, i)) for n, i in self._ready_following()]
        except Exception as e:
            self.log.error("could not prepare prompt %s: %s", name, e)
            self.post(f.PromptFailed(play_id, str(e)))
            return
        media = [self.ctx.catalog.media(p) for p in [prompt, *(p for _, _, p in rest)]]
        if any("," in m for m in media):
            # A comma separates a playlist's items: such a URI plays alone.
            media, rest = media[:1], []
        playback_id = f"{self.key}-{play_id}"
        self.playbacks[playback_id] = _Playlist(play_id, name, item, prompt, rest)
        self._watch(play_id, prompt)
        if self.key_trace is not None and self.key_trace[2] is None:
            kind, handled, _ = self.key_trace
            sent = time.time()
            metrics.keypress_stage("handled", kind, sent - handled)
            self.key_trace = (kind, handled, sent)
        metrics.ARI_PLAYLIST.observe(len(media))
        try:
            await self.ari.play(self.channel_id, playback_id, ",".join(media))
        except AriError as e:
            self.playbacks.pop(playback_id, None)
            if e.status == 404:
                await self._hung_up()
            else:
                self.log.error("could not play %s: %s", name, e)
                self.post(f.PromptFailed(play_id, str(e)))

    def _ready_following(self) -> list[tuple[str, int | None]]:
        """The flow's `following()` up to the first per-call prompt still being synthesized:
        the prompt due now must not wait for one due later (it is asked for on its own)."""
        assert self.prompts is not None
        ready = []
        for name, item in self.flow.following():
            if not self.prompts.ready(name, item):
                break
            ready.append((name, item))
        return ready

    def _watch(self, play_id: int, prompt: Prompt) -> None:
        """Should Asterisk's end of a prompt get lost, the call must not wait forever: long
        after the prompt's own length (playback runs late on a loaded Asterisk) it counts as
        played."""
        patience = WATCHDOG_FACTOR * (prompt.duration_s or 10.0) + WATCHDOG_MARGIN_S
        loop = asyncio.get_running_loop()
        self.watchdogs[play_id] = loop.call_later(patience, self.post, _LostPlayback(play_id))

    async def _next_in_list(self, playback_id: str, play: _Playlist, at: datetime) -> bool:
        """The next prompt of a playlist has started at `at`: the one before it has ended,
        for the flow, which then asks for this one (bound to the playlist by `_play`). True
        when the prompt that started is the flow's; otherwise the playlist is stopped.

        Asterisk (16 and 22 alike) skips an item it cannot play without a word: the next one
        starts in the same millisecond, and only a failed last item shows in PlaybackFinished.
        So a prompt that "ended" in less than half its length failed, as a single playback of
        it would have."""
        if not play.rest:
            return False  # not one of ours: ignored
        watchdog = self.watchdogs.pop(play.play_id, None)
        if watchdog:
            watchdog.cancel()
        length = play.prompt.duration_s
        played = (at - play.at).total_seconds() if play.at is not None else None
        if played is not None and length and played < length / 2:
            self.playbacks.pop(playback_id, None)
            self.note("prompt_failed", {"prompt": play.name, "played_s": round(played, 3)})
            await self._feed(f.PromptFailed(play.play_id, "skipped by Asterisk"))
            await self._stop_playlist(playback_id)
            return False
        play.advancing = True
        await self._feed(f.PromptFinished(play.play_id))
        if not play.advancing and self.playbacks.get(playback_id) is play:
            return True
        play.advancing = False
        if self.playbacks.pop(playback_id, None) is not None:
            await self._stop_playlist(playback_id)
        return False

    async def _stop_playlist(self, playback_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.ari.stop_playback(playback_id)

    async def _lost_playback(self, play_id: int) -> None:
        self.watchdogs.pop(play_id, None)
        for pb_id, play in list(self.playbacks.items()):
            if play.play_id == play_id:
                self.playbacks.pop(pb_id)
                self.log.warning(
                    "no end of playback %s (%s) from Asterisk: taken as played", pb_id, play.name
                )
                self.note("prompt_lost", {"prompt": play.name})
                await self._feed(f.PromptFinished(play_id))
                if play.rest:  # what was queued behind it has been asked for again
                    await self._stop_playlist(pb_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _persist(self, persist: f.Persist) -> None:
        error = await self.store.decide(persist)
        self.post(f.Persisted(error is None, error or ""))

    async def _finalize(self) -> None:
        if not self.hung_up:
            with contextlib.suppress(AriError):
                await self.ari.hangup(self.channel_id)
        recording = None
        try:
            recording = await store_recording(
                self.ctx.recordings_dir, self.setup.started_at, self.key, self._collect_recording
            )
        except OSError as e:
            # Disk full, folder not writable: the evidence still goes to the database, with
            # why the recording is missing; Asterisk keeps its copy.
            self.log.error("could not store recording %s: %s", self.recording_name, e)
            self.note("recording_failed", {"name": self.recording_name, "error": str(e)[:200]})
        # What the flow did not decide (the call was cut short on our side) is our failure.
        outcomes = tuple(o or f.Outcome.FAILED for o in self.flow.outcomes)
        if await self.store.finish(outcomes, recording):
            self.log.info("call %s ended: %s", self.key[:8], ",".join(o.value for o in outcomes))
            if recording is not None and not self.ctx.config.recordings.keep_on_asterisk:
                # Only now: until its row is committed the recording must be fetchable again.
                await self._delete_asterisk_copy()

    async def _delete_asterisk_copy(self) -> None:
        local = self._asterisk_file()
        if local is None:
            with contextlib.suppress(AriError):
                await self.ari.delete_stored_recording(self.recording_name)
        else:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(local.unlink)

    def _asterisk_file(self) -> Path | None:
        """Where MixMonitor writes this call's recording, when Asterisk's folder is ours to
        read (`recordings.asterisk_folder`): the snoop's recording is always fetched by ARI."""
        folder = self.ctx.config.recordings.asterisk_folder
        if folder is None or self.recording_state != "mixmonitor":
            return None
        return folder / f"{self.recording_name}.wav"

    # ---- recording ----------------------------------------------------------------------------

    async def _collect_recording(self, writer: audio.AudioWriter) -> bool:
        """The call's recording downloaded into `writer`; False when there is none."""
        if self.recording_state is None:
            return False
        timeout = self.ctx.config.flow.recording_stop_timeout_s
        if self.recording_state == "mixmonitor":
            local = self._asterisk_file()
            if local is not None:
                return await closed_copy(local, timeout, self.log)(writer)
            return await self.ari.closed_recording(self.recording_name, timeout, writer)
        if not self.recording_done.is_set():
            # The snoop ends with the channel; ask explicitly if it has not yet.
            with contextlib.suppress(AriError):
                await self.ari.stop_recording(self.recording_name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_until_recorded(), timeout)
        if self.recording_state != "done":
            self.log.error(
                "recording %s did not finish (%s)", self.recording_name, self.recording_state
            )
            return False
        try:
            await self.ari.stored_recording(self.recording_name, writer)
        except AriError as e:
            self.log.error("could not download the recording: %s", e)
            return False
        return True

    async def _drain_until_recorded(self) -> None:
        while not self.recording_done.is_set():
            item = await self.queue.get()
            if isinstance(item, dict):
                await self._on_ari(item)
