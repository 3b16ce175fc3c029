"""The consent flow core: every path with its exact actions, then invariants over many walks.

Prompt names are written out ("chosen_agree", not flow.CHOSEN_PROMPT[...]) on purpose: they
are the contract with the YAML prompt files. Play and timer ids are matched with ANY; `Call`
(tests/unit/flow_harness.py) checks on every action that ids are fresh and that a stop or a
cancel names what actually runs.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from unittest.mock import ANY

import pytest

from consent_ivr.flow import (
    MENU_SIZE,
    PROMPTS,
    RECORDED_PROMPT,
    TRANSITIONS,
    Action,
    Answer,
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
    diagram,
)
from tests.unit.flow_harness import KEYPAD, Call, Outcomes, Run, Turn, walk

pytestmark = pytest.mark.unit

ASKING = (Step.ASK, Step.MENU, Step.CONFIRM)
PAIRS = {(src, dst) for src, _, dst in TRANSITIONS}
CUSTOM = Rules(
    agree="7", decline="8", repeat="9", confirm="#", change="*", withdraw_all="*", keep="#"
)
UNDECIDED: Outcomes = (None,)
GRANTED, DECLINED, WITHDRAWN = Outcome.GRANTED, Outcome.DECLINED, Outcome.WITHDRAWN
ABANDONED, FAILED, NO_RESPONSE = Outcome.ABANDONED, Outcome.FAILED, Outcome.NO_RESPONSE
DECIDED = {Choice.AGREE: GRANTED, Choice.DECLINE: DECLINED, Choice.WITHDRAW: WITHDRAWN}


def consent(purposes: int = 1) -> Dialogue:
    return Dialogue(purposes=("marketing", "research", "partners")[:purposes])


def withdrawal(active: int) -> Dialogue:
    return Dialogue(purposes=("marketing",), active=tuple(f"record-{i}" for i in range(active)))


UNKNOWN = Dialogue(identified=False)
NOTHING_TO_WITHDRAW = Dialogue(withdraw=True)
# The step each question lives in, with a dialogue that has it.
QUESTION = {Step.ASK: "ask", Step.MENU: "menu", Step.CONFIRM: "confirm"}
DIALOGUE_OF = {Step.ASK: consent(), Step.MENU: withdrawal(2), Step.CONFIRM: consent()}
# What plays after a reprompt ("invalid" or "no_input") until the question waits again: a miss
# in CONFIRM states the choice again before asking to confirm.
AFTER_REPROMPT = {Step.ASK: ["ask"], Step.MENU: ["menu"], Step.CONFIRM: ["chosen_agree", "confirm"]}


def describe(value: object) -> str:
    """A short test id for a dialogue (and str() for anything else)."""
    if not isinstance(value, Dialogue):
        return str(value)
    if not value.identified:
        return "unidentified"
    if value.active:
        return f"active-{len(value.active)}"
    return "nothing-active" if value.withdraw else f"purposes-{len(value.purposes)}"


def play(prompt: str, item: int | None = None) -> Play:
    return Play(prompt, ANY, item)


def timer(seconds: float = Rules().key_timeout_s) -> StartTimer:
    return StartTimer(ANY, seconds)


def state(call: Call) -> tuple[Step, Outcomes, Choice | None]:
    return call.flow.step, call.outcomes, call.flow.choice


def asking(step: Step, rules: Rules | None = None, choice: Choice = Choice.AGREE) -> Call:
    """A call whose question `step` has just started, its prompt playing."""
    return Call.at(step, rules, DIALOGUE_OF[step], choice=choice)


def ends_with(call: Call, *outcomes: Outcome) -> None:
    """The rest of the result plays, then the flow hangs up and finishes with `outcomes`."""
    assert call.flow.step is Step.RESULT
    call.play_until_quiet()
    assert call.actions[-2:] == [Hangup(), Finish(outcomes)]
    assert state(call)[:2] == (Step.DONE, outcomes)


# ---- happy paths ---------------------------------------------------------------------------


def test_agree_then_confirm_is_persisted_then_granted() -> None:
    call = Call()
    assert call.send(CallStarted()) == [Answer(), StartRecording()]
    assert state(call) == (Step.RECORDING, UNDECIDED, None)
    assert call.send(RecordingStarted()) == [play("notice")]
    assert state(call) == (Step.NOTICE, UNDECIDED, None)
    assert call.finish_prompt() == [play("purpose", 0)]
    assert state(call) == (Step.PURPOSE, UNDECIDED, None)
    assert call.finish_prompt() == [play("ask")]
    assert state(call) == (Step.ASK, UNDECIDED, None)
    assert call.finish_prompt() == [timer(6.0)]
    waiting = call.timer
    assert call.key("1") == [CancelTimer(waiting.timer_id), play("chosen_agree")]
    assert state(call) == (Step.CHOSEN, UNDECIDED, Choice.AGREE)
    assert call.finish_prompt() == [play("confirm")]
    assert state(call) == (Step.CONFIRM, UNDECIDED, Choice.AGREE)
    assert call.finish_prompt() == [timer(6.0)]
    waiting = call.timer
    assert call.key("1") == [CancelTimer(waiting.timer_id), Persist(0, Choice.AGREE)]
    assert state(call) == (Step.SAVING, UNDECIDED, Choice.AGREE)
    assert call.send(Persisted(ok=True)) == [play("recorded_agree")]
    assert state(call) == (Step.RECORDED, (GRANTED,), Choice.AGREE)
    assert call.finish_prompt() == [play("goodbye")]
    assert state(call) == (Step.RESULT, (GRANTED,), Choice.AGREE)
    assert call.finish_prompt() == [Hangup(), Finish((GRANTED,))]
    assert state(call) == (Step.DONE, (GRANTED,), Choice.AGREE)
    assert call.flow.outcome is GRANTED
    assert call.played == [
        "notice",
        "purpose",
        "ask",
        "chosen_agree",
        "confirm",
        "recorded_agree",
        "goodbye",
    ]
    assert call.flow.changes == [
        (Step.START, Step.RECORDING),
        (Step.RECORDING, Step.NOTICE),
        (Step.NOTICE, Step.PURPOSE),
        (Step.PURPOSE, Step.ASK),
        (Step.ASK, Step.CHOSEN),
        (Step.CHOSEN, Step.CONFIRM),
        (Step.CONFIRM, Step.SAVING),
        (Step.SAVING, Step.RECORDED),
        (Step.RECORDED, Step.RESULT),
        (Step.RESULT, Step.DONE),
    ]


def test_decline_then_confirm_is_declined() -> None:
    call = Call.at(Step.ASK)
    call.play_until_quiet()
    assert call.key("2") == [CancelTimer(ANY), play("chosen_decline")]
    assert state(call) == (Step.CHOSEN, UNDECIDED, Choice.DECLINE)
    assert call.finish_prompt() == [play("confirm")]
    call.play_until_quiet()
    assert call.key("1") == [CancelTimer(ANY), Persist(0, Choice.DECLINE)]
    assert state(call) == (Step.SAVING, UNDECIDED, Choice.DECLINE)
    assert call.send(Persisted(ok=True)) == [play("recorded_decline")]
    assert state(call) == (Step.RECORDED, (DECLINED,), Choice.DECLINE)
    assert call.finish_prompt() == [play("goodbye")]
    ends_with(call, DECLINED)


def test_agree_then_change_then_decline_and_confirm_is_declined() -> None:
    call = Call.at(Step.CONFIRM)
    confirm = call.playing
    assert call.key("2") == [StopPlayback(confirm.play_id), play("ask")]
    assert state(call) == (Step.ASK, UNDECIDED, None)
    assert call.finish_prompt() == [timer()]
    assert call.key("2") == [CancelTimer(ANY), play("chosen_decline")]
    assert call.finish_prompt() == [play("confirm")]
    assert state(call) == (Step.CONFIRM, UNDECIDED, Choice.DECLINE)
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.DECLINE)]
    assert call.send(Persisted(ok=True)) == [play("recorded_decline")]
    assert call.finish_prompt() == [play("goodbye")]
    ends_with(call, DECLINED)
    # A change goes straight back to the question, without the purpose again.
    assert call.played == [
        "notice",
        "purpose",
        "ask",
        "chosen_agree",
        "confirm",
        "ask",
        "chosen_decline",
        "confirm",
        "recorded_decline",
        "goodbye",
    ]
    assert call.persists == [Persist(0, Choice.DECLINE)]


# ---- the choice is stated before it can be confirmed ---------------------------------------


@pytest.mark.parametrize(
    ("dialogue", "first", "stated", "persist"),
    [
        pytest.param(consent(), "1", play("chosen_agree"), Persist(0, Choice.AGREE), id="agree"),
        pytest.param(
            consent(), "2", play("chosen_decline"), Persist(0, Choice.DECLINE), id="decline"
        ),
        pytest.param(
            withdrawal(1),
            "1",
            play("chosen_withdraw", 0),
            Persist(0, Choice.WITHDRAW, (0,)),
            id="withdraw-one",
        ),
        pytest.param(
            withdrawal(2),
            "9",
            play("chosen_withdraw_all"),
            Persist(0, Choice.WITHDRAW, (0, 1)),
            id="withdraw-all",
        ),
    ],
)
@pytest.mark.parametrize("over_the_question", [True, False], ids=["barge-in", "after"])
def test_a_double_tap_cannot_confirm_a_choice_not_yet_stated(
    dialogue: Dialogue, first: str, stated: Play, persist: Persist, over_the_question: bool
) -> None:
    call = Call.at(Step.MENU if dialogue.withdrawal else Step.ASK, dialogue=dialogue)
    if over_the_question:
        stop: Action = StopPlayback(call.playing.play_id)
    else:
        call.play_until_quiet()
        stop = CancelTimer(call.timer.timer_id)
    assert call.key(first) == [stop, stated]
    statement = call.playing
    # The second tap of "11" (or "91") lands while the choice is stated: it does not count.
    assert call.key("1") == []
    assert call.flow.step is Step.CHOSEN and call.persists == []
    assert call.playing == statement and call.timer is None
    assert call.finish_prompt() == [play("confirm")]
    # Once the confirmation plays, the same key counts, also over the prompt.
    assert call.key("1") == [StopPlayback(ANY), persist]
    assert call.flow.step is Step.SAVING


def test_keys_while_the_choice_is_stated_do_not_count() -> None:
    # No retry and no repeat allowed: any key counted here would end the call below.
    call = Call.at(Step.CHOSEN, Rules(max_attempts=1, max_repeats=0))
    statement = call.playing
    for digit in KEYPAD * 3:
        assert call.key(digit) == []
    assert state(call) == (Step.CHOSEN, UNDECIDED, Choice.AGREE)
    assert call.playing == statement
    assert call.finish_prompt() == [play("confirm")]
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.AGREE)]


@pytest.mark.parametrize("reprompt", ["invalid", "no_input"])
def test_a_restated_choice_is_heard_in_full(reprompt: str) -> None:
    call = Call.at(Step.CONFIRM, Rules(max_attempts=2, max_repeats=0))
    call.play_until_quiet()
    if reprompt == "invalid":
        assert call.key("5") == [CancelTimer(ANY), play("invalid")]
    else:
        assert call.expire() == [play("no_input")]
    for following in (play("chosen_agree"), play("confirm")):
        assert call.flow.step is Step.CHOSEN
        for digit in KEYPAD:
            assert call.key(digit) == []
        assert call.finish_prompt() == [following]
    assert state(call) == (Step.CONFIRM, UNDECIDED, Choice.AGREE)
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.AGREE)]


# ---- recording -----------------------------------------------------------------------------


def test_nothing_is_said_before_the_recording_runs() -> None:
    call = Call()
    assert call.send(CallStarted()) == [Answer(), StartRecording()]
    for event in (KeyPressed("1"), PromptFinished(1), PromptFailed(1), TimerExpired(1)):
        assert call.send(event) == []
        assert state(call) == (Step.RECORDING, UNDECIDED, None)
    assert call.played == []
    assert call.send(RecordingStarted()) == [play("notice")]
    assert state(call) == (Step.NOTICE, UNDECIDED, None)


@pytest.mark.parametrize("dialogue", [consent(), consent(3), withdrawal(2), UNKNOWN])
def test_recording_failure_fails_the_call_without_the_notice(dialogue: Dialogue) -> None:
    call = Call.at(Step.RECORDING, dialogue=dialogue)
    failed = (FAILED,) * dialogue.items
    assert call.send(RecordingFailed("no space left")) == [play("failure")]
    assert state(call) == (Step.RESULT, failed, None)
    assert call.finish_prompt() == [play("goodbye")]
    assert call.finish_prompt() == [Hangup(), Finish(failed)]
    assert state(call) == (Step.DONE, failed, None)
    assert call.played == ["failure", "goodbye"]


# ---- steps that do not ask ignore keys -----------------------------------------------------

QUIET_STEPS = [
    *[(step, consent()) for step in (Step.NOTICE, Step.PURPOSE, Step.CHOSEN)],
    *[(step, consent()) for step in (Step.SAVING, Step.RECORDED, Step.RESULT)],
    *[(step, withdrawal(2)) for step in (Step.NOTICE, Step.CHOSEN, Step.SAVING)],
    *[(step, withdrawal(2)) for step in (Step.RECORDED, Step.RESULT)],
    (Step.PURPOSE, consent(2)),  # the second purpose, entered from RECORDED
    (Step.RESULT, UNKNOWN),
    (Step.RESULT, NOTHING_TO_WITHDRAW),
]


@pytest.mark.parametrize(("step", "dialogue"), QUIET_STEPS, ids=describe)
def test_keys_in_a_step_that_does_not_ask_do_nothing(step: Step, dialogue: Dialogue) -> None:
    call = Call.at(step, dialogue=dialogue, item=len(dialogue.purposes) - 1)
    assert not call.flow.accepts_keys
    before = state(call), call.playing, call.timer, call.flow.attempts, call.flow.loops
    for digit in KEYPAD:
        assert call.key(digit) == []
    assert (state(call), call.playing, call.timer, call.flow.attempts, call.flow.loops) == before


def test_keys_during_notice_and_purpose_do_not_count() -> None:
    # With one retry and one repeat allowed, any key counted here would end the call below.
    call = Call.at(Step.NOTICE, Rules(max_attempts=2, max_repeats=1))
    for _ in ("notice", "purpose"):
        for digit in KEYPAD * 3:
            assert call.key(digit) == []
        call.finish_prompt()
    assert state(call) == (Step.ASK, UNDECIDED, None)
    assert call.key("5") == [StopPlayback(ANY), play("invalid")]
    assert call.play_until_quiet() == ["ask"]
    assert call.key("0") == [CancelTimer(ANY), play("purpose", 0)]
    assert call.outcomes == UNDECIDED


@pytest.mark.parametrize(
    ("step", "dialogue", "following"),
    [
        (Step.NOTICE, consent(), play("purpose", 0)),
        (Step.NOTICE, withdrawal(1), play("menu")),
        (Step.NOTICE, UNKNOWN, play("unidentified")),
        (Step.PURPOSE, consent(), play("ask")),
        (Step.CHOSEN, consent(), play("confirm")),
        (Step.RECORDED, consent(), play("goodbye")),
        (Step.RECORDED, consent(2), play("purpose", 1)),
    ],
    ids=describe,
)
def test_the_next_prompt_waits_for_the_current_one_to_finish(
    step: Step, dialogue: Dialogue, following: Play
) -> None:
    call = Call.at(step, dialogue=dialogue)
    current = call.playing
    for other in (current.play_id - 1, current.play_id + 1, current.play_id + 100):
        assert call.send(PromptFinished(other)) == []
        assert call.send(PromptFailed(other)) == []
    assert call.send(TimerExpired(1)) == []
    assert call.flow.step is step
    assert call.send(PromptFinished(current.play_id)) == [following]


# ---- barge-in ------------------------------------------------------------------------------


def assert_stale_answers_are_ignored(call: Call, stopped: Play | None) -> None:
    """The stopped prompt's late "finished" or "failed" changes nothing."""
    assert stopped is not None
    before = state(call), call.playing, call.timer
    assert call.send(PromptFinished(stopped.play_id)) == []
    assert call.send(PromptFailed(stopped.play_id)) == []
    assert (state(call), call.playing, call.timer) == before
    assert call.timer is None


