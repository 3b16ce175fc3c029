"""The database side of N consent calls at once, without Asterisk: what each call costs the
service in CPU, and how long a caller's decision waits for its commit when all N decide in the
same moment (the worst case of bench/sip_calls.py, isolated from audio and ARI).

Every call goes through the production `CallStore` (consent_ivr/calls.py) with the service's
own decision hooks (the SMS outbox on the log gateway): the caller's active consents read, the
call opened, the evidence of a real call (27 events: prompts with their words, keys, states)
written ahead of the decision, the decision with its SMS job, the call's end with its
recording. The N calls run each phase together.

Baseline, in the same process: the same number of event rows, hashed the same way, inserted
with the driver's executemany in as many transactions (the floor of what storing this evidence
costs); the ratio is CPU per call over the baseline's.

    .venv/bin/python bench/store_calls.py --calls 1,50,200 --database sqlite
    .venv/bin/python bench/store_calls.py --calls 200 --database postgresql --rounds 3
    .venv/bin/python bench/store_calls.py --calls 0 --one-by-one 300

--one-by-one K: K calls one after another on a warm database (after 5 not counted), each
phase awaited before the next, so no write shares a batch: what a call costs when calls do
not coincide (the steady state of bench/sip_calls.py --waves), against the same floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.harness import pct  # noqa: E402
from consent_ivr import flow as f  # noqa: E402
from consent_ivr.calls import CallSetup, CallStore  # noqa: E402
from consent_ivr.config import Config  # noqa: E402
from consent_ivr.service import decision_hooks  # noqa: E402
from consent_ivr.store import chain  # noqa: E402
from consent_ivr.store.db import Database, normalize_url, upgrade  # noqa: E402
from consent_ivr.store.records import DecisionHook, RecordingInfo, Subject  # noqa: E402

PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
PG_DB = "consent_ivr_bench_store"

TEXT = (
    "Вам звонит ООО Ромашка. Мы просим ваше согласие на звонки с предложениями. Мы будем "
    "обрабатывать номер телефона и историю обращений и хранить их 3 года."
)


def prompt(name: str) -> tuple[str, dict[str, Any]]:
    data = {
        "prompt": name,
        "text": TEXT,
        "version": "2026-11-30.2",
        "sha256": chain.sha256_text(name),
        "language": "ru",
        "purpose": "marketing-calls",
    }
    return "prompt", data


def state(a: str, b: str) -> tuple[str, dict[str, Any]]:
    return "state", {"from": a, "to": b}


def key(digit: str) -> tuple[str, dict[str, Any]]:
    return "key", {"digit": digit, "acted_on": True, "purpose": "marketing-calls"}


# What a call notes, as bench/sip_calls.py's callers make it: up to the choice, then up to the
# decision, then to the end (the store adds the decision, its SMS events and the end's own).
BEFORE_CHOICE = [
    ("recording_started", {"name": "rec-1", "method": "mixmonitor"}),
    state("start", "notice"),
    prompt("notice"),
    state("notice", "purpose"),
    prompt("purpose"),
    state("purpose", "ask"),
    prompt("ask"),
    key("1"),
    state("ask", "chosen"),
    prompt("chosen_agree"),
]
BEFORE_DECISION = [
    state("chosen", "confirm"),
    prompt("confirm"),
    key("1"),
    state("confirm", "saving"),
]
AFTER_DECISION = [
    prompt("recorded_agree"),
    state("saving", "goodbye"),
    prompt("goodbye"),
    ("finished", {"outcomes": ["granted"]}),
    ("hangup", {"by": "us"}),
]


def quiet() -> None:
    logging.getLogger("consent_ivr").setLevel(logging.WARNING)


def fresh_database(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        path = tmp / f"store-{time.monotonic_ns()}.db"
        url = f"sqlite:///{path}"
    else:
        admin = create_engine(normalize_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {PG_DB}"))
        admin.dispose()
        url = f"postgresql://root@127.0.0.1:5432/{PG_DB}"
    upgrade(url)
    return url


def drop_database(kind: str) -> None:
    if kind == "postgresql":
        admin = create_engine(normalize_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
        admin.dispose()


def note_all(store: CallStore, items: list[tuple[str, dict[str, Any]]]) -> None:
    for kind, data in items:
        store.note(kind, data, None, f.Step.ASK)


async def timed(coro: Any) -> float:
    t0 = time.perf_counter()
    result = await coro
    if result is not None and result is not True:
        raise RuntimeError(f"a write failed: {result}")
    return time.perf_counter() - t0


def call_stores(
    db: Database, config: Config, n: int, hooks: Sequence[DecisionHook] = (), first: int = 0
) -> list[CallStore]:
    """N inbound calls' stores, each from its own number, as the service makes them."""
    log = logging.LoggerAdapter(logging.getLogger("bench"), {})
    return [
        CallStore(
            db,
            config,
            CallSetup(
                direction="inbound",
                campaign="default",
                language="ru",
                subject=Subject(f"+7916{i:07d}", "caller-id"),
                channel_id=f"bench-{i}",
                started_at=datetime.now(UTC),
            ),
            hooks,
            log,
        )
        for i in range(first, first + n)
    ]


