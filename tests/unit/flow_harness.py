"""Drivers for the consent flow in unit tests: a scripted call and a simulated Asterisk front.

Nothing here decides whether the flow is right; the tests do. `Call` keeps track of what is
playing and which timer runs so a test can say "the prompt ends" or "the timer fires" without
knowing ids. `walk` plays one whole call against a front that answers the flow's actions the way
Asterisk would (late, racing, sometimes failing) and records every turn for the invariants.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from consent_ivr.flow import (
    Action,
    CallStarted,
    CancelTimer,
    Choice,
    ConsentFlow,
    Dialogue,
    Event,
    Finish,
    FlowError,
    Hangup,
    HungUp,
    KeyPressed,
    Outcome,
    Persist,
    Persisted,
    Play,
    PromptFailed,
    PromptFinished,
    RecordingFailed,
    RecordingStarted,
    Rules,
    StartRecording,
    StartTimer,
    Step,
    StopPlayback,
    TimerExpired,
)

KEYPAD = "0123456789*#ABCD"  # every DTMF key a campaign may configure
Outcomes = tuple[Outcome | None, ...]


class TracingFlow(ConsentFlow):
    """A ConsentFlow that records every step change as it is made, even several in one event."""

    changes: list[tuple[Step, Step]]

    def __init__(self, rules: Rules | None = None, dialogue: Dialogue | None = None) -> None:
        object.__setattr__(self, "changes", [])
        super().__init__(rules=rules or Rules(), dialogue=dialogue or Dialogue())

    def __setattr__(self, name: str, value: object) -> None:
        if name == "step" and isinstance(value, Step):
            old = getattr(self, "step", None)
            if old is not None and old is not value:
                self.changes.append((old, value))
        super().__setattr__(name, value)


class Call:
    """One scripted call. Checks, on every action, that ids are fresh and stops name what runs."""

    def __init__(self, rules: Rules | None = None, dialogue: Dialogue | None = None) -> None:
        self.rules = rules or Rules()
        self.dialogue = dialogue or Dialogue()
        self.flow = TracingFlow(self.rules, self.dialogue)
        self.playing: Play | None = None
        self.timer: StartTimer | None = None
        self.played: list[str] = []
        self.plays: list[Play] = []
        self.actions: list[Action] = []
        self._play_ids: set[int] = set()
        self._timer_ids: set[int] = set()

    @classmethod
    def at(
        cls,
        step: Step,
        rules: Rules | None = None,
        dialogue: Dialogue | None = None,
        *,
        choice: Choice = Choice.AGREE,
        pick: str = "1",
        item: int = 0,
    ) -> Call:
        """A call that has just entered `step` the ordinary way, its first prompt playing.

        On the way every prompt plays to its end, every question of a consent call is answered
        with `choice`, the withdrawal menu with the key `pick`, and every choice is confirmed
        and stored. `item` says which purpose's `step` (a withdrawal has only item 0)."""
        call = cls(rules, dialogue)
        r = call.rules
        moves: dict[Step, Callable[[], object]] = {
            Step.START: lambda: call.send(CallStarted()),
            Step.RECORDING: lambda: call.send(RecordingStarted()),
            Step.NOTICE: call.finish_prompt,
            Step.PURPOSE: call.finish_prompt,
            Step.ASK: lambda: call.key(r.agree if choice is Choice.AGREE else r.decline),
            Step.MENU: lambda: call.key(pick),
            Step.CHOSEN: call.finish_prompt,
            Step.CONFIRM: lambda: call.key(r.confirm),
            Step.SAVING: lambda: call.send(Persisted(ok=True)),
            Step.RECORDED: call.finish_prompt,
            Step.RESULT: call.finish_prompt,
        }
        while not (call.flow.step is step and call.flow.item == item):
            assert call.flow.step is not Step.DONE, f"setup ended before reaching {step} {item}"
            moves[call.flow.step]()
        return call

    # ---- events ---------------------------------------------------------------------------

    def send(self, event: Event) -> list[Action]:
        if isinstance(event, PromptFinished | PromptFailed) and self._is_playing(event.play_id):
            self.playing = None
        if isinstance(event, TimerExpired) and self.timer and self.timer.timer_id == event.timer_id:
            self.timer = None
        actions = self.flow.handle(event)
        for action in actions:
            self._follow(action)
        self.actions.extend(actions)
        return actions

    def key(self, digit: str) -> list[Action]:
        return self.send(KeyPressed(digit))

    def finish_prompt(self) -> list[Action]:
        assert self.playing is not None, "no prompt is playing"
        return self.send(PromptFinished(self.playing.play_id))

    def fail_prompt(self) -> list[Action]:
        assert self.playing is not None, "no prompt is playing"
        return self.send(PromptFailed(self.playing.play_id, "file not found"))

    def expire(self) -> list[Action]:
        assert self.timer is not None, "no key timer runs"
        return self.send(TimerExpired(self.timer.timer_id))

    def hang_up(self) -> list[Action]:
        return self.send(HungUp())

    def play_until_quiet(self) -> list[str]:
        """Let prompts play to their end until the flow waits for a key or is done.

        Returns the prompts started on the way."""
        start = len(self.played)
        while self.playing is not None:
            self.finish_prompt()
        return self.played[start:]

    def play_until(self, step: Step) -> None:
        """Let prompts play to their end until the flow is in `step`."""
        while self.flow.step is not step:
            self.finish_prompt()

    # ---- what happened --------------------------------------------------------------------

    @property
    def outcomes(self) -> Outcomes:
        return tuple(self.flow.outcomes)

    @property
    def persists(self) -> list[Persist]:
        return [a for a in self.actions if isinstance(a, Persist)]

    # ---- bookkeeping ----------------------------------------------------------------------

    def _is_playing(self, play_id: int) -> bool:
        return self.playing is not None and self.playing.play_id == play_id

    def _follow(self, action: Action) -> None:
        match action:
            case Play(prompt=prompt, play_id=play_id):
                assert self.playing is None, f"{action} while {self.playing} still plays"
                assert play_id not in self._play_ids, f"play id reused: {action}"
                self._play_ids.add(play_id)
                self.playing = action
                self.played.append(prompt)
                self.plays.append(action)
            case StopPlayback(play_id=play_id):
                assert self._is_playing(play_id), f"{action} but playing {self.playing}"
                self.playing = None
            case StartTimer(timer_id=timer_id):
                assert self.timer is None, f"{action} while {self.timer} runs"
                assert timer_id not in self._timer_ids, f"timer id reused: {action}"
                self._timer_ids.add(timer_id)
                self.timer = action
            case CancelTimer(timer_id=timer_id):
                assert self.timer is not None and self.timer.timer_id == timer_id, action
                self.timer = None


