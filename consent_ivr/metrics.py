"""Prometheus metrics (`GET /metrics`).

Two kinds. What only the call path sees as it happens (the delay from a key to the next
prompt, a database write, an ARI reconnect, a recording's bytes) is counted here, in this
process, by the functions below, which the call path calls. Everything else is read when
Prometheus scrapes (`scrape`): calls in progress from the running app, records by campaign and
outcome and the SMS queue from the database, so those figures are true even for work that
another process did (an `sms-worker`, a `consent-ivr withdraw`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consent_ivr.clock import now, utc
from consent_ivr.store.models import ConsentRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "consent_ivr"

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

KEYPRESS_TO_PROMPT = Histogram(
    f"{PREFIX}_keypress_to_prompt_seconds",
    "From a key the flow acted on to the start of the prompt that answers it (Asterisk's "
    "own event times)",
    buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
    registry=REGISTRY,
)
# Where a key's time goes, for the key -> next prompt delay above (wall clock of this host,
# which Asterisk's event times share): `read` Asterisk's DTMF event to our websocket reader;
# `queued` the reader to the call's task; `handled` the call's task to the next play request
# sent (the commit is in it for the decision key); `started` that request to Asterisk's
# PlaybackStarted. `key` is `menu` or `decision` (the confirmation, which commits first).
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KEYPRESS_STAGE = Histogram(
    f"{PREFIX}_keypress_stage_seconds",
    "Parts of the delay from a key to the next prompt: read, queued, handled, started",
    ["stage", "key"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
ARI_REQUEST = Histogram(
    f"{PREFIX}_ari_request_seconds",
    "ARI REST requests, from their start (a wait for a connection included) to the answer's "
    "headers, by method",
    ["method"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
ARI_POOL_WAIT = Histogram(
    f"{PREFIX}_ari_pool_wait_seconds",
    "Time an ARI request waited for a free connection of the HTTP client's pool",
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
DB_QUEUE = Histogram(
    f"{PREFIX}_db_queue_seconds",
    "Time a database job waited for a thread of its pool (writers: one for SQLite)",
    ["pool"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
DB_WRITE = Histogram(
    f"{PREFIX}_db_write_seconds",
    "Database write transactions, from their first statement to the commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
DB_BATCH = Histogram(
    f"{PREFIX}_db_batch_writes",
    "Calls' writes committed together in one transaction (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
API_READ_BATCH = Histogram(
    f"{PREFIX}_api_read_batch_requests",
    "GET /v1/consents requests answered together by one statement (PostgreSQL)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
    registry=REGISTRY,
)
ARI_PLAYLIST = Histogram(
    f"{PREFIX}_ari_playlist_prompts",
    "Prompts handed to Asterisk in one play request (a playlist)",
    buckets=(1, 2, 3, 4, 6),
    registry=REGISTRY,
)
CALLS_TURNED_AWAY = Counter(
    f"{PREFIX}_calls_turned_away",
    "Inbound calls not taken: busy (ari.max_calls reached), stopping (the service drains), "
    "bad_args (Stasis arguments that describe no call)",
    ["reason"],
    registry=REGISTRY,
)
ARI_RECONNECTS = Counter(
    f"{PREFIX}_ari_reconnects", "ARI websocket reconnections after a drop", registry=REGISTRY
)
RECORDING_BYTES = Counter(
    f"{PREFIX}_recording_bytes", "Bytes of call recordings stored", registry=REGISTRY
)
RECORDINGS = Counter(f"{PREFIX}_recordings", "Call recordings stored", registry=REGISTRY)
LOOP_LAG = Histogram(
    f"{PREFIX}_event_loop_lag_seconds",
    "How late the event loop ran a timer: time the loop was kept busy",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    f"{PREFIX}_gc_pause_seconds",
    "Each collection of Python's garbage collector, by generation: every thread waits for it",
    ["generation"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests",
    "HTTP requests answered, by route and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    f"{PREFIX}_http_request_seconds",
    "Time to answer an HTTP request, by route",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    f"{PREFIX}_api_rate_limited",
    "API requests refused by a token's rate limit",
    ["token"],
    registry=REGISTRY,
)


# ---- hooks for the call path ------------------------------------------------------------------


def keypress_answered(pressed_at: datetime, prompt_started_at: datetime) -> None:
    """A key the flow acted on, and the start of the prompt that followed it."""
    KEYPRESS_TO_PROMPT.observe(max(0.0, (prompt_started_at - pressed_at).total_seconds()))


def keypress_stage(stage: str, key: str, seconds: float) -> None:
    KEYPRESS_STAGE.labels(stage, key).observe(max(0.0, seconds))


@contextlib.contextmanager
def db_write() -> Iterator[None]:
    """Around a write transaction: `with metrics.db_write(): ...`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        DB_WRITE.observe(time.perf_counter() - start)