@pytest.mark.parametrize(
    ("digit", "answer", "step", "choice"),
    [
        ("1", play("chosen_agree"), Step.CHOSEN, Choice.AGREE),
        ("2", play("chosen_decline"), Step.CHOSEN, Choice.DECLINE),
        ("0", play("purpose", 0), Step.PURPOSE, None),
        ("5", play("invalid"), Step.ASK, None),
        ("#", play("invalid"), Step.ASK, None),
    ],
)
def test_a_key_during_the_ask_prompt_stops_it_first(
    digit: str, answer: Play, step: Step, choice: Choice | None
) -> None:
    call = Call.at(Step.ASK)
    ask = call.playing
    assert call.key(digit) == [StopPlayback(ask.play_id), answer]
    assert state(call) == (step, UNDECIDED, choice)
    assert_stale_answers_are_ignored(call, ask)


@pytest.mark.parametrize(
    ("digit", "answer", "step", "outcomes", "targets"),
    [
        ("1", play("chosen_withdraw", 0), Step.CHOSEN, UNDECIDED, (0,)),
        ("2", play("chosen_withdraw", 1), Step.CHOSEN, UNDECIDED, (1,)),
        ("9", play("chosen_withdraw_all"), Step.CHOSEN, UNDECIDED, (0, 1)),
        ("0", play("kept"), Step.RESULT, (Outcome.KEPT,), ()),
        ("3", play("invalid"), Step.MENU, UNDECIDED, ()),
        ("#", play("invalid"), Step.MENU, UNDECIDED, ()),
    ],
)
def test_a_key_during_the_menu_stops_it_first(
    digit: str, answer: Play, step: Step, outcomes: Outcomes, targets: tuple[int, ...]
) -> None:
    call = Call.at(Step.MENU, dialogue=withdrawal(2))
    menu = call.playing
    assert call.key(digit) == [StopPlayback(menu.play_id), answer]
    assert call.flow.step is step and call.outcomes == outcomes
    assert call.flow.targets == targets
    assert_stale_answers_are_ignored(call, menu)


@pytest.mark.parametrize(
    ("dialogue", "digit", "answer", "step"),
    [
        (consent(), "1", Persist(0, Choice.AGREE), Step.SAVING),
        (consent(), "2", play("ask"), Step.ASK),
        (consent(), "0", play("chosen_agree"), Step.CHOSEN),
        (consent(), "7", play("invalid"), Step.CHOSEN),
        (withdrawal(2), "1", Persist(0, Choice.WITHDRAW, (0,)), Step.SAVING),
        (withdrawal(2), "2", play("menu"), Step.MENU),
        (withdrawal(2), "0", play("chosen_withdraw", 0), Step.CHOSEN),
        (withdrawal(2), "9", play("invalid"), Step.CHOSEN),
    ],
    ids=describe,
)
def test_a_key_during_the_confirm_prompt_stops_it_first(
    dialogue: Dialogue, digit: str, answer: Persist | Play, step: Step
) -> None:
    call = Call.at(Step.CONFIRM, dialogue=dialogue)
    confirm = call.playing
    assert call.key(digit) == [StopPlayback(confirm.play_id), answer]
    assert call.flow.step is step
    assert_stale_answers_are_ignored(call, confirm)


@pytest.mark.parametrize(
    ("step", "answer"), [(Step.ASK, play("chosen_agree")), (Step.MENU, play("chosen_withdraw", 0))]
)
@pytest.mark.parametrize("reprompt", ["invalid", "no_input"])
def test_a_key_during_a_reprompt_of_a_question_stops_it(
    step: Step, answer: Play, reprompt: str
) -> None:
    call = asking(step)
    call.play_until_quiet()
    if reprompt == "invalid":
        call.key("5")
    else:
        call.expire()
    assert call.playing.prompt == reprompt and call.flow.step is step
    interrupted = call.playing
    assert call.key("1") == [StopPlayback(interrupted.play_id), answer]
    assert call.send(PromptFinished(interrupted.play_id)) == []


# ---- timers, wrong keys, retries -----------------------------------------------------------


@pytest.mark.parametrize("step", ASKING)
def test_the_key_timer_starts_when_the_question_is_done(step: Step) -> None:
    call = asking(step, Rules(key_timeout_s=2.5))
    assert call.playing.prompt == QUESTION[step]
    assert call.timer is None
    assert call.finish_prompt() == [StartTimer(ANY, 2.5)]
    assert call.flow.step is step


@pytest.mark.parametrize("step", ASKING)
def test_the_key_timer_starts_only_after_the_whole_reprompt(step: Step) -> None:
    call = asking(step)
    call.play_until_quiet()
    assert call.key("5") == [CancelTimer(ANY), play("invalid")]
    for prompt in AFTER_REPROMPT[step]:
        assert call.finish_prompt() == [play(prompt)]
        assert call.timer is None
    assert call.finish_prompt() == [timer()]
    assert call.flow.step is step


def test_a_stale_timer_is_ignored() -> None:
    call = Call.at(Step.ASK)
    call.play_until_quiet()
    old = call.timer
    assert call.key("5") == [CancelTimer(old.timer_id), play("invalid")]
    assert call.send(TimerExpired(old.timer_id)) == []
    call.play_until_quiet()
    assert call.send(TimerExpired(old.timer_id)) == []
    assert call.send(TimerExpired(call.timer.timer_id + 100)) == []
    assert state(call) == (Step.ASK, UNDECIDED, None)
    # Only the wrong key counted (2 of 3 misses now), not the stale expiries.
    assert call.expire() == [play("no_input")]
    call.play_until_quiet()
    assert call.expire() == [play("no_response")]


@pytest.mark.parametrize(
    ("step", "choice", "again"),
    [
        (Step.ASK, Choice.AGREE, ["ask"]),
        (Step.MENU, Choice.AGREE, ["menu"]),
        (Step.CONFIRM, Choice.AGREE, ["chosen_agree", "confirm"]),
        (Step.CONFIRM, Choice.DECLINE, ["chosen_decline", "confirm"]),
    ],
)
def test_a_timeout_says_no_input_and_asks_again(
    step: Step, choice: Choice, again: list[str]
) -> None:
    call = asking(step, choice=choice)
    call.play_until_quiet()
    assert call.expire() == [play("no_input")]
    assert call.flow.step is (Step.CHOSEN if step is Step.CONFIRM else step)
    for prompt in again:
        assert call.finish_prompt() == [play(prompt)]
    assert call.finish_prompt() == [timer()]
    assert state(call) == (step, UNDECIDED, choice if step is Step.CONFIRM else None)


@pytest.mark.parametrize(
    ("dialogue", "pick", "stated", "persist"),
    [
        (consent(), "1", play("chosen_decline"), Persist(0, Choice.DECLINE)),
        (withdrawal(3), "3", play("chosen_withdraw", 2), Persist(0, Choice.WITHDRAW, (2,))),
        (withdrawal(3), "9", play("chosen_withdraw_all"), Persist(0, Choice.WITHDRAW, (0, 1, 2))),
    ],
    ids=["consent", "withdraw-one", "withdraw-all"],
)
@pytest.mark.parametrize("miss_by", ["wrong key", "silence"])
def test_a_miss_in_confirm_states_the_choice_again(
    dialogue: Dialogue, pick: str, stated: Play, persist: Persist, miss_by: str
) -> None:
    call = Call.at(Step.CONFIRM, dialogue=dialogue, choice=Choice.DECLINE, pick=pick)
    choice, targets = call.flow.choice, call.flow.targets
    call.play_until_quiet()
    if miss_by == "wrong key":
        assert call.key("5") == [CancelTimer(ANY), play("invalid")]
    else:
        assert call.expire() == [play("no_input")]
    assert state(call) == (Step.CHOSEN, UNDECIDED, choice)
    assert call.finish_prompt() == [stated]
    assert call.finish_prompt() == [play("confirm")]
    assert call.finish_prompt() == [timer()]
    assert (state(call), call.flow.targets) == ((Step.CONFIRM, UNDECIDED, choice), targets)
    assert call.key("1") == [CancelTimer(ANY), persist]
    assert call.flow.changes[-4:] == [
        (Step.CHOSEN, Step.CONFIRM),
        (Step.CONFIRM, Step.CHOSEN),
        (Step.CHOSEN, Step.CONFIRM),
        (Step.CONFIRM, Step.SAVING),
    ]


MISSES = ("timeout", "wrong", "barge-in wrong")


def miss(call: Call, how: str) -> tuple[list[Action], list[Action]]:
    """One question without a valid key: silence, a wrong key after the prompts or during one.

    Returns what the flow did, and what it had to stop or cancel first."""
    if how == "barge-in wrong":
        while not call.flow.accepts_keys:
            call.finish_prompt()
        assert call.playing is not None
        stop: list[Action] = [StopPlayback(call.playing.play_id)]
        return call.key("#"), stop
    call.play_until_quiet()
    if how == "timeout":
        return call.expire(), []
    waiting = call.timer
    return call.key("5"), [CancelTimer(waiting.timer_id)]


def says(call: Call, how: str) -> list[Action]:
    """`miss`, checking that the flow first stopped what ran; returns what came after."""
    actions, stopped = miss(call, how)
    assert actions[: len(stopped)] == stopped
    return actions[len(stopped) :]