async def service_run(url: str, n: int) -> dict[str, Any]:
    config = Config.model_validate({"database": {"url": url}})
    db = Database(url)
    hooks = decision_hooks(config)
    stores = call_stores(db, config, n, hooks)
    recording = RecordingInfo("/var/rec/x.wav", "0" * 64, 41.5, "wav", 664_000)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(s.prepare() for s in stores))
    for s in stores:
        s.open()
    opens = await asyncio.gather(*(timed(s.opened(patience=600)) for s in stores))
    for s in stores:
        note_all(s, BEFORE_CHOICE)
    flushes = await asyncio.gather(*(timed(s.flush()) for s in stores))
    for s in stores:
        note_all(s, BEFORE_DECISION)
    decisions = await asyncio.gather(
        *(timed(s.decide(f.Persist(0, f.Choice.AGREE))) for s in stores)
    )
    for s in stores:
        note_all(s, AFTER_DECISION)
    ends = await asyncio.gather(*(timed(s.finish([f.Outcome.GRANTED], recording)) for s in stores))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    with db.session() as session:
        events = session.execute(text("SELECT count(*) FROM consent_events")).scalar_one()
        granted = session.execute(
            text("SELECT count(*) FROM consent_records WHERE outcome = 'granted'")
        ).scalar_one()
    db.close()
    if granted != n:
        raise RuntimeError(f"{granted} of {n} records granted")
    return {
        "cpu_per_call_ms": 1000 * cpu / n,
        "wall_s": wall,
        "events_per_call": events / n,
        "open_ms": summary(opens),
        "flush_ms": summary(flushes),
        "decision_ms": summary(decisions),
        "end_ms": summary(ends),
    }


async def one_by_one(url: str, k: int, warm: int = 5) -> dict[str, Any]:
    """K calls, each alone: every phase of one call awaited before the next call starts."""
    config = Config.model_validate({"database": {"url": url}})
    db = Database(url)
    hooks = decision_hooks(config)
    recording = RecordingInfo("/var/rec/x.wav", "0" * 64, 41.5, "wav", 664_000)
    decisions = []
    cpu0 = wall0 = 0.0
    for i in range(warm + k):
        if i == warm:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        [s] = call_stores(db, config, 1, hooks, first=i)
        await s.prepare()
        s.open()
        await timed(s.opened(patience=600))
        note_all(s, BEFORE_CHOICE)
        await timed(s.flush())
        note_all(s, BEFORE_DECISION)
        decisions.append(await timed(s.decide(f.Persist(0, f.Choice.AGREE))))
        note_all(s, AFTER_DECISION)
        await timed(s.finish([f.Outcome.GRANTED], recording))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    with db.session() as session:
        events = session.execute(text("SELECT count(*) FROM consent_events")).scalar_one()
    db.close()
    return {
        "cpu_per_call_ms": 1000 * cpu / k,
        "wall_per_call_ms": 1000 * wall / k,
        "events_per_call": events / (warm + k),
        "decision_ms": summary(decisions[warm:]),
    }


def summary(values: list[float]) -> dict[str, float]:
    ms = [1000 * v for v in values]
    return {"p50": statistics.median(ms), "p99": pct(ms, 99), "max": max(ms)}


