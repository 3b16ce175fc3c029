"""Outbound consent calls and campaigns on the real Asterisks (22 with SQLite, 16 with
PostgreSQL), with SIPp as the person's phone on a real SIP trunk (tests/sipp): the service runs
in-process, and `consent-ivr call` / `consent-ivr campaign run` run as the operator runs them,
as separate processes reading one config file.

Asterisk is asked what it holds (`GET /channels`), so a concurrency limit is checked where the
calls are, not where the runner thinks they are."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from sqlalchemy import select

from consent_ivr.ari.client import AriClient
from consent_ivr.dialing.models import DialNumber
from consent_ivr.prompts import Catalog
from consent_ivr.service import Service, running
from consent_ivr.simulate import timings
from consent_ivr.store import lifecycle, records
from consent_ivr.store.models import Call, ConsentRecord, ContactAttempt
from consent_ivr.store.records import NewCall, NewRecord, Subject
from tests.e2e.conftest import (
    BACKENDS,
    REPO,
    assert_evidence,
    asterisk_env,
    database_url,
    e2e_config,
)
from tests.sipp import phone as sipp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(sipp.available() is not None, reason=str(sipp.available())),
]

CLI = REPO / ".venv" / "bin" / "consent-ivr"
DIALING = {
    "endpoint": "PJSIP/{digits}@sipp",
    "ring_timeout_s": 4,
    "max_concurrent": 2,
    "calls_per_second": 5,
    "window": {"start": "00:00", "end": "24:00"},
    "retry": {"on": ["no_answer", "busy"], "delay": "PT1S", "max_attempts": 1},
}


CAMPAIGNS = ("hundred", "resume", "withdrawn", "window", "two")


@dataclass
class World:
    svc: Service
    ast: dict[str, str]
    tmp: Path
    version: str

    @property
    def sipp_port(self) -> int:
        return int(self.ast["CONSENT_IVR_SIPP_PORT"])

    def config_file(self, **dialing: Any) -> Path:
        """The service's own config, with these dialing settings for every campaign."""
        data = self.svc.config.model_dump(mode="json", exclude_defaults=True)
        for campaign in data["campaigns"].values():
            campaign["dialing"] = {**DIALING, **dialing}
        path = self.tmp / f"config-{secrets.token_hex(4)}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    def env(self, config: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
        env["CONSENT_IVR_CONFIG"] = str(config)
        env["CONSENT_IVR_ARI_PASSWORD"] = self.ast["CONSENT_IVR_ARI_PASSWORD"]
        env["CONSENT_IVR_AMI_PASSWORD"] = self.ast["CONSENT_IVR_ARI_PASSWORD"]
        return env

    async def cli(
        self, config: Path, *args: str, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [str(CLI), *args],
            env=self.env(config),
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, config: Path, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(CLI), *args],
            env=self.env(config),
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self, fn: Any) -> Any:
        with self.svc.db.session() as s:
            return fn(s)

    def view(self, channel_id: str) -> dict[str, Any]:
        """The record of the call on `channel_id`: its head and events read at one moment
        (the SMS worker may be appending to it)."""
        with self.svc.db.snapshot() as s:
            return records.record_view(s, _record_of(s, channel_id))


