"""A campaign run: read the file, then claim, dial and settle numbers until none is left.

The runner holds no state of its own that matters: every number's state is in the database
(consent_ivr.dialing.store), so a run that stops, crashes or runs beside another one on another
machine leaves nothing that the next claim cannot pick up. What the runner keeps in memory is
only for the person watching: its calls in progress and the figures of this run."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from consent_ivr.calls import BadArgs, pick_campaign
from consent_ivr.clock import now, pause
from consent_ivr.config import Campaign, Config
from consent_ivr.dialing import store
from consent_ivr.dialing.dialers import Dial, Dialer
from consent_ivr.phone import mask, to_e164
from consent_ivr.store.db import Database

log = logging.getLogger(__name__)

COLUMNS = ("phone", "name", "language")


@dataclass(frozen=True)
class Problem:
    source: str  # file:line
    text: str


def read_numbers(
    path: Path, config: Config, campaign: str
) -> tuple[list[store.Entry], list[Problem]]:
    """The numbers of a campaign file (columns phone, optional name and language; a header
    row naming them is optional), and the lines that cannot be dialled, with why."""
    entries: list[store.Entry] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    columns = list(COLUMNS)
    first = 0
    if rows and rows[0] and rows[0][0].strip().lower() == "phone":
        columns = [c.strip().lower() for c in rows[0]]
        first = 1
    for lineno, row in enumerate(rows[first:], start=first + 1):
        where = f"{path.name}:{lineno}"
        values = {c: (row[i].strip() if i < len(row) else "") for i, c in enumerate(columns)}
        raw = values.get("phone", "")
        if not raw or raw.startswith("#"):
            continue
        phone = to_e164(raw, config.default_region)
        if phone is None:
            problems.append(Problem(where, f"{raw[:40]!r} is not a phone number"))
            continue
        language = values.get("language") or None
        try:
            pick_campaign(config, campaign, language)
        except BadArgs as e:
            problems.append(Problem(where, str(e)))
            continue
        if phone in seen:
            problems.append(Problem(where, f"{mask(phone)} is already on {seen[phone]}"))
            continue
        seen[phone] = where
        name = (values.get("name") or None) if "name" in values else None
        entries.append(store.Entry(phone, name, language, where))
    return entries, problems


@dataclass
class RunFigures:
    """This run's own figures (the campaign's totals are in the database)."""

    started: float = field(default_factory=time.monotonic)
    placed: int = 0
    first_placed: float | None = None
    last_placed: float | None = None
    in_call: int = 0
    max_in_call: int = 0
    results: Counter[str] = field(default_factory=Counter)

    def calls_per_second(self) -> float:
        if self.first_placed is None or self.last_placed is None or self.placed < 2:
            return 0.0
        span = self.last_placed - self.first_placed
        return (self.placed - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class RunEnd:
    how: str  # finished, stopped, waiting
    next_at: datetime | None = None


class Runner:
    """Claims and dials one campaign's numbers until none is left for it."""

    def __init__(
        self,
        db: Database,
        config: Config,
        name: str,
        dialer: Dialer,
        *,
        runner_id: str | None = None,
        on_change: Callable[[], None] = lambda: None,
        tick_s: float = 0.2,
    ) -> None:
        self.db = db
        self.config = config
        self.name = name
        self.campaign: Campaign = config.campaigns[name]
        self.dialing = self.campaign.dialing
        self.dialer = dialer
        self.id = runner_id or f"runner-{uuid.uuid4().hex[:8]}"
        self.on_change = on_change
        self.tick_s = tick_s
        self.figures = RunFigures()
        self.waiting_until: datetime | None = None
        self._calls: dict[str, asyncio.Task[None]] = {}
        self._ended = asyncio.Event()

    async def run(self, stop: asyncio.Event, *, wait: bool = True) -> RunEnd:
        renewer = asyncio.create_task(self._renew_leases())
        try:
            return await self._loop(stop, wait)
        finally:
            if self._calls:
                await asyncio.wait(list(self._calls.values()))
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _loop(self, stop: asyncio.Event, wait: bool) -> RunEnd:
        purposes = list(self.campaign.purposes)
        while not stop.is_set():
            free = self.dialing.max_concurrent - len(self._calls)
            claims = store.Claims([])
            if free > 0:
                claims = await self.db.transaction(
                    partial(
                        store.claim,
                        campaign=self.name,
                        purposes=purposes,
                        dialing=self.dialing,
                        runner=self.id,
                        limit=free,
                        now=now(),
                    )
                )
            for c in claims.numbers:
                self._calls[c.token] = asyncio.create_task(self._dial(c, stop))
            if claims.numbers:
                self.waiting_until = None
                self.on_change()
            elif not self._calls:
                state = await self.db.read(partial(store.progress, campaign=self.name))
                if state.pending == 0:
                    return RunEnd("finished")
                assert state.next_at is not None
                if (state.next_at - now()).total_seconds() > 1:
                    if not wait:
                        return RunEnd("waiting", state.next_at)
                    if self.waiting_until != state.next_at:
                        self.waiting_until = state.next_at
                        self.on_change()
            await self._pause(stop, claims.rate_opens_at)
        return RunEnd("stopped")

    async def _pause(self, stop: asyncio.Event, rate_opens_at: datetime | None) -> None:
        """Wait for the next claim. While the rate binds, until the schedule's next slot opens,
        plus a random part of a tick: runners sharing the campaign then take turns. (Waking when
        one of our calls ends instead would let the runner whose calls end on the schedule's
        beat win every slot and starve the others.) Otherwise a tick, or less if a call ends and
        frees a place."""
        if rate_opens_at is not None:
            delay = (rate_opens_at - now()).total_seconds() + random.uniform(0, self.tick_s)
            await pause(delay, stop)
            return
        self._ended.clear()
        await pause(self.tick_s, self._ended)

    async def _dial(self, claimed: store.Claimed, stop: asyncio.Event) -> None:
        try:
            if await pause((claimed.dial_at - now()).total_seconds(), stop):
                await self.db.transaction(
                    partial(store.release, number_id=claimed.id, token=claimed.token)
                )
                return
            language = claimed.language or self.campaign.language
            dial = Dial(claimed.phone, claimed.channel_id, self.name, language, self.dialing)
            self._placed()
            try:
                attempt = await self.dialer.call(dial)
            except Exception as e:  # one call's failure must not end the campaign
                log.exception("call to %s failed", mask(claimed.phone))
                attempt = store.Attempt(claimed.channel_id, "failed", now(), None, str(e)[:200])
            finally:
                self.figures.in_call -= 1
            self.figures.results[attempt.result] += 1
            await self.db.transaction(
                partial(
                    store.finish,
                    claimed=claimed,
                    campaign=self.name,
                    attempt=attempt,
                    dialing=self.dialing,
                    now=now(),
                )
            )
        finally:
            self._calls.pop(claimed.token, None)
            self._ended.set()
            self.on_change()

    def _placed(self) -> None:
        f = self.figures
        f.placed += 1
        f.in_call += 1
        f.max_in_call = max(f.max_in_call, f.in_call)
        f.last_placed = time.monotonic()
        if f.first_placed is None:
            f.first_placed = f.last_placed
        self.on_change()

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.dialing.lease_s / 3)
            tokens = list(self._calls)
            with contextlib.suppress(Exception):
                await self.db.transaction(
                    partial(store.renew, tokens=tokens, lease_s=self.dialing.lease_s, now=now())
                )
