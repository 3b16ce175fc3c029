"""Faults on a real Asterisk, each made for real: a forged dial string, a recordings folder that
is full or read-only, PostgreSQL stopped in the middle of a call and at its end (a private
cluster on its own port), Asterisk restarted in the middle of a call. Whatever happens, the call
ends with a closed record, nothing unstored is announced as stored, and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from consent_ivr import metrics
from consent_ivr.calls import journal_dir
from consent_ivr.service import Service, running
from consent_ivr.simulate import find_records, place_call, wait_for_record
from consent_ivr.store.models import Call
from tests.conftest import free_port
from tests.e2e.conftest import (
    assert_evidence,
    asterisk_env,
    e2e_config,
    keys,
    prompts,
)
from tests.pgcluster import PrivateCluster

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def phone() -> str:
    return f"+7903{secrets.randbelow(10**7):07d}"


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)
    return value


async def call(svc: Service, scenario: str = "agree", **kw: Any) -> str:
    channel_id = f"e2e-{uuid.uuid4().hex[:12]}"
    await place_call(
        svc.app.ari,
        svc.app.catalog,
        scenario,
        kw.pop("phone", None) or phone(),
        channel_id=channel_id,
        campaign="default",
        language="en",
        **kw,
    )
    return channel_id


# ---- forged arguments -------------------------------------------------------------------------


async def test_a_forged_dial_string_is_refused_and_touches_no_recording(service: Service) -> None:
    """The dialled `c-default,en,+7999...,mixmonitor:consent-<id>` once set the subject's phone
    and the recording name: the app then fetched and deleted another call's recording."""
    victim = await call(service)
    await asyncio.sleep(1.0)  # the victim's recording runs
    forged = f"c-default,en,+79990000000,mixmonitor:consent-{victim},recording=consent-{victim}"
    attacker = f"e2e-{uuid.uuid4().hex[:12]}"
    await service.app.ari.originate(
        "Local/silence@consent-sim",
        channel_id=attacker,
        context="consent-inbound",
        extension=forged,
        caller_id=phone(),
    )
    # And straight into the app, naming the victim's recording.
    direct = f"e2e-{uuid.uuid4().hex[:12]}"
    await service.app.ari.originate(
        "Local/silence@consent-sim",
        channel_id=direct,
        app_args=f"inbound,campaign=default,recording=consent-{victim}",
        caller_id=phone(),
    )
    v = await wait_for_record(service.db, victim, 120)
    assert v["outcome"] == "granted"
    assert_evidence(v)  # its recording stored, whole, matching its hash
    for refused in (attacker, direct):
        found = await service.db.run(lambda c=refused: find_records(service.db, c, finished=False))
        assert found is None, "a refused call left a record"


async def stored_recordings(svc: Service) -> set[str]:
    return {r["name"] for r in await svc.app.ari.request("GET", "/recordings/stored")}


async def test_a_call_refused_for_its_arguments_leaves_no_recording(service: Service) -> None:
    """The dialplan starts MixMonitor before Stasis; a call the app cannot take (here an unknown
    campaign) is hung up, and the recording the dialplan named for that channel is deleted."""
    refused = f"e2e-{uuid.uuid4().hex[:12]}"

    def counted() -> float:
        sample = metrics.REGISTRY.get_sample_value(
            "consent_ivr_calls_turned_away_total", {"reason": "bad_args"}
        )
        return sample or 0.0

    before = counted()
    await service.app.ari.originate(
        "Local/silence@consent-sim",
        channel_id=refused,
        context="consent-inbound",
        extension="c-nosuch",
        caller_id=phone(),
    )

    async def turned_away() -> bool:
        return counted() == before + 1

    await until(turned_away, 30, "the call to be refused")

    async def deleted() -> bool:
        return f"consent-{refused}" not in await stored_recordings(service)

    await until(deleted, 15, "the refused call's recording to be deleted")
    found = await service.db.run(lambda: find_records(service.db, refused, finished=False))
    assert found is None, "a refused call left a record"


