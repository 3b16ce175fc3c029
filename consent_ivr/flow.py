"""The consent call as a pure state machine: events in, actions out, no I/O.

Theory of operation
-------------------
Everything that decides what the caller hears next, and what the call's outcome is, lives in this
file. A front (the ARI app, the FastAGI server, a unit test) feeds `ConsentFlow.handle()` with
events (call started, recording started, prompt finished, key pressed, timer expired, hung up,
store result) and carries out the actions it returns (answer, record, play, stop a playback,
start a timer, persist the decision, hang up, finish). The front never decides anything itself.

A step plays a queue of prompts in order. Steps that ask a question (ASK, CONFIRM) accept keys at
any time, also while their prompts play (barge-in: the front is told to stop the playback);
when their prompts are done a timer waits for a key. Other steps (NOTICE, PURPOSE, SAVING,
RESULT) ignore keys: the recording notice and the purpose statement are always heard in full.
Only two matching keys make a decision: agree (or decline), then confirm. The decision is
persisted before the caller is told it is recorded; a failed store ends in `failed`, never in
`granted`. Playbacks and timers carry ids, so a late "finished" or "expired" from one the flow
has already moved past is ignored instead of being mistaken for the current one.

`TRANSITIONS` lists every step change the machine can make; `diagram()` draws it for ops and
lawyers, and the unit tests check the machine against it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Step(enum.StrEnum):
    START = "start"
    RECORDING = "recording"  # waiting for the recording to start, before the first word
    NOTICE = "notice"
    PURPOSE = "purpose"
    ASK = "ask"
    CONFIRM = "confirm"
    SAVING = "saving"
    RESULT = "result"
    DONE = "done"


class Outcome(enum.StrEnum):
    GRANTED = "granted"
    DECLINED = "declined"
    NO_RESPONSE = "no_response"  # retries exhausted: silence, wrong keys or endless changes
    ABANDONED = "abandoned"  # caller hung up before a confirmed decision
    FAILED = "failed"  # our fault: recording, playback or store failed


class Choice(enum.StrEnum):
    AGREE = "agree"
    DECLINE = "decline"


# Prompt names; their wording and audio come from YAML (see consent_ivr.prompts).
NOTICE, PURPOSE, ASK = "notice", "purpose", "ask"
CONFIRM_PROMPT = {Choice.AGREE: "confirm_agree", Choice.DECLINE: "confirm_decline"}
RECORDED_PROMPT = {Choice.AGREE: "recorded_agree", Choice.DECLINE: "recorded_decline"}
INVALID, NO_INPUT, NO_RESPONSE, FAILURE, GOODBYE = (
    "invalid",
    "no_input",
    "no_response",
    "failure",
    "goodbye",
)
PROMPTS: tuple[str, ...] = (
    NOTICE,
    PURPOSE,
    ASK,
    *CONFIRM_PROMPT.values(),
    *RECORDED_PROMPT.values(),
    INVALID,
    NO_INPUT,
    NO_RESPONSE,
    FAILURE,
    GOODBYE,
)


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallStarted:
    pass


@dataclass(frozen=True)
class RecordingStarted:
    pass


@dataclass(frozen=True)
class RecordingFailed:
    reason: str = ""


@dataclass(frozen=True)
class PromptFinished:
    play_id: int


@dataclass(frozen=True)
class PromptFailed:
    play_id: int
    reason: str = ""


@dataclass(frozen=True)
class KeyPressed:
    digit: str


@dataclass(frozen=True)
class TimerExpired:
    timer_id: int


@dataclass(frozen=True)
class HungUp:
    pass


@dataclass(frozen=True)
class Persisted:
    ok: bool
    reason: str = ""


Event = (
    CallStarted
    | RecordingStarted
    | RecordingFailed
    | PromptFinished
    | PromptFailed
    | KeyPressed
    | TimerExpired
    | HungUp
    | Persisted
)


# ---- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    pass


@dataclass(frozen=True)
class StartRecording:
    pass


@dataclass(frozen=True)
class Play:
    prompt: str
    play_id: int


@dataclass(frozen=True)
class StopPlayback:
    play_id: int


@dataclass(frozen=True)
class StartTimer:
    timer_id: int
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    timer_id: int


@dataclass(frozen=True)
class Persist:
    """Commit the decision (and its SMS job) in one transaction; answer with `Persisted`."""

    choice: Choice


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Finish:
    """The call is over for the flow: store the outcome, stop and collect the recording."""

    outcome: Outcome


Action = (
    Answer
    | StartRecording
    | Play
    | StopPlayback
    | StartTimer
    | CancelTimer
    | Persist
    | Hangup
    | Finish
)


@dataclass(frozen=True)
class Rules:
    """What ops can tune in config.yaml (`flow` and the campaign's `keys`)."""

    agree: str = "1"
    decline: str = "2"
    repeat: str = "0"
    confirm: str = "1"
    change: str = "2"
    key_timeout_s: float = 6.0
    max_attempts: int = 3  # questions asked in a row without a valid key before no_response
    max_repeats: int = 2  # "hear it again" and "change my answer" loops before no_response


class FlowError(Exception):
    """An event the machine cannot take in its current step (a bug in the front)."""


# Every step change the machine can make: (from, trigger, to). Kept by hand next to the code
# so that ops can read it; the unit tests fail if the code makes a change not listed here.
TRANSITIONS: tuple[tuple[Step, str, Step], ...] = (
    (Step.START, "call started", Step.RECORDING),
    (Step.RECORDING, "recording started", Step.NOTICE),
    (Step.RECORDING, "recording failed", Step.RESULT),
    (Step.NOTICE, "notice played", Step.PURPOSE),
    (Step.PURPOSE, "purpose played", Step.ASK),
    (Step.ASK, "agree or decline key", Step.CONFIRM),
    (Step.ASK, "repeat key", Step.PURPOSE),
    (Step.ASK, "attempts or repeats exhausted", Step.RESULT),
    (Step.CONFIRM, "confirm key", Step.SAVING),
    (Step.CONFIRM, "change key", Step.ASK),
    (Step.CONFIRM, "attempts, repeats or changes exhausted", Step.RESULT),
    (Step.SAVING, "stored", Step.RESULT),
    (Step.SAVING, "store failed", Step.RESULT),
    (Step.RESULT, "result played", Step.DONE),
    (Step.RECORDING, "hang-up", Step.DONE),
    (Step.NOTICE, "hang-up", Step.DONE),
    (Step.PURPOSE, "hang-up", Step.DONE),
    (Step.ASK, "hang-up", Step.DONE),
    (Step.CONFIRM, "hang-up", Step.DONE),
    (Step.SAVING, "hang-up, then stored or failed", Step.DONE),
    (Step.RESULT, "hang-up", Step.DONE),
    (Step.NOTICE, "prompt failed", Step.RESULT),
    (Step.PURPOSE, "prompt failed", Step.RESULT),
    (Step.ASK, "prompt failed", Step.RESULT),
    (Step.CONFIRM, "prompt failed", Step.RESULT),
    (Step.RESULT, "prompt failed", Step.DONE),
    (Step.START, "hang-up", Step.DONE),
)

_ASKING = (Step.ASK, Step.CONFIRM)


@dataclass
class ConsentFlow:
    """One call's consent dialogue. Create one per call; feed it events with `handle`."""

    rules: Rules = field(default_factory=Rules)
    step: Step = Step.START
    choice: Choice | None = None
    outcome: Outcome | None = None
    attempts: int = 0
    loops: int = 0
    hung_up: bool = False
    _queue: list[str] = field(default_factory=list)
    _playing: int | None = None
    _play_seq: int = 0
    _timer: int | None = None
    _timer_seq: int = 0

    # ---- public ---------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        if self.step is Step.DONE:
            return []
        match event:
            case CallStarted():
                self._expect(Step.START, event)
                self.step = Step.RECORDING
                return [Answer(), StartRecording()]
            case RecordingStarted():
                self._expect(Step.RECORDING, event)
                return self._enter(Step.NOTICE, [NOTICE])
            case RecordingFailed():
                self._expect(Step.RECORDING, event)
                return self._fail()
            case PromptFinished(play_id=pid):
                if pid != self._playing:
                    return []  # a playback we stopped or moved past
                self._playing = None
                return self._next_prompt()
            case PromptFailed(play_id=pid):
                if pid != self._playing:
                    return []
                self._playing = None
                if self.step is Step.RESULT:
                    return self._hangup()
                return self._fail()
            case KeyPressed(digit=digit):
                return self._key(digit)
            case TimerExpired(timer_id=tid):
                if tid != self._timer:
                    return []
                self._timer = None
                return self._no_key()
            case HungUp():
                return self._hung_up()
            case Persisted(ok=ok):
                self._expect(Step.SAVING, event)
                return self._persisted(ok)
        raise FlowError(f"unknown event {event!r} in step {self.step.value}")

    @property
    def accepts_keys(self) -> bool:
        return self.step in _ASKING

    # ---- steps ----------------------------------------------------------------------------

    def _expect(self, step: Step, event: Event) -> None:
        if self.step is not step:
            raise FlowError(f"cannot handle {type(event).__name__} in step {self.step.value}")

    def _enter(self, step: Step, prompts: list[str]) -> list[Action]:
        self.step = step
        return self._play(prompts)

    def _play(self, prompts: list[str]) -> list[Action]:
        """Replace what is queued with `prompts` and start the first one."""
        actions = self._silence()
        self._queue = list(prompts)
        return actions + self._next_prompt()

    def _silence(self) -> list[Action]:
        """Stop the running playback and the key timer, if any."""
        actions: list[Action] = []
        if self._playing is not None:
            actions.append(StopPlayback(self._playing))
            self._playing = None
        if self._timer is not None:
            actions.append(CancelTimer(self._timer))
            self._timer = None
        self._queue = []
        return actions

    def _next_prompt(self) -> list[Action]:
        if self._queue:
            self._play_seq += 1
            self._playing = self._play_seq
            return [Play(self._queue.pop(0), self._playing)]
        # The step's prompts are done.
        match self.step:
            case Step.NOTICE:
                return self._enter(Step.PURPOSE, [PURPOSE])
            case Step.PURPOSE:
                self.attempts = 0
                return self._enter(Step.ASK, [ASK])
            case Step.ASK | Step.CONFIRM:
                self._timer_seq += 1
                self._timer = self._timer_seq
                return [StartTimer(self._timer, self.rules.key_timeout_s)]
            case Step.RESULT:
                return self._hangup()
        return []

    def _key(self, digit: str) -> list[Action]:
        r = self.rules
        if self.step is Step.ASK:
            if digit in (r.agree, r.decline):
                self.choice = Choice.AGREE if digit == r.agree else Choice.DECLINE
                self.attempts = 0
                return self._enter(Step.CONFIRM, [CONFIRM_PROMPT[self.choice]])
            if digit == r.repeat:
                return self._loop_or_give_up(Step.PURPOSE, [PURPOSE])
            return self._wrong_key([ASK])
        if self.step is Step.CONFIRM:
            assert self.choice is not None
            if digit == r.confirm:
                self.step = Step.SAVING
                return [*self._silence(), Persist(self.choice)]
            if digit == r.change:
                self.choice = None
                self.attempts = 0
                return self._loop_or_give_up(Step.ASK, [ASK])
            if digit == r.repeat:
                return self._loop_or_give_up(Step.CONFIRM, [CONFIRM_PROMPT[self.choice]])
            return self._wrong_key([CONFIRM_PROMPT[self.choice]])
        return []  # keys outside a question are logged by the front, never acted on

    def _wrong_key(self, question: list[str]) -> list[Action]:
        return self._retry_or_give_up([INVALID, *question])

    def _no_key(self) -> list[Action]:
        if self.step is Step.ASK:
            return self._retry_or_give_up([NO_INPUT, ASK])
        assert self.choice is not None
        return self._retry_or_give_up([NO_INPUT, CONFIRM_PROMPT[self.choice]])

    def _retry_or_give_up(self, prompts: list[str]) -> list[Action]:
        self.attempts += 1
        if self.attempts >= self.rules.max_attempts:
            return self._conclude(Outcome.NO_RESPONSE, [NO_RESPONSE, GOODBYE])
        return self._play(prompts)

    def _loop_or_give_up(self, step: Step, prompts: list[str]) -> list[Action]:
        self.loops += 1
        if self.loops > self.rules.max_repeats:
            return self._conclude(Outcome.NO_RESPONSE, [NO_RESPONSE, GOODBYE])
        return self._enter(step, prompts)

    def _persisted(self, ok: bool) -> list[Action]:
        assert self.choice is not None
        if not ok:
            self.outcome = Outcome.FAILED
            if self.hung_up:
                return self._finish()
            return self._enter(Step.RESULT, [FAILURE, GOODBYE])
        self.outcome = Outcome.GRANTED if self.choice is Choice.AGREE else Outcome.DECLINED
        if self.hung_up:
            return self._finish()
        return self._enter(Step.RESULT, [RECORDED_PROMPT[self.choice], GOODBYE])

    def _fail(self) -> list[Action]:
        return self._conclude(Outcome.FAILED, [FAILURE, GOODBYE])

    def _conclude(self, outcome: Outcome, prompts: list[str]) -> list[Action]:
        self.outcome = outcome
        return self._enter(Step.RESULT, prompts)

    def _hangup(self) -> list[Action]:
        return [*self._silence(), Hangup(), *self._finish()]

    def _hung_up(self) -> list[Action]:
        self.hung_up = True
        actions = self._silence()
        if self.step is Step.SAVING:
            return actions  # the decision is being stored: its result decides the outcome
        if self.outcome is None:
            self.outcome = Outcome.ABANDONED
        return actions + self._finish()

    def _finish(self) -> list[Action]:
        assert self.outcome is not None
        self.step = Step.DONE
        return [Finish(self.outcome)]


def diagram() -> str:
    """The transition table as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {Step.START.value}"]
    for src, label, dst in TRANSITIONS:
        lines.append(f"    {src.value} --> {dst.value}: {label}")
    lines.append(f"    {Step.DONE.value} --> [*]")
    return "\n".join(lines)