@pytest.mark.parametrize("step", ASKING)
@pytest.mark.parametrize("how", MISSES)
@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_misses_are_bounded_by_max_attempts(step: Step, how: str, max_attempts: int) -> None:
    call = asking(step, Rules(max_attempts=max_attempts))
    reprompt = "no_input" if how == "timeout" else "invalid"
    for _ in range(max_attempts - 1):
        actions, stopped = miss(call, how)
        assert actions == [*stopped, play(reprompt)]
        assert call.flow.step is (Step.CHOSEN if step is Step.CONFIRM else step)
        assert call.outcomes == UNDECIDED
        for prompt in AFTER_REPROMPT[step]:
            assert call.finish_prompt() == [play(prompt)]
    actions, stopped = miss(call, how)
    assert actions == [*stopped, play("no_response")]
    assert state(call)[:2] == (Step.RESULT, (NO_RESPONSE,))
    assert call.finish_prompt() == [play("goodbye")]
    assert call.finish_prompt() == [Hangup(), Finish((NO_RESPONSE,))]
    assert call.played.count(QUESTION[step]) == max_attempts
    assert call.persists == []


@pytest.mark.parametrize("step", ASKING)
@pytest.mark.parametrize("hows", list(itertools.product(MISSES, repeat=3)), ids=describe)
def test_mixed_misses_share_the_attempts(step: Step, hows: tuple[str, str, str]) -> None:
    call = asking(step)
    for i, how in enumerate(hows):
        last = i == len(hows) - 1
        prompt = "no_response" if last else ("no_input" if how == "timeout" else "invalid")
        actions, stopped = miss(call, how)
        assert actions == [*stopped, play(prompt)]
    assert call.outcomes == (NO_RESPONSE,)
    ends_with(call, NO_RESPONSE)


@pytest.mark.parametrize(
    ("step", "stated", "persist"),
    [
        (Step.ASK, play("chosen_agree"), Persist(0, Choice.AGREE)),
        (Step.MENU, play("chosen_withdraw", 0), Persist(0, Choice.WITHDRAW, (0,))),
        (Step.CONFIRM, None, Persist(0, Choice.AGREE)),
    ],
)
def test_a_valid_key_after_misses_still_works(
    step: Step, stated: Play | None, persist: Persist
) -> None:
    call = asking(step)
    assert says(call, "wrong") == [play("invalid")]
    assert says(call, "timeout") == [play("no_input")]
    call.play_until_quiet()
    if stated is not None:
        assert call.key("1") == [CancelTimer(ANY), stated]
        assert call.flow.step is Step.CHOSEN
        call.play_until_quiet()
    assert call.key("1") == [CancelTimer(ANY), persist]
    assert call.send(Persisted(ok=True)) == [play(RECORDED_PROMPT[persist.choice])]
    call.finish_prompt()
    ends_with(call, DECIDED[persist.choice])


@pytest.mark.parametrize(("dialogue", "question"), [(consent(), "ask"), (withdrawal(2), "menu")])
def test_each_question_gets_its_own_attempts(dialogue: Dialogue, question: str) -> None:
    call = Call.at(Step.MENU if dialogue.withdrawal else Step.ASK, dialogue=dialogue)
    assert says(call, "wrong") == [play("invalid")]
    assert says(call, "timeout") == [play("no_input")]
    call.play_until_quiet()
    call.key("1")
    # Two misses before the choice do not carry over: CONFIRM again allows two before giving up.
    assert says(call, "wrong") == [play("invalid")]
    assert says(call, "timeout") == [play("no_input")]
    call.play_until_quiet()
    assert call.key("2") == [CancelTimer(ANY), play(question)]
    # Nor do they carry over from CONFIRM back to the question after a change.
    assert says(call, "timeout") == [play("no_input")]
    assert says(call, "wrong") == [play("invalid")]
    assert says(call, "wrong") == [play("no_response")]
    assert call.outcomes == (NO_RESPONSE,)


# ---- repeat and change loops ---------------------------------------------------------------


def test_repeat_in_ask_replays_the_purpose_then_the_question() -> None:
    call = Call.at(Step.ASK)
    call.play_until_quiet()
    waiting = call.timer
    assert call.key("0") == [CancelTimer(waiting.timer_id), play("purpose", 0)]
    assert state(call) == (Step.PURPOSE, UNDECIDED, None)
    for digit in KEYPAD:
        assert call.key(digit) == []
    assert call.finish_prompt() == [play("ask")]
    assert state(call) == (Step.ASK, UNDECIDED, None)
    assert call.finish_prompt() == [timer()]


@pytest.mark.parametrize("max_repeats", [0, 1, 2, 3])
def test_repeats_in_ask_are_bounded_by_max_repeats(max_repeats: int) -> None:
    call = Call.at(Step.ASK, Rules(max_repeats=max_repeats))
    for _ in range(max_repeats):
        call.play_until_quiet()
        assert call.key("0") == [CancelTimer(ANY), play("purpose", 0)]
    call.play_until_quiet()
    assert call.key("0") == [CancelTimer(ANY), play("no_response")]
    assert state(call) == (Step.RESULT, (NO_RESPONSE,), None)
    ends_with(call, NO_RESPONSE)
    assert call.played.count("purpose") == 1 + max_repeats


def test_hearing_the_purpose_again_gives_fresh_attempts() -> None:
    call = Call.at(Step.ASK, Rules(max_attempts=3, max_repeats=1))
    assert says(call, "wrong") == [play("invalid")]
    assert says(call, "wrong") == [play("invalid")]
    call.play_until_quiet()
    call.key("0")
    call.play_until_quiet()
    assert says(call, "wrong") == [play("invalid")]
    assert says(call, "timeout") == [play("no_input")]
    assert says(call, "wrong") == [play("no_response")]


@pytest.mark.parametrize(
    ("dialogue", "pick", "stated", "persist"),
    [
        (consent(), "1", play("chosen_decline"), Persist(0, Choice.DECLINE)),
        (withdrawal(3), "3", play("chosen_withdraw", 2), Persist(0, Choice.WITHDRAW, (2,))),
        (withdrawal(3), "9", play("chosen_withdraw_all"), Persist(0, Choice.WITHDRAW, (0, 1, 2))),
    ],
    ids=["consent", "withdraw-one", "withdraw-all"],
)
def test_repeat_in_confirm_states_the_choice_again(
    dialogue: Dialogue, pick: str, stated: Play, persist: Persist
) -> None:
    call = Call.at(Step.CONFIRM, dialogue=dialogue, choice=Choice.DECLINE, pick=pick)
    call.play_until_quiet()
    waiting = call.timer
    assert call.key("0") == [CancelTimer(waiting.timer_id), stated]
    assert state(call) == (Step.CHOSEN, UNDECIDED, persist.choice)
    assert call.finish_prompt() == [play("confirm")]
    assert call.finish_prompt() == [timer()]
    assert call.key("1") == [CancelTimer(ANY), persist]


@pytest.mark.parametrize("max_repeats", [0, 1, 2, 3])
def test_repeats_in_confirm_are_bounded_by_max_repeats(max_repeats: int) -> None:
    call = Call.at(Step.CONFIRM, Rules(max_repeats=max_repeats))
    for _ in range(max_repeats):
        call.play_until_quiet()
        assert call.key("0") == [CancelTimer(ANY), play("chosen_agree")]
        assert call.finish_prompt() == [play("confirm")]
    call.play_until_quiet()
    assert call.key("0") == [CancelTimer(ANY), play("no_response")]
    assert state(call) == (Step.RESULT, (NO_RESPONSE,), Choice.AGREE)
    ends_with(call, NO_RESPONSE)
    assert call.persists == []


@pytest.mark.parametrize(
    ("dialogue", "question", "picks"),
    [
        (consent(), "ask", [("2", play("chosen_decline")), ("1", play("chosen_agree"))]),
        (
            withdrawal(3),
            "menu",
            [("3", play("chosen_withdraw", 2)), ("9", play("chosen_withdraw_all"))],
        ),
    ],
    ids=["consent", "withdrawal"],
)
@pytest.mark.parametrize("max_repeats", [0, 1, 2, 3])
def test_changes_in_confirm_are_bounded_by_max_repeats(
    dialogue: Dialogue, question: str, picks: list[tuple[str, Play]], max_repeats: int
) -> None:
    call = Call.at(Step.CONFIRM, Rules(max_repeats=max_repeats), dialogue)
    for i in range(max_repeats):
        assert call.key("2") == [StopPlayback(ANY), play(question)]
        assert state(call) == (Step.MENU if dialogue.withdrawal else Step.ASK, UNDECIDED, None)
        assert call.flow.targets == ()
        digit, stated = picks[i % 2]
        assert call.key(digit) == [StopPlayback(ANY), stated]
        assert call.finish_prompt() == [play("confirm")]
    assert call.key("2") == [StopPlayback(ANY), play("no_response")]
    assert state(call) == (Step.RESULT, (NO_RESPONSE,), None)
    ends_with(call, NO_RESPONSE)
    assert call.persists == []


def test_a_change_in_a_withdrawal_goes_back_to_the_menu() -> None:
    call = Call.at(Step.CONFIRM, dialogue=withdrawal(3), pick="1")
    assert call.flow.targets == (0,)
    assert call.key("2") == [StopPlayback(ANY), play("menu")]
    assert (state(call), call.flow.targets) == ((Step.MENU, UNDECIDED, None), ())
    assert call.finish_prompt() == [timer()]
    assert call.key("3") == [CancelTimer(ANY), play("chosen_withdraw", 2)]
    assert call.finish_prompt() == [play("confirm")]
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.WITHDRAW, (2,))]
    assert call.played == [
        "notice",
        "menu",
        "chosen_withdraw",
        "confirm",
        "menu",
        "chosen_withdraw",
        "confirm",
    ]
    assert (Step.CONFIRM, Step.MENU) in call.flow.changes


def test_repeats_and_changes_share_one_budget() -> None:
    # Rules.max_repeats counts "hear it again" (in ASK and CONFIRM) and "change my answer".
    call = Call.at(Step.ASK, Rules(max_repeats=2))
    assert call.key("0") == [StopPlayback(ANY), play("purpose", 0)]
    call.play_until_quiet()
    call.key("1")
    call.play_until(Step.CONFIRM)
    assert call.key("0") == [StopPlayback(ANY), play("chosen_agree")]
    call.play_until(Step.CONFIRM)
    assert call.key("2") == [StopPlayback(ANY), play("no_response")]
    assert call.outcomes == (NO_RESPONSE,)


@pytest.mark.parametrize("dialogue", [consent(), withdrawal(2)], ids=["consent", "withdrawal"])
@pytest.mark.parametrize("digit", list(KEYPAD))
@pytest.mark.parametrize("answer_first", [False, True], ids=["same-key", "answer-then-key"])
@pytest.mark.parametrize("eager", [True, False], ids=["over-prompts", "after-prompts"])
def test_a_caller_who_never_hangs_up_cannot_keep_the_call_alive(
    dialogue: Dialogue, digit: str, answer_first: bool, eager: bool
) -> None:
    call = Call.at(Step.MENU if dialogue.withdrawal else Step.ASK, dialogue=dialogue)
    presses = itertools.chain(["1"] if answer_first else [], itertools.repeat(digit))
    for _ in range(200):
        if call.flow.step is Step.DONE:
            break
        if call.flow.accepts_keys and (eager or call.timer is not None):
            call.key(next(presses))
        elif call.playing is not None:
            call.finish_prompt()
        elif call.flow.step is Step.SAVING:
            call.send(Persisted(ok=True))
        else:
            pytest.fail(f"the flow waits for nothing in {call.flow.step}")
    assert call.flow.step is Step.DONE, f"still in {call.flow.step} after 200 events"


# ---- several purposes ----------------------------------------------------------------------


