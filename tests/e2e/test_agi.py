"""The FastAGI front on the real Asterisks (22 with SQLite, 16 with PostgreSQL): the same
dialogue as the Stasis app for agree, decline, silence and hang-up, with records equal in shape
to the ARI path's; bare connects and garbage while a call is in progress; panoramisk 1.4's
faults, each shown and then shown guarded; and an outbound call through AMI Originate into the
AGI context, with SIPp as the person's phone."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from panoramisk import Manager
from panoramisk.fast_agi import Application
from panoramisk.utils import parse_agi_result

from consent_ivr.agi.config import AgiConfig
from consent_ivr.agi.protocol import AgiApplication, AgiChannel, parse_result
from consent_ivr.agi.server import AgiServer
from consent_ivr.service import Service, decision_hooks, running
from consent_ivr.simulate import place_call, timings, wait_for_record
from consent_ivr.store.models import ContactAttempt
from tests.e2e.conftest import (
    BACKENDS,
    REPO,
    assert_evidence,
    asterisk_env,
    database_url,
    e2e_config,
    prompts,
)
from tests.sipp import phone as sipp

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CLI = REPO / ".venv" / "bin" / "consent-ivr"
LANG = "en"


@dataclass
class World:
    svc: Service
    agi: AgiServer
    ast: dict[str, str]
    tmp: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.agi.port}"


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
    tmp = tmp_path_factory.mktemp(f"agi{version}")
    url = database_url(request, database, tmp)
    agi = AgiConfig(
        port=0,
        recordings_on_asterisk=Path(ast["ASTERISK_SPOOL"]) / "recording",
        header_timeout_s=1.0,
    )
    async with running(e2e_config(ast, url, tmp)) as svc:
        server = AgiServer(svc.config, svc.db, svc.app.catalog, agi, decision_hooks(svc.config))
        await server.start()
        try:
            yield World(svc, server, ast, tmp)
        finally:
            await server.stop()


def new_phone() -> str:
    return f"+7902{secrets.randbelow(10**7):07d}"


async def agi_call(w: World, scenario: str) -> dict[str, Any]:
    """A simulated caller (dialplan/consent-sim.conf) sent to the shipped consent-agi context."""
    channel_id = f"agi-{uuid.uuid4().hex[:12]}"
    phone = new_phone()
    variables = timings(w.svc.app.catalog, "default", LANG)
    variables.update(CONSENT_CAMPAIGN="default", CONSENT_LANGUAGE=LANG, CONSENT_AGI=w.address)
    await w.svc.app.ari.originate(
        f"Local/{scenario}@consent-sim",
        channel_id=channel_id,
        context="consent-agi",
        extension=phone.lstrip("+"),
        caller_id=phone,
        variables=variables,
    )
    return await wait_for_record(w.svc.db, channel_id, 120)


async def ari_call(w: World, scenario: str) -> dict[str, Any]:
    """The same caller through the Stasis app (dialplan consent-inbound)."""
    channel_id = f"ari-{uuid.uuid4().hex[:12]}"
    await place_call(
        w.svc.app.ari,
        w.svc.app.catalog,
        scenario,
        new_phone(),
        channel_id=channel_id,
        campaign="default",
        language=LANG,
    )
    return await wait_for_record(w.svc.db, channel_id, 120)


# What the SMS worker appends after the call, on its own schedule: either record may or may not
# have it yet when the call's record is read.
WORKER_EVENTS = {"sms_sent", "sms_report", "sms_failed"}


def shape(view: dict[str, Any]) -> dict[str, Any]:
    """What must be the same whichever front took the call: the record's fields, its events
    (kinds, steps and the names of their data), prompts, keys and outcome."""
    events = [
        (e["kind"], e["step"], sorted(e["data"]))
        for e in view["events"]
        if e["kind"] not in WORKER_EVENTS
    ]
    return {
        "fields": sorted(view),
        "events": events,
        "prompts": prompts(view),
        "keys": [(k["digit"], k["step"], k["acted_on"]) for k in view["keys"]],
        "outcome": view["outcome"],
        "direction": view["direction"],
        "collection_method": view["collection_method"],
        "recording": sorted(view["recording"] or {}),
    }


@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [
        ("agree", "granted"),
        ("decline", "declined"),
        ("silence", "no_response"),
        ("hangup-notice", "abandoned"),
    ],
)
async def test_agi_call_is_the_ari_call(world: World, scenario: str, outcome: str) -> None:
    agi, ari = await asyncio.gather(agi_call(world, scenario), ari_call(world, scenario))
    assert agi["outcome"] == outcome, [e["kind"] for e in agi["events"]]
    assert_evidence(agi)
    recording_events = [e for e in agi["events"] if e["kind"] == "recording_started"]
    assert recording_events[0]["data"]["method"] == "mixmonitor"
    assert shape(agi) == shape(ari)


# ---- the FastAGI server under bad peers -------------------------------------------------------


class LoopWatch:
    """The longest time the event loop went without running a 20 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            t = time.monotonic()
            self.worst = max(self.worst, t - last)
            last = t

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def bad_peers(port: int) -> list[bytes]:
    """Health checks, garbage, a flood and a silent peer; what the server answered each."""
    answers = []

    async def peer(payload: bytes | None, wait_s: float = 0.0) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if payload:
            writer.write(payload)
            await writer.drain()
        if wait_s:  # a silent peer: the server must drop it after its header timeout
            answer = await asyncio.wait_for(reader.read(), wait_s)
        else:
            writer.write_eof() if payload else None
            answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer

    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()  # connect and close: a TCP health check
    answers.append(await peer(b"\x00\xff garbage without an end"))
    answers.append(await peer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    answers.append(await peer(b"agi_network_script: nope\nagi_channel: x\n\n"))
    answers.append(await peer(b"agi_request: agi://x\n\n"))
    answers.append(await peer(b"A" * 40_000))
    answers.append(await peer(None, wait_s=5.0))
    return answers


async def test_bare_connects_and_garbage_stop_no_call(world: World) -> None:
    w = world
    with LoopWatch() as watch:
        call = asyncio.create_task(agi_call(w, "agree"))
        await asyncio.sleep(1.5)  # the call is in its notice
        answers = await bad_peers(w.agi.port)
        view = await call
    assert answers == [b""] * 6  # each closed by the server, none answered
    assert view["outcome"] == "granted"
    assert_evidence(view)
    assert watch.worst < 1.0, f"the event loop stalled for {watch.worst:.2f}s"
    # And the server takes the next call as usual.
    assert (await agi_call(w, "decline"))["outcome"] == "declined"


# ---- panoramisk 1.4's faults: shown, then guarded ------------------------------------------


FREEZE = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from panoramisk.fast_agi import Application
from consent_ivr.agi.protocol import AgiApplication

async def main():
    app = AgiApplication() if sys.argv[1] == "guarded" else Application()
    server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await asyncio.sleep(0.5)  # the loop must still run other work
    print("alive", flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize(("which", "survives"), [("stock", False), ("guarded", True)])
async def test_a_connect_and_close_freezes_stock_panoramisk_only(
    tmp_path: Path, which: str, survives: bool
) -> None:
    script = tmp_path / "freeze.py"
    script.write_text(FREEZE.format(repo=str(REPO)))
    try:
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script), which],
            capture_output=True,
            text=True,
            timeout=6,
        )
        alive = "alive" in proc.stdout
    except subprocess.TimeoutExpired:
        alive = False  # the event loop spun on EOF and never ran anything else
    assert alive is survives