@pytest_asyncio.fixture(
    loop_scope="session", scope="module", params=BACKENDS, ids=["ast22-sqlite", "ast16-pg"]
)
async def world(
    request: pytest.FixtureRequest,
    e2e_prompts_built: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    version, database = request.param
    ast = asterisk_env(version)
    tmp = tmp_path_factory.mktemp(f"outbound{version}")
    url = database_url(request, database, tmp)
    conf = e2e_config(ast, url, tmp)
    # A campaign of its own for each campaign test: a campaign is every number ever loaded.
    own = {name: conf.campaigns["default"] for name in CAMPAIGNS}
    conf = conf.model_copy(update={"campaigns": {**conf.campaigns, **own}})
    await asyncio.to_thread(Catalog(conf).build)
    async with running(conf) as svc:
        yield World(svc, ast, tmp, version)


def new_phone() -> str:
    return f"+7495{secrets.randbelow(10**7):07d}"  # Moscow: one time zone


def agree_keys(w: World) -> list[tuple[float, str]]:
    t = timings(w.svc.app.catalog, "default", "en")
    t1, t2 = float(t["__SIM_T1"]), float(t["__SIM_T2"])
    return [(t1, "1"), (t1 + t2, "1")]


def attempts(w: World, phone: str | None = None) -> list[ContactAttempt]:
    def read(s: Any) -> list[ContactAttempt]:
        q = select(ContactAttempt).where(ContactAttempt.channel == "call")
        if phone is not None:
            q = q.where(ContactAttempt.phone == phone)
        return list(s.scalars(q.order_by(ContactAttempt.id)))

    return w.read(read)  # type: ignore[no-any-return]


def numbers(w: World, campaign_phones: list[str]) -> dict[str, DialNumber]:
    def read(s: Any) -> dict[str, DialNumber]:
        rows = s.scalars(select(DialNumber).where(DialNumber.phone.in_(campaign_phones)))
        return {r.phone: r for r in rows}

    return w.read(read)  # type: ignore[no-any-return]


def write_csv(w: World, phones: list[str], *extra: str) -> Path:
    path = w.tmp / f"numbers-{secrets.token_hex(4)}.csv"
    path.write_text(
        "phone,name\n" + "".join(f"{p},Person {i}\n" for i, p in enumerate(phones)) + "".join(extra)
    )
    return path


# ---- one call ---------------------------------------------------------------------------------


async def test_answered_call_agrees(world: World) -> None:
    w, phone = world, new_phone()
    config = w.config_file()
    with sipp.phone("answer", w.sipp_port, w.tmp / "sipp", keys=agree_keys(w)):
        proc = await w.cli(config, "call", phone, "--campaign", "default")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{phone}: answered" in proc.stdout
    assert "e2e-offers: granted" in proc.stdout
    [attempt] = attempts(w, phone)
    assert attempt.result == "answered" and attempt.campaign == "default"
    view = w.view(str(attempt.channel_id))
    assert view["outcome"] == "granted" and view["direction"] == "outbound"
    assert view["phone"] == phone and view["phone_source"] == "dialled"
    assert [k["digit"] for k in view["keys"] if k["acted_on"]] == ["1", "1"]
    assert_evidence(view)


def _record_of(s: Any, channel_id: str | None) -> str:
    call = s.scalars(select(Call).where(Call.channel_id == channel_id)).one()
    return str(call.records[0].record_id)


# Asterisk 22 says why a call that rang out ended (19, no answer); 16 says 0 (unknown).
@pytest.mark.parametrize(
    ("kind", "result", "causes"),
    [("noanswer", "no_answer", ("cause 19", "cause 0")), ("busy", "busy", ("cause 17",))],
)
async def test_unanswered_call_is_recorded_with_its_cause(
    world: World, kind: str, result: str, causes: tuple[str, ...]
) -> None:
    w, phone = world, new_phone()
    with sipp.phone(kind, w.sipp_port, w.tmp / "sipp"):
        proc = await w.cli(w.config_file(), "call", phone)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"{phone}: {result} (cause " in proc.stdout
    [attempt] = attempts(w, phone)
    assert (attempt.result, attempt.channel) == (result, "call")
    assert any(c in (attempt.reason or "") for c in causes), attempt.reason
    # Nobody answered: no call reached the dialogue, no record was opened.
    assert (
        w.read(
            lambda s: s.scalars(select(Call).where(Call.channel_id == attempt.channel_id)).first()
        )
        is None
    )


async def test_answering_machine_never_gives_consent(world: World) -> None:
    w, phone = world, new_phone()
    config = w.config_file(amd={"enabled": True})
    # The machine's greeting goes on; it "presses" agree and confirm all the same.
    with sipp.phone("answer", w.sipp_port, w.tmp / "sipp", keys=agree_keys(w), voice="machine"):
        proc = await w.cli(config, "call", phone)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    [attempt] = attempts(w, phone)
    assert attempt.result == "machine" and "AMD MACHINE" in (attempt.reason or "")
    assert (
        w.read(
            lambda s: s.scalars(select(Call).where(Call.channel_id == attempt.channel_id)).first()
        )
        is None
    )
    assert w.read(lambda s: lifecycle.states(s, phone)) == {}


# ---- campaigns --------------------------------------------------------------------------------


class ChannelWatch(AriClient):
    """Counts the SIP channels Asterisk holds while a campaign runs, from Asterisk's own
    ordered stream of channel creations and destructions (an app subscribed to every channel).

    Polling GET /channels would not do: Asterisk drops a channel from that list a moment
    after it tells the dialer the channel is destroyed, so a poll can see the next call beside
    the one already gone."""

    def __init__(self, w: World) -> None:
        conf = w.svc.config.ari
        super().__init__(conf.url, conf.user, conf.password, f"watch-{secrets.token_hex(4)}")
        self.live: set[str] = set()
        self.counts: list[int] = []
        self.created: set[str] = set()
        self.destroyed: set[str] = set()
        self.reconnects = 0
        self.on_reconnect = self._reconnected

    async def _reconnected(self) -> None:
        # Events sent while the websocket was down are lost: the counts cannot be trusted.
        self.reconnects += 1

    async def __aenter__(self) -> ChannelWatch:
        await self.start()
        await self.request(
            "POST", f"/applications/{self.app}/subscription", {"eventSource": "channel:"}
        )
        return self

    def dispatch(self, event: dict[str, Any]) -> None:
        channel = event.get("channel") or {}
        if not str(channel.get("name", "")).startswith("PJSIP/sipp"):
            return
        if event.get("type") == "ChannelCreated":
            self.live.add(channel["id"])
            self.created.add(channel["id"])
        elif event.get("type") == "ChannelDestroyed":
            self.live.discard(channel["id"])
            self.destroyed.add(channel["id"])
        else:
            return
        self.counts.append(len(self.live))

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.5)  # the last destructions reach us
        await self.close()