def test_two_purposes_are_asked_confirmed_and_stored_one_by_one() -> None:
    call = Call.at(Step.PURPOSE, dialogue=consent(2))
    assert call.playing == play("purpose", 0)
    assert call.finish_prompt() == [play("ask")]
    assert call.key("1") == [StopPlayback(ANY), play("chosen_agree")]
    assert call.finish_prompt() == [play("confirm")]
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.AGREE)]
    assert call.send(Persisted(ok=True)) == [play("recorded_agree")]
    assert state(call) == (Step.RECORDED, (GRANTED, None), Choice.AGREE)
    assert call.finish_prompt() == [play("purpose", 1)]
    assert state(call) == (Step.PURPOSE, (GRANTED, None), None)
    assert call.finish_prompt() == [play("ask")]
    assert call.key("2") == [StopPlayback(ANY), play("chosen_decline")]
    assert call.finish_prompt() == [play("confirm")]
    assert call.key("1") == [StopPlayback(ANY), Persist(1, Choice.DECLINE)]
    assert call.send(Persisted(ok=True)) == [play("recorded_decline")]
    assert state(call) == (Step.RECORDED, (GRANTED, DECLINED), Choice.DECLINE)
    assert call.finish_prompt() == [play("goodbye")]
    ends_with(call, GRANTED, DECLINED)
    assert call.flow.outcome is None  # no single outcome for a call about two purposes
    assert call.played == [
        "notice",
        "purpose",
        "ask",
        "chosen_agree",
        "confirm",
        "recorded_agree",
        "purpose",
        "ask",
        "chosen_decline",
        "confirm",
        "recorded_decline",
        "goodbye",
    ]
    assert call.flow.changes[5:12] == [
        (Step.CHOSEN, Step.CONFIRM),
        (Step.CONFIRM, Step.SAVING),
        (Step.SAVING, Step.RECORDED),
        (Step.RECORDED, Step.PURPOSE),
        (Step.PURPOSE, Step.ASK),
        (Step.ASK, Step.CHOSEN),
        (Step.CHOSEN, Step.CONFIRM),
    ]


@pytest.mark.parametrize(
    "choices",
    list(itertools.product([Choice.AGREE, Choice.DECLINE], repeat=3)),
    ids=lambda choices: "-".join(c.value for c in choices),
)
def test_three_purposes_each_get_their_own_outcome(choices: tuple[Choice, ...]) -> None:
    call = Call.at(Step.NOTICE, dialogue=consent(3))
    call.finish_prompt()
    for item, choice in enumerate(choices):
        assert call.playing == play("purpose", item)
        assert call.outcomes == (*[DECIDED[c] for c in choices[:item]], *[None] * (3 - item))
        call.play_until_quiet()
        digit = "1" if choice is Choice.AGREE else "2"
        assert call.key(digit) == [CancelTimer(ANY), play(f"chosen_{choice.value}")]
        call.play_until_quiet()
        assert call.key("1") == [CancelTimer(ANY), Persist(item, choice)]
        assert call.send(Persisted(ok=True)) == [play(f"recorded_{choice.value}")]
        call.finish_prompt()
    ends_with(call, *[DECIDED[c] for c in choices])
    assert [p.item for p in call.plays if p.prompt == "purpose"] == [0, 1, 2]
    assert call.persists == [Persist(i, c) for i, c in enumerate(choices)]
    assert call.played.count("notice") == call.played.count("goodbye") == 1


def test_misses_on_one_purpose_do_not_count_against_the_next() -> None:
    call = Call.at(Step.ASK, Rules(max_attempts=2), consent(2))
    assert says(call, "wrong") == [play("invalid")]
    call.play_until_quiet()
    call.key("1")
    call.play_until(Step.CONFIRM)
    assert says(call, "wrong") == [play("invalid")]
    call.play_until_quiet()
    assert call.key("1") == [CancelTimer(ANY), Persist(0, Choice.AGREE)]
    call.send(Persisted(ok=True))
    assert call.finish_prompt() == [play("purpose", 1)]
    # One miss on each question of the first purpose; the second starts afresh.
    assert says(call, "wrong") == [play("invalid")]
    assert says(call, "timeout") == [play("no_response")]
    assert state(call)[:2] == (Step.RESULT, (GRANTED, NO_RESPONSE))


@pytest.mark.parametrize("loop", ["repeat", "change", "repeat in confirm"])
def test_loops_on_one_purpose_do_not_count_against_the_next(loop: str) -> None:
    call = Call.at(Step.ASK, Rules(max_repeats=1), consent(2))
    call.play_until_quiet()
    if loop == "repeat":
        assert call.key("0") == [CancelTimer(ANY), play("purpose", 0)]
        call.play_until_quiet()
    call.key("1")
    call.play_until(Step.CONFIRM)
    if loop == "change":
        assert call.key("2") == [StopPlayback(ANY), play("ask")]
        call.key("1")
        call.play_until(Step.CONFIRM)
    if loop == "repeat in confirm":
        assert call.key("0") == [StopPlayback(ANY), play("chosen_agree")]
        call.play_until(Step.CONFIRM)
    assert call.flow.loops == 1
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.AGREE)]
    call.send(Persisted(ok=True))
    call.play_until_quiet()
    # The second purpose gets its own loop, and no more.
    assert call.key("0") == [CancelTimer(ANY), play("purpose", 1)]
    call.play_until_quiet()
    assert call.key("0") == [CancelTimer(ANY), play("no_response")]
    ends_with(call, GRANTED, NO_RESPONSE)


def test_no_response_on_a_purpose_leaves_the_rest_unasked() -> None:
    call = Call.at(Step.ASK, Rules(max_attempts=1), consent(3), item=1)
    assert call.outcomes == (GRANTED, None, None)
    assert call.key("5") == [StopPlayback(ANY), play("no_response")]
    assert state(call) == (Step.RESULT, (GRANTED, NO_RESPONSE, NO_RESPONSE), None)
    ends_with(call, GRANTED, NO_RESPONSE, NO_RESPONSE)
    assert [p.item for p in call.plays if p.prompt == "purpose"] == [0, 1]


@pytest.mark.parametrize("step", [Step.PURPOSE, Step.ASK, Step.CHOSEN, Step.CONFIRM])
def test_hang_up_during_the_second_purpose_keeps_the_first_outcome(step: Step) -> None:
    call = Call.at(step, dialogue=consent(3), choice=Choice.DECLINE, item=1)
    prompt = call.playing
    assert call.hang_up() == [
        StopPlayback(prompt.play_id),
        Finish((DECLINED, ABANDONED, ABANDONED)),
    ]
    assert call.flow.step is Step.DONE


def test_hang_up_while_the_first_decision_is_announced_abandons_the_rest() -> None:
    call = Call.at(Step.RECORDED, dialogue=consent(3))
    assert call.hang_up() == [StopPlayback(ANY), Finish((GRANTED, ABANDONED, ABANDONED))]


@pytest.mark.parametrize(
    ("ok", "outcomes"),
    [
        (True, (GRANTED, DECLINED, ABANDONED)),
        # The purpose being stored failed (our fault); the one never asked was left by the
        # caller, as when the store succeeds.
        (False, (GRANTED, FAILED, ABANDONED)),
    ],
)
def test_hang_up_while_the_second_decision_is_stored(
    ok: bool, outcomes: tuple[Outcome, ...]
) -> None:
    call = Call.at(Step.ASK, dialogue=consent(3), item=1)
    call.key("2")
    call.play_until(Step.CONFIRM)
    call.key("1")
    assert call.hang_up() == []
    assert call.send(Persisted(ok=ok)) == [Finish(outcomes)]
    assert call.persists == [Persist(0, Choice.AGREE), Persist(1, Choice.DECLINE)]


def test_a_store_failure_on_the_second_purpose_fails_the_rest_and_says_nothing_recorded() -> None:
    call = Call.at(Step.SAVING, dialogue=consent(3), item=1)
    assert call.send(Persisted(ok=False, reason="database is locked")) == [play("failure")]
    assert state(call) == (Step.RESULT, (GRANTED, FAILED, FAILED), Choice.AGREE)
    ends_with(call, GRANTED, FAILED, FAILED)
    assert call.played.count("recorded_agree") == 1
    assert call.played[-2:] == ["failure", "goodbye"]
    assert [p.item for p in call.plays if p.prompt == "purpose"] == [0, 1]


def test_a_failed_announcement_between_purposes_hangs_up() -> None:
    call = Call.at(Step.RECORDED, dialogue=consent(2))
    assert call.fail_prompt() == [Hangup(), Finish((GRANTED, FAILED))]


@pytest.mark.parametrize(
    ("dialogue", "items"),
    [
        (consent(1), 1),
        (consent(3), 3),
        (withdrawal(3), 1),
        (Dialogue(purposes=("a", "b"), withdraw=True), 1),
        (Dialogue(purposes=("a", "b"), identified=False), 2),
    ],
    ids=describe,
)
def test_a_call_has_one_outcome_per_purpose_or_one_for_a_withdrawal(
    dialogue: Dialogue, items: int
) -> None:
    call = Call.at(Step.START, dialogue=dialogue)
    assert call.outcomes == (None,) * items
    assert call.hang_up() == [Finish((ABANDONED,) * items)]


# ---- withdrawal ----------------------------------------------------------------------------


def test_withdrawing_the_only_active_consent() -> None:
    call = Call(dialogue=withdrawal(1))
    assert call.send(CallStarted()) == [Answer(), StartRecording()]
    assert call.send(RecordingStarted()) == [play("notice")]
    assert call.finish_prompt() == [play("menu")]
    assert state(call) == (Step.MENU, UNDECIDED, None)
    assert call.finish_prompt() == [timer()]
    assert call.key("1") == [CancelTimer(ANY), play("chosen_withdraw", 0)]
    assert state(call) == (Step.CHOSEN, UNDECIDED, Choice.WITHDRAW)
    assert call.flow.targets == (0,)
    assert call.finish_prompt() == [play("confirm")]
    assert call.finish_prompt() == [timer()]
    assert call.key("1") == [CancelTimer(ANY), Persist(0, Choice.WITHDRAW, (0,))]
    assert state(call) == (Step.SAVING, UNDECIDED, Choice.WITHDRAW)
    assert call.send(Persisted(ok=True)) == [play("recorded_withdraw")]
    assert state(call) == (Step.RECORDED, (WITHDRAWN,), Choice.WITHDRAW)
    assert call.finish_prompt() == [play("goodbye")]
    ends_with(call, WITHDRAWN)
    assert call.played == [
        "notice",
        "menu",
        "chosen_withdraw",
        "confirm",
        "recorded_withdraw",
        "goodbye",
    ]
    assert call.flow.changes == [
        (Step.START, Step.RECORDING),
        (Step.RECORDING, Step.NOTICE),
        (Step.NOTICE, Step.MENU),
        (Step.MENU, Step.CHOSEN),
        (Step.CHOSEN, Step.CONFIRM),
        (Step.CONFIRM, Step.SAVING),
        (Step.SAVING, Step.RECORDED),
        (Step.RECORDED, Step.RESULT),
        (Step.RESULT, Step.DONE),
    ]


@pytest.mark.parametrize(
    ("active", "digit"),
    [(n, i) for n in (1, 2, 3) for i in range(1, n + 1)] + [(MENU_SIZE, MENU_SIZE)],
)
def test_a_menu_key_withdraws_that_consent(active: int, digit: int) -> None:
    call = Call.at(Step.MENU, dialogue=withdrawal(active))
    assert call.key(str(digit)) == [StopPlayback(ANY), play("chosen_withdraw", digit - 1)]
    assert call.flow.targets == (digit - 1,)
    assert call.finish_prompt() == [play("confirm")]
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.WITHDRAW, (digit - 1,))]
    assert call.send(Persisted(ok=True)) == [play("recorded_withdraw")]
    call.finish_prompt()
    ends_with(call, WITHDRAWN)


@pytest.mark.parametrize("active", [2, 3, MENU_SIZE])
def test_the_all_key_withdraws_every_active_consent(active: int) -> None:
    call = Call.at(Step.MENU, dialogue=withdrawal(active))
    call.play_until_quiet()
    assert call.key("9") == [CancelTimer(ANY), play("chosen_withdraw_all")]
    everything = tuple(range(active))
    assert call.flow.targets == everything
    assert call.finish_prompt() == [play("confirm")]
    assert call.key("1") == [StopPlayback(ANY), Persist(0, Choice.WITHDRAW, everything)]
    assert call.send(Persisted(ok=True)) == [play("recorded_withdraw")]
    call.finish_prompt()
    ends_with(call, WITHDRAWN)


def test_the_all_key_with_one_active_consent_is_a_wrong_key() -> None:
    call = Call.at(Step.MENU, Rules(max_attempts=2), withdrawal(1))
    assert call.key("9") == [StopPlayback(ANY), play("invalid")]
    assert (state(call), call.flow.targets) == ((Step.MENU, UNDECIDED, None), ())
    assert call.play_until_quiet() == ["menu"]
    assert call.key("9") == [CancelTimer(ANY), play("no_response")]
    ends_with(call, NO_RESPONSE)


@pytest.mark.parametrize("active", [1, 2, 3])
@pytest.mark.parametrize("over_the_menu", [True, False], ids=["barge-in", "after"])
def test_the_keep_key_keeps_the_consents(active: int, over_the_menu: bool) -> None:
    call = Call.at(Step.MENU, dialogue=withdrawal(active))
    if over_the_menu:
        stop: Action = StopPlayback(call.playing.play_id)
    else:
        call.play_until_quiet()
        stop = CancelTimer(call.timer.timer_id)
    assert call.key("0") == [stop, play("kept")]
    assert state(call) == (Step.RESULT, (Outcome.KEPT,), None)
    assert call.play_until_quiet() == ["goodbye"]
    assert call.actions[-2:] == [Hangup(), Finish((Outcome.KEPT,))]
    assert call.persists == []


