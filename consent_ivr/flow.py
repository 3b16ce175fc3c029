"""The consent call as a pure state machine: events in, actions out, no I/O.

Theory of operation
-------------------
Everything that decides what the caller hears next, and what the call's outcomes are, lives in
this file. A front (the ARI app, the FastAGI server, a unit test) feeds `ConsentFlow.handle()`
with events (call started, recording started, prompt finished, key pressed, timer expired, hung
up, store result) and carries out the actions it returns (answer, record, play, stop a playback,
start a timer, persist a decision, hang up, finish). The front never decides anything itself.

What a call is about is known before it starts (`Dialogue`): the purposes to ask for, the
consents the caller could withdraw, whether the caller's number is known. That gives three
dialogues, all after the recording notice:

- consent: for each purpose in turn, its statement, the question (agree / decline / hear
  again), the choice stated back, the confirmation (confirm / change), the decision stored and
  then announced. One consent per purpose: each is asked, confirmed and stored on its own.
- withdrawal: a caller with active consents hears them (purpose and date) and picks one or
  all, or keeps them; the choice is stated back and confirmed the same way.
- unidentified: a caller whose number is withheld hears that consent can only be recorded with
  the number shown; nothing is asked.

A step plays a queue of prompts in order. Steps that ask (ASK, MENU, CONFIRM) accept keys at
any time, also while their prompts play (barge-in: the front is told to stop the playback);
when their prompts are done a timer waits for a key. Other steps ignore keys: the notice, the
purpose, and the statement of the choice (CHOSEN) are always heard in full, so a fast double
tap cannot confirm a choice the caller has not yet heard stated. The decision is persisted
before the caller is told it is recorded; a failed store ends in `failed`, never in `granted`.
Playbacks and timers carry ids, so a late "finished" or "expired" from one the flow has moved
past is ignored instead of being mistaken for the current one.

`following()` names the prompts that will come next if the one playing ends with no key pressed
(the notice, the purpose and the question, say), so that a front may hand them to the media
server as one playlist instead of one request each. The front still reports each prompt's end
as it comes, and the flow still decides every step.

`TRANSITIONS` lists every step change the machine can make; `diagram()` draws it for ops and
lawyers, and the unit tests check the machine against it in both directions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Step(enum.StrEnum):
    START = "start"
    RECORDING = "recording"  # waiting for the recording to start, before the first word
    NOTICE = "notice"
    PURPOSE = "purpose"
    ASK = "ask"
    MENU = "menu"  # the withdrawal menu
    CHOSEN = "chosen"  # the choice stated back; keys do not count yet
    CONFIRM = "confirm"
    SAVING = "saving"
    RECORDED = "recorded"
    RESULT = "result"
    DONE = "done"


class Outcome(enum.StrEnum):
    GRANTED = "granted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"
    KEPT = "kept"  # heard the active consents and kept them
    NOTHING_ACTIVE = "nothing_active"  # came to withdraw, had nothing to withdraw
    UNIDENTIFIED = "unidentified"  # no caller number: nothing may be recorded against a person
    NO_RESPONSE = "no_response"  # retries exhausted: silence, wrong keys or endless changes
    ABANDONED = "abandoned"  # caller hung up before a confirmed decision
    FAILED = "failed"  # our fault: recording, playback or store failed


class Choice(enum.StrEnum):
    AGREE = "agree"
    DECLINE = "decline"
    WITHDRAW = "withdraw"


# Prompt names; their wording and audio come from YAML (see consent_ivr.prompts). `purpose` is
# said once per purpose; `menu` and `chosen_withdraw` name the caller's own consents and dates,
# so the front renders them per call (DYNAMIC).
NOTICE, PURPOSE, ASK, MENU, CONFIRM = "notice", "purpose", "ask", "menu", "confirm"
CHOSEN_PROMPT = {Choice.AGREE: "chosen_agree", Choice.DECLINE: "chosen_decline"}
CHOSEN_WITHDRAW, CHOSEN_WITHDRAW_ALL = "chosen_withdraw", "chosen_withdraw_all"
RECORDED_PROMPT = {
    Choice.AGREE: "recorded_agree",
    Choice.DECLINE: "recorded_decline",
    Choice.WITHDRAW: "recorded_withdraw",
}
INVALID, NO_INPUT, NO_RESPONSE, FAILURE, GOODBYE = (
    "invalid",
    "no_input",
    "no_response",
    "failure",
    "goodbye",
)
UNIDENTIFIED, KEPT, NOTHING_ACTIVE = "unidentified", "kept", "nothing_active"
DYNAMIC: tuple[str, ...] = (MENU, CHOSEN_WITHDRAW)
PROMPTS: tuple[str, ...] = (
    NOTICE,
    PURPOSE,
    ASK,
    *CHOSEN_PROMPT.values(),
    CONFIRM,
    *RECORDED_PROMPT.values(),
    INVALID,
    NO_INPUT,
    NO_RESPONSE,
    FAILURE,
    GOODBYE,
    UNIDENTIFIED,
    MENU,
    CHOSEN_WITHDRAW,
    CHOSEN_WITHDRAW_ALL,
    KEPT,
    NOTHING_ACTIVE,
)
# Menu keys 1..8 name the caller's active consents in the order the front gave them.
MENU_SIZE = 8


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
    """Play `prompt`; `item` says which purpose (for `purpose`) or which active consent (for
    `chosen_withdraw`) it is about, by index into the `Dialogue`."""

    prompt: str
    play_id: int
    item: int | None = None


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
    """Commit one decision in one transaction; answer with `Persisted`.

    Consent: `item` is the purpose's index and `choice` agree or decline. Withdrawal: `choice`
    is withdraw and `targets` the indexes of the active consents withdrawn."""

    item: int
    choice: Choice
    targets: tuple[int, ...] = ()


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Finish:
    """The call is over for the flow: store the outcomes (one per item: each purpose of a
    consent call, or the single withdrawal), stop and collect the recording."""

    outcomes: tuple[Outcome, ...]


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
    """What ops can tune in config.yaml (`flow` and the campaign's `keys`); the defaults here
    are the product's defaults, which the config models take from this class."""

    agree: str = "1"
    decline: str = "2"
    repeat: str = "0"
    confirm: str = "1"
    change: str = "2"
    withdraw_all: str = "9"
    keep: str = "0"
    key_timeout_s: float = 6.0
    max_attempts: int = 3  # questions asked in a row without a valid key before no_response
    max_repeats: int = 2  # "hear it again" and "change my answer" loops per question


@dataclass(frozen=True)
class Dialogue:
    """What the call is about, known before it starts (from the config and the database).

    `purposes`: the ids of the purposes a consent call asks for, in order. `active`: the
    caller's active consents, in menu order; when there are any, the call is a withdrawal call.
    `withdraw`: the caller came to withdraw (a direct entry): with nothing active they are told
    so instead of being asked for consent. `identified`: the caller's number is known."""

    purposes: tuple[str, ...] = ("purpose",)
    active: tuple[str, ...] = ()
    withdraw: bool = False
    identified: bool = True

    def __post_init__(self) -> None:
        if not self.purposes and not self.withdrawal:
            raise ValueError("a consent call needs at least one purpose")

    @property
    def withdrawal(self) -> bool:
        return bool(self.active) or self.withdraw

    @property
    def items(self) -> int:
        """How many outcomes the call has: one per purpose, or one for a withdrawal."""
        return 1 if self.withdrawal else len(self.purposes)


class FlowError(Exception):
    """An event the machine cannot take in its current step (a bug in the front)."""


# Every step change the machine can make: (from, trigger, to). Kept by hand next to the code
# so that ops can read it; the unit tests fail if the code makes a change not listed here, or
# if one listed here is never made.
TRANSITIONS: tuple[tuple[Step, str, Step], ...] = (
    (Step.START, "call started", Step.RECORDING),
    (Step.RECORDING, "recording started", Step.NOTICE),
    (Step.RECORDING, "recording failed", Step.RESULT),
    (Step.NOTICE, "notice played", Step.PURPOSE),
    (Step.NOTICE, "notice played, consents active", Step.MENU),
    (Step.NOTICE, "notice played, number withheld or nothing to withdraw", Step.RESULT),
    (Step.PURPOSE, "purpose played", Step.ASK),
    (Step.ASK, "agree or decline key", Step.CHOSEN),
    (Step.ASK, "repeat key", Step.PURPOSE),
    (Step.ASK, "attempts or repeats exhausted", Step.RESULT),
    (Step.MENU, "a consent's key or the all key", Step.CHOSEN),
    (Step.MENU, "keep key", Step.RESULT),
    (Step.MENU, "attempts exhausted", Step.RESULT),
    (Step.CHOSEN, "choice stated", Step.CONFIRM),
    (Step.CONFIRM, "confirm key", Step.SAVING),
    (Step.CONFIRM, "wrong key, silence or repeat key", Step.CHOSEN),
    (Step.CONFIRM, "change key", Step.ASK),
    (Step.CONFIRM, "change key (withdrawal)", Step.MENU),
    (Step.CONFIRM, "attempts, repeats or changes exhausted", Step.RESULT),
    (Step.SAVING, "stored", Step.RECORDED),
    (Step.SAVING, "store failed", Step.RESULT),
    (Step.RECORDED, "recorded said, next purpose", Step.PURPOSE),
    (Step.RECORDED, "recorded said", Step.RESULT),
    (Step.RESULT, "result played", Step.DONE),
    (Step.START, "hang-up", Step.DONE),
    (Step.RECORDING, "hang-up", Step.DONE),
    (Step.NOTICE, "hang-up", Step.DONE),
    (Step.PURPOSE, "hang-up", Step.DONE),
    (Step.ASK, "hang-up", Step.DONE),
    (Step.MENU, "hang-up", Step.DONE),
    (Step.CHOSEN, "hang-up", Step.DONE),
    (Step.CONFIRM, "hang-up", Step.DONE),
    (Step.SAVING, "hang-up, then stored or failed", Step.DONE),
    (Step.RECORDED, "hang-up", Step.DONE),
    (Step.RESULT, "hang-up", Step.DONE),
    (Step.NOTICE, "prompt failed", Step.RESULT),
    (Step.PURPOSE, "prompt failed", Step.RESULT),
    (Step.ASK, "prompt failed", Step.RESULT),
    (Step.MENU, "prompt failed", Step.RESULT),
    (Step.CHOSEN, "prompt failed", Step.RESULT),
    (Step.CONFIRM, "prompt failed", Step.RESULT),
    (Step.RECORDED, "prompt failed", Step.DONE),
    (Step.RESULT, "prompt failed", Step.DONE),
)

_ASKING = (Step.ASK, Step.MENU, Step.CONFIRM)


@dataclass
class ConsentFlow:
    """One call's dialogue. Create one per call; feed it events with `handle`."""

    rules: Rules = field(default_factory=Rules)
    dialogue: Dialogue = field(default_factory=Dialogue)
    step: Step = Step.START
    item: int = 0  # the purpose being asked (consent calls)
    choice: Choice | None = None
    targets: tuple[int, ...] = ()  # the active consents chosen for withdrawal
    outcomes: list[Outcome | None] = field(default_factory=list)
    attempts: int = 0
    loops: int = 0
    hung_up: bool = False
    _queue: list[tuple[str, int | None]] = field(default_factory=list)
    _playing: int | None = None
    _play_seq: int = 0
    _timer: int | None = None
    _timer_seq: int = 0

    def __post_init__(self) -> None:
        if not self.outcomes:
            self.outcomes = [None] * self.dialogue.items

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
                if self.step in (Step.RESULT, Step.RECORDED):
                    # The decision (if any) is stored: only the courtesy prompts are lost.
                    self._settle(Outcome.FAILED)
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

    def following(self, limit: int = 4) -> list[tuple[str, int | None]]:
        """The prompts (name, item) that will play after the one playing if it ends and no key
        is pressed, up to the first point where the flow waits for something else (a key, a
        timer, a store) or ends the call: worked out on a copy, so it cannot disagree with what
        `handle` will do."""
        if self._playing is None or self.step is Step.DONE:
            return []
        state: dict[str, Any] = dict(vars(self))
        state["_queue"], state["outcomes"] = list(self._queue), list(self.outcomes)
        sim = ConsentFlow.__new__(ConsentFlow)
        sim.__dict__.update(state)
        upcoming: list[tuple[str, int | None]] = []
        while len(upcoming) < limit and sim._playing is not None:
            actions = sim.handle(PromptFinished(sim._playing))
            if len(actions) != 1 or not isinstance(actions[0], Play):
                break
            upcoming.append((actions[0].prompt, actions[0].item))
        return upcoming

    @property
    def accepts_keys(self) -> bool:
        return self.step in _ASKING

    @property
    def outcome(self) -> Outcome | None:
        """The call's outcome for a single-item call (the usual one-purpose consent call)."""
        return self.outcomes[0] if len(self.outcomes) == 1 else None

    # ---- steps ----------------------------------------------------------------------------

    def _expect(self, step: Step, event: Event) -> None:
        if self.step is not step:
            raise FlowError(f"cannot handle {type(event).__name__} in step {self.step.value}")

    def _enter(self, step: Step, prompts: list[str], item: int | None = None) -> list[Action]:
        self.step = step
        return self._play([(p, item if p in (PURPOSE, CHOSEN_WITHDRAW) else None) for p in prompts])

    def _play(self, prompts: list[tuple[str, int | None]]) -> list[Action]:
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
            prompt, item = self._queue.pop(0)
            return [Play(prompt, self._playing, item)]
        # The step's prompts are done.
        match self.step:
            case Step.NOTICE:
                return self._after_notice()
            case Step.PURPOSE:
                self.attempts = 0
                return self._enter(Step.ASK, [ASK])
            case Step.CHOSEN:
                return self._enter(Step.CONFIRM, [CONFIRM])
            case Step.ASK | Step.MENU | Step.CONFIRM:
                self._timer_seq += 1
                self._timer = self._timer_seq
                return [StartTimer(self._timer, self.rules.key_timeout_s)]
            case Step.RECORDED:
                if not self.dialogue.withdrawal and self.item + 1 < len(self.dialogue.purposes):
                    return self._next_purpose()
                return self._enter(Step.RESULT, [GOODBYE])
            case Step.RESULT:
                return self._hangup()
        return []

    def _after_notice(self) -> list[Action]:
        d = self.dialogue
        if not d.identified:
            return self._conclude(Outcome.UNIDENTIFIED, [UNIDENTIFIED, GOODBYE])
        if d.active:
            self.attempts = 0
            return self._enter(Step.MENU, [MENU])
        if d.withdraw:
            return self._conclude(Outcome.NOTHING_ACTIVE, [NOTHING_ACTIVE, GOODBYE])
        return self._enter(Step.PURPOSE, [PURPOSE], self.item)

    def _next_purpose(self) -> list[Action]:
        self.item += 1
        self.choice, self.attempts, self.loops = None, 0, 0
        return self._enter(Step.PURPOSE, [PURPOSE], self.item)

    def _chosen_prompts(self) -> list[tuple[str, int | None]]:
        if self.choice is Choice.WITHDRAW:
            if len(self.targets) > 1:
                return [(CHOSEN_WITHDRAW_ALL, None)]
            return [(CHOSEN_WITHDRAW, self.targets[0])]
        assert self.choice is not None
        return [(CHOSEN_PROMPT[self.choice], None)]

    def _state_choice(self, before: tuple[str, ...] = ()) -> list[Action]:
        """Say back what was chosen (keys do not count meanwhile), then ask to confirm."""
        self.step = Step.CHOSEN
        return self._play([(p, None) for p in before] + self._chosen_prompts())

    def _key(self, digit: str) -> list[Action]:
        r = self.rules
        match self.step:
            case Step.ASK:
                if digit in (r.agree, r.decline):
                    self.choice = Choice.AGREE if digit == r.agree else Choice.DECLINE
                    self.attempts = 0
                    return self._state_choice()
                if digit == r.repeat:
                    return self._loop_or_give_up(Step.PURPOSE, [PURPOSE])
                return self._retry_or_give_up([INVALID, ASK])
            case Step.MENU:
                count = min(len(self.dialogue.active), MENU_SIZE)
                if digit.isdigit() and 1 <= int(digit) <= count:
                    self.targets = (int(digit) - 1,)
                elif digit == r.withdraw_all and len(self.dialogue.active) > 1:
                    self.targets = tuple(range(len(self.dialogue.active)))
                elif digit == r.keep:
                    return self._conclude(Outcome.KEPT, [KEPT, GOODBYE])
                else:
                    return self._retry_or_give_up([INVALID, MENU])
                self.choice, self.attempts = Choice.WITHDRAW, 0
                return self._state_choice()
            case Step.CONFIRM:
                if digit == r.confirm:
                    self.step = Step.SAVING
                    assert self.choice is not None
                    return [*self._silence(), Persist(self.item, self.choice, self.targets)]
                if digit == r.change:
                    self.choice, self.targets, self.attempts = None, (), 0
                    if self.dialogue.withdrawal:
                        return self._loop_or_give_up(Step.MENU, [MENU])
                    return self._loop_or_give_up(Step.ASK, [ASK])
                if digit == r.repeat:
                    self.loops += 1
                    if self.loops > r.max_repeats:
                        return self._conclude(Outcome.NO_RESPONSE, [NO_RESPONSE, GOODBYE])
                    return self._state_choice()
                return self._retry_or_give_up([INVALID], restate=True)
        return []  # keys outside a question are logged by the front, never acted on

    def _no_key(self) -> list[Action]:
        match self.step:
            case Step.ASK:
                return self._retry_or_give_up([NO_INPUT, ASK])
            case Step.MENU:
                return self._retry_or_give_up([NO_INPUT, MENU])
        return self._retry_or_give_up([NO_INPUT], restate=True)

    def _retry_or_give_up(self, prompts: list[str], *, restate: bool = False) -> list[Action]:
        self.attempts += 1
        if self.attempts >= self.rules.max_attempts:
            return self._conclude(Outcome.NO_RESPONSE, [NO_RESPONSE, GOODBYE])
        if restate:
            return self._state_choice(tuple(prompts))
        return self._play([(p, None) for p in prompts])

    def _loop_or_give_up(self, step: Step, prompts: list[str]) -> list[Action]:
        self.loops += 1
        if self.loops > self.rules.max_repeats:
            return self._conclude(Outcome.NO_RESPONSE, [NO_RESPONSE, GOODBYE])
        return self._enter(step, prompts, self.item)

    def _persisted(self, ok: bool) -> list[Action]:
        assert self.choice is not None
        if not ok:
            self.outcomes[self.item] = Outcome.FAILED
            if self.hung_up:
                self._settle(Outcome.ABANDONED)  # the rest was never asked: the caller left
                return self._finish()
            self._settle(Outcome.FAILED)
            return self._enter(Step.RESULT, [FAILURE, GOODBYE])
        self.outcomes[self.item] = {
            Choice.AGREE: Outcome.GRANTED,
            Choice.DECLINE: Outcome.DECLINED,
            Choice.WITHDRAW: Outcome.WITHDRAWN,
        }[self.choice]
        if self.hung_up:
            self._settle(Outcome.ABANDONED)
            return self._finish()
        return self._enter(Step.RECORDED, [RECORDED_PROMPT[self.choice]])

    def _fail(self) -> list[Action]:
        return self._conclude(Outcome.FAILED, [FAILURE, GOODBYE])

    def _settle(self, outcome: Outcome) -> None:
        """Every item without an outcome gets `outcome` (the rest of the call is not asked)."""
        self.outcomes = [o if o is not None else outcome for o in self.outcomes]

    def _conclude(self, outcome: Outcome, prompts: list[str]) -> list[Action]:
        self._settle(outcome)
        return self._enter(Step.RESULT, prompts)

    def _hangup(self) -> list[Action]:
        return [*self._silence(), Hangup(), *self._finish()]

    def _hung_up(self) -> list[Action]:
        self.hung_up = True
        actions = self._silence()
        if self.step is Step.SAVING:
            return actions  # the decision is being stored: its result decides the outcome
        self._settle(Outcome.ABANDONED)
        return actions + self._finish()

    def _finish(self) -> list[Action]:
        self.step = Step.DONE
        return [Finish(tuple(o for o in self.outcomes if o is not None))]


def diagram() -> str:
    """The transition table as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {Step.START.value}"]
    for src, label, dst in TRANSITIONS:
        lines.append(f"    {src.value} --> {dst.value}: {label}")
    lines.append(f"    {Step.DONE.value} --> [*]")
    return "\n".join(lines)
