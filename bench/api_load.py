"""Load figures of the hot path: `GET /v1/consents` at 100,000 stored records, 50 clients at once.

    .venv/bin/python bench/api_load.py --database sqlite [--records 100000] [--clients 50]
        [--rate R] [--seconds 20] [--calls 50 --asterisk 22 [--callers local]] [--profile FILE]
        [--direct N]
    .venv/bin/python bench/api_load.py --database postgresql ...

Seeds the database once through the store API (open_call, store_decision, finish_call; no
SMS, which the hot path does not read; a fifth refused, a tenth withdrawn), so every record is
a real chain; the seeded database is kept under var/ (SQLite) or as the PostgreSQL database
`consent_ivr_bench_api`, and reused. Then starts the service as its own process on 127.0.0.1
(`--calls 0`: the web app only; otherwise the whole service on a private Asterisk, with that
many callers kept on the line all along, each a new number that agrees: SIPp over SIP with RTP
by default, Local channels with `--callers local`), and runs the clients against it for
`--seconds` after a warm-up: each asks about a random seeded number and purpose. Prints
requests/s, latency percentiles, errors, the service's CPU, what the service itself measured
(handler time, event-loop lag, requests a hot-path statement) and, with calls, how they ended.
Everything is bounded: the run, each request, and the calls.
`--profile FILE` runs the service under cProfile and writes its statistics to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from consent_ivr.clock import now  # noqa: E402
from consent_ivr.config import Config  # noqa: E402
from consent_ivr.store import lifecycle, records  # noqa: E402
from consent_ivr.store.db import Database, upgrade  # noqa: E402
from consent_ivr.store.models import ConsentRecord  # noqa: E402
from consent_ivr.store.records import Evidence, NewCall, NewRecord, Subject  # noqa: E402
from tests.conftest import free_port  # noqa: E402

PURPOSES = ("marketing-calls", "sms-news")
BENCH_DB = "consent_ivr_bench_api"
T0 = datetime(2025, 6, 1, tzinfo=UTC)
TICK = os.sysconf("SC_CLK_TCK")


def phone_of(i: int) -> str:
    return f"+7916{i:07d}"


def base_config(url: str, root: Path) -> dict[str, Any]:
    purpose = {
        "text": {"en": "offers", "ru": "предложения"},
        "data_categories": {"en": "phone", "ru": "телефон"},
        "withdrawal": {"en": "call us", "ru": "позвоните нам"},
        "validity": "P5Y",
        # Nothing of the seeded data falls due while the bench runs.
        "retention": "P10Y",
        "erase_after_withdrawal": "P10Y",
    }
    return {
        "database": {"url": url},
        "recordings": {"dir": str(root / "recordings")},
        "prompts": {"audio_dir": str(root / "audio")},
        # The retention run at start would scan every record first: from cron, not here.
        "evidence": {"checkpoints": str(root / "checkpoints.jsonl"), "purge_interval_s": 0},
        "sms": {"log": {"file": str(root / "sms.jsonl"), "echo": False}},
        "purposes": dict.fromkeys(PURPOSES, purpose),
        "campaigns": {
            name: {
                "language": "en",
                "languages": ["en", "ru"],
                "controller": {"name": {"en": "Bench", "ru": "Бенч"}},
                "purposes": list(purposes),
            }
            # The seeded records ask for both purposes; the simulated callers for one.
            for name, purposes in (("default", PURPOSES), ("calls", PURPOSES[:1]))
        },
        "api": {"rate_per_s": 1e6, "burst": 1_000_000},
    }


# ---- seeding ----------------------------------------------------------------------------------


def count(db: Database) -> int:
    from sqlalchemy import func, select

    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(ConsentRecord)) or 0)


def seed(db: Database, config: Any, n: int, batch: int = 25) -> None:
    """n records: n/2 calls of two purposes each, through the store API, `batch` calls a
    transaction."""
    have = count(db)
    calls = (n - have) // 2
    if calls <= 0:
        return
    rng = random.Random(7)
    start = time.monotonic()
    first = have // 2
    for offset in range(0, calls, batch):
        with db.session() as s:
            for i in range(first + offset, first + min(offset + batch, calls)):
                at = T0 + timedelta(minutes=i)
                phone = phone_of(i)
                call_id, rids = records.open_call(
                    s,
                    NewCall(
                        f"PJSIP/bench-{i:08d}",
                        "inbound",
                        "default",
                        "en",
                        "RU",
                        {"name": "Bench"},
                        at,
                        Subject(phone, "caller-id", phone, "+74950000000"),
                    ),
                    [
                        NewRecord("consent", config.purpose_snapshot("default", p, "en"))
                        for p in PURPOSES
                    ],
                )
                roll = rng.random()
                outcome = "declined" if roll < 0.2 else "granted"
                for k, rid in enumerate(rids):
                    keys = [
                        (rid, Evidence(at + timedelta(seconds=5), "key", "ask", {"digit": "1"})),
                        (
                            rid,
                            Evidence(at + timedelta(seconds=7), "key", "confirm", {"digit": "1"}),
                        ),
                    ]
                    records.store_decision(s, rid, outcome, at + timedelta(seconds=8 + k), keys)
                records.finish_call(
                    s, call_id, dict.fromkeys(rids, outcome), at + timedelta(seconds=12), [], None
                )
                if outcome == "granted" and roll > 0.9:
                    targets = lifecycle.active(s, phone, None, at + timedelta(days=1))
                    lifecycle.withdraw(
                        s,
                        targets,
                        at + timedelta(days=1),
                        channel="operator",
                        by="bench",
                        reason="bench",
                    )
        done = offset + batch
        rate = done / (time.monotonic() - start)
        print(
            f"  seeded {min(done, calls) * 2 + have} records ({rate:.0f} calls/s)", file=sys.stderr
        )


def copy_rows(source: Database, target: Database) -> None:
    """Every row of the seeded SQLite database into the new PostgreSQL one, as it is: the
    same records, events and ledger (their hashes do not depend on the database), much faster
    than writing them again through the store API over the network."""
    from sqlalchemy import inspect, text

    import consent_ivr.api.models  # noqa: F401  (every table joins the metadata)
    import consent_ivr.sms.models  # noqa: F401
    from consent_ivr.store.models import Base

    with source.engine.connect() as src, target.engine.begin() as dst:
        dst.execute(text("SET TIME ZONE 'UTC'"))  # SQLite hands back UTC times without a zone
        for table in Base.metadata.sorted_tables:
            if table.name == "ledger_head":
                dst.execute(table.delete())  # the migration's genesis row
            rows = src.execute(table.select()).mappings()
            while batch := [dict(r) for r in rows.fetchmany(5000)]:
                dst.execute(table.insert(), batch)
            if "id" in table.c and table.c.id.autoincrement is True:
                dst.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
                    )
                )
        assert inspect(dst).has_table("consent_events")


def database_url(kind: str, *, fresh: bool = False) -> str:
    if kind == "sqlite":
        path = REPO / "var" / "bench" / "api-load.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    server = make_url(
        kind
        if "://" in kind
        else os.environ.get("CONSENT_IVR_TEST_PG", "postgresql://root@127.0.0.1:5432")
    )
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)
        ).fetchone()
        if exists and fresh:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        if not exists or fresh:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    return server.set(drivername="postgresql", database=BENCH_DB).render_as_string(
        hide_password=False
    )


def seed_from_sqlite(db: Database, n: int) -> Database:
    """A new PostgreSQL bench database holding the SQLite one's rows (seeded first if need be)."""
    sqlite_url = database_url("sqlite")
    upgrade(sqlite_url)
    source = Database(sqlite_url)
    try:
        seed(source, Config.model_validate(base_config(sqlite_url, REPO / "var")), n)
        db.close()
        url = database_url(db.url, fresh=True)
        upgrade(url)
        target = Database(url)
        start = time.monotonic()
        copy_rows(source, target)
        print(
            f"  copied {count(target)} records in {time.monotonic() - start:.0f}s", file=sys.stderr
        )
        return target
    finally:
        source.close()