def placed_times(rows: list[ContactAttempt]) -> list[float]:
    return sorted(a.at.replace(tzinfo=UTC).timestamp() for a in rows if a.result != "suppressed")


async def test_campaign_of_100_holds_its_limits(world: World) -> None:
    w = world
    phones = [new_phone() for _ in range(100)]
    config = w.config_file(max_concurrent=10, calls_per_second=5)
    csv = write_csv(w, phones, "not-a-number,Nobody\n")
    # Each person answers and hangs up 3 s later: the calls overlap, so only the limit holds
    # them at 10.
    async with ChannelWatch(w) as watch:
        with sipp.phone("answer", w.sipp_port, w.tmp / "sipp", hangup_after_s=3):
            started = time.monotonic()
            proc = await w.cli(
                config, "campaign", "run", str(csv), "--campaign", "hundred", timeout=400
            )
            elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert f"{csv.name}:102: 'not-a-number' is not a phone number: skipped" in proc.stderr
    rows = [a for a in attempts(w) if a.phone in set(phones)]
    assert sorted(a.phone for a in rows) == sorted(phones)  # each number once
    assert {a.result for a in rows} == {"answered"}, [
        (a.result, a.reason) for a in rows if a.result != "answered"
    ]
    # Each call was seen created, then destroyed: else the counts below miss a channel.
    placed = {a.channel_id for a in rows}
    assert watch.reconnects == 0, f"the watch lost its websocket {watch.reconnects} time(s)"
    assert (placed - watch.created, placed - watch.destroyed, watch.live) == (set(), set(), set())
    assert len(watch.counts) == 200, (len(watch.created), len(watch.destroyed))
    assert max(watch.counts) <= 10, max(watch.counts)
    assert max(watch.counts) >= 8, watch.counts  # the limit was reached, and held
    times = placed_times(rows)
    # 5 calls per second: no second holds more than 5 placements (a little slack for the clock).
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 6
    assert "campaign hundred: " in proc.stdout and "abandoned" in proc.stdout
    print(f"\n{w.version}: {proc.stdout.strip().splitlines()[-1]} (wall {elapsed:.1f} s)")


