"""`clock.pause`: how the service's background tasks wait (a tick, a backoff, the next slot)
while staying stoppable at once."""

from __future__ import annotations

import asyncio

import pytest

from consent_ivr.clock import pause

pytestmark = pytest.mark.unit


async def timed(seconds: float, until: asyncio.Event) -> tuple[bool, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    woken = await pause(seconds, until)
    return woken, loop.time() - started


async def test_sleeps_the_time_when_nothing_happens() -> None:
    woken, took = await timed(0.05, asyncio.Event())
    assert not woken
    assert took >= 0.045


async def test_wakes_when_the_event_is_set() -> None:
    until = asyncio.Event()
    asyncio.get_running_loop().call_later(0.02, until.set)
    woken, took = await timed(30, until)
    assert woken
    assert took < 5


async def test_an_event_already_set_returns_at_once() -> None:
    until = asyncio.Event()
    until.set()
    woken, took = await timed(30, until)
    assert woken
    assert took < 5


@pytest.mark.parametrize("seconds", [0, -3.0])
async def test_no_time_left_still_lets_other_tasks_run(seconds: float) -> None:
    ran = []
    other = asyncio.get_running_loop().call_soon(ran.append, "other")
    woken, _ = await timed(seconds, asyncio.Event())
    assert not woken
    assert ran == ["other"], "pause(0) yielded to the loop"
    other.cancel()
