"""The consent flow core: every path with its exact actions, then invariants over many walks.

Prompt names are written out ("confirm_agree", not flow.CONFIRM_PROMPT[...]) on purpose: they
are the contract with the YAML prompt files. Play and timer ids are matched with ANY; `Call`
(tests/unit/flow_harness.py) checks on every action that ids are fresh and that a stop or a
cancel names what actually runs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from unittest.mock import ANY

import pytest

from consent_ivr.flow import (
    PROMPTS,
    RECORDED_PROMPT,
    TRANSITIONS,
    Answer,
    CallStarted,
    CancelTimer,
    Choice,
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
from tests.unit.flow_harness import KEYPAD, Call, Run, walk

pytestmark = pytest.mark.unit

ASKING = (Step.ASK, Step.CONFIRM)
PAIRS = {(src, dst) for src, _, dst in TRANSITIONS}
CUSTOM = Rules(agree="7", decline="8", repeat="9", confirm="#", change="*")


def play(prompt: str) -> Play:
    return Play(prompt, ANY)


def timer(seconds: float = Rules().key_timeout_s) -> StartTimer:
    return StartTimer(ANY, seconds)


def state(call: Call) -> tuple[Step, Outcome | None, Choice | None]:
    return call.flow.step, call.flow.outcome, call.flow.choice


def confirm_prompt(choice: Choice) -> str:
    return {Choice.AGREE: "confirm_agree", Choice.DECLINE: "confirm_decline"}[choice]


def ends_with(call: Call, outcome: Outcome) -> None:
    """The rest of the result plays, then the flow hangs up and finishes with `outcome`."""
    assert call.flow.step is Step.RESULT
    call.play_until_quiet()
    assert call.actions[-2:] == [Hangup(), Finish(outcome)]
    assert state(call)[:2] == (Step.DONE, outcome)


# ---- happy paths ---------------------------------------------------------------------------


def test_agree_then_confirm_is_persisted_then_granted() -> None:
    call = Call()
    assert call.send(CallStarted()) == [Answer(), StartRecording()]
    assert state(call) == (Step.RECORDING, None, None)
    assert call.send(RecordingStarted()) == [play("notice")]
    assert state(call) == (Step.NOTICE, None, None)
    assert call.finish_prompt() == [play("purpose")]
    assert state(call) == (Step.PURPOSE, None, None)
    assert call.finish_prompt() == [play("ask")]
    assert state(call) == (Step.ASK, None, None)
    assert call.finish_prompt() == [timer(6.0)]
    waiting = call.timer
    assert call.key("1") == [CancelTimer(waiting.timer_id), play("confirm_agree")]
    assert state(call) == (Step.CONFIRM, None, Choice.AGREE)
    assert call.finish_prompt() == [timer(6.0)]
    waiting = call.timer
    assert call.key("1") == [CancelTimer(waiting.timer_id), Persist(Choice.AGREE)]
    assert state(call) == (Step.SAVING, None, Choice.AGREE)
    assert call.send(Persisted(ok=True)) == [play("recorded_agree")]
    assert state(call) == (Step.RESULT, Outcome.GRANTED, Choice.AGREE)
    assert call.finish_prompt() == [play("goodbye")]
    assert call.finish_prompt() == [Hangup(), Finish(Outcome.GRANTED)]
    assert state(call) == (Step.DONE, Outcome.GRANTED, Choice.AGREE)
    assert call.played == ["notice", "purpose", "ask", "confirm_agree", "recorded_agree", "goodbye"]
    assert call.flow.changes == [
        (Step.START, Step.RECORDING),
        (Step.RECORDING, Step.NOTICE),
        (Step.NOTICE, Step.PURPOSE),
        (Step.PURPOSE, Step.ASK),
        (Step.ASK, Step.CONFIRM),
        (Step.CONFIRM, Step.SAVING),
        (Step.SAVING, Step.RESULT),
        (Step.RESULT, Step.DONE),
    ]


def test_decline_then_confirm_is_declined() -> None:
    call = Call.at(Step.ASK)
    call.play_until_quiet()
    assert call.key("2") == [CancelTimer(ANY), play("confirm_decline")]
    assert state(call) == (Step.CONFIRM, None, Choice.DECLINE)
    call.play_until_quiet()
    assert call.key("1") == [CancelTimer(ANY), Persist(Choice.DECLINE)]
    assert state(call) == (Step.SAVING, None, Choice.DECLINE)
    assert call.send(Persisted(ok=True)) == [play("recorded_decline")]
    assert state(call) == (Step.RESULT, Outcome.DECLINED, Choice.DECLINE)
    assert call.play_until_quiet() == ["goodbye"]
    assert call.actions[-2:] == [Hangup(), Finish(Outcome.DECLINED)]
    assert state(call) == (Step.DONE, Outcome.DECLINED, Choice.DECLINE)


def test_agree_then_change_then_decline_and_confirm_is_declined() -> None:
    call = Call.at(Step.CONFIRM)
    confirm = call.playing
    assert call.key("2") == [StopPlayback(confirm.play_id), play("ask")]
    assert state(call) == (Step.ASK, None, None)
    assert call.finish_prompt() == [timer()]
    assert call.key("2") == [CancelTimer(ANY), play("confirm_decline")]
    assert state(call) == (Step.CONFIRM, None, Choice.DECLINE)
    assert call.key("1") == [StopPlayback(ANY), Persist(Choice.DECLINE)]
    assert call.send(Persisted(ok=True)) == [play("recorded_decline")]
    ends_with(call, Outcome.DECLINED)
    # A change goes straight back to the question, without the purpose again.
    assert call.played.count("purpose") == 1
    assert [a for a in call.actions if isinstance(a, Persist)] == [Persist(Choice.DECLINE)]


# ---- recording -----------------------------------------------------------------------------


def test_nothing_is_said_before_the_recording_runs() -> None:
    call = Call()
    assert call.send(CallStarted()) == [Answer(), StartRecording()]
    for event in (KeyPressed("1"), PromptFinished(1), PromptFailed(1), TimerExpired(1)):
        assert call.send(event) == []
        assert state(call) == (Step.RECORDING, None, None)
    assert call.played == []
    assert call.send(RecordingStarted()) == [play("notice")]
    assert state(call) == (Step.NOTICE, None, None)


def test_recording_failure_fails_the_call_without_the_notice() -> None:
    call = Call.at(Step.RECORDING)
    assert call.send(RecordingFailed("no space left")) == [play("failure")]
    assert state(call) == (Step.RESULT, Outcome.FAILED, None)
    assert call.finish_prompt() == [play("goodbye")]
    assert call.finish_prompt() == [Hangup(), Finish(Outcome.FAILED)]
    assert state(call) == (Step.DONE, Outcome.FAILED, None)
    assert call.played == ["failure", "goodbye"]


# ---- notice and purpose are heard in full --------------------------------------------------


@pytest.mark.parametrize("step", [Step.NOTICE, Step.PURPOSE])
def test_keys_during_notice_and_purpose_do_nothing(step: Step) -> None:
    call = Call.at(step)
    prompt = call.playing
    for digit in KEYPAD:
        assert call.key(digit) == []
    assert state(call) == (step, None, None)
    assert call.playing == prompt


def test_keys_during_notice_and_purpose_do_not_count() -> None:
    # With one retry and one repeat allowed, any key counted here would end the call below.
    call = Call.at(Step.NOTICE, Rules(max_attempts=2, max_repeats=1))
    for _ in ("notice", "purpose"):
        for digit in KEYPAD * 3:
            assert call.key(digit) == []
        call.finish_prompt()
    assert state(call) == (Step.ASK, None, None)
    assert call.key("5") == [StopPlayback(ANY), play("invalid")]
    assert call.play_until_quiet() == ["ask"]
    assert call.key("0") == [CancelTimer(ANY), play("purpose")]
    assert call.flow.outcome is None


@pytest.mark.parametrize(("step", "following"), [(Step.NOTICE, "purpose"), (Step.PURPOSE, "ask")])
def test_the_next_prompt_waits_for_the_current_one_to_finish(step: Step, following: str) -> None:
    call = Call.at(step)
    current = call.playing
    for other in (current.play_id - 1, current.play_id + 1, current.play_id + 100):
        assert call.send(PromptFinished(other)) == []
        assert call.send(PromptFailed(other)) == []
    assert call.send(TimerExpired(1)) == []
    assert call.flow.step is step
    assert call.send(PromptFinished(current.play_id)) == [play(following)]


# ---- barge-in ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digit", "next_prompt", "step", "choice"),
    [
        ("1", "confirm_agree", Step.CONFIRM, Choice.AGREE),
        ("2", "confirm_decline", Step.CONFIRM, Choice.DECLINE),
        ("0", "purpose", Step.PURPOSE, None),
        ("5", "invalid", Step.ASK, None),
        ("#", "invalid", Step.ASK, None),
    ],
)
def test_a_key_during_the_ask_prompt_stops_it_first(
    digit: str, next_prompt: str, step: Step, choice: Choice | None
) -> None:
    call = Call.at(Step.ASK)
    ask = call.playing
    assert call.key(digit) == [StopPlayback(ask.play_id), play(next_prompt)]
    assert state(call) == (step, None, choice)
    now = call.playing
    assert call.send(PromptFinished(ask.play_id)) == []
    assert call.send(PromptFailed(ask.play_id)) == []
    assert state(call) == (step, None, choice)
    assert call.playing == now
    assert call.timer is None


@pytest.mark.parametrize(
    ("digit", "answer", "step"),
    [
        ("1", Persist(Choice.AGREE), Step.SAVING),
        ("2", play("ask"), Step.ASK),
        ("0", play("confirm_agree"), Step.CONFIRM),
        ("7", play("invalid"), Step.CONFIRM),
    ],
)
def test_a_key_during_the_confirm_prompt_stops_it_first(
    digit: str, answer: Persist | Play, step: Step
) -> None:
    call = Call.at(Step.CONFIRM)
    confirm = call.playing
    assert call.key(digit) == [StopPlayback(confirm.play_id), answer]
    assert call.flow.step is step
    before = state(call), call.playing
    assert call.send(PromptFinished(confirm.play_id)) == []
    assert call.send(PromptFailed(confirm.play_id)) == []
    assert (state(call), call.playing) == before
    assert call.timer is None


@pytest.mark.parametrize("step", ASKING)
@pytest.mark.parametrize("reprompt", ["invalid", "no_input"])
def test_a_key_during_a_reprompt_stops_it(step: Step, reprompt: str) -> None:
    call = Call.at(step)
    call.play_until_quiet()
    if reprompt == "invalid":
        call.key("5")
    else:
        call.expire()
    assert call.playing.prompt == reprompt
    interrupted = call.playing
    answer = {Step.ASK: play("confirm_agree"), Step.CONFIRM: Persist(Choice.AGREE)}[step]
    assert call.key("1") == [StopPlayback(interrupted.play_id), answer]
    assert call.send(PromptFinished(interrupted.play_id)) == []


# ---- timers, wrong keys, retries -----------------------------------------------------------


@pytest.mark.parametrize("step", ASKING)
def test_the_key_timer_starts_when_the_question_is_done(step: Step) -> None:
    call = Call.at(step, Rules(key_timeout_s=2.5))
    assert call.timer is None
    assert call.finish_prompt() == [StartTimer(ANY, 2.5)]
    assert call.flow.step is step


def test_the_key_timer_starts_only_after_the_whole_reprompt() -> None:
    call = Call.at(Step.ASK)
    call.play_until_quiet()
    call.key("5")
    assert call.finish_prompt() == [play("ask")]
    assert call.timer is None
    assert call.finish_prompt() == [timer()]


def test_a_stale_timer_is_ignored() -> None:
    call = Call.at(Step.ASK)
    call.play_until_quiet()
    old = call.timer
    assert call.key("5") == [CancelTimer(old.timer_id), play("invalid")]
    assert call.send(TimerExpired(old.timer_id)) == []
    call.play_until_quiet()
    assert call.send(TimerExpired(old.timer_id)) == []
    assert call.send(TimerExpired(call.timer.timer_id + 100)) == []
    assert state(call) == (Step.ASK, None, None)
    # Only the wrong key counted (2 of 3 misses now), not the stale expiries.
    assert call.expire() == [play("no_input")]
    call.play_until_quiet()
    assert call.expire() == [play("no_response")]


@pytest.mark.parametrize("step", ASKING)
def test_a_timeout_says_no_input_and_asks_again(step: Step) -> None:
    call = Call.at(step, choice=Choice.DECLINE)
    call.play_until_quiet()
    question = "ask" if step is Step.ASK else "confirm_decline"
    assert call.expire() == [play("no_input")]
    assert call.flow.step is step
    assert call.finish_prompt() == [play(question)]
    assert call.finish_prompt() == [timer()]


def miss(call: Call, how: str) -> list:
    """One question without a valid key: silence, a wrong key after or during the prompt."""
    if how == "timeout":
        call.play_until_quiet()
        return call.expire()
    if how == "wrong":
        call.play_until_quiet()
        return call.key("5")
    assert call.playing is not None
    return call.key("#")


def expected_after_miss(call: Call, how: str, prompt: str) -> list:
    if how == "timeout":
        return [play(prompt)]
    if how == "wrong":
        return [CancelTimer(call.timer.timer_id), play(prompt)]
    return [StopPlayback(call.playing.play_id), play(prompt)]


MISSES = ("timeout", "wrong", "barge-in wrong")


@pytest.mark.parametrize("step", ASKING)
@pytest.mark.parametrize("how", MISSES)
@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_misses_are_bounded_by_max_attempts(step: Step, how: str, max_attempts: int) -> None:
    call = Call.at(step, Rules(max_attempts=max_attempts))
    question = "ask" if step is Step.ASK else "confirm_agree"
    reprompt = "no_input" if how == "timeout" else "invalid"
    for _ in range(max_attempts - 1):
        if how != "barge-in wrong":
            call.play_until_quiet()
        expected = expected_after_miss(call, how, reprompt)
        assert miss(call, how) == expected
        assert call.flow.step is step and call.flow.outcome is None
        assert call.finish_prompt() == [play(question)]
    if how != "barge-in wrong":
        call.play_until_quiet()
    expected = expected_after_miss(call, how, "no_response")
    assert miss(call, how) == expected
    assert state(call)[:2] == (Step.RESULT, Outcome.NO_RESPONSE)
    assert call.finish_prompt() == [play("goodbye")]
    assert call.finish_prompt() == [Hangup(), Finish(Outcome.NO_RESPONSE)]
    assert call.played.count(question) == max_attempts
    assert not any(isinstance(a, Persist) for a in call.actions)


@pytest.mark.parametrize("step", ASKING)
@pytest.mark.parametrize("hows", list(itertools.product(MISSES, repeat=3)), ids=str)
def test_mixed_misses_share_the_attempts(step: Step, hows: tuple[str, str, str]) -> None:
    call = Call.at(step)
    for i, how in enumerate(hows):
        if how != "barge-in wrong":
            call.play_until_quiet()
        last = i == len(hows) - 1
        prompt = "no_response" if last else ("no_input" if how == "timeout" else "invalid")
        expected = expected_after_miss(call, how, prompt)
        assert miss(call, how) == expected
    assert call.flow.outcome is Outcome.NO_RESPONSE
    ends_with(call, Outcome.NO_RESPONSE)


@pytest.mark.parametrize("step", ASKING)
def test_a_valid_key_after_misses_still_works(step: Step) -> None:
    call = Call.at(step)
    miss(call, "wrong")
    miss(call, "timeout")
    call.play_until_quiet()
    if step is Step.ASK:
        assert call.key("1") == [CancelTimer(ANY), play("confirm_agree")]
        call.play_until_quiet()
    assert call.key("1") == [CancelTimer(ANY), Persist(Choice.AGREE)]
    assert call.send(Persisted(ok=True)) == [play("recorded_agree")]
    ends_with(call, Outcome.GRANTED)


def test_each_question_gets_its_own_attempts() -> None:
    call = Call.at(Step.ASK)
    miss(call, "wrong")
    miss(call, "timeout")
    call.play_until_quiet()
    call.key("1")
    # Two misses in ASK do not carry over: CONFIRM again allows two before giving up.
    assert miss(call, "wrong") == [CancelTimer(ANY), play("invalid")]
    assert miss(call, "timeout") == [play("no_input")]
    call.play_until_quiet()
    assert call.key("2") == [CancelTimer(ANY), play("ask")]
    # Nor do they carry over from CONFIRM back to ASK after a change.
    assert miss(call, "timeout") == [play("no_input")]
    assert miss(call, "wrong") == [CancelTimer(ANY), play("invalid")]
    assert miss(call, "wrong") == [CancelTimer(ANY), play("no_response")]


# ---- repeat and change loops ---------------------------------------------------------------


def test_repeat_in_ask_replays_the_purpose_then_the_question() -> None:
    call = Call.at(Step.ASK)
    call.play_until_quiet()
    waiting = call.timer
    assert call.key("0") == [CancelTimer(waiting.timer_id), play("purpose")]
    assert state(call) == (Step.PURPOSE, None, None)
    for digit in KEYPAD:
        assert call.key(digit) == []
    assert call.finish_prompt() == [play("ask")]
    assert state(call) == (Step.ASK, None, None)
    assert call.finish_prompt() == [timer()]


@pytest.mark.parametrize("max_repeats", [0, 1, 2, 3])
def test_repeats_in_ask_are_bounded_by_max_repeats(max_repeats: int) -> None:
    call = Call.at(Step.ASK, Rules(max_repeats=max_repeats))
    for _ in range(max_repeats):
        call.play_until_quiet()
        assert call.key("0") == [CancelTimer(ANY), play("purpose")]
    call.play_until_quiet()
    assert call.key("0") == [CancelTimer(ANY), play("no_response")]
    assert state(call) == (Step.RESULT, Outcome.NO_RESPONSE, None)
    ends_with(call, Outcome.NO_RESPONSE)
    assert call.played.count("purpose") == 1 + max_repeats


def test_hearing_the_purpose_again_gives_fresh_attempts() -> None:
    call = Call.at(Step.ASK, Rules(max_attempts=3, max_repeats=1))
    miss(call, "wrong")
    miss(call, "wrong")
    call.play_until_quiet()
    call.key("0")
    call.play_until_quiet()
    assert miss(call, "wrong") == [CancelTimer(ANY), play("invalid")]
    assert miss(call, "timeout") == [play("no_input")]
    assert miss(call, "wrong") == [CancelTimer(ANY), play("no_response")]


@pytest.mark.parametrize("max_repeats", [0, 1, 2, 3])
def test_changes_in_confirm_are_bounded_by_max_repeats(max_repeats: int) -> None:
    call = Call.at(Step.CONFIRM, Rules(max_repeats=max_repeats))
    for i in range(max_repeats):
        assert call.key("2") == [StopPlayback(ANY), play("ask")]
        assert state(call) == (Step.ASK, None, None)
        digit, choice = ("2", Choice.DECLINE) if i % 2 == 0 else ("1", Choice.AGREE)
        assert call.key(digit) == [StopPlayback(ANY), play(confirm_prompt(choice))]
    assert call.key("2") == [StopPlayback(ANY), play("no_response")]
    assert state(call) == (Step.RESULT, Outcome.NO_RESPONSE, None)
    ends_with(call, Outcome.NO_RESPONSE)


def test_repeats_and_changes_share_one_budget() -> None:
    # Rules.max_repeats counts "hear it again" and "change my answer" loops together.
    call = Call.at(Step.ASK, Rules(max_repeats=2))
    call.key("0")
    call.play_until_quiet()
    call.key("1")
    assert call.key("2") == [StopPlayback(ANY), play("ask")]
    call.key("1")
    assert call.key("2") == [StopPlayback(ANY), play("no_response")]
    assert call.flow.outcome is Outcome.NO_RESPONSE


def test_repeat_in_confirm_replays_the_confirm_prompt() -> None:
    call = Call.at(Step.CONFIRM, choice=Choice.DECLINE)
    call.play_until_quiet()
    waiting = call.timer
    assert call.key("0") == [CancelTimer(waiting.timer_id), play("confirm_decline")]
    assert state(call) == (Step.CONFIRM, None, Choice.DECLINE)
    assert call.finish_prompt() == [timer()]
    assert call.key("1") == [CancelTimer(ANY), Persist(Choice.DECLINE)]


# BUG(flow.py): the repeat key in CONFIRM is not counted against Rules.max_repeats (whose comment
# says it bounds "hear it again" loops), so a caller who keeps pressing 0 at the confirmation
# holds the channel for ever: no timeout, no no_response. This test fails until
# ConsentFlow._key routes it through _loop_or_give_up (see the report).
def test_repeats_in_confirm_are_bounded_by_max_repeats() -> None:
    call = Call.at(Step.CONFIRM, Rules(max_repeats=2))
    for _ in range(2):
        call.play_until_quiet()
        assert call.key("0") == [CancelTimer(ANY), play("confirm_agree")]
    call.play_until_quiet()
    assert call.key("0") == [CancelTimer(ANY), play("no_response")]
    assert state(call) == (Step.RESULT, Outcome.NO_RESPONSE, Choice.AGREE)


@pytest.mark.parametrize("digit", list(KEYPAD))
@pytest.mark.parametrize("answer_first", [False, True], ids=["same-key", "agree-then-key"])
@pytest.mark.parametrize("eager", [True, False], ids=["over-prompts", "after-prompts"])
def test_a_caller_who_never_hangs_up_cannot_keep_the_call_alive(
    digit: str, answer_first: bool, eager: bool
) -> None:
    # Fails for agree-then-key with "0": the BUG above (repeat in CONFIRM is unbounded).
    call = Call.at(Step.ASK)
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


# ---- hang-up -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [Step.START, Step.RECORDING])
def test_hang_up_before_anything_is_said_is_abandoned(step: Step) -> None:
    call = Call.at(step)
    assert call.hang_up() == [Finish(Outcome.ABANDONED)]
    assert state(call) == (Step.DONE, Outcome.ABANDONED, None)


@pytest.mark.parametrize("step", [Step.NOTICE, Step.PURPOSE, Step.ASK, Step.CONFIRM])
def test_hang_up_during_a_prompt_before_a_decision_is_abandoned(step: Step) -> None:
    call = Call.at(step)
    choice = call.flow.choice
    prompt = call.playing
    assert call.hang_up() == [StopPlayback(prompt.play_id), Finish(Outcome.ABANDONED)]
    assert state(call) == (Step.DONE, Outcome.ABANDONED, choice)


@pytest.mark.parametrize("step", ASKING)
def test_hang_up_while_waiting_for_a_key_is_abandoned(step: Step) -> None:
    call = Call.at(step)
    call.play_until_quiet()
    waiting = call.timer
    assert call.hang_up() == [CancelTimer(waiting.timer_id), Finish(Outcome.ABANDONED)]
    assert call.flow.outcome is Outcome.ABANDONED


@pytest.mark.parametrize("choice", list(Choice))
def test_hang_up_between_the_first_and_the_second_key_is_abandoned(choice: Choice) -> None:
    call = Call.at(Step.CONFIRM, choice=choice)
    call.key("0")
    miss(call, "timeout")
    assert call.hang_up() == [StopPlayback(ANY), Finish(Outcome.ABANDONED)]
    assert state(call) == (Step.DONE, Outcome.ABANDONED, choice)
    assert not any(isinstance(a, Persist) for a in call.actions)


@pytest.mark.parametrize(
    ("choice", "ok", "outcome"),
    [
        (Choice.AGREE, True, Outcome.GRANTED),
        (Choice.DECLINE, True, Outcome.DECLINED),
        (Choice.AGREE, False, Outcome.FAILED),
        (Choice.DECLINE, False, Outcome.FAILED),
    ],
)
def test_hang_up_while_saving_waits_for_the_store(
    choice: Choice, ok: bool, outcome: Outcome
) -> None:
    call = Call.at(Step.SAVING, choice=choice)
    stopped = [a.play_id for a in call.actions if isinstance(a, StopPlayback)]
    assert call.hang_up() == []
    assert state(call) == (Step.SAVING, None, choice)
    for event in (HungUp(), KeyPressed("1"), PromptFinished(stopped[-1]), TimerExpired(1)):
        assert call.send(event) == []
    assert call.flow.step is Step.SAVING
    assert call.send(Persisted(ok=ok)) == [Finish(outcome)]
    assert state(call) == (Step.DONE, outcome, choice)
    assert call.played[-1] == confirm_prompt(choice)


def at_result(outcome: Outcome) -> Call:
    """A call that has just entered RESULT with `outcome`, its first result prompt playing."""
    if outcome is Outcome.FAILED:
        call = Call.at(Step.SAVING)
        call.send(Persisted(ok=False))
        return call
    if outcome is Outcome.NO_RESPONSE:
        call = Call.at(Step.ASK, Rules(max_attempts=1))
        call.key("5")
        return call
    choice = Choice.AGREE if outcome is Outcome.GRANTED else Choice.DECLINE
    return Call.at(Step.RESULT, choice=choice)


DECIDED = [Outcome.GRANTED, Outcome.DECLINED, Outcome.NO_RESPONSE, Outcome.FAILED]
FIRST_RESULT_PROMPT = {
    Outcome.GRANTED: "recorded_agree",
    Outcome.DECLINED: "recorded_decline",
    Outcome.NO_RESPONSE: "no_response",
    Outcome.FAILED: "failure",
}


@pytest.mark.parametrize("outcome", DECIDED)
@pytest.mark.parametrize("during", ["result", "goodbye"])
def test_hang_up_during_the_result_keeps_the_decided_outcome(outcome: Outcome, during: str) -> None:
    call = at_result(outcome)
    assert call.flow.outcome is outcome
    assert call.playing.prompt == FIRST_RESULT_PROMPT[outcome]
    if during == "goodbye":
        assert call.finish_prompt() == [play("goodbye")]
    playing = call.playing
    assert call.hang_up() == [StopPlayback(playing.play_id), Finish(outcome)]
    assert call.flow.step is Step.DONE


# ---- store failure -------------------------------------------------------------------------


@pytest.mark.parametrize("choice", list(Choice))
def test_a_store_failure_is_failed_and_never_said_recorded(choice: Choice) -> None:
    call = Call.at(Step.SAVING, choice=choice)
    assert call.send(Persisted(ok=False, reason="database is locked")) == [play("failure")]
    assert state(call) == (Step.RESULT, Outcome.FAILED, choice)
    assert call.play_until_quiet() == ["goodbye"]
    assert call.actions[-2:] == [Hangup(), Finish(Outcome.FAILED)]
    assert not [p for p in call.played if p.startswith("recorded")]


@pytest.mark.parametrize("choice", list(Choice))
def test_nothing_plays_while_the_decision_is_being_stored(choice: Choice) -> None:
    call = Call.at(Step.CONFIRM, choice=choice)
    call.play_until_quiet()
    assert call.key("1") == [CancelTimer(ANY), Persist(choice)]
    for digit in KEYPAD:
        assert call.key(digit) == []
    assert call.playing is None and call.timer is None
    assert call.send(Persisted(ok=True)) == [play(RECORDED_PROMPT[choice])]
    assert RECORDED_PROMPT[choice] == f"recorded_{choice.value}"


# ---- prompt failures -----------------------------------------------------------------------


def reprompting(step: Step, prompt: str) -> Call:
    call = Call.at(step)
    call.play_until_quiet()
    call.key("5") if prompt == "invalid" else call.expire()
    return call


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda: Call.at(Step.NOTICE), id="notice"),
        pytest.param(lambda: Call.at(Step.PURPOSE), id="purpose"),
        pytest.param(lambda: Call.at(Step.ASK), id="ask"),
        pytest.param(lambda: reprompting(Step.ASK, "invalid"), id="ask-invalid"),
        pytest.param(lambda: reprompting(Step.ASK, "no_input"), id="ask-no_input"),
        pytest.param(lambda: Call.at(Step.CONFIRM), id="confirm"),
        pytest.param(lambda: reprompting(Step.CONFIRM, "invalid"), id="confirm-invalid"),
        pytest.param(lambda: reprompting(Step.CONFIRM, "no_input"), id="confirm-no_input"),
    ],
)
def test_a_prompt_failure_before_a_decision_fails_the_call(setup: Callable[[], Call]) -> None:
    call = setup()
    choice = call.flow.choice
    assert call.fail_prompt() == [play("failure")]
    assert state(call) == (Step.RESULT, Outcome.FAILED, choice)
    ends_with(call, Outcome.FAILED)


@pytest.mark.parametrize("outcome", DECIDED)
@pytest.mark.parametrize("which", ["result", "goodbye"])
def test_a_prompt_failure_in_the_result_just_hangs_up(outcome: Outcome, which: str) -> None:
    call = at_result(outcome)
    if which == "goodbye":
        assert call.finish_prompt() == [play("goodbye")]
    assert call.fail_prompt() == [Hangup(), Finish(outcome)]
    assert call.flow.step is Step.DONE


def test_a_stale_prompt_failure_is_ignored() -> None:
    call = Call.at(Step.ASK)
    ask = call.playing
    call.key("1")
    assert call.send(PromptFailed(ask.play_id, "gone")) == []
    assert state(call) == (Step.CONFIRM, None, Choice.AGREE)


# ---- after the end, and events a front must not send ---------------------------------------


def finished(how: str) -> Call:
    if how == "granted":
        return Call.at(Step.DONE)
    if how == "hung up while saving":
        call = Call.at(Step.SAVING)
        call.hang_up()
        call.send(Persisted(ok=True))
        return call
    call = Call.at(Step.ASK)
    call.hang_up()
    return call


LATE_EVENTS: list[Event] = [
    CallStarted(),
    RecordingStarted(),
    RecordingFailed(),
    *[PromptFinished(i) for i in range(10)],
    *[PromptFailed(i) for i in range(10)],
    *[KeyPressed(d) for d in KEYPAD],
    *[TimerExpired(i) for i in range(5)],
    HungUp(),
    Persisted(ok=True),
    Persisted(ok=False),
]


@pytest.mark.parametrize("how", ["granted", "hung up while saving", "hung up"])
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
    (Step.CONFIRM, Persisted(ok=True)),
    (Step.CONFIRM, CallStarted()),
    (Step.SAVING, RecordingStarted()),
    (Step.SAVING, CallStarted()),
    (Step.RESULT, Persisted(ok=True)),
    (Step.RESULT, RecordingFailed()),
]


@pytest.mark.parametrize(("step", "event"), WRONG_STEP, ids=str)
def test_an_event_in_the_wrong_step_raises_naming_both(step: Step, event: Event) -> None:
    call = Call.at(step)
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


def test_custom_keys_drive_the_whole_call() -> None:
    call = Call.at(Step.ASK, replace(CUSTOM, max_repeats=3))
    assert call.key("9") == [StopPlayback(ANY), play("purpose")]
    call.play_until_quiet()
    assert call.key("8") == [CancelTimer(ANY), play("confirm_decline")]
    assert call.key("9") == [StopPlayback(ANY), play("confirm_decline")]
    assert call.key("*") == [StopPlayback(ANY), play("ask")]
    assert call.key("7") == [StopPlayback(ANY), play("confirm_agree")]
    assert call.key("#") == [StopPlayback(ANY), Persist(Choice.AGREE)]
    assert call.send(Persisted(ok=True)) == [play("recorded_agree")]
    ends_with(call, Outcome.GRANTED)


@pytest.mark.parametrize("step", ASKING)
@pytest.mark.parametrize("digit", ["1", "2", "0"])
def test_default_digits_are_wrong_keys_under_custom_keys(step: Step, digit: str) -> None:
    call = Call.at(step, CUSTOM)
    choice = call.flow.choice
    assert call.key(digit) == [StopPlayback(ANY), play("invalid")]
    assert state(call) == (step, None, choice)
    assert call.played.count("purpose") == 1
    assert not any(isinstance(a, Persist) for a in call.actions)


@pytest.mark.parametrize("step", list(Step))
def test_keys_are_accepted_only_in_questions(step: Step) -> None:
    assert Call.at(step).flow.accepts_keys is (step in ASKING)


# ---- the table and its diagram -------------------------------------------------------------


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


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    return [
        walk(seed, RULE_SETS[seed % len(RULE_SETS)], patient=seed % 5 == 0) for seed in range(WALKS)
    ]


def check(run: Run) -> None:
    """Every invariant of one whole call; raises AssertionError naming the first one broken."""
    r, turns = run.rules, run.turns
    assert run.error is None, f"FlowError from a well-behaved front: {run.error}"
    assert not run.stuck, "the flow is alive but the front has nothing to answer"
    assert not run.too_long, "the call did not end"

    finishes = [(i, a) for i, t in enumerate(turns) for a in t.actions if isinstance(a, Finish)]
    assert len(finishes) == 1, f"{len(finishes)} Finish actions"
    end, finish = finishes[0]
    assert turns[end].actions[-1] == finish, "Finish is not the last action of its event"
    assert all(t.actions == [] for t in turns[end + 1 :]), "actions after Finish"
    assert (run.flow.step, run.flow.outcome) == (Step.DONE, finish.outcome)

    playing: int | None = None
    timer_id: int | None = None
    prompt_of: dict[int, str] = {}
    timers: set[int] = set()
    recording = recording_failed = hung_up = False
    persists: list[tuple[int, Persist]] = []
    stored: Persisted | None = None
    failures = 0
    for i, t in enumerate(turns):
        step = t.before
        for src, dst in t.changes:
            assert src is step, f"changes {t.changes} do not start from {t.before}"
            assert (src, dst) in PAIRS, f"{src} -> {dst} is not in TRANSITIONS"
            step = dst
        assert step is t.after
        if t.outcome_before is not None:
            assert t.outcome is t.outcome_before, "a decided outcome changed"

        event, live = t.event, t.before is not Step.DONE
        match event:
            case RecordingStarted() if live:
                recording = True
            case RecordingFailed() if live:
                recording_failed = True
                failures += 1
            case HungUp():
                hung_up = True
            case Persisted() if live:
                stored = event
                failures += not event.ok
            case PromptFailed(play_id=pid) if pid == playing:
                failures += 1
            case KeyPressed() if t.before not in ASKING:
                assert t.actions == [] and not t.changes, "a key acted outside a question"
        if isinstance(event, PromptFinished | PromptFailed) and event.play_id == playing:
            playing = None
        if isinstance(event, TimerExpired) and event.timer_id == timer_id:
            timer_id = None

        for action in t.actions:
            match action:
                case Play(prompt=prompt, play_id=pid):
                    assert prompt in PROMPTS, f"unknown prompt {prompt}"
                    assert playing is None, "two playbacks at once"
                    assert pid not in prompt_of, f"play id {pid} reused"
                    assert not hung_up, "Play after HungUp"
                    if not recording:
                        assert recording_failed and prompt in ("failure", "goodbye"), (
                            f"{prompt} played before the recording started"
                        )
                    if prompt.startswith("recorded_"):
                        assert stored is not None and stored.ok, f"{prompt} before the commit"
                        assert persists and prompt == RECORDED_PROMPT[persists[0][1].choice]
                    prompt_of[pid] = prompt
                    playing = pid
                case StopPlayback(play_id=pid):
                    assert pid == playing, f"stops {pid}, but {playing} plays"
                    if prompt_of[pid] in ("notice", "purpose"):
                        assert isinstance(event, HungUp), f"{prompt_of[pid]} cut short"
                    playing = None
                case StartTimer(timer_id=tid, seconds=seconds):
                    assert timer_id is None and tid not in timers
                    assert seconds == r.key_timeout_s and t.after in ASKING
                    timers.add(tid)
                    timer_id = tid
                case CancelTimer(timer_id=tid):
                    assert tid == timer_id, f"cancels {tid}, but {timer_id} runs"
                    timer_id = None
                case Persist():
                    persists.append((i, action))
                case Hangup():
                    assert t.actions[-2:] == [Hangup(), finish], "Hangup without Finish"
                case Finish():
                    assert playing is None and timer_id is None, "Finish left something running"

    assert len(persists) <= 1, "persisted twice"
    hangups = sum(isinstance(a, Hangup) for t in turns for a in t.actions)
    assert hangups <= 1, f"{hangups} Hangup actions"
    if persists:
        at, persist = persists[0]
        key_turn = turns[at]
        assert key_turn.event == KeyPressed(r.confirm) and key_turn.before is Step.CONFIRM
        into_confirm = max(j for j in range(at) if (Step.ASK, Step.CONFIRM) in turns[j].changes)
        first = turns[into_confirm].event
        assert isinstance(first, KeyPressed), "CONFIRM entered without a key"
        assert {r.agree: Choice.AGREE, r.decline: Choice.DECLINE}[first.digit] is persist.choice
        between = turns[into_confirm + 1 : at]
        assert all(u.before is Step.CONFIRM and not u.changes for u in between)
        assert stored is not None, "finished with the decision still being stored"

    outcome = finish.outcome
    if stored is not None:
        assert persists, "a store answer without a Persist"
        decided = {Choice.AGREE: Outcome.GRANTED, Choice.DECLINE: Outcome.DECLINED}
        assert outcome is (decided[persists[0][1].choice] if stored.ok else Outcome.FAILED)
    if outcome in (Outcome.GRANTED, Outcome.DECLINED):
        assert stored is not None and stored.ok
    if outcome is Outcome.FAILED:
        assert failures, "failed without a failure"
    if outcome is Outcome.NO_RESPONSE:
        assert not persists
    first_hang_up = next((t for t in turns if isinstance(t.event, HungUp)), None)
    undecided = first_hang_up is not None and first_hang_up.outcome_before is None
    if undecided and first_hang_up.before not in (Step.SAVING, Step.DONE):
        assert first_hang_up.actions[-1:] == [Finish(Outcome.ABANDONED)]
    if outcome is Outcome.ABANDONED:
        assert first_hang_up is not None and not persists


def test_every_walk_keeps_the_invariants(runs: list[Run]) -> None:
    for run in runs:
        try:
            check(run)
        except AssertionError as broken:
            pytest.fail(f"{broken}\n{run.trace()}")


def test_the_walks_cover_every_transition_outcome_and_prompt(runs: list[Run]) -> None:
    changes = {pair for run in runs for t in run.turns for pair in t.changes}
    assert changes == PAIRS, f"never observed: {sorted(PAIRS - changes)}"
    assert {run.flow.outcome for run in runs} == set(Outcome)
    played = {a.prompt for run in runs for t in run.turns for a in t.actions if isinstance(a, Play)}
    assert played == set(PROMPTS)
    hung_up_in = {t.before for run in runs for t in run.turns if isinstance(t.event, HungUp)}
    assert hung_up_in == set(Step)


def test_the_invariant_check_catches_a_broken_call(runs: list[Run]) -> None:
    granted = next(run for run in runs if run.flow.outcome is Outcome.GRANTED)
    check(granted)
    end = next(i for i, t in enumerate(granted.turns) if Finish(Outcome.GRANTED) in t.actions)
    saving = (Step.CONFIRM, Step.SAVING)
    detour = [(Step.CONFIRM, Step.RESULT), (Step.RESULT, Step.SAVING)]
    tampered = [
        # an action after Finish
        [*granted.turns[: end + 1], replace(granted.turns[end], actions=[Play("goodbye", 999)])],
        # a decision stored without a Persist
        [
            replace(t, actions=[a for a in t.actions if not isinstance(a, Persist)])
            for t in granted.turns
        ],
        # a step change missing from TRANSITIONS
        [replace(t, changes=detour) if t.changes == [saving] else t for t in granted.turns],
    ]
    for turns in tampered:
        with pytest.raises(AssertionError):
            check(replace(granted, turns=turns))