# ---- exploration -------------------------------------------------------------------------


@dataclass
class Turn:
    """One event given to the flow and what came of it."""

    before: Step
    outcomes_before: Outcomes
    event: Event
    actions: list[Action]
    changes: list[tuple[Step, Step]]
    after: Step
    outcomes: Outcomes


@dataclass
class Run:
    seed: int
    rules: Rules
    dialogue: Dialogue
    patient: bool
    flow: TracingFlow
    careful: bool = False
    failing: float = 1.0
    turns: list[Turn] = field(default_factory=list)
    error: FlowError | None = None
    stuck: bool = False  # the flow was alive but left the front nothing to wait for
    too_long: bool = False

    def trace(self) -> str:
        lines = [
            f"seed={self.seed} patient={self.patient} careful={self.careful} "
            f"failing={self.failing} {self.rules}",
            f"  {self.dialogue}",
        ]
        for t in self.turns:
            lines.append(f"  [{t.before}] {t.event} -> {t.actions} [{t.after}] {t.outcomes}")
        if self.error is not None:
            lines.append(f"  FlowError: {self.error}")
        return "\n".join(lines)


def draw_dialogue(rng: random.Random) -> Dialogue:
    """A call's dialogue: 1..3 purposes, 0..3 active consents, a direct withdrawal entry or
    not, the caller's number shown or not. Consent calls (nothing active) are the most common."""
    purposes = tuple(f"purpose{i}" for i in range(rng.randint(1, 3)))
    active = tuple(f"record{i}" for i in range(rng.choices((0, 1, 2, 3), (5, 2, 2, 2))[0]))
    return Dialogue(
        purposes=purposes,
        active=active,
        withdraw=rng.random() < 0.2,
        identified=rng.random() < 0.9,
    )


