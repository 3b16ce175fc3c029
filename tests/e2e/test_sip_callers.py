"""People phoning in over real SIP (SIPp callers, tests/sipp/caller.py) on the real Asterisks
(22 with SQLite, 16 with PostgreSQL): each sends microphone audio all the time, presses keys as
RFC 4733 events and has its own caller ID, which becomes the record's subject. The soak
(bench/soak.py) and the benchmark drive the same callers by the thousand; this checks that they
and the inbound SIP path do what they claim, a few calls at once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from consent_ivr.prompts import Catalog
from consent_ivr.service import Service, running
from consent_ivr.simulate import timings
from consent_ivr.store.models import Call
from consent_ivr.store.records import record_view
from tests.e2e.conftest import BACKENDS, assert_evidence, asterisk_env, database_url, e2e_config
from tests.sipp import caller
from tests.sipp import phone as sipp
from tests.sipp.caller import Behaviour

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(sipp.available() is not None, reason=str(sipp.available())),
]


@dataclass
class World:
    svc: Service
    ast: dict[str, str]
    tmp: Path

    def views(self, number: str) -> list[dict[str, Any]]:
        with self.svc.db.snapshot() as s:  # heads and events at one moment
            calls = s.scalars(select(Call).where(Call.caller_number == number)).all()
            return [record_view(s, r.record_id) for c in calls for r in c.records]


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
    tmp = tmp_path_factory.mktemp(f"sipcallers{version}")
    url = database_url(request, database, tmp)
    conf = e2e_config(ast, url, tmp)
    await asyncio.to_thread(Catalog(conf).build)
    async with running(conf) as svc:
        yield World(svc, ast, tmp)


async def call_in(w: World, *behaviours: Behaviour) -> dict[str, list[dict[str, Any]]]:
    """One caller of each behaviour, all at once; their records by behaviour name once every
    call has ended."""
    sip_port = int(w.ast["CONSENT_IVR_SIPP_PORT"]) + 10
    groups = []
    for k, b in enumerate(behaviours):
        number = f"+7495{secrets.randbelow(10**7):07d}"
        groups.append(
            caller.start(
                b,
                [number],
                target=f"127.0.0.1:{w.ast['CONSENT_IVR_SIP_PORT']}",
                exten="c-default",
                folder=w.tmp / "sipp",
                port=sip_port + 2 * k,
                media_port=sip_port + 25000 + 100 * k,
            )
        )
    await asyncio.gather(*(asyncio.to_thread(g.wait, 120) for g in groups))
    for g in groups:
        assert g.answered() == set(g.numbers), (g.behaviour.name, g.errors()[-2000:])
    out = {}
    for g in groups:
        for _ in range(100):  # the record is closed once the recording is stored
            views = w.views(g.numbers[0])
            if views and all(v["ended_at"] for v in views):
                break
            await asyncio.sleep(0.2)
        out[g.behaviour.name] = views
    return out


def acted(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k["step"], k["digit"]) for k in view["keys"] if k["acted_on"]]


async def test_sip_callers_agree_decline_wrong_key_and_hang_up(world: World) -> None:
    t = timings(world.svc.app.catalog, "default", "en")
    t1, t2 = float(t["__SIM_T1"]), float(t["__SIM_T2"])
    got = await call_in(
        world,
        Behaviour("agree", [(t1, "1"), (t1 + t2, "1")]),
        Behaviour("decline", [(t1, "2"), (t1 + t2, "1")]),
        # one wrong key is one invalid answer (audio paused while the key's events go out)
        Behaviour("wrong", [(t1, "9"), (t1 + t2, "1"), (t1 + 2 * t2, "1")]),
        Behaviour("hangup", [(t1, "1")], hangup_at=t1 + 0.5),
    )
    outcomes = {name: [v["outcome"] for v in views] for name, views in got.items()}
    assert outcomes == {
        "agree": ["granted"],
        "decline": ["declined"],
        "wrong": ["granted"],
        "hangup": ["abandoned"],
    }
    for name, (view,) in got.items():
        assert_evidence(view)
        assert view["phone_source"] == "caller-id", name
        assert view["recording"] and view["recording"]["duration_s"] > 1, name
    assert acted(got["agree"][0]) == [("ask", "1"), ("confirm", "1")]
    assert acted(got["wrong"][0]) == [("ask", "9"), ("ask", "1"), ("confirm", "1")]
    assert [p["prompt"] for p in got["wrong"][0]["prompts"]].count("invalid") == 1
    assert acted(got["hangup"][0]) == [("ask", "1")]
