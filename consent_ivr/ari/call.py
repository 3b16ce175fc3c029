"""One call on the ARI front: translate ARI events into flow events and flow actions into ARI
requests, and keep the evidence. All decisions are the flow's (consent_ivr.flow)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydub import AudioSegment

from consent_ivr import flow as f
from consent_ivr.ari.client import AriError, AriEvent, event_time
from consent_ivr.clock import now
from consent_ivr.phone import mask
from consent_ivr.store import records as store
from consent_ivr.store.records import Evidence, NewCall, RecordingInfo

if TYPE_CHECKING:
    from consent_ivr.ari.app import ConsentApp

log = logging.getLogger(__name__)

HANGUP_EVENTS = ("StasisEnd", "ChannelDestroyed", "ChannelHangupRequest")


@dataclass(frozen=True)
class CallSetup:
    direction: str
    campaign: str
    language: str
    phone: str
    recording: str | None = None  # name of the MixMonitor recording the dialplan started


class CallSession:
    def __init__(self, app: ConsentApp, start: AriEvent, setup: CallSetup) -> None:
        self.app = app
        self.ari = app.ari
        self.setup = setup
        self.channel: dict[str, Any] = start["channel"]
        self.channel_id: str = self.channel["id"]
        self.key = uuid.uuid4().hex
        self.snoop_id = f"snoop-{self.key}"
        self.recording_name = setup.recording or f"consent-{self.key}"
        _, self.campaign = app.config.campaign(setup.campaign)
        self.flow = f.ConsentFlow(self.campaign.rules(app.config.flow))
        self.queue: asyncio.Queue[AriEvent | f.Event] = asyncio.Queue()
        self.pending: list[Evidence] = []
        self.ids: tuple[str, str] | None = None  # (call_id, record_id) once stored
        self.playbacks: dict[str, tuple[int, str]] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.recording_state: str | None = None  # started / done / failed
        self.recording_done = asyncio.Event()
        self.hung_up = False
        self.started_at = event_time(start)
        self._opening: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.log = logging.LoggerAdapter(log, {"call": self.key[:8]})
        self.ari.route(self.channel_id, self.queue)
        self.ari.route(self.snoop_id, self.queue)

    # ---- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        self.log.info(
            "call %s %s campaign=%s lang=%s phone=%s",
            self.key[:8],
            self.setup.direction,
            self.setup.campaign,
            self.setup.language,
            mask(self.setup.phone),
        )
        try:
            self._opening = asyncio.create_task(self._open())
            await self._feed(f.CallStarted())
            while self.flow.step is not f.Step.DONE:
                item = await self.queue.get()
                if isinstance(item, dict):
                    await self._on_ari(item)
                elif isinstance(item, f.HungUp):
                    await self._hung_up()
                elif isinstance(item, f.RecordingFailed) and self.flow.step is not f.Step.RECORDING:
                    continue  # the watchdog fired after all went well
                else:
                    await self._feed(item)
            await self._finalize()
        except Exception:
            self.log.exception("call handler crashed; hanging up")
            with contextlib.suppress(AriError):
                await self.ari.hangup(self.channel_id)
        finally:
            for handle in self.timers.values():
                handle.cancel()
            self.ari.unroute(self.channel_id)
            self.ari.unroute(self.snoop_id)

    async def _feed(self, event: f.Event) -> None:
        before = self.flow.step
        actions = self.flow.handle(event)
        if self.flow.step is not before:
            self.note("state", {"from": before.value, "to": self.flow.step.value}, step=before)
        for action in actions:
            await self._do(action)

    def note(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        at: datetime | None = None,
        step: f.Step | None = None,
    ) -> None:
        step = step or self.flow.step
        self.pending.append(Evidence(at or now(), kind, step.value, data))

    def post(self, event: f.Event) -> None:
        self.queue.put_nowait(event)

    # ---- ARI events -> flow events ---------------------------------------------------------

    async def _on_ari(self, ev: AriEvent) -> None:
        kind = ev.get("type")
        channel = (ev.get("channel") or {}).get("id")
        if kind == "StasisStart" and channel == self.snoop_id:
            await self._record_snoop()
        elif kind == "ChannelDtmfReceived" and channel == self.channel_id:
            digit = ev["digit"]
            self.note(
                "key", {"digit": digit, "acted_on": self.flow.accepts_keys}, at=event_time(ev)
            )
            await self._feed(f.KeyPressed(digit))
        elif kind == "PlaybackStarted":
            play = self.playbacks.get(ev["playback"]["id"])
            if play:
                prompt = self.app.catalog.get(self.setup.campaign, self.setup.language, play[1])
                self.note(
                    "prompt",
                    {
                        "prompt": prompt.name,
                        "text": prompt.text,
                        "version": prompt.version,
                        "sha256": prompt.sha256,
                        "language": prompt.language,
                    },
                    at=event_time(ev),
                )
        elif kind == "PlaybackFinished":
            play = self.playbacks.pop(ev["playback"]["id"], None)
            if play:
                if ev["playback"].get("state") == "failed":
                    self.note("prompt_failed", {"prompt": play[1]})
                    await self._feed(f.PromptFailed(play[0], "playback failed"))
                else:
                    await self._feed(f.PromptFinished(play[0]))
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
                if self.channel.get("state") != "Up":
                    await self._request(self.ari.answer(self.channel_id))
            case f.StartRecording():
                await self._start_recording()
            case f.Play(prompt=name, play_id=pid):
                await self._play(name, pid)
            case f.StopPlayback(play_id=pid):
                for pb_id, (known, _) in list(self.playbacks.items()):
                    if known == pid:
                        self.playbacks.pop(pb_id)
                        with contextlib.suppress(AriError):
                            await self.ari.stop_playback(pb_id)
            case f.StartTimer(timer_id=tid, seconds=secs):
                loop = asyncio.get_running_loop()
                self.timers[tid] = loop.call_later(secs, self.post, f.TimerExpired(tid))
            case f.CancelTimer(timer_id=tid):
                handle = self.timers.pop(tid, None)
                if handle:
                    handle.cancel()
            case f.Persist(choice=choice):
                self._spawn(self._persist(choice))
            case f.Hangup():
                with contextlib.suppress(AriError):
                    await self.ari.hangup(self.channel_id)
            case f.Finish(outcome=outcome):
                self.note("finished", {"outcome": outcome.value})

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
                at=self.started_at,
            )
            self.post(f.RecordingStarted())
            return
        try:
            await self.ari.snoop(self.channel_id, self.snoop_id, "snoop")
        except AriError as e:
            self._recording_failed(str(e))
            return
        timeout = self.app.config.flow.recording_stop_timeout_s
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

    async def _play(self, name: str, play_id: int) -> None:
        prompt = self.app.catalog.get(self.setup.campaign, self.setup.language, name)
        playback_id = f"{self.key}-{play_id}"
        self.playbacks[playback_id] = (play_id, name)
        try:
            await self.ari.play(self.channel_id, playback_id, self.app.catalog.media(prompt))
        except AriError as e:
            self.playbacks.pop(playback_id, None)
            if e.status == 404:
                await self._hung_up()
            else:
                self.log.error("could not play %s: %s", name, e)
                self.post(f.PromptFailed(play_id, str(e)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- storage ----------------------------------------------------------------------------

    def _new_call(self) -> NewCall:
        c, lang = self.campaign, self.setup.language
        caller = self.channel.get("caller", {}).get("number")
        called = self.channel.get("dialplan", {}).get("exten")
        return NewCall(
            channel_id=self.channel_id,
            direction=self.setup.direction,
            caller_number=caller,
            called_number=called,
            phone=self.setup.phone,
            campaign=self.setup.campaign,
            language=lang,
            jurisdiction=c.jurisdiction,
            purpose={
                "id": c.purpose.id,
                "text": c.purpose.text[lang],
                "data_categories": c.purpose.data_categories[lang],
                "retention": c.purpose.retention[lang],
                "withdrawal": c.purpose.withdrawal[lang],
                "lawful_basis": c.purpose.lawful_basis,
                "validity": c.purpose.validity,
                "privacy_notice_url": c.privacy_notice_url,
            },
            controller={
                "name": c.controller.name[lang],
                "contact": c.controller.contact,
                "on_behalf_of": c.controller.on_behalf_of,
            },
            started_at=self.started_at,
        )

    def _ensure_open(self, session: Any) -> tuple[str, str]:
        if self.ids is None:
            self.ids = store.open_call(session, self._new_call())
        return self.ids

    async def _open(self) -> None:
        try:
            await self.app.db.transaction(self._ensure_open)
        except Exception as e:
            self.ids = None
            self.log.error(
                "could not store the call start (will retry with the decision): %s", _brief(e)
            )

    async def _write(self, work: Any) -> None:
        """Write the pending evidence with `work`; keep it pending if the write fails."""
        if self._opening:
            await self._opening
        batch = list(self.pending)
        opened_before = self.ids

        def tx(session: Any) -> None:
            _, record_id = self._ensure_open(session)
            work(session, record_id, batch)

        try:
            await self.app.db.transaction(tx)
        except Exception:
            self.ids = opened_before  # the insert rolled back with everything else
            raise
        del self.pending[: len(batch)]

    async def _persist(self, choice: f.Choice) -> None:
        outcome = "granted" if choice is f.Choice.AGREE else "declined"
        at = now()

        def work(session: Any, record_id: str, batch: Sequence[Evidence]) -> None:
            store.store_decision(session, record_id, outcome, at, batch, self.app.decision_hooks)

        try:
            await self._write(work)
        except Exception as e:
            self.log.error("could not store the decision: %s", _brief(e))
            self.note("store_failed", {"outcome": outcome, "error": _brief(e)})
            self.post(f.Persisted(False, _brief(e)))
            return
        self.post(f.Persisted(True))

    async def _finalize(self) -> None:
        if not self.hung_up:
            with contextlib.suppress(AriError):
                await self.ari.hangup(self.channel_id)
        recording = await self._collect_recording()
        outcome = self.flow.outcome.value if self.flow.outcome else "failed"
        ended = now()
        self.note("call_ended", {"outcome": outcome}, at=ended)

        def work(session: Any, record_id: str, batch: Sequence[Evidence]) -> None:
            assert self.ids is not None
            store.finish_call(session, self.ids[0], record_id, outcome, ended, batch, recording)

        try:
            await self._write(work)
        except Exception as e:
            self.log.error(
                "could not store the end of the call (outcome %s): %s", outcome, _brief(e)
            )
            return
        self.log.info("call %s ended: %s", self.key[:8], outcome)

    # ---- recording ----------------------------------------------------------------------------

    async def _collect_recording(self) -> RecordingInfo | None:
        if self.recording_state is None:
            return None
        timeout = self.app.config.flow.recording_stop_timeout_s
        if self.recording_state == "mixmonitor":
            data = await self._fetch_closed_wav(timeout)
            if data is None:
                return None
            return await self._keep_recording(data)
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
            return None
        try:
            data = await self.ari.stored_recording(self.recording_name)
        except AriError as e:
            self.log.error("could not download the recording: %s", e)
            return None
        return await self._keep_recording(data)

    async def _fetch_closed_wav(self, timeout: float) -> bytes | None:
        """MixMonitor closes its file a moment after the channel is gone, and only then writes
        the sizes into the WAV header: download until the header matches the file."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                data = await self.ari.stored_recording(self.recording_name)
                if _wav_closed(data):
                    return data
            except AriError as e:
                if e.status != 404:
                    self.log.error("could not download the recording: %s", e)
                    return None
            if loop.time() > deadline:
                self.log.error("recording %s was not closed in %.0fs", self.recording_name, timeout)
                return None
            await asyncio.sleep(0.2)

    async def _keep_recording(self, data: bytes) -> RecordingInfo:
        info = await asyncio.to_thread(self._save_recording, data)
        if not self.app.config.recordings.keep_on_asterisk:
            with contextlib.suppress(AriError):
                await self.ari.delete_stored_recording(self.recording_name)
        return info

    async def _drain_until_recorded(self) -> None:
        while not self.recording_done.is_set():
            item = await self.queue.get()
            if isinstance(item, dict):
                await self._on_ari(item)

    def _save_recording(self, data: bytes) -> RecordingInfo:
        day = self.started_at.strftime("%Y/%m/%d")
        folder = self.app.recordings_dir / day
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.key}.wav"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        duration = len(AudioSegment.from_file(io.BytesIO(data), format="wav")) / 1000.0
        return RecordingInfo(
            path=str(Path(path).resolve()),
            sha256=hashlib.sha256(data).hexdigest(),
            duration_s=duration,
            format="wav",
        )


def _wav_closed(data: bytes) -> bool:
    """True when the RIFF header's size matches the data (the writer has closed the file)."""
    return (
        len(data) > 44
        and data[:4] == b"RIFF"
        and int.from_bytes(data[4:8], "little") == len(data) - 8
    )


def _brief(e: BaseException) -> str:
    """An exception in one line, without the SQL statement and parameters it may carry."""
    # SQLAlchemy wraps the driver's error; its own first line may be only a hint such as
    # "(raised as a result of Query-invoked autoflush; ...)", without the cause.
    orig = getattr(e, "orig", None)
    if isinstance(orig, BaseException):
        e = orig
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]
