"""The ARI front sends a barge-in's next prompt before stopping the current one
(consent_ivr.ari.call.play_before_stop): same actions, that order only."""

from __future__ import annotations

import pytest

from consent_ivr import flow as f
from consent_ivr.ari.call import play_before_stop

pytestmark = pytest.mark.unit


def test_the_next_prompt_goes_before_the_stop() -> None:
    actions: list[f.Action] = [f.StopPlayback(3), f.CancelTimer(1), f.Play("chosen_agree", 4)]
    assert play_before_stop(actions) == [
        f.CancelTimer(1),
        f.Play("chosen_agree", 4),
        f.StopPlayback(3),
    ]


def test_actions_after_the_play_keep_their_place() -> None:
    actions: list[f.Action] = [f.StopPlayback(3), f.Play("invalid", 4), f.StartTimer(2, 6.0)]
    assert play_before_stop(actions) == [
        f.Play("invalid", 4),
        f.StopPlayback(3),
        f.StartTimer(2, 6.0),
    ]


@pytest.mark.parametrize(
    "actions",
    [
        [f.StopPlayback(3), f.CancelTimer(1), f.Persist(0, f.Choice.AGREE)],  # the decision
        [f.Play("notice", 1)],
        [f.StopPlayback(3), f.Hangup()],
        [],
    ],
)
def test_without_a_stop_and_a_play_nothing_moves(actions: list[f.Action]) -> None:
    assert play_before_stop(actions) == actions


def test_every_step_of_the_flow_keeps_its_actions() -> None:
    """Whatever the flow returns, the reordering neither adds nor drops an action."""
    flow = f.ConsentFlow(f.Rules(), f.Dialogue(purposes=("p",)))
    events: list[f.Event] = [
        f.CallStarted(),
        f.RecordingStarted(),
        f.PromptFinished(1),
        f.PromptFinished(2),
        f.KeyPressed("1"),
        f.PromptFinished(4),
        f.KeyPressed("2"),
        f.KeyPressed("1"),
    ]
    for event in events:
        actions = flow.handle(event)
        assert sorted(map(repr, play_before_stop(actions))) == sorted(map(repr, actions))