@pytest.mark.parametrize("digit", ["3", "4", "5", "6", "7", "8", "*", "#"])
def test_menu_keys_beyond_the_active_consents_are_wrong_keys(digit: str) -> None:
    call = Call.at(Step.MENU, dialogue=withdrawal(2))
    assert call.key(digit) == [StopPlayback(ANY), play("invalid")]
    assert (state(call), call.flow.targets) == ((Step.MENU, UNDECIDED, None), ())
    assert call.flow.attempts == 1


def test_menu_keys_beyond_the_menu_size_are_wrong_keys() -> None:
    # Ten active consents, and the all key moved off 9: the menu still names only the first
    # MENU_SIZE, so the key after them is a wrong key and "all" takes every one.
    beyond = str(MENU_SIZE + 1)
    assert len(beyond) == 1
    call = Call.at(Step.MENU, CUSTOM, withdrawal(10))
    assert call.key(beyond) == [StopPlayback(ANY), play("invalid")]
    assert state(call) == (Step.MENU, UNDECIDED, None)
    assert call.key(str(MENU_SIZE)) == [StopPlayback(ANY), play("chosen_withdraw", MENU_SIZE - 1)]
    call = Call.at(Step.MENU, CUSTOM, withdrawal(10))
    assert call.key("*") == [StopPlayback(ANY), play("chosen_withdraw_all")]
    assert call.flow.targets == tuple(range(10))


@pytest.mark.parametrize("withdraw", [False, True], ids=["active", "active-direct"])
def test_a_withdrawal_call_never_asks_for_consent(withdraw: bool) -> None:
    dialogue = Dialogue(purposes=("marketing", "research"), active=("record-0",), withdraw=withdraw)
    call = Call.at(Step.DONE, dialogue=dialogue)
    assert call.actions[-1] == Finish((WITHDRAWN,))
    assert call.persists == [Persist(0, Choice.WITHDRAW, (0,))]
    assert not {"purpose", "ask", "chosen_agree", "chosen_decline"} & set(call.played)


# ---- callers with nothing to ask -----------------------------------------------------------


@pytest.mark.parametrize(
    "dialogue",
    [
        UNKNOWN,
        Dialogue(purposes=("a", "b", "c"), identified=False),
        Dialogue(active=("record-0",), identified=False),
        Dialogue(withdraw=True, identified=False),
    ],
    ids=["consent", "three-purposes", "active", "withdraw"],
)
def test_an_unidentified_caller_is_told_and_nothing_is_asked(dialogue: Dialogue) -> None:
    call = Call.at(Step.NOTICE, dialogue=dialogue)
    unidentified = (Outcome.UNIDENTIFIED,) * dialogue.items
    assert call.finish_prompt() == [play("unidentified")]
    assert state(call) == (Step.RESULT, unidentified, None)
    for digit in KEYPAD:
        assert call.key(digit) == []
    assert call.finish_prompt() == [play("goodbye")]
    assert call.finish_prompt() == [Hangup(), Finish(unidentified)]
    assert call.played == ["notice", "unidentified", "goodbye"]
    assert call.flow.changes[-2:] == [(Step.NOTICE, Step.RESULT), (Step.RESULT, Step.DONE)]


@pytest.mark.parametrize("purposes", [1, 3])
def test_a_direct_withdrawal_with_nothing_active_is_told_so(purposes: int) -> None:
    dialogue = replace(consent(purposes), withdraw=True)
    call = Call.at(Step.NOTICE, dialogue=dialogue)
    assert call.finish_prompt() == [play("nothing_active")]
    assert state(call) == (Step.RESULT, (Outcome.NOTHING_ACTIVE,), None)
    assert call.finish_prompt() == [play("goodbye")]
    assert call.finish_prompt() == [Hangup(), Finish((Outcome.NOTHING_ACTIVE,))]
    assert call.played == ["notice", "nothing_active", "goodbye"]


# ---- hang-up -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [Step.START, Step.RECORDING])
@pytest.mark.parametrize("dialogue", [consent(), consent(2), withdrawal(1)], ids=describe)
def test_hang_up_before_anything_is_said_is_abandoned(step: Step, dialogue: Dialogue) -> None:
    call = Call.at(step, dialogue=dialogue)
    abandoned = (ABANDONED,) * dialogue.items
    assert call.hang_up() == [Finish(abandoned)]
    assert state(call) == (Step.DONE, abandoned, None)


@pytest.mark.parametrize(
    ("step", "dialogue"),
    [
        *[(step, consent()) for step in (Step.NOTICE, Step.PURPOSE, Step.ASK)],
        *[(step, consent()) for step in (Step.CHOSEN, Step.CONFIRM)],
        *[(step, withdrawal(2)) for step in (Step.NOTICE, Step.MENU, Step.CHOSEN, Step.CONFIRM)],
    ],
    ids=describe,
)
def test_hang_up_during_a_prompt_before_a_decision_is_abandoned(
    step: Step, dialogue: Dialogue
) -> None:
    call = Call.at(step, dialogue=dialogue)
    choice = call.flow.choice
    prompt = call.playing
    assert call.hang_up() == [StopPlayback(prompt.play_id), Finish((ABANDONED,))]
    assert state(call) == (Step.DONE, (ABANDONED,), choice)
    assert call.persists == []


@pytest.mark.parametrize("step", ASKING)
def test_hang_up_while_waiting_for_a_key_is_abandoned(step: Step) -> None:
    call = asking(step)
    call.play_until_quiet()
    waiting = call.timer
    assert call.hang_up() == [CancelTimer(waiting.timer_id), Finish((ABANDONED,))]
    assert call.outcomes == (ABANDONED,)


@pytest.mark.parametrize(
    ("dialogue", "choice", "pick"),
    [
        (consent(), Choice.AGREE, ""),
        (consent(), Choice.DECLINE, ""),
        (withdrawal(2), Choice.WITHDRAW, "2"),
        (withdrawal(2), Choice.WITHDRAW, "9"),
    ],
    ids=describe,
)
def test_hang_up_between_the_first_and_the_second_key_is_abandoned(
    dialogue: Dialogue, choice: Choice, pick: str
) -> None:
    call = Call.at(Step.CONFIRM, dialogue=dialogue, choice=choice, pick=pick)
    made = call.flow.choice
    assert made is choice
    call.key("0")
    call.play_until(Step.CONFIRM)
    miss(call, "timeout")
    assert call.flow.step is Step.CHOSEN
    assert call.hang_up() == [StopPlayback(ANY), Finish((ABANDONED,))]
    assert state(call) == (Step.DONE, (ABANDONED,), made)
    assert call.persists == []


@pytest.mark.parametrize(
    ("dialogue", "choice", "ok", "outcome"),
    [
        (consent(), Choice.AGREE, True, GRANTED),
        (consent(), Choice.DECLINE, True, DECLINED),
        (withdrawal(2), Choice.WITHDRAW, True, WITHDRAWN),
        (consent(), Choice.AGREE, False, FAILED),
        (consent(), Choice.DECLINE, False, FAILED),
        (withdrawal(2), Choice.WITHDRAW, False, FAILED),
    ],
    ids=describe,
)
def test_hang_up_while_saving_waits_for_the_store(
    dialogue: Dialogue, choice: Choice, ok: bool, outcome: Outcome
) -> None:
    call = Call.at(Step.SAVING, dialogue=dialogue, choice=choice)
    stopped = [a.play_id for a in call.actions if isinstance(a, StopPlayback)]
    assert call.hang_up() == []
    assert state(call) == (Step.SAVING, UNDECIDED, choice)
    for event in (HungUp(), KeyPressed("1"), PromptFinished(stopped[-1]), TimerExpired(1)):
        assert call.send(event) == []
    assert call.flow.step is Step.SAVING
    assert call.send(Persisted(ok=ok)) == [Finish((outcome,))]
    assert state(call) == (Step.DONE, (outcome,), choice)
    assert call.played[-1] == "confirm"


@pytest.mark.parametrize("dialogue", [consent(), withdrawal(1)], ids=["consent", "withdrawal"])
def test_hang_up_while_the_decision_is_announced_keeps_it(dialogue: Dialogue) -> None:
    call = Call.at(Step.RECORDED, dialogue=dialogue)
    announcement = call.playing
    outcome = DECIDED[call.persists[-1].choice]
    assert call.hang_up() == [StopPlayback(announcement.play_id), Finish((outcome,))]


def at_result(outcome: Outcome) -> Call:
    """A call that has just entered RESULT with `outcome`, its first result prompt playing."""
    match outcome:
        case Outcome.GRANTED | Outcome.DECLINED:
            choice = Choice.AGREE if outcome is GRANTED else Choice.DECLINE
            return Call.at(Step.RESULT, choice=choice)
        case Outcome.WITHDRAWN:
            return Call.at(Step.RESULT, dialogue=withdrawal(1))
        case Outcome.NO_RESPONSE:
            call = Call.at(Step.ASK, Rules(max_attempts=1))
            call.key("5")
        case Outcome.FAILED:
            call = Call.at(Step.SAVING)
            call.send(Persisted(ok=False))
        case Outcome.KEPT:
            call = Call.at(Step.MENU, dialogue=withdrawal(1))
            call.key("0")
        case Outcome.NOTHING_ACTIVE:
            call = Call.at(Step.RESULT, dialogue=NOTHING_TO_WITHDRAW)
        case Outcome.UNIDENTIFIED:
            call = Call.at(Step.RESULT, dialogue=UNKNOWN)
    assert state(call)[:2] == (Step.RESULT, (outcome,))
    return call


RESULT_PROMPTS = {
    Outcome.GRANTED: ["goodbye"],
    Outcome.DECLINED: ["goodbye"],
    Outcome.WITHDRAWN: ["goodbye"],
    Outcome.NO_RESPONSE: ["no_response", "goodbye"],
    Outcome.FAILED: ["failure", "goodbye"],
    Outcome.KEPT: ["kept", "goodbye"],
    Outcome.NOTHING_ACTIVE: ["nothing_active", "goodbye"],
    Outcome.UNIDENTIFIED: ["unidentified", "goodbye"],
}
RESULTS = [(o, i) for o, prompts in RESULT_PROMPTS.items() for i in range(len(prompts))]


@pytest.mark.parametrize(("outcome", "prompts_done"), RESULTS, ids=describe)
def test_hang_up_during_the_result_keeps_the_decided_outcome(
    outcome: Outcome, prompts_done: int
) -> None:
    call = at_result(outcome)
    for _ in range(prompts_done):
        call.finish_prompt()
    playing = call.playing
    assert playing.prompt == RESULT_PROMPTS[outcome][prompts_done]
    assert call.hang_up() == [StopPlayback(playing.play_id), Finish((outcome,))]
    assert call.flow.step is Step.DONE


def test_every_outcome_has_its_result() -> None:
    assert set(RESULT_PROMPTS) == set(Outcome) - {Outcome.ABANDONED}


# ---- store failure -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialogue", "choice"),
    [(consent(), Choice.AGREE), (consent(), Choice.DECLINE), (withdrawal(2), Choice.WITHDRAW)],
    ids=describe,
)
def test_a_store_failure_is_failed_and_never_said_recorded(
    dialogue: Dialogue, choice: Choice
) -> None:
    call = Call.at(Step.SAVING, dialogue=dialogue, choice=choice)
    assert call.send(Persisted(ok=False, reason="database is locked")) == [play("failure")]
    assert state(call) == (Step.RESULT, (FAILED,), choice)
    assert call.play_until_quiet() == ["goodbye"]
    assert call.actions[-2:] == [Hangup(), Finish((FAILED,))]
    assert not [p for p in call.played if p.startswith("recorded")]


@pytest.mark.parametrize(
    ("dialogue", "choice", "persist"),
    [
        (consent(), Choice.AGREE, Persist(0, Choice.AGREE)),
        (consent(), Choice.DECLINE, Persist(0, Choice.DECLINE)),
        (withdrawal(2), Choice.WITHDRAW, Persist(0, Choice.WITHDRAW, (0,))),
    ],
    ids=describe,
)
def test_nothing_plays_while_the_decision_is_being_stored(
    dialogue: Dialogue, choice: Choice, persist: Persist
) -> None:
    call = Call.at(Step.CONFIRM, dialogue=dialogue, choice=choice)
    call.play_until_quiet()
    assert call.key("1") == [CancelTimer(ANY), persist]
    for digit in KEYPAD:
        assert call.key(digit) == []
    assert call.playing is None and call.timer is None
    assert call.send(Persisted(ok=True)) == [play(f"recorded_{choice.value}")]
    assert RECORDED_PROMPT[choice] == f"recorded_{choice.value}"


