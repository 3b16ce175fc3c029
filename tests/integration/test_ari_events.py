"""ARI events that are unexpected or malformed (unknown types, missing or mistyped fields, as
another Asterisk version or a bug may send them) are logged and ignored: the reader never stops,
a call never ends because of one. Property-based: the event router and a call's translator get
arbitrary JSON."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_ivr import flow as f
from consent_ivr.ari.app import ConsentApp
from consent_ivr.ari.call import CallContext, CallSession
from consent_ivr.ari.client import AriClient, event_target, event_time
from consent_ivr.calls import CallSetup
from consent_ivr.config import Config
from consent_ivr.prompts import Catalog
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.records import Subject

pytestmark = pytest.mark.integration

TYPES = [
    "StasisStart",
    "StasisEnd",
    "ChannelDtmfReceived",
    "PlaybackStarted",
    "PlaybackFinished",
    "RecordingStarted",
    "RecordingFinished",
    "RecordingFailed",
    "ChannelDestroyed",
    "ChannelHangupRequest",
    "ApplicationReplaced",
    "SomethingNew",
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = ["channel", "playback", "recording", "digit", "args", "timestamp"]
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=5) | st.integers()},
    optional={
        name: JSON
        | st.fixed_dictionaries(
            {"id": st.sampled_from(["ch-1", "snoop-x", 3, None])},
            optional={"target_uri": JSON, "state": JSON},
        )
        for name in FIELDS
    },
)
SETTINGS = settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@given(EVENTS)
@SETTINGS
def test_the_router_takes_any_event(event: dict[str, Any]) -> None:
    ari = AriClient("http://127.0.0.1:9", "u", "p", "app")
    queue: asyncio.Queue[Any] = asyncio.Queue()
    ari.route("ch-1", queue)
    started: list[Any] = []
    ari.on_stasis_start = started.append
    ari.dispatch(event)  # never raises
    routed = queue.qsize() + len(started)
    assert routed <= 1
    if queue.qsize():
        assert event_target(event) == "ch-1"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> CallSession:
    tmp = tmp_path_factory.mktemp("events")
    url = f"sqlite:///{tmp / 'c.db'}"
    upgrade(url)
    config = Config.model_validate(
        {"database": {"url": url}, "prompts": {"audio_dir": str(tmp / "audio")}}
    )
    ari = AriClient("http://127.0.0.1:9", "u", "p", "app")
    ctx = CallContext(ari, config, Database(url), Catalog(config), (), Path(tmp / "rec"))
    start = {"channel": {"id": "ch-1", "state": "Up"}}
    setup = CallSetup(
        direction="inbound",
        campaign="default",
        language="ru",
        subject=Subject("+79161234567", "caller-id"),
        channel_id="ch-1",
        started_at=datetime.now(UTC),
    )
    s = CallSession(ctx, start, setup)
    s.flow = f.ConsentFlow(s.rules)  # in START: no action reaches the (absent) Asterisk
    return s


@given(event=EVENTS.filter(lambda e: e.get("type") != "StasisStart"))
@SETTINGS
def test_a_call_ignores_malformed_events(session: CallSession, event: dict[str, Any]) -> None:
    before = (session.flow.step, len(session.store.pending), session.hung_up)
    try:
        asyncio.run(session._on_ari(event))
    except f.FlowError:
        pytest.fail(f"an event reached the flow in the wrong step: {event}")
    if event.get("type") in ("StasisEnd", "ChannelDestroyed", "ChannelHangupRequest"):
        session.hung_up = before[2]  # a well-formed hang-up is a real one; undo it
        session.flow = f.ConsentFlow(session.rules)
    assert session.flow.step is f.Step.START


def test_a_malformed_key_event_is_logged_by_type_only(
    session: CallSession, caplog: pytest.LogCaptureFixture
) -> None:
    event = {"type": "ChannelDtmfReceived", "channel": {"id": "ch-1"}}  # no digit
    with caplog.at_level(logging.WARNING):
        asyncio.run(session._on_ari(event))
    assert "ignored a malformed ARI event 'ChannelDtmfReceived': KeyError" in caplog.text


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.timezones(),
    )
)
@SETTINGS
def test_asterisk_timestamps_are_read_to_the_millisecond(at: datetime) -> None:
    offset = at.strftime("%z")  # as Asterisk writes it: +0300
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}" + offset
    read = event_time({"timestamp": stamp})
    assert read.tzinfo is UTC
    assert read == at.replace(microsecond=at.microsecond // 1000 * 1000).astimezone(UTC)


@pytest.mark.parametrize(
    "stamp", [None, "", "garbage", 20261201, "2026-12-01T12:00:00.123", ["2026-12-01"]]
)
def test_an_unreadable_or_zoneless_timestamp_is_taken_as_now(stamp: Any) -> None:
    before = datetime.now(UTC)
    read = event_time({"timestamp": stamp})
    assert before <= read <= datetime.now(UTC)


@pytest.mark.asyncio
async def test_the_ari_connection_pool_is_as_large_as_configured(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    for connections in (64, 256):
        config = Config.model_validate(
            {
                "database": {"url": url},
                "prompts": {"audio_dir": str(tmp_path / "audio")},
                "ari": {"connections": connections},
            }
        )
        app = ConsentApp(config, Database(url), Catalog(config), [])
        await app.ari.start(events=False)  # no request yet: nothing to connect to
        try:
            assert app.ari._session is not None
            assert app.ari._session.connector is not None
            assert app.ari._session.connector.limit == connections
        finally:
            await app.ari.close()