@dataclass
class _Front:
    """What a front knows: what it was asked to do and has not yet answered."""

    started: bool = False
    recording_asked: bool = False
    playing: int | None = None
    stopped: list[int] = field(default_factory=list)  # their late "finished" is still to come
    timer: int | None = None
    cancelled: list[int] = field(default_factory=list)  # may still fire: cancel races expiry
    persist: Persist | None = None
    caller_gone: bool = False
    finished: bool = False
    failing: float = 1.0  # how readily recordings, playbacks and the database fail
    silent: float = 1.0  # how readily the caller lets the key timer run out

    def pending(self) -> list[tuple[float, Event]]:
        """Answers the front still owes the flow, with how likely each is to come next."""
        options: list[tuple[float, Event]] = []
        fail = self.failing
        if self.recording_asked:
            options += [(10, RecordingStarted()), (0.6 * fail, RecordingFailed("disk full"))]
        if self.playing is not None:
            options += [(10, PromptFinished(self.playing))]
            options += [(0.3 * fail, PromptFailed(self.playing))]
        options += [(2, PromptFinished(pid)) for pid in self.stopped]
        if self.timer is not None:
            options.append((4 * self.silent, TimerExpired(self.timer)))
        options += [(1, TimerExpired(tid)) for tid in self.cancelled]
        if self.persist is not None:
            options += [(4, Persisted(ok=True)), (1.2 * fail, Persisted(ok=False, reason="db"))]
        return options

    def took(self, event: Event) -> None:
        match event:
            case CallStarted():
                self.started = True
            case RecordingStarted() | RecordingFailed():
                self.recording_asked = False
            case PromptFinished(play_id=pid) | PromptFailed(play_id=pid):
                if pid == self.playing:
                    self.playing = None
                else:
                    self.stopped.remove(pid)
            case TimerExpired(timer_id=tid):
                if tid == self.timer:
                    self.timer = None
                else:
                    self.cancelled.remove(tid)
            case Persisted():
                self.persist = None
            case HungUp():
                self.caller_gone = True

    def carry_out(self, action: Action) -> None:
        match action:
            case StartRecording():
                self.recording_asked = True
            case Play(play_id=pid):
                if self.playing is not None:  # a flow bug; keep the old one's answer coming
                    self.stopped.append(self.playing)
                self.playing = pid
            case StopPlayback(play_id=pid) if pid == self.playing:
                self.stopped.append(pid)
                self.playing = None
            case StartTimer(timer_id=tid):
                self.timer = tid
            case CancelTimer(timer_id=tid) if tid == self.timer:
                self.cancelled.append(tid)
                self.timer = None
            case Persist():
                self.persist = action
            case Hangup():
                self.caller_gone = True
            case Finish():
                self.finished = True


def walk(
    seed: int,
    rules: Rules,
    dialogue: Dialogue | None = None,
    *,
    patient: bool = False,
    max_turns: int = 400,
) -> Run:
    """One call with a seeded random caller and front, played to its end and a little beyond.

    The dialogue is drawn from the seed unless given. The caller presses the campaign's keys,
    the menu's keys (and the one after the last), the default digits and a few others, during
    prompts and while the flow waits, and (unless `patient`) hangs up at a random point. Some
    callers are careful (few loops, wrong keys or silences) and some fronts sound (few
    failures), so that some calls get to the end of several purposes. Once the flow has
    finished, the front still delivers whatever it owed, and the caller presses a key and
    hangs up, so the test can check that nothing more comes out of the flow."""
    rng = random.Random(seed)
    dialogue = dialogue or draw_dialogue(rng)
    careful, failing = rng.random() < 0.5, rng.choice((0.1, 1.0))
    run = Run(seed, rules, dialogue, patient, TracingFlow(rules, dialogue), careful, failing)
    fumbles = 0.2 if careful else 1.0
    front = _Front(failing=failing, silent=fumbles)
    # Answers come often (agree and confirm may be one digit), loops and other keys less.
    menu = [str(i) for i in range(1, len(dialogue.active) + 2)]
    answers = [rules.agree, rules.decline, rules.confirm]
    loops = [rules.repeat, rules.change]
    if dialogue.active:
        answers += [rules.withdraw_all, *menu]
        loops.append(rules.keep)
    presses = [(1.5, KeyPressed(k)) for k in answers]
    presses += [(1.5 * fumbles, KeyPressed(k)) for k in loops]
    presses += [(0.5 * fumbles, KeyPressed(k)) for k in "01259#"]
    strays: list[Event] = [KeyPressed(rng.choice(KEYPAD)), HungUp()]
    while True:
        options = front.pending()
        if not front.started:
            options.append((20, CallStarted()))
            if not patient:
                options.append((1, HungUp()))
        elif not front.caller_gone and not front.finished:
            options += presses
            if not patient:
                options.append((0.4, HungUp()))
        if front.finished:
            if not options and not strays:
                return run
            event = _pick(rng, options) if options else strays.pop(0)
        elif not options:
            run.stuck = True
            return run
        elif len(run.turns) >= max_turns:
            run.too_long = True
            return run
        else:
            event = _pick(rng, options)
        front.took(event)
        flow = run.flow
        before, outcomes_before, mark = flow.step, tuple(flow.outcomes), len(flow.changes)
        try:
            actions = flow.handle(event)
        except FlowError as error:
            run.error = error
            return run
        changes = flow.changes[mark:]
        run.turns.append(
            Turn(before, outcomes_before, event, actions, changes, flow.step, tuple(flow.outcomes))
        )
        for action in actions:
            front.carry_out(action)


def _pick(rng: random.Random, options: list[tuple[float, Event]]) -> Event:
    x = rng.random() * sum(weight for weight, _ in options)
    for weight, event in options:
        x -= weight
        if x < 0:
            return event
    return options[-1][1]