# ---- the service ------------------------------------------------------------------------------


def serve(config_file: Path) -> None:
    """The service process, as the product runs: `consent-ivr run` (with `ari`: it takes the
    calls and answers the API) or `consent-ivr api` (the web app alone, its port shared with
    the other such processes). Both freeze their start-up heap (`service.settle_heap`)."""
    from consent_ivr import logs
    from consent_ivr.service import serve_api, serve_forever

    logs.setup("WARNING")
    data = json.loads(config_file.read_text())
    config_file.unlink()  # it holds the ARI password
    config = Config.model_validate(data)
    if data.get("ari"):
        asyncio.run(serve_forever(config))
    else:
        asyncio.run(serve_api(config, config.http.port))


def start_service(data: dict[str, Any], profile: str | None) -> subprocess.Popen[bytes]:
    fd, name = tempfile.mkstemp(prefix="api-load-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", profile]
    command += [str(Path(__file__).resolve()), "--serve", name]
    return subprocess.Popen(command, cwd=REPO)


async def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until `process` itself answers /healthz (each try a new connection, which the kernel
    may hand to any process sharing the port)."""
    deadline = time.monotonic() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited ({process.returncode})")
            try:
                async with http.get(base + "/healthz") as r:
                    if r.status == 200 and (await r.json()).get("pid") == process.pid:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the service (pid {process.pid}) did not answer /healthz")


def machine_busy() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICK


def service_cpu(processes: list[subprocess.Popen[bytes]]) -> float:
    return sum(cpu_seconds(p.pid) for p in processes)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# ---- load -------------------------------------------------------------------------------------


class _Lean(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a request is written, and its answer is read as a
    status line, headers with Content-Length (every answer of the service has one) and that
    many bytes. The least a client can do per request: on this machine's two cores the
    clients share the CPU with the service, and aiohttp's client took about half a core at
    1,400 requests a second."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.answer is None or self.answer.done():
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self.answer.set_exception(ValueError(f"an answer without Content-Length: {head!r}"))
            return
        stop = head.find(b"\r\n", at + 2)
        size = end + 4 + int(head[at + 17 : stop if stop > 0 else len(head)])
        if len(self.buf) >= size:
            del self.buf[:size]
            self.answer.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError(f"the connection closed: {exc}"))

    def ask(self, request: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.answer


async def load(
    base: str,
    token: str,
    phones: int,
    clients: int,
    warmup: float,
    seconds: float,
    path: str = "/v1/consents",
    rate: float = 0.0,
    client_kind: str = "lean",
) -> dict[str, Any]:
    """`clients` loops, each one request at a time, for warmup + seconds; latencies of the
    measured window only. `path` /healthz measures the floor: the server and these clients
    without the database.

    `rate` 0: a closed loop, each client sends its next request when the answer came (the
    most the server answers, and latency = clients / throughput). `rate` R: an open loop, R
    requests a second in all on a fixed schedule shared by the clients, as integrators ask
    before each contact; each latency counts from when the request was due, so an answer
    that held the next request back is charged for that wait too.

    `client_kind` "lean": each client one connection of `_Lean`; "aiohttp": aiohttp's client
    session (a pool of `clients` connections), as an integrator's Python would ask."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    head = f" HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    statuses: Counter[int | str] = Counter()
    t_start = time.monotonic()
    measure_from, stop_at = t_start + warmup, t_start + warmup + seconds
    timeout = aiohttp.ClientTimeout(total=5)
    connector = aiohttp.TCPConnector(limit=clients)
    loop = asyncio.get_running_loop()

    interval = clients / rate if rate else 0.0
    first_due = time.perf_counter()

    async def client(n: int) -> None:
        rng = random.Random(n)
        due = first_due + interval * n / clients
        conn: _Lean | None = None
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            if interval:
                if due > t:
                    await asyncio.sleep(due - t)
                t, due = due, due + interval
            phone, purpose = phone_of(rng.randrange(phones)), rng.choice(PURPOSES)
            status: int | str
            try:
                if client_kind == "aiohttp":
                    params = {"phone": phone, "purpose": purpose}
                    async with http.get(base + path, params=params, headers=headers) as r:
                        await r.read()
                        status = r.status
                else:
                    if conn is None:
                        _, conn = await loop.create_connection(_Lean, host, int(port))
                    query = f"?phone=%2B{phone[1:]}&purpose={purpose}" if "consents" in path else ""
                    request = f"GET {path}{query}{head}".encode()
                    status = await asyncio.wait_for(conn.ask(request), 5)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                status = type(e).__name__
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                conn = None
            if time.monotonic() >= measure_from:
                latencies.append(time.perf_counter() - t)
                statuses[status] += 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    cpu0 = time.process_time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(client(n) for n in range(clients)))
    clients_cpu = (time.process_time() - cpu0) / (time.monotonic() - t_start)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": latencies[-1] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "statuses": dict(statuses),
        "client": client_kind,
        "clients_cpu": clients_cpu,
    }