# ---- prompt failures -----------------------------------------------------------------------


def reprompting(step: Step, prompt: str) -> Call:
    call = asking(step)
    call.play_until_quiet()
    call.key("5") if prompt == "invalid" else call.expire()
    return call


@pytest.mark.parametrize(
    ("setup", "outcomes"),
    [
        pytest.param(lambda: Call.at(Step.NOTICE), (FAILED,), id="notice"),
        pytest.param(lambda: Call.at(Step.PURPOSE), (FAILED,), id="purpose"),
        pytest.param(lambda: Call.at(Step.ASK), (FAILED,), id="ask"),
        pytest.param(lambda: reprompting(Step.ASK, "invalid"), (FAILED,), id="ask-invalid"),
        pytest.param(lambda: reprompting(Step.ASK, "no_input"), (FAILED,), id="ask-no_input"),
        pytest.param(lambda: Call.at(Step.MENU, dialogue=withdrawal(2)), (FAILED,), id="menu"),
        pytest.param(lambda: reprompting(Step.MENU, "invalid"), (FAILED,), id="menu-invalid"),
        pytest.param(lambda: reprompting(Step.MENU, "no_input"), (FAILED,), id="menu-no_input"),
        pytest.param(lambda: Call.at(Step.CHOSEN), (FAILED,), id="chosen"),
        pytest.param(
            lambda: Call.at(Step.CHOSEN, dialogue=withdrawal(2)), (FAILED,), id="chosen_withdraw"
        ),
        pytest.param(lambda: reprompting(Step.CONFIRM, "invalid"), (FAILED,), id="restated"),
        pytest.param(lambda: Call.at(Step.CONFIRM), (FAILED,), id="confirm"),
        pytest.param(
            lambda: Call.at(Step.PURPOSE, dialogue=consent(3), item=1),
            (GRANTED, FAILED, FAILED),
            id="second-purpose",
        ),
        pytest.param(
            lambda: Call.at(Step.CONFIRM, dialogue=consent(2), item=1),
            (GRANTED, FAILED),
            id="second-confirm",
        ),
    ],
)
def test_a_prompt_failure_before_a_decision_fails_the_call(
    setup: Callable[[], Call], outcomes: tuple[Outcome, ...]
) -> None:
    call = setup()
    choice = call.flow.choice
    assert call.fail_prompt() == [play("failure")]
    assert state(call) == (Step.RESULT, outcomes, choice)
    ends_with(call, *outcomes)
    assert call.played[-2:] == ["failure", "goodbye"]


@pytest.mark.parametrize(("outcome", "prompts_done"), RESULTS, ids=describe)
def test_a_prompt_failure_in_the_result_just_hangs_up(outcome: Outcome, prompts_done: int) -> None:
    call = at_result(outcome)
    for _ in range(prompts_done):
        call.finish_prompt()
    assert call.fail_prompt() == [Hangup(), Finish((outcome,))]
    assert call.flow.step is Step.DONE


@pytest.mark.parametrize("dialogue", [consent(), withdrawal(1)], ids=["consent", "withdrawal"])
def test_a_prompt_failure_in_the_announcement_just_hangs_up(dialogue: Dialogue) -> None:
    call = Call.at(Step.RECORDED, dialogue=dialogue)
    outcome = DECIDED[call.persists[-1].choice]
    assert call.fail_prompt() == [Hangup(), Finish((outcome,))]
    assert "goodbye" not in call.played


def test_a_stale_prompt_failure_is_ignored() -> None:
    call = Call.at(Step.ASK)
    ask = call.playing
    call.key("1")
    assert call.send(PromptFailed(ask.play_id, "gone")) == []
    assert state(call) == (Step.CHOSEN, UNDECIDED, Choice.AGREE)


# ---- after the end, and events a front must not send ---------------------------------------


def finished(how: str) -> Call:
    match how:
        case "granted":
            return Call.at(Step.DONE)
        case "two purposes":
            return Call.at(Step.DONE, dialogue=consent(2), item=1)
        case "withdrawn":
            return Call.at(Step.DONE, dialogue=withdrawal(2))
        case "unidentified":
            return Call.at(Step.DONE, dialogue=UNKNOWN)
        case "hung up while saving":
            call = Call.at(Step.SAVING)
            call.hang_up()
            call.send(Persisted(ok=True))
            return call
    call = Call.at(Step.CHOSEN)
    call.hang_up()
    return call


LATE_EVENTS: list[Event] = [
    CallStarted(),
    RecordingStarted(),
    RecordingFailed(),
    *[PromptFinished(i) for i in range(15)],
    *[PromptFailed(i) for i in range(15)],
    *[KeyPressed(d) for d in KEYPAD],
    *[TimerExpired(i) for i in range(5)],
    HungUp(),
    Persisted(ok=True),
    Persisted(ok=False),
]


@pytest.mark.parametrize(
    "how",
    ["granted", "two purposes", "withdrawn", "unidentified", "hung up while saving", "hung up"],
)
def test_events_after_the_end_do_nothing(how: str) -> None:
    call = finished(how)
    end = state(call)
    assert end[0] is Step.DONE
    for event in LATE_EVENTS:
        assert call.send(event) == [], event
        assert state(call) == end


WRONG_STEP = [
    (Step.START, RecordingStarted()),
    (Step.START, RecordingFailed()),
    (Step.START, Persisted(ok=True)),
    (Step.RECORDING, CallStarted()),
    (Step.RECORDING, Persisted(ok=True)),
    (Step.NOTICE, CallStarted()),
    (Step.NOTICE, RecordingStarted()),
    (Step.NOTICE, RecordingFailed()),
    (Step.PURPOSE, Persisted(ok=True)),
    (Step.ASK, Persisted(ok=False)),
    (Step.ASK, RecordingStarted()),
    (Step.MENU, Persisted(ok=True)),
    (Step.MENU, CallStarted()),
    (Step.CHOSEN, Persisted(ok=True)),
    (Step.CHOSEN, RecordingFailed()),
    (Step.CONFIRM, Persisted(ok=True)),
    (Step.CONFIRM, CallStarted()),
    (Step.SAVING, RecordingStarted()),
    (Step.SAVING, CallStarted()),
    (Step.RECORDED, Persisted(ok=True)),
    (Step.RECORDED, RecordingStarted()),
    (Step.RESULT, Persisted(ok=True)),
    (Step.RESULT, RecordingFailed()),
]


@pytest.mark.parametrize(("step", "event"), WRONG_STEP, ids=describe)
def test_an_event_in_the_wrong_step_raises_naming_both(step: Step, event: Event) -> None:
    call = Call.at(step, dialogue=withdrawal(2) if step is Step.MENU else consent())
    before = state(call), call.playing, call.timer, list(call.actions)
    with pytest.raises(FlowError) as raised:
        call.send(event)
    message = str(raised.value)
    assert type(event).__name__ in message
    assert re.search(rf"\b{step.value}\b", message), message
    assert (state(call), call.playing, call.timer, call.actions) == before


def test_an_unknown_event_raises() -> None:
    @dataclass(frozen=True)
    class Transferred:
        pass

    with pytest.raises(FlowError, match="Transferred"):
        Call.at(Step.ASK).send(Transferred())  # type: ignore[arg-type]


# ---- keys come from the campaign -----------------------------------------------------------


def test_custom_keys_drive_a_whole_consent_call() -> None:
    call = Call.at(Step.ASK, replace(CUSTOM, max_repeats=4))
    assert call.key("9") == [StopPlayback(ANY), play("purpose", 0)]
    call.play_until_quiet()
    assert call.key("8") == [CancelTimer(ANY), play("chosen_decline")]
    call.play_until(Step.CONFIRM)
    assert call.key("9") == [StopPlayback(ANY), play("chosen_decline")]
    call.play_until(Step.CONFIRM)
    assert call.key("*") == [StopPlayback(ANY), play("ask")]
    assert call.key("7") == [StopPlayback(ANY), play("chosen_agree")]
    call.play_until(Step.CONFIRM)
    assert call.key("#") == [StopPlayback(ANY), Persist(0, Choice.AGREE)]
    assert call.send(Persisted(ok=True)) == [play("recorded_agree")]
    call.finish_prompt()
    ends_with(call, GRANTED)


def test_custom_keys_drive_a_whole_withdrawal_call() -> None:
    # One digit, two meanings: "#" keeps in the menu and confirms in CONFIRM; "*" is "all" in
    # the menu and "change" in CONFIRM.
    call = Call.at(Step.MENU, CUSTOM, withdrawal(3))
    assert call.key("*") == [StopPlayback(ANY), play("chosen_withdraw_all")]
    call.play_until(Step.CONFIRM)
    assert call.key("9") == [StopPlayback(ANY), play("chosen_withdraw_all")]
    call.play_until(Step.CONFIRM)
    assert call.key("*") == [StopPlayback(ANY), play("menu")]
    assert call.key("2") == [StopPlayback(ANY), play("chosen_withdraw", 1)]
    call.play_until(Step.CONFIRM)
    assert call.key("#") == [StopPlayback(ANY), Persist(0, Choice.WITHDRAW, (1,))]
    assert call.send(Persisted(ok=True)) == [play("recorded_withdraw")]
    call.finish_prompt()
    ends_with(call, WITHDRAWN)
    keeping = Call.at(Step.MENU, CUSTOM, withdrawal(3))
    assert keeping.key("#") == [StopPlayback(ANY), play("kept")]
    assert keeping.outcomes == (Outcome.KEPT,)


@pytest.mark.parametrize(
    ("step", "digit"),
    [
        *[(Step.ASK, d) for d in "120"],
        *[(Step.MENU, d) for d in "90"],
        *[(Step.CONFIRM, d) for d in "120"],
    ],
    ids=describe,
)
def test_default_digits_are_wrong_keys_under_custom_keys(step: Step, digit: str) -> None:
    call = asking(step, CUSTOM)
    choice = call.flow.choice
    assert call.key(digit) == [StopPlayback(ANY), play("invalid")]
    assert state(call) == (Step.CHOSEN if step is Step.CONFIRM else step, UNDECIDED, choice)
    assert call.flow.attempts == 1
    assert call.played.count("purpose") <= 1
    assert call.persists == []


@pytest.mark.parametrize("step", list(Step))
def test_keys_are_accepted_only_in_questions(step: Step) -> None:
    call = Call.at(step, dialogue=withdrawal(2) if step is Step.MENU else consent())
    assert call.flow.accepts_keys is (step in ASKING)


# ---- the table and its diagram -------------------------------------------------------------

# What kind of event makes each row of TRANSITIONS happen. The walks check every step change
# against (from, event kind, to): a row whose label names the wrong trigger fails as surely as
# a change missing from the table, and a row never made fails the coverage test.
TRIGGERS: dict[str, tuple[type, ...]] = {
    "call started": (CallStarted,),
    "recording started": (RecordingStarted,),
    "recording failed": (RecordingFailed,),
    "notice played": (PromptFinished,),
    "notice played, consents active": (PromptFinished,),
    "notice played, number withheld or nothing to withdraw": (PromptFinished,),
    "purpose played": (PromptFinished,),
    "agree or decline key": (KeyPressed,),
    "repeat key": (KeyPressed,),
    "attempts or repeats exhausted": (KeyPressed, TimerExpired),
    "a consent's key or the all key": (KeyPressed,),
    "keep key": (KeyPressed,),
    "attempts exhausted": (KeyPressed, TimerExpired),
    "choice stated": (PromptFinished,),
    "confirm key": (KeyPressed,),
    "wrong key, silence or repeat key": (KeyPressed, TimerExpired),
    "change key": (KeyPressed,),
    "change key (withdrawal)": (KeyPressed,),
    "attempts, repeats or changes exhausted": (KeyPressed, TimerExpired),
    "stored": (Persisted,),
    "store failed": (Persisted,),
    "recorded said, next purpose": (PromptFinished,),
    "recorded said": (PromptFinished,),
    "result played": (PromptFinished,),
    "hang-up": (HungUp,),
    "hang-up, then stored or failed": (Persisted,),
    "prompt failed": (PromptFailed,),
}
TRIGGERED = {
    (src, kind, dst) for src, label, dst in TRANSITIONS for kind in TRIGGERS.get(label, ())
}


def test_every_transition_has_a_known_trigger() -> None:
    assert {label for _, label, _ in TRANSITIONS} == set(TRIGGERS)