# ---- the recordings folder --------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Any:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("fault", ["full", "read-only"])
async def test_a_recording_that_cannot_be_saved_loses_no_evidence(
    e2e_prompts_built: None, tmp_path: Path, fault: str
) -> None:
    ari = asterisk_env("22")
    folder = tmp_path / "rec"
    with tmpfs(folder, "8k", read_only=fault == "read-only"):
        conf = e2e_config(ari, f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
        conf = conf.model_copy(
            update={"recordings": conf.recordings.model_copy(update={"dir": folder})}
        )
        async with running(conf, sms_worker=False) as svc:
            v = await wait_for_record(svc.db, await call(svc), 120)
    assert v["outcome"] == "granted" and v["status"] == "given"
    assert v["recording"] is None
    failed = [e for e in v["events"] if e["kind"] == "recording_failed"]
    assert len(failed) == 1 and failed[0]["data"]["error"]
    assert [k[0] for k in keys(v)] == ["1", "1"] and "recorded_agree" in prompts(v)
    assert v["integrity"]["chain_ok"], v["integrity"]["problems"]


async def test_files_are_for_the_service_alone(service: Service) -> None:
    v = await wait_for_record(service.db, await call(service), 120)

    def modes() -> list[int]:
        path = Path(v["recording"]["path"])
        found = [path.stat().st_mode, path.parent.stat().st_mode]
        url = service.config.database.url
        if url.startswith("sqlite:///"):
            found.append(Path(url.removeprefix("sqlite:///")).stat().st_mode)
        return [stat.S_IMODE(m) for m in found]

    found = await asyncio.to_thread(modes)
    assert found[:2] == [0o600, 0o700]
    assert found[2:] in ([], [0o600])


# ---- PostgreSQL goes away -----------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def private_pg(
    e2e_prompts_built: None, tmp_path: Path
) -> AsyncIterator[tuple[Service, PrivateCluster]]:
    cluster = await asyncio.to_thread(PrivateCluster(free_port()).create)
    conf = e2e_config(asterisk_env("16"), cluster.url, tmp_path)
    try:
        async with running(conf, sms_worker=False) as svc:
            yield svc, cluster
    finally:
        await asyncio.to_thread(cluster.destroy)


async def closed(svc: Service, channel_id: str) -> dict[str, Any] | None:
    try:
        found = await svc.db.run(find_records, svc.db, channel_id)
    except Exception:
        return None  # the database is still coming back
    return found[0] if found else None


async def test_postgresql_down_mid_call_journals_the_call_and_never_grants(
    private_pg: tuple[Service, PrivateCluster],
) -> None:
    svc, cluster = private_pg
    channel = await call(svc)

    def started() -> bool:
        with svc.db.session() as s:
            return s.scalars(select(Call).where(Call.channel_id == channel)).first() is not None

    await until(lambda: svc.db.run(started), 10, "the call start stored")
    await asyncio.to_thread(cluster.stop)  # before the caller's decision
    folder = journal_dir(svc.config)
    await until(
        lambda: asyncio.to_thread(lambda: any(folder.glob("*.json"))), 90, "a journal entry"
    )
    await asyncio.to_thread(cluster.start)
    v = await until(lambda: closed(svc, channel), 60, "the journal written to the database")
    assert v["outcome"] == "failed" and v["status"] == "requested"
    assert "given" not in [e["kind"] for e in v["events"]]
    assert "recorded_agree" not in prompts(v) and prompts(v)[-2:] == ["failure", "goodbye"]
    assert [e["kind"] for e in v["events"]].count("store_failed") == 1
    assert_evidence(v)
    assert not any(folder.glob("*.json"))


async def test_postgresql_down_at_the_end_of_a_call_loses_nothing(
    private_pg: tuple[Service, PrivateCluster],
) -> None:
    svc, cluster = private_pg
    channel = await call(svc)

    def decided() -> bool:
        with svc.db.session() as s:
            c = s.scalars(select(Call).where(Call.channel_id == channel)).first()
            return c is not None and any(r.outcome == "granted" for r in c.records)

    await until(lambda: svc.db.run(decided), 60, "the decision stored")
    await asyncio.to_thread(cluster.stop)
    folder = journal_dir(svc.config)
    await until(
        lambda: asyncio.to_thread(lambda: any(folder.glob("*.json"))), 90, "a journal entry"
    )
    await asyncio.to_thread(cluster.start)
    v = await until(lambda: closed(svc, channel), 60, "the journal written to the database")
    assert v["outcome"] == "granted" and v["status"] == "given"
    assert prompts(v)[-2:] == ["recorded_agree", "goodbye"]
    assert_evidence(v)  # the recording too: kept on Asterisk until its row was committed