# ---- calls ------------------------------------------------------------------------------------


def asterisk_env(version: str) -> dict[str, str]:
    from tests.e2e.conftest import asterisk_env as start

    return start(version)


async def keep_calls(
    ari_env: dict[str, str], config: Any, n: int, stop: asyncio.Event
) -> Counter[str]:
    """Keep `n` simulated callers on the line until `stop`; how the finished ones ended."""
    from consent_ivr.ari.client import AriClient
    from consent_ivr.prompts import Catalog
    from consent_ivr.simulate import place_call

    catalog = Catalog(config)
    ari = AriClient(
        ari_env["CONSENT_IVR_ARI_URL"],
        ari_env["CONSENT_IVR_ARI_USER"],
        ari_env["CONSENT_IVR_ARI_PASSWORD"],
        "bench-caller",
    )
    await ari.start(events=False)
    live: set[str] = set()
    placed = 0
    try:
        while not stop.is_set():
            channels = {c["id"] for c in await ari.request("GET", "/channels")}
            live &= channels
            while len(live) < n and not stop.is_set():
                cid = f"load-{uuid.uuid4().hex[:12]}"
                await place_call(
                    ari,
                    catalog,
                    "agree",
                    f"+7917{secrets.randbelow(10**7):07d}",  # a new caller: they agree
                    channel_id=cid,
                    campaign="calls",
                    language="en",
                )
                live.add(cid)
                placed += 1
            await asyncio.sleep(0.5)
    finally:
        await ari.close()
    return Counter({"placed": placed})