def test_the_transition_table_is_a_connected_graph() -> None:
    assert len(set(TRANSITIONS)) == len(TRANSITIONS)
    assert all(label.strip() for _, label, _ in TRANSITIONS)
    assert not [row for row in TRANSITIONS if row[0] is Step.DONE or row[2] is Step.START]
    reached, frontier = {Step.START}, [Step.START]
    while frontier:
        src = frontier.pop()
        for dst in {d for s, d in PAIRS if s is src} - reached:
            reached.add(dst)
            frontier.append(dst)
    assert reached == set(Step)
    for step in set(Step) - {Step.DONE}:
        assert any(s is step for s, _ in PAIRS), f"{step} is a dead end"
        assert (step, Step.DONE) in PAIRS, f"no hang-up from {step}"


def test_the_diagram_draws_every_step_and_every_transition() -> None:
    text = diagram()
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    assert f"[*] --> {Step.START.value}" in lines and f"{Step.DONE.value} --> [*]" in lines
    for src, label, dst in TRANSITIONS:
        assert f"{src.value} --> {dst.value}: {label}" in lines
    for step in Step:
        assert re.search(rf"^\s*{step.value} -->|--> {step.value}\b", text, re.M), step


# ---- invariants over a seeded exploration --------------------------------------------------

RULE_SETS = (
    Rules(),
    Rules(max_attempts=1, max_repeats=0),
    Rules(max_attempts=2, max_repeats=1, key_timeout_s=3.5),
    replace(CUSTOM, max_attempts=4, max_repeats=3),
)
WALKS = 1500

# Where each prompt may play, and which prompts belong to which kind of call.
PLAYED_IN: dict[str, tuple[Step, ...]] = {
    "notice": (Step.NOTICE,),
    "purpose": (Step.PURPOSE,),
    "ask": (Step.ASK,),
    "menu": (Step.MENU,),
    "chosen_agree": (Step.CHOSEN,),
    "chosen_decline": (Step.CHOSEN,),
    "chosen_withdraw": (Step.CHOSEN,),
    "chosen_withdraw_all": (Step.CHOSEN,),
    "confirm": (Step.CONFIRM,),
    "recorded_agree": (Step.RECORDED,),
    "recorded_decline": (Step.RECORDED,),
    "recorded_withdraw": (Step.RECORDED,),
    "invalid": (Step.ASK, Step.MENU, Step.CHOSEN),
    "no_input": (Step.ASK, Step.MENU, Step.CHOSEN),
    "no_response": (Step.RESULT,),
    "failure": (Step.RESULT,),
    "goodbye": (Step.RESULT,),
    "unidentified": (Step.RESULT,),
    "kept": (Step.RESULT,),
    "nothing_active": (Step.RESULT,),
}
CONSENT_ONLY = {"purpose", "ask", "chosen_agree", "chosen_decline"}
CONSENT_ONLY |= {"recorded_agree", "recorded_decline"}
WITHDRAWAL_ONLY = {"menu", "chosen_withdraw", "chosen_withdraw_all", "recorded_withdraw", "kept"}
ABOUT_AN_ITEM = ("purpose", "chosen_withdraw")
# Step changes after which a question is put afresh, with the full number of attempts (as is
# every question that follows a choice).
AFRESH = {(Step.PURPOSE, Step.ASK), (Step.NOTICE, Step.MENU)}
AFRESH |= {(Step.CONFIRM, Step.ASK), (Step.CONFIRM, Step.MENU)}


def test_every_prompt_has_its_steps() -> None:
    assert set(PLAYED_IN) == set(PROMPTS)


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    return [
        walk(seed, RULE_SETS[seed % len(RULE_SETS)], patient=seed % 5 == 0) for seed in range(WALKS)
    ]


def menu_keys(run: Run) -> dict[str, tuple[int, ...]]:
    """The withdrawal menu's keys, and the active consents each one picks."""
    r, active = run.rules, run.dialogue.active
    count = min(len(active), MENU_SIZE)
    keys: dict[str, tuple[int, ...]] = {str(i): (i - 1,) for i in range(1, count + 1)}
    if len(active) > 1:
        keys.setdefault(r.withdraw_all, tuple(range(len(active))))
    return keys


def meaning(run: Run, step: Step, event: Event) -> str:
    """What a key (or the silence of an expired timer) is in the question `step`: a "choice",
    "confirm", "keep", a "loop" (hear it again, change) or a "miss" (wrong key, silence)."""
    r = run.rules
    if not isinstance(event, KeyPressed):
        return "miss"
    digit = event.digit
    if step is Step.ASK:
        return (
            "choice" if digit in (r.agree, r.decline) else "loop" if digit == r.repeat else "miss"
        )
    if step is Step.MENU:
        return "choice" if digit in menu_keys(run) else "keep" if digit == r.keep else "miss"
    if digit == r.confirm:
        return "confirm"
    return "loop" if digit in (r.change, r.repeat) else "miss"


def chosen_by(run: Run, step: Step, event: Event) -> tuple[Choice, tuple[int, ...]]:
    """What the key that took the call from `step` (ASK or MENU) to CHOSEN chose."""
    r = run.rules
    assert isinstance(event, KeyPressed), f"{step} -> chosen on {event}"
    if step is Step.ASK:
        choices = {r.agree: Choice.AGREE, r.decline: Choice.DECLINE}
        assert event.digit in choices, f"{event.digit} chose in ask"
        return choices[event.digit], ()
    menu = menu_keys(run)
    assert event.digit in menu, f"{event.digit} chose in a menu of {len(run.dialogue.active)}"
    return Choice.WITHDRAW, menu[event.digit]


def statement(choice: Choice, targets: tuple[int, ...]) -> tuple[str, int | None]:
    """The prompt (and its item) that states a choice back."""
    if choice is not Choice.WITHDRAW:
        return f"chosen_{choice.value}", None
    return ("chosen_withdraw_all", None) if len(targets) > 1 else ("chosen_withdraw", targets[0])


# The kind of event that may settle an item with each outcome.
CAUSES: dict[Outcome, tuple[type, ...]] = {
    GRANTED: (Persisted,),
    DECLINED: (Persisted,),
    WITHDRAWN: (Persisted,),
    Outcome.KEPT: (KeyPressed,),
    Outcome.NOTHING_ACTIVE: (PromptFinished,),
    Outcome.UNIDENTIFIED: (PromptFinished,),
    NO_RESPONSE: (KeyPressed, TimerExpired),
    ABANDONED: (HungUp, Persisted),
    FAILED: (RecordingFailed, PromptFailed, Persisted),
}


def test_every_outcome_has_its_causes() -> None:
    assert set(CAUSES) == set(Outcome)


def check(run: Run) -> None:
    """Every invariant of one whole call; raises AssertionError naming the first one broken."""
    r, d, turns = run.rules, run.dialogue, run.turns
    assert run.error is None, f"FlowError from a well-behaved front: {run.error}"
    assert not run.stuck, "the flow is alive but the front has nothing to answer"
    assert not run.too_long, "the call did not end"

    finishes = [(i, a) for i, t in enumerate(turns) for a in t.actions if isinstance(a, Finish)]
    assert len(finishes) == 1, f"{len(finishes)} Finish actions"
    end, finish = finishes[0]
    assert turns[end].actions[-1] == finish, "Finish is not the last action of its event"
    assert all(t.actions == [] and not t.changes for t in turns[end + 1 :]), "actions after Finish"
    assert len(finish.outcomes) == d.items, f"{len(finish.outcomes)} outcomes for {d.items} items"
    assert None not in finish.outcomes
    assert (run.flow.step, tuple(run.flow.outcomes)) == (Step.DONE, finish.outcomes)

    playing: int | None = None
    timer_id: int | None = None
    prompt_of: dict[int, str] = {}
    step_of: dict[int, Step] = {}
    timers: set[int] = set()
    recording = recording_failed = hung_up = caller_left = False
    hangups = misses = loops = 0
    persists: list[Persist] = []
    answers: list[Persisted] = []
    stored: dict[int, Choice] = {}
    made: tuple[Choice, tuple[int, ...]] | None = None  # by the key that entered CHOSEN
    for t in turns:
        event, live = t.event, t.before is not Step.DONE
        step = t.before
        for src, dst in t.changes:
            assert src is step, f"changes {t.changes} do not start from {t.before}"
            trigger = (src, type(event), dst)
            assert trigger in TRIGGERED, f"{src} -> {dst} on {event} is not in TRANSITIONS"
            step = dst
        assert step is t.after

        current = isinstance(event, PromptFinished | PromptFailed) and event.play_id == playing
        stated = prompt_of[event.play_id] if current and isinstance(event, PromptFinished) else None
        expired = isinstance(event, TimerExpired) and event.timer_id == timer_id
        match event:
            case RecordingStarted() if live:
                recording = True
            case RecordingFailed() if live:
                recording_failed = True
            case HungUp():
                caller_left = caller_left or live
                hung_up = True
            case Persisted() if live:
                assert len(persists) == len(answers) + 1, "a store answer without a Persist"
                answers.append(event)
                if event.ok:
                    stored[persists[-1].item] = persists[-1].choice
                else:
                    assert t.outcomes[persists[-1].item] is FAILED, "a failed store not FAILED"
            case KeyPressed() if t.before not in ASKING:
                assert not t.actions and not t.changes, f"a key acted in {t.before}"
        if current:
            playing = None
        if expired:
            assert t.before in ASKING, f"a key timer expired in {t.before}"
            timer_id = None

        # Outcomes: settled once, by an event that may settle them.
        said = [a.prompt for a in t.actions if isinstance(a, Play)]
        for item, (before, after) in enumerate(zip(t.outcomes_before, t.outcomes, strict=True)):
            assert before is None or after is before, f"a decided outcome changed: {t}"
            if before is not None or after is None:
                continue
            assert isinstance(event, CAUSES[after]), f"item {item} {after} on {event}"
            if after in DECIDED.values():
                assert stored.get(item) is not None and DECIDED[stored[item]] is after
            elif after is ABANDONED:
                assert caller_left, f"item {item} abandoned on {event} by a caller still there"
            elif after is FAILED:
                assert current or live, f"item {item} failed on a stale {event}"
            elif after is Outcome.KEPT:
                assert t.before is Step.MENU and event == KeyPressed(r.keep)
            elif after is NO_RESPONSE:
                assert "no_response" in said
            elif after is Outcome.UNIDENTIFIED:
                assert t.before is Step.NOTICE and not d.identified
            elif after is Outcome.NOTHING_ACTIVE:
                assert t.before is Step.NOTICE and d.withdraw and not d.active and d.identified

        # The budgets: misses since the question was last put afresh, loops on this purpose.
        gives_up = False
        if t.before in ASKING and (isinstance(event, KeyPressed) or expired):
            kind = meaning(run, t.before, event)
            misses += kind == "miss"
            loops += kind == "loop"
            gives_up = (kind == "miss" and misses >= r.max_attempts) or (
                kind == "loop" and loops > r.max_repeats
            )
        assert ("no_response" in said) is gives_up, (
            f"no_response {said} after {misses} misses and {loops} loops on {event}"
        )
        for src, dst in t.changes:
            if dst is Step.CHOSEN and src in (Step.ASK, Step.MENU):
                made = chosen_by(run, src, event)
            if src is Step.CONFIRM and dst in (Step.ASK, Step.MENU):
                made = None
            if (src, dst) in AFRESH or dst is Step.CHOSEN and src is not Step.CONFIRM:
                misses = 0
            if (src, dst) == (Step.RECORDED, Step.PURPOSE):
                loops = 0
            if dst is Step.CONFIRM:
                assert stated is not None and stated.startswith("chosen_"), (
                    f"CONFIRM entered before the choice was stated in full ({event})"
                )

        for action in t.actions:
            match action:
                case Play(prompt=prompt, play_id=pid, item=item):
                    assert not hung_up, "Play after HungUp"
                    assert prompt in PROMPTS, f"unknown prompt {prompt}"
                    assert playing is None, "two playbacks at once"
                    assert pid not in prompt_of, f"play id {pid} reused"
                    if prompt.startswith("recorded_"):
                        assert live and isinstance(event, Persisted) and event.ok, (
                            f"{prompt} before the commit"
                        )
                        assert prompt == RECORDED_PROMPT[persists[-1].choice]
                    assert t.after in PLAYED_IN[prompt], f"{prompt} played in {t.after}"
                    if not recording:
                        assert recording_failed and prompt in ("failure", "goodbye"), (
                            f"{prompt} played before the recording started"
                        )
                    assert (item is not None) is (prompt in ABOUT_AN_ITEM), f"{action}"
                    if prompt == "purpose":
                        assert item == len(stored), f"purpose {item} after {len(stored)} stored"
                    if prompt.startswith("chosen_"):
                        assert made is not None and (prompt, item) == statement(*made), (
                            f"{action} states another choice than {made}"
                        )
                    assert prompt not in CONSENT_ONLY or not d.withdrawal, f"{prompt} in {d}"
                    assert prompt not in WITHDRAWAL_ONLY or d.withdrawal, f"{prompt} in {d}"
                    if prompt == "unidentified":
                        assert not d.identified, "unidentified said to a known number"
                    if prompt == "nothing_active":
                        assert d.withdraw and not d.active and d.identified
                    prompt_of[pid], step_of[pid] = prompt, t.after
                    playing = pid
                case StopPlayback(play_id=pid):
                    assert pid == playing, f"stops {pid}, but {playing} plays"
                    if not isinstance(event, HungUp):
                        asked = step_of[pid] in ASKING and t.before in ASKING
                        assert isinstance(event, KeyPressed) and asked, (
                            f"{prompt_of[pid]} cut short by {event} in {t.before}"
                        )
                    playing = None
                case StartTimer(timer_id=tid, seconds=seconds):
                    assert not hung_up, "StartTimer after HungUp"
                    assert timer_id is None and tid not in timers
                    assert seconds == r.key_timeout_s and t.after in ASKING
                    assert playing is None, "the key timer runs while a prompt plays"
                    timers.add(tid)
                    timer_id = tid
                case CancelTimer(timer_id=tid):
                    assert tid == timer_id, f"cancels {tid}, but {timer_id} runs"
                    assert isinstance(event, KeyPressed | HungUp), f"{action} on {event}"
                    timer_id = None
                case Persist():
                    assert not hung_up, "Persist after HungUp"
                    assert event == KeyPressed(r.confirm) and t.before is Step.CONFIRM, (
                        f"{action} on {event} in {t.before}"
                    )
                    assert (action.choice, action.targets) == made, (
                        f"persisted {action}, but the caller chose {made}"
                    )
                    assert action.item == (0 if d.withdrawal else len(stored)), f"{action}"
                    assert len(persists) == len(answers), "Persist while another is stored"
                    assert all(a.ok for a in answers), "Persist after a failed store"
                    persists.append(action)
                case Hangup():
                    hangups += 1
                    assert not hung_up, "Hangup after the caller hung up"
                    assert t.before in (Step.RECORDED, Step.RESULT), f"Hangup in {t.before}"
                    assert t.actions[-2:] == [Hangup(), finish], "Hangup without Finish"
                case Finish():
                    assert playing is None and timer_id is None, "Finish left something running"

    assert hangups <= 1, f"{hangups} Hangup actions"
    assert len(answers) == len(persists), "finished with a decision still being stored"
    assert len(persists) <= d.items
    for item, outcome in enumerate(finish.outcomes):
        assert (item in stored) is (outcome in DECIDED.values()), f"item {item}: {outcome}"
    if not d.withdrawal:
        # Purposes are decided one by one: the stored ones first, the rest share one outcome,
        # except a failed store after the caller hung up: that one failed, the rest abandoned.
        assert set(stored) == set(range(len(stored)))
        rest = list(finish.outcomes[len(stored) :])
        failed_at = [i for i, t in enumerate(turns) if t.event == Persisted(ok=False, reason="db")]
        left_first = failed_at and any(isinstance(t.event, HungUp) for t in turns[: failed_at[-1]])
        if left_first:
            assert rest[0] is FAILED and set(rest[1:]) <= {ABANDONED}, finish.outcomes
        else:
            assert len(set(rest)) <= 1, f"the purposes not decided differ: {finish.outcomes}"
    if not d.identified:
        assert not persists and set(finish.outcomes) <= {
            Outcome.UNIDENTIFIED,
            ABANDONED,
            FAILED,
        }
    first_hang_up = next((t for t in turns if isinstance(t.event, HungUp)), None)
    if first_hang_up is not None and first_hang_up.before is Step.SAVING:
        assert first_hang_up.actions == [], "acted on a hang-up while storing"
    elif first_hang_up is not None and first_hang_up.before is not Step.DONE:
        left = tuple(o if o is not None else ABANDONED for o in first_hang_up.outcomes_before)
        assert first_hang_up.actions[-1:] == [Finish(left)], "a hang-up did not end the call"