def ari_reconnected() -> None:
    ARI_RECONNECTS.inc()


def recording_stored(size: int) -> None:
    RECORDINGS.inc()
    RECORDING_BYTES.inc(size)


async def watch_loop(interval: float = 0.25) -> None:
    """Runs as a task for the life of the web app: each tick's lateness is the loop's lag."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        LOOP_LAG.observe(max(0.0, loop.time() - start - interval))


def watch_gc() -> None:
    """Time every collection of Python's garbage collector from now on (once per process)."""
    if _gc_timed not in gc.callbacks:
        gc.callbacks.append(_gc_timed)


_GC_BY_GENERATION = [GC_PAUSE.labels(str(g)) for g in range(3)]
_gc_started = [0.0]


def _gc_timed(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _GC_BY_GENERATION[info["generation"]].observe(time.perf_counter() - _gc_started[0])


# ---- read when scraped ------------------------------------------------------------------------

SMS_WAITING = ("queued", "sending")


@dataclass
class Snapshot:
    """What the database says at a scrape."""

    records: Tally[tuple[str, str, str]] = field(default_factory=Tally)
    sms: Tally[str] = field(default_factory=Tally)
    sms_oldest_waiting: datetime | None = None
    at: datetime = field(default_factory=now)


def snapshot(session: Session) -> Snapshot:
    """Four grouped queries, whatever the size of the database."""
    from consent_ivr.sms.models import SmsJob

    snap = Snapshot()
    grouped = select(
        ConsentRecord.campaign, ConsentRecord.kind, ConsentRecord.outcome, func.count()
    ).group_by(ConsentRecord.campaign, ConsentRecord.kind, ConsentRecord.outcome)
    for campaign, kind, outcome, n in session.execute(grouped):
        snap.records[(campaign, kind, outcome or "in_progress")] = n
    for status, n in session.execute(select(SmsJob.status, func.count()).group_by(SmsJob.status)):
        snap.sms[status] = n
    oldest = session.scalar(
        select(func.min(SmsJob.created_at)).where(SmsJob.status.in_(SMS_WAITING))
    )
    snap.sms_oldest_waiting = utc(oldest) if oldest is not None else None
    return snap


@dataclass(frozen=True)
class Live:
    """What the running process knows: its calls (campaign, direction) and its ARI link."""

    calls: Sequence[tuple[str, str]] = ()
    ari_connected: bool | None = None


class _Scraped:
    """A collector over one snapshot, for `generate_latest`."""

    def __init__(self, snap: Snapshot, live: Live) -> None:
        self.snap, self.live = snap, live

    def collect(self) -> Iterable[Metric]:
        calls = GaugeMetricFamily(
            f"{PREFIX}_calls_in_progress",
            "Calls this process is handling now",
            labels=["campaign", "direction"],
        )
        for (campaign, direction), n in sorted(Tally(self.live.calls).items()):
            calls.add_metric([campaign, direction], n)
        yield calls
        if self.live.ari_connected is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_ari_connected",
                "1 while the ARI websocket is connected",
                value=1 if self.live.ari_connected else 0,
            )
        records = GaugeMetricFamily(
            f"{PREFIX}_records",
            "Consent records by campaign, kind and outcome (in_progress: no outcome yet)",
            labels=["campaign", "kind", "outcome"],
        )
        for key, n in sorted(self.snap.records.items()):
            records.add_metric(list(key), n)
        yield records
        sms = GaugeMetricFamily(f"{PREFIX}_sms", "SMS jobs by status", labels=["status"])
        for status, n in sorted(self.snap.sms.items()):
            sms.add_metric([status], n)
        yield sms
        yield GaugeMetricFamily(
            f"{PREFIX}_sms_queue_depth",
            "SMS waiting to be sent or being sent (queued, sending)",
            value=sum(self.snap.sms[s] for s in SMS_WAITING),
        )
        oldest = self.snap.sms_oldest_waiting
        yield GaugeMetricFamily(
            f"{PREFIX}_sms_oldest_waiting_seconds",
            "Age of the oldest SMS waiting to be sent (0: none waits)",
            value=(self.snap.at - oldest).total_seconds() if oldest else 0.0,
        )


def exposition(snap: Snapshot, live: Live) -> bytes:
    """The text Prometheus reads: this process's counters, then what was read at the scrape."""
    return generate_latest(REGISTRY) + generate_latest(_Scraped(snap, live))  # type: ignore[arg-type]


def route_label(info: Any) -> str:
    """A request's route as a metric label: its pattern, never the values in it."""
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"