async def keep_sip_calls(
    ari_env: dict[str, str], config: Any, n: int, stop: asyncio.Event, folder: Path, ramp: float
) -> Counter[str]:
    """Keep `n` SIP callers (SIPp, audio all along, RFC 4733 keys; each a new number that
    agrees) on the line until `stop`, then let the calls in progress end."""
    from consent_ivr.prompts import Catalog
    from consent_ivr.simulate import timings
    from tests.sipp import caller

    catalog = Catalog(config)
    t = timings(catalog, "calls", config.campaigns["calls"].language)
    t1, t2 = float(t["__SIM_T1"]), float(t["__SIM_T2"])
    keys = config.campaigns["calls"].keys
    behaviour = caller.Behaviour("agree", keys=[(t1, keys.agree), (t1 + t2, keys.confirm)])
    # More numbers than the run can use: SIPp stops placing calls when told, not when out.
    numbers = [f"+7917{secrets.randbelow(10**7):07d}" for _ in range(n * 40)]
    group = caller.start(
        behaviour,
        numbers,
        target=f"127.0.0.1:{ari_env['CONSENT_IVR_SIP_PORT']}",
        exten="c-calls",
        folder=folder,
        port=25100,
        rate=n / ramp,
        limit=n,
    )
    try:
        await stop.wait()
    finally:
        group.proc.send_signal(signal.SIGUSR1)  # place no more; end when the calls have
        await asyncio.to_thread(group.wait, 90)
    return Counter({"placed": len(group.answered()), "sipp_exit": group.proc.returncode})


def outcomes_since(db: Database, since: datetime) -> Counter[str]:
    from sqlalchemy import select

    with db.session() as s:
        rows = s.scalars(
            select(ConsentRecord.outcome).where(ConsentRecord.started_at >= since)
        ).all()
    return Counter(str(o) for o in rows)


# ---- the service's own view --------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


