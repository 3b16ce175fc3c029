"""The API's token cache: one lookup at a time per token, refreshed before it expires, and a
revocation obeyed within the cache's time. Pure asyncio with a hand-turned clock, no I/O."""

from __future__ import annotations

import asyncio

import pytest

from consent_ivr.api.tokens import Caller, TokenCache

pytestmark = pytest.mark.unit

ALICE = Caller(1, "crm", frozenset({"read"}), None)


class Lookups:
    """A stand-in for the database lookup: counts the calls, answers what `found` says when
    `gate` opens, or raises `error`."""

    def __init__(self) -> None:
        self.calls = 0
        self.found: Caller | None = ALICE
        self.error: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> Caller | None:
        self.calls += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.found


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_that_miss_together_share_one_lookup() -> None:
    cache, lookup = TokenCache(5.0, Clock()), Lookups()
    lookup.gate.clear()
    waiting = [asyncio.ensure_future(cache.caller("k", lookup)) for _ in range(50)]
    await settle()
    assert lookup.calls == 1
    lookup.gate.set()
    assert await asyncio.gather(*waiting) == [ALICE] * 50
    assert lookup.calls == 1


async def test_a_fresh_entry_is_answered_without_a_lookup() -> None:
    clock = Clock()
    cache, lookup = TokenCache(5.0, clock), Lookups()
    assert await cache.caller("k", lookup) == ALICE
    clock.t += 2.4
    assert await cache.caller("k", lookup) == ALICE
    await settle()
    assert lookup.calls == 1


async def test_an_entry_in_its_second_half_is_refreshed_behind_once() -> None:
    clock = Clock()
    cache, lookup = TokenCache(5.0, clock), Lookups()
    await cache.caller("k", lookup)
    clock.t += 3.0
    lookup.found = None  # revoked meanwhile
    lookup.gate.clear()
    # Answered at once from the cache, while one refresh runs.
    assert [await cache.caller("k", lookup) for _ in range(10)] == [ALICE] * 10
    await settle()
    assert lookup.calls == 2
    lookup.gate.set()
    await settle()
    # The refresh saw the revocation: from now on the token is refused.
    assert await cache.caller("k", lookup) is None
    assert lookup.calls == 2


async def test_an_expired_entry_waits_for_its_lookup() -> None:
    clock = Clock()
    cache, lookup = TokenCache(5.0, clock), Lookups()
    await cache.caller("k", lookup)
    clock.t += 5.0
    lookup.found = None
    assert await cache.caller("k", lookup) is None
    assert lookup.calls == 2


async def test_an_answer_is_as_old_as_its_question() -> None:
    """A lookup that took long counts its age from when it was asked, so a revocation is
    still obeyed within the cache's time."""
    clock = Clock()
    cache, lookup = TokenCache(5.0, clock), Lookups()
    lookup.gate.clear()
    first = asyncio.ensure_future(cache.caller("k", lookup))
    await settle()
    clock.t += 4.0  # the lookup is slow
    lookup.gate.set()
    assert await first == ALICE
    clock.t += 1.0  # 5 s after it was asked: expired, whatever its arrival
    lookup.found = None
    assert await cache.caller("k", lookup) is None
    assert lookup.calls == 2


async def test_ttl_zero_looks_up_every_request_and_shares_none() -> None:
    cache, lookup = TokenCache(0.0, Clock()), Lookups()
    lookup.gate.clear()
    waiting = [asyncio.ensure_future(cache.caller("k", lookup)) for _ in range(3)]
    await settle()
    assert lookup.calls == 3
    lookup.gate.set()
    await asyncio.gather(*waiting)


async def test_a_failed_refresh_keeps_the_entry_and_the_next_lookup_reports_it() -> None:
    clock = Clock()
    cache, lookup = TokenCache(5.0, clock), Lookups()
    await cache.caller("k", lookup)
    clock.t += 3.0
    lookup.error = ConnectionError("database down")
    assert await cache.caller("k", lookup) == ALICE  # a refresh starts behind, and fails
    await settle()
    assert lookup.calls == 2
    assert await cache.caller("k", lookup) == ALICE  # still within 5 s: another refresh
    await settle()
    assert lookup.calls == 3
    clock.t += 2.0
    with pytest.raises(ConnectionError, match="database down"):
        await cache.caller("k", lookup)
    lookup.error = None
    assert await cache.caller("k", lookup) == ALICE


async def test_a_cancelled_request_does_not_cancel_the_shared_lookup() -> None:
    cache, lookup = TokenCache(5.0, Clock()), Lookups()
    lookup.gate.clear()
    gone = asyncio.ensure_future(cache.caller("k", lookup))
    stays = asyncio.ensure_future(cache.caller("k", lookup))
    await settle()
    gone.cancel()
    await settle()
    lookup.gate.set()
    assert await stays == ALICE
    assert lookup.calls == 1


async def test_keys_are_looked_up_apart() -> None:
    cache, lookup = TokenCache(5.0, Clock()), Lookups()
    await asyncio.gather(cache.caller("a", lookup), cache.caller("b", lookup))
    assert lookup.calls == 2