def baseline_run(url: str, n: int, events_per_call: int, writes: int = 4) -> float:
    """CPU per call of the floor: the rows hashed and inserted by executemany."""
    engine = create_engine(normalize_url(url))
    raw = engine.raw_connection()
    mark = "?" if url.startswith("sqlite") else "%s"
    insert = (
        "INSERT INTO bench_floor (record_id, seq, at, kind, data, prev_hash, hash) "
        f"VALUES ({', '.join([mark] * 7)})"
    )
    cur = raw.cursor()
    cur.execute(
        "CREATE TABLE IF NOT EXISTS bench_floor (record_id VARCHAR(36), seq INTEGER, "
        "at VARCHAR(40), kind VARCHAR(32), data TEXT, prev_hash VARCHAR(64), hash VARCHAR(64))"
    )
    raw.commit()
    per_write = max(1, events_per_call // writes)
    kind, data = prompt("purpose")
    cpu0 = time.process_time()
    for i in range(n):
        prev = chain.GENESIS
        for w in range(writes):
            rows = []
            for s in range(per_write):
                at = datetime.now(UTC)
                body = chain.canonical(data)
                digest = chain.event_hash(f"r{i}", w * per_write + s, at, kind, None, data, prev)
                rows.append((f"r{i}", w * per_write + s, at.isoformat(), kind, body, prev, digest))
                prev = digest
            cur.executemany(insert, rows)
            raw.commit()
    cpu = time.process_time() - cpu0
    cur.execute("DROP TABLE bench_floor")
    raw.commit()
    raw.close()
    engine.dispose()
    return 1000 * cpu / n


def measured(kind: str, tmp: Path, run: Any, n: int) -> dict[str, Any]:
    """`run(url, n)` on a fresh database, with the floor for as many calls beside it."""
    url = fresh_database(kind, tmp)
    try:
        figures: dict[str, Any] = asyncio.run(run(url, n))
        figures["baseline_cpu_per_call_ms"] = baseline_run(
            url, n, round(figures["events_per_call"])
        )
    finally:
        drop_database(kind)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="1,50,200", help="N calls at once, comma-separated")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=1, help="runs per N (the best is kept)")
    parser.add_argument(
        "--one-by-one",
        type=int,
        default=0,
        metavar="K",
        help="also K calls one after another, no two at once (none with 0)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    quiet()
    results: dict[str, Any] = {"database": args.database, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        for n in [int(x) for x in args.calls.split(",") if int(x) > 0]:
            runs = [measured(args.database, Path(tmp), service_run, n) for _ in range(args.rounds)]
            best = min(runs, key=lambda r: r["decision_ms"]["p99"])
            results["runs"][n] = best
            d = best["decision_ms"]
            ratio = best["cpu_per_call_ms"] / best["baseline_cpu_per_call_ms"]
            print(
                f"{args.database} N={n}: CPU per call {best['cpu_per_call_ms']:.1f} ms "
                f"(floor {best['baseline_cpu_per_call_ms']:.1f} ms, ratio {ratio:.1f}); "
                f"{best['events_per_call']:.0f} events per call; decision wait "
                f"p50 {d['p50']:.1f} / p99 {d['p99']:.1f} / max {d['max']:.1f} ms; "
                f"flush p99 {best['flush_ms']['p99']:.1f} ms, end p99 "
                f"{best['end_ms']['p99']:.1f} ms; wall {best['wall_s']:.2f} s",
                flush=True,
            )
        for _ in range(args.rounds if args.one_by_one else 0):
            run = measured(args.database, Path(tmp), one_by_one, args.one_by_one)
            results.setdefault("one_by_one", []).append(run)
            ratio = run["cpu_per_call_ms"] / run["baseline_cpu_per_call_ms"]
            d = run["decision_ms"]
            print(
                f"{args.database} {args.one_by_one} calls one by one: CPU per call "
                f"{run['cpu_per_call_ms']:.1f} ms (floor {run['baseline_cpu_per_call_ms']:.1f} ms,"
                f" ratio {ratio:.1f}); wall per call {run['wall_per_call_ms']:.1f} ms; decision"
                f" wait p50 {d['p50']:.1f} / p99 {d['p99']:.1f} ms",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