async def scrape_metrics(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
        return await r.text()


def server_side(before: str, after: str, path: str) -> dict[str, float | None]:
    """What the service measured between two scrapes of its /metrics: the time in its handler
    chain for `path` (p50/p99), its event loop's lag (p99), and the hot read's batches (mean
    requests a statement). Latency the clients see beyond the handler's is waiting: in the
    socket, for the loop, or for a core."""
    from bench.sip_calls import bucket_quantile, scrape

    b, a = scrape(before), scrape(after)
    route = f"consent_ivr_http_request_seconds,route={path}"
    lag = "consent_ivr_event_loop_lag_seconds"
    batch = "consent_ivr_api_read_batch_requests"
    quant = {
        "handler_p50_ms": (route, 0.5),
        "handler_p99_ms": (route, 0.99),
        "loop_lag_p99_ms": (lag, 0.99),
    }
    out: dict[str, float | None] = {
        k: bucket_quantile(b.get(name, {}), a.get(name, {}), q) if name in a else None
        for k, (name, q) in quant.items()
    }

    def total(text: str, suffix: str) -> float:
        for line in text.splitlines():
            if line.startswith(f"{batch}_{suffix} "):
                return float(line.split()[1])
        return 0.0

    n = total(after, "count") - total(before, "count")
    out["read_batch_mean"] = (total(after, "sum") - total(before, "sum")) / n if n else None
    return out


# ---- in process --------------------------------------------------------------------------------


async def direct(db: Database, config: Config, phones: int, n: int) -> None:
    """The answer's database work alone, in this process: `consent_status` in a session
    against its baseline, the same two queries sent straight through the driver."""
    from sqlalchemy import text

    from consent_ivr.api import services
    from consent_ivr.store import lifecycle

    rng = random.Random(1)
    asks = [(phone_of(rng.randrange(phones)), rng.choice(PURPOSES)) for _ in range(n)]

    def answer(phone: str, purpose: str) -> None:
        with db.session() as s:
            services.consent_status(s, config, phone, purpose, now())

    compiled = [
        q.compile(dialect=db.engine.dialect) for q in (lifecycle._STATES_ONE, lifecycle._REGISTER)
    ]
    fixed = [c.construct_params({"phone": "", "purpose": ""}) for c in compiled]

    def baseline(phone: str, purpose: str) -> None:
        with db.engine.connect() as c:
            cursor = c.connection.driver_connection.cursor()  # type: ignore[union-attr]
            for query, params in zip(compiled, fixed, strict=True):
                args: Any = {**params, "phone": phone, "purpose": purpose}
                if query.positiontup is not None:  # SQLite's ? placeholders
                    args = tuple(args[k] for k in query.positiontup)
                cursor.execute(str(query), args)
                cursor.fetchall()
            c.execute(text("SELECT 1"))  # the same transaction shape: begin, reads, end

    def timed(fn: Any) -> float:
        for phone, purpose in asks[:200]:
            fn(phone, purpose)
        start = time.perf_counter()
        for phone, purpose in asks:
            fn(phone, purpose)
        return (time.perf_counter() - start) / n * 1e6

    ours, raw = timed(answer), timed(baseline)
    print(
        f"consent_status on {db.dialect}, {n} answers in one thread: {ours:.0f} µs each; the "
        f"same queries through the driver alone: {raw:.0f} µs (ratio {ours / raw:.2f})"
    )
    if db.dialect == "postgresql":
        wall, cpu = await hot_path(db, config, asks)
        print(
            f"the hot path as the API reads on PostgreSQL (pgasync, one statement on the loop), "
            f"one request at a time: {wall:.0f} µs each, {cpu:.0f} µs of this process's CPU "
            f"(ratio to the session path {wall / ours:.2f})"
        )


async def hot_path(
    db: Database, config: Config, asks: list[tuple[str, str]]
) -> tuple[float, float]:
    """µs of wall time and of CPU per answer through `pgasync.AsyncPg`, one after another."""
    from consent_ivr.api import services
    from consent_ivr.store.pgasync import AsyncPg

    pg = AsyncPg(db.engine.url)
    try:
        for phone, purpose in asks[:200]:
            await pg.consents(phone, purpose)
        start, cpu = time.perf_counter(), time.process_time()
        for phone, purpose in asks:
            rows, entries = await pg.consents(phone, purpose)
            services.consent_status_of(config, phone, purpose, rows, entries, now())
        n = len(asks)
        return (time.perf_counter() - start) / n * 1e6, (time.process_time() - cpu) / n * 1e6
    finally:
        await pg.close()


# ---- main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    url = database_url(args.database)
    root = REPO / "var" / "bench" / "api-load"
    root.mkdir(parents=True, exist_ok=True)
    data = base_config(url, root)
    upgrade(url)
    db = Database(url)
    try:
        if db.dialect == "postgresql" and count(db) < args.records:
            db = seed_from_sqlite(db, args.records)
            url = db.url
        seed(db, Config.model_validate(data), args.records)
        total = count(db)
        if args.seed_only:
            print(f"{total} records in {db.dialect}")
            return 0
        if args.direct:
            await direct(db, Config.model_validate(data), total // 2, args.direct)
            return 0
        from consent_ivr.api import tokens

        with db.session() as s:
            _, token = tokens.create(s, f"bench-{uuid.uuid4().hex[:6]}", ["read"], now(), 1e6)
        port = args.port or free_port()
        data["http"] = {"host": "127.0.0.1", "port": port}
        ari_env: dict[str, str] = {}
        if args.calls:
            from tests.e2e.conftest import E2E_PROMPTS, SHARE, e2e_prompts_built  # noqa: F401

            ari_env = asterisk_env(args.asterisk)
            data["ari"] = {
                "url": ari_env["CONSENT_IVR_ARI_URL"],
                "user": ari_env["CONSENT_IVR_ARI_USER"],
                "password": ari_env["CONSENT_IVR_ARI_PASSWORD"],
                "app": "consent-ivr",
            }
            data["prompts"] = {"dir": str(E2E_PROMPTS), "audio_dir": str(SHARE / "bench-api")}
            data["flow"] = {"key_timeout_s": 1.5}
            from consent_ivr.prompts import Catalog

            await asyncio.to_thread(Catalog(Config.model_validate(data)).build)
        base = f"http://127.0.0.1:{port}"
        sipp_dir = tempfile.TemporaryDirectory(prefix="api-load-sipp-")
        processes = [start_service(data, args.profile)]
        try:
            await wait_ready(base, processes[0])
            for _ in range(args.processes - 1):
                processes.append(start_service(data, None))
                await wait_ready(base, processes[-1])
            if args.beside:
                # As `consent-ivr api` beside `consent-ivr run`: the web app alone, on a port
                # of its own that its processes share; the clients ask these.
                base = f"http://127.0.0.1:{free_port()}"
                beside = {k: v for k, v in data.items() if k != "ari"}
                beside["http"] = {"host": "127.0.0.1", "port": int(base.rsplit(":", 1)[1])}
                for _ in range(args.beside):
                    processes.append(start_service(beside, None))
                    await wait_ready(base, processes[-1])
            stop = asyncio.Event()
            calls = None
            started_at = now()
            if args.calls:
                config = Config.model_validate(data)
                calls = asyncio.create_task(
                    keep_calls(ari_env, config, args.calls, stop)
                    if args.callers == "local"
                    else keep_sip_calls(
                        ari_env, config, args.calls, stop, Path(sipp_dir.name), args.ramp
                    )
                )
                await asyncio.sleep(args.ramp)
            # With several processes on one port a scrape reaches any one of them: not read.
            askers = args.beside or args.processes
            seen0 = await scrape_metrics(base) if askers == 1 else None
            cpu0, busy0, t0 = service_cpu(processes), machine_busy(), time.monotonic()
            calls_cpu0 = service_cpu(processes[:1])
            result = await load(
                base,
                token,
                total // 2,
                args.clients,
                args.warmup,
                args.seconds,
                args.path,
                args.rate,
                args.client,
            )
            elapsed = time.monotonic() - t0
            server = server_side(seen0, await scrape_metrics(base), args.path) if seen0 else {}
            cpu = (service_cpu(processes) - cpu0) / elapsed
            calls_cpu = (service_cpu(processes[:1]) - calls_cpu0) / elapsed
            busy = (machine_busy() - busy0) / elapsed
            placed: Counter[str] = Counter()
            if calls is not None:
                stop.set()
                placed = await calls
                if args.callers == "local":
                    await asyncio.sleep(20)  # let the last calls end
        finally:
            sipp_dir.cleanup()
            for process in processes:
                process.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
        print(
            f"GET {args.path} on {db.dialect}, {total} records, {args.clients} clients, "
            f"{args.seconds:g}s measured after {args.warmup:g}s warm-up"
            + (f", offered {args.rate:g} requests/s" if args.rate else ", closed loop")
            + (f", {args.processes} API processes" if args.processes > 1 else "")
            + (f", asking {args.beside} API processes beside the service" if args.beside else "")
            + (f", {args.calls} consent calls kept running ({args.callers})" if args.calls else "")
        )
        print(
            f"  {result['rps']:.0f} requests/s ({result['requests']} requests); latency p50 "
            f"{result['p50_ms']:.2f} ms, p90 {result['p90_ms']:.2f} ms, p99 "
            f"{result['p99_ms']:.2f} ms, max {result['max_ms']:.1f} ms; statuses "
            f"{result['statuses']}"
        )
        print(
            f"  service CPU (all its processes): {cpu * 100:.0f}% of one core; the machine busy "
            f"{busy * 100:.0f}% of one core ({os.cpu_count()} cores here)"
            + (f"; the one taking the calls {calls_cpu * 100:.0f}%" if args.beside else "")
            + f"; the clients ({args.client}, this process) {result['clients_cpu'] * 100:.0f}%"
        )
        if server:
            print(
                "  in the service (warm-up included): handler p50 / p99 "
                + " / ".join(_ms(server[k]) for k in ("handler_p50_ms", "handler_p99_ms"))
                + f", event-loop lag p99 {_ms(server['loop_lag_p99_ms'])}"
                + (
                    f", {server['read_batch_mean']:.2f} requests a statement"
                    if server["read_batch_mean"]
                    else ""
                )
            )
        if args.calls:
            print(f"  calls: {dict(placed)}, ended: {dict(outcomes_since(db, started_at))}")
        if args.json:
            figures = json.dumps(
                {
                    **result,
                    "cpu": cpu,
                    "records": total,
                    "rate": args.rate,
                    "server": server,
                    "calls": args.calls and {"n": args.calls, "callers": args.callers},
                    "beside": args.beside,
                    "calls_service_cpu": calls_cpu if args.beside else None,
                    "outcomes": dict(outcomes_since(db, started_at)) if args.calls else None,
                }
            )
            await asyncio.to_thread(Path(args.json).write_text, figures)
        return 0 if set(result["statuses"]) == {200} else 1
    finally:
        db.close()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--database", default="sqlite", help="sqlite, postgresql, or a PostgreSQL URL")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests/s offered in all (an open loop); 0: each client asks again at once",
    )
    p.add_argument(
        "--client",
        choices=("lean", "aiohttp"),
        default="lean",
        help="the clients: one bare HTTP/1.1 connection each, or aiohttp's client",
    )
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="API processes sharing the port, as `consent-ivr api` (without --calls)",
    )
    p.add_argument(
        "--beside",
        type=int,
        default=0,
        metavar="K",
        help="with --calls: K API processes beside the service (its own port), asked instead",
    )
    p.add_argument("--calls", type=int, default=0, help="consent calls kept running (Asterisk)")
    p.add_argument(
        "--callers",
        choices=("sip", "local"),
        default="sip",
        help="the calls' callers: SIPp over SIP with RTP (as phones), or Local channels",
    )
    p.add_argument("--ramp", type=float, default=15.0, help="seconds for the calls to start")
    p.add_argument("--asterisk", default="22")
    p.add_argument("--port", type=int, default=0, help="default: a free one")
    p.add_argument("--profile", help="cProfile the service into this file")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--seed-only", action="store_true", help="seed the database, then stop")
    p.add_argument(
        "--direct",
        type=int,
        default=0,
        metavar="N",
        help="time N answers' database work in this process (no HTTP), against raw queries",
    )
    p.add_argument(
        "--path",
        default="/v1/consents",
        choices=("/v1/consents", "/healthz"),
        help="/healthz: the floor (HTTP server and clients, no database)",
    )
    args = p.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return 0
    if args.processes > 1 and args.calls:
        p.error("--processes: the web app alone (with --calls: --beside K)")
    if args.beside and not args.calls:
        p.error("--beside: API processes beside a service taking --calls")
    if (
        args.seconds > 300
        or args.clients > 500
        or args.rate > 20_000
        or args.processes > 8
        or args.beside > 8
    ):
        p.error("bounded: at most 300 s, 500 clients, 20,000 requests/s and 8 processes")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