async def test_campaign_stops_and_resumes_without_calling_anyone_twice(world: World) -> None:
    w = world
    phones = [new_phone() for _ in range(16)]
    config = w.config_file(max_concurrent=2, calls_per_second=2)
    csv = write_csv(w, phones)
    with sipp.phone("answer", w.sipp_port, w.tmp / "sipp", hangup_after_s=2):
        runner = w.start(config, "campaign", "run", str(csv), "--campaign", "resume")
        deadline = time.monotonic() + 120
        while len([a for a in attempts(w) if a.phone in phones]) < 5:
            assert runner.poll() is None, runner.communicate()
            assert time.monotonic() < deadline, "the runner placed no calls"
            await asyncio.sleep(0.2)
        runner.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(runner.communicate, timeout=120)
        assert runner.returncode == 4, out + err
        assert "stopping: no new calls" in err
        first = {a.phone for a in attempts(w) if a.phone in phones}
        assert 5 <= len(first) < len(phones)
        assert all(r.status != "dialling" for r in numbers(w, phones).values())
        again = await w.cli(config, "campaign", "run", str(csv), "--campaign", "resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "16 numbers read, 0 new" in again.stderr
    rows = [a for a in attempts(w) if a.phone in phones]
    assert sorted(a.phone for a in rows) == sorted(phones)  # everyone once, nobody twice
    assert {r.status for r in numbers(w, phones).values()} == {"done"}


async def test_campaign_skips_a_withdrawn_number(world: World) -> None:
    w = world
    withdrawn, others = new_phone(), [new_phone(), new_phone()]
    _withdrawn_consent(w, withdrawn)
    config = w.config_file()
    csv = write_csv(w, [others[0], withdrawn, others[1]])
    with sipp.phone("answer", w.sipp_port, w.tmp / "sipp", hangup_after_s=1):
        proc = await w.cli(config, "campaign", "run", str(csv), "--campaign", "withdrawn")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = numbers(w, [withdrawn])[withdrawn]
    assert (row.status, row.result) == ("skipped", "suppressed")
    assert "withdrew consent" in (row.reason or "")
    [kept] = attempts(w, withdrawn)
    assert (kept.result, kept.purpose_id) == ("suppressed", "e2e-offers")
    assert "suppressed" in proc.stdout
    assert {a.result for o in others for a in attempts(w, o)} == {"answered"}


def _withdrawn_consent(w: World, phone: str) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    snapshot = w.svc.config.purpose_snapshot("default", "e2e-offers", "en")
    new = NewCall(
        channel_id=f"earlier-{secrets.token_hex(4)}",
        direction="inbound",
        campaign="default",
        language="en",
        jurisdiction="RU",
        controller={"name": "Acme"},
        started_at=at,
        subject=Subject(phone, "caller-id", phone, None),
    )
    with w.svc.db.session() as s:
        call_id, [record_id] = records.open_call(s, new, [NewRecord("consent", snapshot)])
        records.store_decision(s, record_id, "granted", at)
        records.finish_call(s, call_id, {record_id: "granted"}, at, [], None)
    with w.svc.db.session() as s:
        r = s.get(ConsentRecord, record_id)
        lifecycle.withdraw(s, [r], at + timedelta(minutes=1), channel="operator", reason="letter")


async def test_campaign_outside_its_calling_window_dials_nobody(world: World) -> None:
    w = world
    phones = [new_phone(), new_phone()]
    moscow = datetime.now(UTC) + timedelta(hours=3)
    # A one-hour window two hours from now in Moscow (the numbers' zone), on every day.
    opens = (moscow + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    if opens.hour >= 23 or opens.hour < 2:
        opens = opens.replace(hour=3) + (timedelta(days=1) if opens.hour >= 23 else timedelta())
    window = {"start": f"{opens.hour:02d}:00", "end": f"{opens.hour + 1:02d}:00"}
    config = w.config_file(window=window)
    csv = write_csv(w, phones)
    async with ChannelWatch(w) as watch:
        proc = await w.cli(config, "campaign", "run", str(csv), "--campaign", "window", "--no-wait")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    due = opens - timedelta(hours=3)
    assert f"next number is due at {due:%Y-%m-%d %H:%M} UTC" in proc.stdout
    assert attempts(w, phones[0]) == [] and attempts(w, phones[1]) == []
    assert max(watch.counts, default=0) == 0
    assert {r.status for r in numbers(w, phones).values()} == {"pending"}


async def test_two_runners_on_postgresql_split_the_work(world: World) -> None:
    w = world
    if w.svc.db.dialect != "postgresql":
        pytest.skip("two runners share a PostgreSQL database (SQLite is one machine's file)")
    phones = [new_phone() for _ in range(40)]
    # The limits are the campaign's, shared by its runners: a runner whose call ends claims
    # the freed place at once, the other only at its next tick, so with every place taken one
    # runner can keep them all. Here the rate binds (2 a second for 20 s), not the places, and
    # runners held by the rate take turns (Runner._pause).
    config = w.config_file(max_concurrent=10, calls_per_second=2)
    csv = write_csv(w, phones)
    with sipp.phone("answer", w.sipp_port, w.tmp / "sipp", hangup_after_s=1.5):
        a = w.start(config, "campaign", "run", str(csv), "--campaign", "two", "--runner", "a")
        b = w.start(config, "campaign", "run", str(csv), "--campaign", "two", "--runner", "b")
        outs = [await asyncio.to_thread(p.communicate, timeout=300) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    rows = [r for r in attempts(w) if r.phone in phones]
    assert sorted(r.phone for r in rows) == sorted(phones)  # nobody dialled twice
    placed = [int(o.split("this run: ")[1].split(" ")[0]) for o, _ in outs]
    assert sum(placed) == 40 and min(placed) >= 8, (placed, outs)
