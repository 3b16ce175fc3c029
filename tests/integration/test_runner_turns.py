"""Two campaign runners sharing one database take turns when the calls-per-second limit binds.

The dialer here is a stand-in whose calls last exactly two of the schedule's beats: a real
Asterisk cannot be made to end calls on that beat on demand, and that beat is what once let
the runner whose calls were ending win every slot (it woke as its call ended, just as the next
slot opened) and starve the other. The database and the runners are the real ones."""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial

import pytest

from consent_ivr.clock import now
from consent_ivr.config import Config
from consent_ivr.dialing import store
from consent_ivr.dialing.campaign import Runner
from consent_ivr.dialing.dialers import Dial
from consent_ivr.store.db import Database, upgrade

pytestmark = pytest.mark.integration

RATE = 4.0  # calls a second: a slot every 0.25 s
NUMBERS = 32


class BeatDialer:
    """Answers every call and ends it exactly two slots after it was placed."""

    def __init__(self) -> None:
        self.dialled: list[str] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ready(self) -> None:
        pass

    async def call(self, dial: Dial) -> store.Attempt:
        placed = now()
        self.dialled.append(dial.phone)
        await asyncio.sleep(2 / RATE)
        return store.Attempt(dial.channel_id, "answered", placed)


def config() -> Config:
    campaign = Config().campaigns["default"].model_dump(mode="json", exclude_defaults=True)
    campaign["dialing"] = {
        "endpoint": "PJSIP/{digits}@nowhere",
        "max_concurrent": 10,
        "calls_per_second": RATE,
        "window": {"start": "00:00", "end": "24:00"},
    }
    return Config.model_validate({"campaigns": {"default": campaign}})


async def test_two_runners_take_turns_when_the_rate_binds(db_url: str) -> None:
    upgrade(db_url)
    conf = config()
    name = "default"
    phones = [f"+7900{n:07d}" for n in range(NUMBERS)]
    entries = [store.Entry(p, None, None, f"numbers.csv:{i + 1}") for i, p in enumerate(phones)]
    dbs = [Database(db_url), Database(db_url)]
    try:
        await dbs[0].transaction(partial(store.load, campaign=name, entries=entries, now=now()))
        dialers = [BeatDialer(), BeatDialer()]
        runners = [
            Runner(db, conf, name, dialer, runner_id=f"r{i}")
            for i, (db, dialer) in enumerate(zip(dbs, dialers, strict=True))
        ]
        stop = asyncio.Event()
        ends = await asyncio.wait_for(
            asyncio.gather(*(r.run(stop) for r in runners)), timeout=NUMBERS / RATE + 30
        )
    finally:
        for db in dbs:
            db.close()
    assert [e.how for e in ends] == ["finished", "finished"]
    dialled = dialers[0].dialled + dialers[1].dialled
    assert sorted(dialled) == phones, Counter(dialled).most_common(3)  # each number once
    split = [len(d.dialled) for d in dialers]
    # Fair turns give each about half; a quarter is far outside chance for 32 slots.
    assert min(split) >= NUMBERS // 4, split