async def test_handlers_must_be_coroutines() -> None:
    def plain(request: object) -> None:
        return None

    with pytest.raises(AttributeError):  # panoramisk: asyncio.coroutine, gone in 3.11
        Application().add_route("x", plain)
    with pytest.raises(TypeError, match="must be a coroutine function"):
        AgiApplication().add_route("x", plain)


async def test_get_data_timeout_is_kept(world: World) -> None:
    """GET DATA on a real channel where nobody types: Asterisk answers `200 result=
    (timeout)`; panoramisk drops the timeout, our parser keeps it."""
    w = world
    lines: list[str] = []
    prompt = w.svc.app.catalog.media(w.svc.app.catalog.get("default", LANG, "goodbye"))

    async def probe(channel: AgiChannel) -> None:
        await channel.command("ANSWER")
        channel.writer.write(f"GET DATA {prompt.removeprefix('sound:')} 500 2\n".encode())
        lines.append((await channel.reader.readline()).decode().strip())

    app = AgiApplication()
    app.add_route("probe", probe)
    server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    manager = await ami(w)
    try:
        await manager.send_action(
            {
                "Action": "Originate",
                "Channel": "Local/silence@consent-sim",
                "Application": "AGI",
                "Data": f"agi://127.0.0.1:{port}/probe",
                "Async": "true",
            }
        )
        for _ in range(100):
            if lines:
                break
            await asyncio.sleep(0.1)
    finally:
        manager.close()
        server.close()
    [line] = lines
    assert line == "200 result= (timeout)"
    assert parse_result(line).timeout and parse_result(line).result == ""
    assert "timeout" not in repr(parse_agi_result(line))  # what panoramisk makes of it