def test_every_walk_keeps_the_invariants(runs: list[Run]) -> None:
    for run in runs:
        try:
            check(run)
        except AssertionError as broken:
            pytest.fail(f"{broken}\n{run.trace()}")


def test_the_walks_cover_every_transition_outcome_prompt_and_dialogue(runs: list[Run]) -> None:
    made = {(src, type(t.event), dst) for run in runs for t in run.turns for src, dst in t.changes}
    never = [
        row for row in TRANSITIONS if not {(row[0], k, row[2]) for k in TRIGGERS[row[1]]} & made
    ]
    assert not never, f"never observed: {never}"
    assert {o for run in runs for o in run.flow.outcomes} == set(Outcome)
    played = {a.prompt for run in runs for t in run.turns for a in t.actions if isinstance(a, Play)}
    assert played == set(PROMPTS)
    hung_up_in = {t.before for run in runs for t in run.turns if isinstance(t.event, HungUp)}
    assert hung_up_in == set(Step)
    keyed_in = {t.before for run in runs for t in run.turns if isinstance(t.event, KeyPressed)}
    assert keyed_in == set(Step) - {Step.START}
    dialogues = [run.dialogue for run in runs]
    assert {len(d.purposes) for d in dialogues} == {1, 2, 3}
    assert {len(d.active) for d in dialogues} == {0, 1, 2, 3}
    flags = {(d.withdraw, d.identified) for d in dialogues}
    assert flags == {(False, False), (False, True), (True, False), (True, True)}
    # Whole calls: the three purposes of a call each decided, and a withdrawal of three at once.
    decided = {GRANTED, DECLINED}
    assert any(len(r.flow.outcomes) == 3 and set(r.flow.outcomes) <= decided for r in runs)
    persisted = [a for run in runs for t in run.turns for a in t.actions if isinstance(a, Persist)]
    assert any(len(p.targets) == 3 for p in persisted)


def test_the_invariant_check_catches_a_broken_call(runs: list[Run]) -> None:
    def asked_for_several(run: Run) -> bool:
        d = run.dialogue
        return d.identified and not d.withdrawal and len(d.purposes) > 1

    granted = next(r for r in runs if asked_for_several(r) and r.flow.outcomes[-1] is GRANTED)
    check(granted)
    turns = granted.turns
    end = next(i for i, t in enumerate(turns) if any(isinstance(a, Finish) for a in t.actions))
    finish = turns[end].actions[-1]
    stated = next(i for i, t in enumerate(turns) if t.changes == [(Step.CHOSEN, Step.CONFIRM)])
    commit = next(i for i, t in enumerate(turns) if t.event == Persisted(ok=True))
    confirm = next(i for i, t in enumerate(turns) if any(isinstance(a, Persist) for a in t.actions))
    persist = turns[confirm].actions[-1]
    assert isinstance(persist, Persist)
    saving = (Step.CONFIRM, Step.SAVING)
    detour = [(Step.CONFIRM, Step.RESULT), (Step.RESULT, Step.SAVING)]

    def at(i: int, **changes: Any) -> list[Turn]:
        return [replace(t, **changes) if j == i else t for j, t in enumerate(turns)]

    def before(i: int, event: Event, actions: list[Action]) -> list[Turn]:
        t = turns[i]
        quiet = Turn(t.before, t.outcomes_before, event, actions, [], t.before, t.outcomes_before)
        return [*turns[:i], quiet, *turns[i:]]

    flip = {Choice.AGREE: Choice.DECLINE, Choice.DECLINE: Choice.AGREE}
    other_choice = [*turns[confirm].actions[:-1], replace(persist, choice=flip[persist.choice])]
    recorded = Play(RECORDED_PROMPT[persist.choice], 999)
    tampered = {
        "actions after Finish": [*turns[: end + 1], at(end, actions=[Play("goodbye", 99)])[end]],
        "a store answer without a Persist": [
            replace(t, actions=[a for a in t.actions if not isinstance(a, Persist)]) for t in turns
        ],
        "not in TRANSITIONS": [
            replace(t, changes=detour) if t.changes == [saving] else t for t in turns
        ],
        "before the choice was stated": at(stated, event=PromptFinished(999)),
        "a key acted in chosen": before(stated, KeyPressed(granted.rules.confirm), [persist]),
        "but the caller chose": at(confirm, actions=other_choice),
        "before the commit": at(confirm, actions=[*turns[confirm].actions, recorded]),
        "a decided outcome changed": at(end, outcomes=(ABANDONED,) * len(finish.outcomes)),
        "outcomes for": at(end, actions=[*turns[end].actions[:-1], Finish(finish.outcomes[1:])]),
        "Play after HungUp": before(commit, HungUp(), []),
    }
    for message, broken in tampered.items():
        with pytest.raises(AssertionError, match=re.escape(message)):
            check(replace(granted, turns=broken))


@pytest.mark.parametrize(("kind", "budget"), [("miss", "max_attempts"), ("loop", "max_repeats")])
@pytest.mark.parametrize("change", [+1, -1])
def test_the_invariant_check_counts_the_budgets(
    runs: list[Run], kind: str, budget: str, change: int
) -> None:
    def gave_up_on(run: Run) -> str | None:
        said = next((t for t in run.turns if Play("no_response", ANY) in t.actions), None)
        return None if said is None else meaning(run, said.before, said.event)

    run = next(r for r in runs if getattr(r.rules, budget) > 1 and gave_up_on(r) == kind)
    check(run)
    rules = replace(run.rules, **{budget: getattr(run.rules, budget) + change})
    with pytest.raises(AssertionError, match="no_response"):
        check(replace(run, rules=rules))


# ---- what follows the prompt that plays (a front's playlist) -------------------------------


@pytest.mark.parametrize(
    ("step", "dialogue", "item", "expected"),
    [
        (Step.NOTICE, consent(), 0, [("purpose", 0), ("ask", None)]),
        (Step.PURPOSE, consent(), 0, [("ask", None)]),
        (Step.ASK, consent(), 0, []),
        (Step.CHOSEN, consent(), 0, [("confirm", None)]),
        (Step.CONFIRM, consent(), 0, []),
        (Step.RECORDED, consent(2), 0, [("purpose", 1), ("ask", None)]),
        (Step.RECORDED, consent(2), 1, [("goodbye", None)]),
        (Step.NOTICE, withdrawal(2), 0, [("menu", None)]),
        (Step.CHOSEN, withdrawal(2), 0, [("confirm", None)]),
        (Step.RECORDED, withdrawal(2), 0, [("goodbye", None)]),
        (Step.NOTICE, UNKNOWN, 0, [("unidentified", None), ("goodbye", None)]),
        (Step.NOTICE, NOTHING_TO_WITHDRAW, 0, [("nothing_active", None), ("goodbye", None)]),
    ],
    ids=describe,
)
def test_following_names_the_prompts_that_play_if_no_key_comes(
    step: Step, dialogue: Dialogue, item: int, expected: list[tuple[str, int | None]]
) -> None:
    call = Call.at(step, dialogue=dialogue, item=item)
    before = dict(vars(call.flow))
    assert call.flow.following() == expected
    assert vars(call.flow) == before, "following() changed the flow"
    assert [(p.prompt, p.item) for p in play_through(call)] == expected


def play_through(call: Call) -> list[Play]:
    """The prompts that start while each one ends in turn, until something else happens."""
    plays: list[Play] = []
    while call.playing is not None:
        actions = call.finish_prompt()
        if len(actions) != 1 or not isinstance(actions[0], Play):
            break
        plays.append(actions[0])
    return plays


def test_following_is_cut_by_a_key_and_empty_when_nothing_plays() -> None:
    call = Call.at(Step.ASK)
    call.key("5")  # barge-in: "invalid" plays, then the question again
    assert call.flow.following() == [("ask", None)]
    call.play_until_quiet()
    assert call.playing is None and call.flow.following() == []
    call.hang_up()
    assert call.flow.following() == []


def test_following_agrees_with_the_flow_on_every_turn_of_the_walks(runs: list[Run]) -> None:
    """Replays the walks; wherever a prompt plays, a deep copy of the flow is let play on
    with no key, and must start exactly the prompts `following()` named (up to its limit)."""
    checked = 0
    for run in runs[:300]:
        flow = ConsentFlow(run.rules, run.dialogue)
        for turn in run.turns:
            if flow._playing is not None:
                predicted = flow.following(limit=8)
                sim, played = copy.deepcopy(flow), []
                while sim._playing is not None and len(played) < 8:
                    actions = sim.handle(PromptFinished(sim._playing))
                    if len(actions) != 1 or not isinstance(actions[0], Play):
                        break
                    played.append((actions[0].prompt, actions[0].item))
                assert predicted == played, f"seed {run.seed}, before {turn.event}"
                checked += 1
            flow.handle(turn.event)
    assert checked > 1000