async def ami(w: World) -> Manager:
    manager = Manager(
        host="127.0.0.1",
        port=int(w.ast["CONSENT_IVR_AMI_PORT"]),
        username=w.ast["CONSENT_IVR_ARI_USER"],
        secret=w.ast["CONSENT_IVR_ARI_PASSWORD"],
        loop=asyncio.get_running_loop(),
    )
    await manager.connect()
    for _ in range(100):
        if manager.authenticated:
            return manager
        await asyncio.sleep(0.05)
    raise AssertionError("AMI login failed")


# ---- outbound through AMI into the AGI context ------------------------------------------------


@pytest.mark.skipif(sipp.available() is not None, reason=str(sipp.available()))
async def test_outbound_call_through_ami_and_agi(world: World) -> None:
    w, phone = world, f"+7495{secrets.randbelow(10**7):07d}"
    data = w.svc.config.model_dump(mode="json", exclude_defaults=True)
    data["campaigns"]["default"]["dialing"] = {
        "endpoint": "PJSIP/{digits}@sipp",
        "originate": "ami",
        "ami": {"port": int(w.ast["CONSENT_IVR_AMI_PORT"]), "agi": w.address},
    }
    config = w.tmp / "ami.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    env.update(
        CONSENT_IVR_CONFIG=str(config),
        CONSENT_IVR_AMI_PASSWORD=w.ast["CONSENT_IVR_ARI_PASSWORD"],
        CONSENT_IVR_ARI_PASSWORD=w.ast["CONSENT_IVR_ARI_PASSWORD"],
    )
    t = timings(w.svc.app.catalog, "default", LANG)
    t1, t2 = float(t["__SIM_T1"]), float(t["__SIM_T2"])
    with sipp.phone(
        "answer",
        int(w.ast["CONSENT_IVR_SIPP_PORT"]),
        w.tmp / "sipp",
        keys=[(t1, "1"), (t1 + t2, "1")],
    ):
        proc = await asyncio.to_thread(
            subprocess.run,
            [str(CLI), "call", phone],
            env=env,
            cwd=w.tmp,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{phone}: answered" in proc.stdout and "e2e-offers: granted" in proc.stdout
    with w.svc.db.session() as s:
        [attempt] = s.query(ContactAttempt).filter(ContactAttempt.phone == phone).all()
        channel_id = attempt.channel_id
    view = await wait_for_record(w.svc.db, str(channel_id), 30)
    assert (view["direction"], view["outcome"], view["phone"]) == ("outbound", "granted", phone)
    assert_evidence(view)
