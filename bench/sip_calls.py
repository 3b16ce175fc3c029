"""Capacity benchmark with real SIP callers: N people phone at once; what it costs, how fast.

    .venv/bin/python bench/sip_calls.py --calls 50,100,200 [--asterisk 16|22]
        [--database sqlite|postgresql|URL] [--json FILE] [--chart FILE] [--profile DIR]

Starts a private Asterisk (scripts/asterisk.sh: its ports and folder come from the same
CONSENT_IVR_* environment) and the service as its own process (`consent-ivr run`, the default
campaign of config.yaml with its Russian prompts, SMS through the log gateway, SQLite unless
--database). For each N, SIPp callers (tests/sipp/caller.py: on 127.0.0.2, each with its own
caller ID, sending A-law audio all the time, keys as RFC 4733 events) call the PJSIP endpoint,
agree and confirm: first through the app, then the same callers through the same dialogue
written as plain dialplan (bench/dialplan-baseline.conf), with no service involved. By default
all N calls start within a second (--rate 400), so their keys coincide: the worst case.
With --waves K, K x N calls are placed per run, at most N at once (SIPp's -l): from the first
call's end on, a new call starts as one ends, so N are in progress all along and the keys no
longer coincide (the steady state of a line group that is full; use a --rate that reaches N
within a call's length, e.g. --rate 10 for 200).

Printed per N: calls correct; CPU seconds of Asterisk and of the service and their ratio to the
dialplan run; service CPU per call and peak RSS; key -> next prompt (Asterisk's own clock on
both sides: the DTMF event and the next PlaybackStarted; in the dialplan, Read() returning and
the next Playback() starting) median/p99/max for the menu key and for the decision key (which
commits before its prompt); the service's event-loop lag p99 and where a key's time goes inside
the service (from /metrics). Results go to JSON; --chart draws latency and CPU against N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from sqlalchemy import select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    asterisk,
    asterisk_env,
    asterisk_pid,
    cpu_seconds,
    own_code,
    pct,
    peak_rss_mb,
)
from consent_ivr.config import load  # noqa: E402
from consent_ivr.prompts import Catalog  # noqa: E402
from consent_ivr.simulate import timings  # noqa: E402
from consent_ivr.store.db import Database  # noqa: E402
from consent_ivr.store.models import Call  # noqa: E402
from consent_ivr.store.records import record_view, records_of_call  # noqa: E402
from tests.sipp import caller  # noqa: E402

# Prompt audio lives where the Asterisk 22 chroot sees it at the same path (a share dir).
AUDIO_DIR = REPO / "var" / "prompts" / "bench"
# Routed to consent-bench-dialplan by bench/dialplan-baseline.conf.
DIALPLAN_EXTEN = "bench-dialplan"
CAMPAIGN = "default"
# The service's own figures, read from its /metrics before and after each run.
SERVICE_HISTOGRAMS = (
    "consent_ivr_event_loop",
    "consent_ivr_key",
    "consent_ivr_ari",
    "consent_ivr_db",
    "consent_ivr_gc",
)


# ---- processes --------------------------------------------------------------------------------


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the high-water mark


def foreign_load() -> list[str]:
    """Asterisk and SIPp processes that are not ours: figures taken beside them are disturbed."""
    var = Path(os.environ.get("CONSENT_IVR_VAR", REPO / "var")).resolve()
    ours = (str(var), "consent-sip-bench-")
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        pid, _, cmd = line.strip().partition(" ")
        if cmd.startswith(("/usr/sbin/asterisk", "sipp ")) and not any(o in cmd for o in ours):
            found.append(f"{pid} {cmd[:80]}")
    return found


# ---- figures ----------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "median": statistics.median(values) if values else float("nan"),
        "p99": pct(values, 99),
        "max": max(values) if values else float("nan"),
    }


def key_delays(view: dict[str, Any]) -> dict[str, list[float]]:
    """Key -> next prompt for each acted-on key of a record: the decision (the confirmation
    key, whose prompt waits for the commit) apart from the menu keys."""
    out: dict[str, list[float]] = {"menu": [], "decision": []}
    events = view["events"]
    for i, e in enumerate(events):
        if e["kind"] != "key" or not e["data"].get("acted_on"):
            continue
        nxt = next((x for x in events[i + 1 :] if x["kind"] == "prompt"), None)
        if nxt is None:
            continue
        ms = (datetime.fromisoformat(nxt["at"]) - datetime.fromisoformat(e["at"])) * 1000
        kind = "decision" if e.get("step") == "confirm" else "menu"
        out[kind].append(ms.total_seconds())
    return out


def scrape(text: str) -> dict[str, dict[str, float]]:
    """Histogram buckets and counts of a Prometheus exposition: {name{labels}: {le: count}}."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)_bucket\{(.*)\} (\S+)$", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        le = labels.pop("le")
        key = m.group(1) + "".join(f",{k}={v}" for k, v in sorted(labels.items()))
        out.setdefault(key, {})[le] = float(m.group(3))
    return out


def samples(text: str, name: str) -> dict[str, float]:
    """One sample's value per label set (`{reason="busy"}`; "" for none), from a Prometheus
    exposition."""
    out: dict[str, float] = {}
    for m in re.finditer(rf"^{name}(\{{.*\}})? (\S+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def sums(text: str, name: str) -> dict[str, float]:
    """A histogram's _sum per label set."""
    return samples(text, f"{name}_sum")


def bucket_quantile(before: dict[str, float], after: dict[str, float], q: float) -> float | None:
    """The q-quantile of what a histogram observed between two scrapes, in ms (linear inside
    the bucket, as Prometheus' histogram_quantile does); None when it observed nothing."""
    bounds = sorted(after, key=lambda le: float("inf") if le == "+Inf" else float(le))
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for b, c in zip(bounds, counts, strict=True):
        upper = float("inf") if b == "+Inf" else float(b)
        if c >= rank:
            if upper == float("inf"):
                return lower * 1000
            inside = (rank - below) / (c - below) if c > below else 1.0
            return (lower + (upper - lower) * inside) * 1000
        lower, below = upper, c
    return lower * 1000


# ---- the service ------------------------------------------------------------------------------


ARI_CONNECTIONS = 256  # the private Asterisk's http.conf allows 1000 sessions


def service_config(
    base: Path,
    tmp: Path,
    ari: dict[str, str],
    db_url: str,
    http_port: int,
    by_ari: bool = False,
) -> Path:
    """`base` (config.yaml as shipped: default campaign, Russian prompts, SMS log gateway), on
    the private Asterisk, with everything it writes under `tmp`, and ARI_CONNECTIONS to ARI
    (64 made requests wait for a connection up to 0.9 s at 200 calls). The recordings are
    copied from Asterisk's folder, as one service beside its Asterisk does, unless `by_ari`."""
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    data["ari"].update(
        url=ari["CONSENT_IVR_ARI_URL"],
        user=ari["CONSENT_IVR_ARI_USER"],
        connections=ARI_CONNECTIONS,
    )
    data["database"]["url"] = db_url
    data["recordings"]["dir"] = str(tmp / "recordings")
    if not by_ari:
        data["recordings"]["asterisk_folder"] = f"{ari['ASTERISK_SPOOL']}/recording"
    data["prompts"]["audio_dir"] = str(AUDIO_DIR)
    data["http"].update(host="127.0.0.1", port=http_port)
    data["evidence"]["checkpoints"] = str(tmp / "checkpoints.jsonl")
    data["sms"]["log"] = {"file": str(tmp / "sms-outbox.jsonl"), "echo": False}
    data["sms"]["dlr"]["port"] = http_port + 11  # never the default 8091 of another service
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def database_url(arg: str, tmp: Path) -> str:
    if arg == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}"
    if arg == "postgresql":
        # A database of the benchmark's own, fresh each run, on the local server.
        name = "consent_bench_sip"
        for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", sql],
                check=True,
                capture_output=True,
            )
        return f"postgresql://postgres@127.0.0.1:5432/{name}"
    return arg


async def wait_for_app(session: aiohttp.ClientSession, base: str, app: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with_app = False
        try:
            async with session.get(f"{base}/ari/applications") as r:
                if r.status == 200:
                    with_app = any(a["name"] == app for a in await r.json())
        except aiohttp.ClientError:
            pass
        if with_app:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the service did not register ARI app {app} in {timeout:.0f}s")


async def live_channels(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/ari/channels") as r:
        return len(await r.json())


async def metrics_text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as r:
        return await r.text()


def turned_away(metrics: str) -> int:
    """Calls the service turned away past `ari.max_calls` (they leave no record)."""
    counted = samples(metrics, "consent_ivr_calls_turned_away_total")
    return int(counted.get('{reason="busy"}', 0))


# ---- one run ----------------------------------------------------------------------------------


def callers_for(n: int, mode: int, round_: int) -> list[str]:
    """N caller IDs never used before in this database (a number that agreed already would
    hear the withdrawal menu)."""
    return [f"+7999{round_:02d}{mode}{i:04d}" for i in range(n)]


def behaviour(catalog: Catalog) -> caller.Behaviour:
    """Agree late in the question (a barge-in), confirm early in the confirmation prompt."""
    t = timings(catalog, CAMPAIGN, catalog.config.campaigns[CAMPAIGN].language)
    t1, t2 = float(t["__SIM_T1"]), float(t["__SIM_T2"])
    keys = catalog.config.campaigns[CAMPAIGN].keys
    return caller.Behaviour("agree", keys=[(t1, keys.agree), (t1 + t2, keys.confirm)])


def at_once(spans: list[tuple[float, float]]) -> dict[str, float]:
    """Calls in progress, from their (start, end) times: the peak, and the time-weighted mean
    from the moment the peak is first reached to the last call's start (the steady state)."""
    if not spans:
        return {"peak": 0, "steady_mean": 0.0}
    steps = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    level, peak, peak_at = 0, 0, steps[0][0]
    levels = []
    for t, d in steps:
        level += d
        levels.append((t, level))
        if level > peak:
            peak, peak_at = level, t
    last_start = max(a for a, _ in spans)
    area = 0.0
    for (t0, level), (t1, _) in zip(levels, levels[1:], strict=False):
        lo, hi = max(t0, peak_at), min(t1, last_start)
        if hi > lo:
            area += level * (hi - lo)
    span = last_start - peak_at
    return {"peak": peak, "steady_mean": area / span if span > 0 else float(peak)}


def app_results(db: Database, numbers: list[str]) -> dict[str, Any]:
    wanted = set(numbers) | {n.lstrip("+") for n in numbers}
    correct = 0
    delays: dict[str, list[float]] = {"menu": [], "decision": []}
    outcomes: dict[str, int] = {}
    lengths = []
    spans: list[tuple[float, float]] = []
    with db.session() as session:
        calls = session.scalars(select(Call).where(Call.caller_number.in_(wanted))).all()
        for call in calls:
            records = records_of_call(session, call.call_id)
            if call.ended_at is None or not records:
                outcomes["unfinished"] = outcomes.get("unfinished", 0) + 1
                continue
            lengths.append((call.ended_at - call.started_at).total_seconds())
            spans.append((call.started_at.timestamp(), call.ended_at.timestamp()))
            view = record_view(session, records[0].record_id)
            ok = view["outcome"] == "granted" and view["integrity"]["chain_ok"]
            ok = ok and bool(view["recording"])
            outcomes[str(view["outcome"])] = outcomes.get(str(view["outcome"]), 0) + 1
            if ok:
                correct += 1
                for kind, values in key_delays(view).items():
                    delays[kind].extend(values)
    outcomes["no call"] = len(numbers) - len(calls)
    length = statistics.mean(lengths) if lengths else None
    return {
        "correct": correct,
        "outcomes": outcomes,
        "delays": delays,
        "call_s": length,
        "at_once": at_once(spans),
    }


def dialplan_results(version: str, numbers: list[str], run_id: str) -> dict[str, Any]:
    """The dialplan sets the global CB_NUMBER = RUN,K1,P1,K2,P2 (epoch seconds: key read,
    next prompt started) once both keys were 1."""
    wanted = {n.lstrip("+") for n in numbers}
    delays: dict[str, list[float]] = {"menu": [], "decision": []}
    correct = 0
    for line in asterisk(version, "rx", "dialplan show globals").splitlines():
        m = re.match(r"^\s*CB_(\d+)=(.*)$", line)
        if not m or m.group(1) not in wanted:
            continue
        run, *stamps = m.group(2).strip().split(",")
        if run != run_id:
            continue
        correct += 1
        k1, p1, k2, p2 = (float(x) for x in stamps)
        delays["menu"].append((p1 - k1) * 1000)
        delays["decision"].append((p2 - k2) * 1000)
    return {"correct": correct, "delays": delays}


async def drained(session: aiohttp.ClientSession, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and await live_channels(session, base):  # noqa: ASYNC110
        await asyncio.sleep(0.5)


async def run_callers(
    catalog: Catalog,
    numbers: list[str],
    exten: str,
    target: str,
    folder: Path,
    port: int,
    rate: float,
    timeout: float,
    limit: int,
) -> dict[str, Any]:
    group = caller.start(
        behaviour(catalog),
        numbers,
        target=target,
        exten=exten,
        folder=folder,
        port=port,
        rate=rate,
        limit=limit,
    )
    t0 = time.monotonic()
    code = await asyncio.to_thread(group.wait, timeout)
    failed = 0
    stat = folder / "agree.stat.csv"
    if stat.exists():
        rows = stat.read_text().splitlines()
        if len(rows) >= 2:
            head, last = rows[0].split(";"), rows[-1].split(";")
            failed = int(dict(zip(head, last, strict=False)).get("FailedCall(C)", 0) or 0)
    return {"sipp_exit": code, "sipp_failed": failed, "wall_s": time.monotonic() - t0}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    version = args.asterisk
    asterisk(version, "install")
    asterisk(version, "start")
    asterisk(version, "reload")  # an instance started elsewhere lacks the bench's dialplan
    ari = asterisk_env(version)
    tmp = Path(tempfile.mkdtemp(prefix="consent-sip-bench-"))
    db_url = database_url(args.database, tmp)
    http_port = int(os.environ.get("CONSENT_IVR_HTTP_PORT", "28180"))
    cfg = service_config(args.config, tmp, ari, db_url, http_port, args.recordings_by_ari)
    env = {
        **{k: v for k, v in os.environ.items() if k != "CONSENT_IVR_HTTP_PORT"},
        "CONSENT_IVR_ARI_PASSWORD": ari["CONSENT_IVR_ARI_PASSWORD"],
    }
    conf = load(cfg, env=env)
    catalog = Catalog(conf)
    built = await asyncio.to_thread(catalog.build)
    if built:
        print(f"built {len(built)} prompt(s) into {AUDIO_DIR}", file=sys.stderr)
    catalog.check_audio()
    lang = conf.campaigns[CAMPAIGN].language
    prompts = catalog.audio_dir / CAMPAIGN / lang
    first = conf.campaigns[CAMPAIGN].purposes[0]
    for name, value in (
        ("CONSENT_PROMPTS", str(prompts)),
        ("CONSENT_PURPOSE", f"purpose-{first}"),
        ("CONSENT_KEY_TIMEOUT", f"{conf.flow.key_timeout_s:g}"),
    ):
        asterisk(version, "rx", f"dialplan set global {name} {value}")

    log_file = (tmp / "service.log").open("wb")  # noqa: ASYNC230 (before any call)
    service = await asyncio.create_subprocess_exec(
        str(REPO / ".venv/bin/consent-ivr"),
        "--log-level",
        "WARNING",
        "-c",
        str(cfg),
        "run",
        env=own_code(env),
        cwd=tmp,
        stderr=log_file,
    )
    base = ari["CONSENT_IVR_ARI_URL"]
    auth = {
        "Authorization": aiohttp.encode_basic_auth(
            ari["CONSENT_IVR_ARI_USER"], ari["CONSENT_IVR_ARI_PASSWORD"]
        )
    }
    target = f"127.0.0.1:{ari['CONSENT_IVR_SIP_PORT']}"
    metrics_url = f"http://127.0.0.1:{http_port}/metrics"
    db = Database(db_url)
    results: dict[str, Any] = {
        "asterisk": ari["ASTERISK_VERSION"],
        "database": db.dialect,
        "cores": os.cpu_count(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "",
        "runs": [],
    }
    try:
        async with aiohttp.ClientSession(headers=auth) as session:
            await wait_for_app(session, base, conf.ari.app, 60)
            ast_pid = asterisk_pid(version)
            for round_, n in enumerate(args.calls):
                if foreign := foreign_load():
                    print(f"warning: foreign load during N={n}: {foreign}", file=sys.stderr)
                placed = n * args.waves
                run: dict[str, Any] = {"calls": n, "placed": placed, "foreign_load": foreign}
                folder = tmp / f"n{n}-{round_}"
                # --- through the app
                numbers = callers_for(placed, 1, round_)
                reset_peak_rss(service.pid)
                before = await metrics_text(session, metrics_url)
                away0 = turned_away(before)
                svc0, ast0 = cpu_seconds(service.pid), cpu_seconds(ast_pid)
                commits0 = await asyncio.to_thread(pg_commits, db)
                profiler = None
                if args.profile and n == max(args.calls):
                    args.profile.mkdir(parents=True, exist_ok=True)
                    profiler = subprocess.Popen(  # noqa: ASYNC220 (not waited for here)
                        [
                            str(REPO / ".venv/bin/py-spy"),
                            "record",
                            "--pid",
                            str(service.pid),
                            "--format",
                            "raw",
                            "--rate",
                            "200",
                            "--output",
                            str(args.profile / f"service-{n}.txt"),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                sip = await run_callers(
                    catalog,
                    numbers,
                    "100",
                    target,
                    folder / "app",
                    args.port,
                    args.rate,
                    args.timeout,
                    n,
                )
                away = turned_away(await metrics_text(session, metrics_url)) - away0
                looks = await wait_records(db, numbers, args.timeout, len(numbers) - away)
                await drained(session, base, 60)
                svc_cpu = cpu_seconds(service.pid) - svc0
                ast_cpu = cpu_seconds(ast_pid) - ast0
                if profiler:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(60)
                after = await metrics_text(session, metrics_url)
                await asyncio.sleep(1)  # PostgreSQL publishes its counters within a second
                commits = await asyncio.to_thread(pg_commits, db)
                app = await asyncio.to_thread(app_results, db, numbers)
                if commits is not None and commits0 is not None:
                    app["pg_commits_per_call"] = (commits - commits0 - looks) / placed
                app.update(sip, turned_away=away)
                app["service_cpu_s"] = svc_cpu
                app["asterisk_cpu_s"] = ast_cpu
                app["service_peak_rss_mb"] = peak_rss_mb(service.pid)
                hb, ha = scrape(before), scrape(after)
                app["service_histograms_ms"] = {
                    key: {
                        "p50": bucket_quantile(hb.get(key, {}), ha[key], 0.5),
                        "p99": bucket_quantile(hb.get(key, {}), ha[key], 0.99),
                        "count": ha[key].get("+Inf", 0.0) - hb.get(key, {}).get("+Inf", 0.0),
                    }
                    for key in sorted(ha)
                    if key.startswith(SERVICE_HISTOGRAMS)
                }
                gc0, gc1 = (sums(t, "consent_ivr_gc_pause_seconds") for t in (before, after))
                app["gc_pause_s"] = {k: v - gc0.get(k, 0.0) for k, v in gc1.items()}
                run["app"] = app
                # --- the same callers, plain dialplan
                if not args.no_dialplan:
                    await asyncio.sleep(2)
                    ast0 = cpu_seconds(ast_pid)
                    numbers = callers_for(placed, 2, round_)
                    run_id = f"{os.getpid()}-{round_}"
                    asterisk(version, "rx", f"dialplan set global CONSENT_RUN {run_id}")
                    sip = await run_callers(
                        catalog,
                        numbers,
                        DIALPLAN_EXTEN,
                        target,
                        folder / "dialplan",
                        args.port,
                        args.rate,
                        args.timeout,
                        n,
                    )
                    await drained(session, base, 60)
                    plain = dialplan_results(version, numbers, run_id)
                    plain.update(sip)
                    plain["asterisk_cpu_s"] = cpu_seconds(ast_pid) - ast0
                    # The dialplan's recordings (the app's are collected and deleted by it).
                    for wav in (Path(ari["ASTERISK_SPOOL"]) / "recording").glob("bench-*.wav"):
                        wav.unlink(missing_ok=True)
                    run["dialplan"] = plain
                run["taskprocessors"] = taskprocessors(version)
                results["runs"].append(run)
                report_run(run)
                await asyncio.sleep(2)
    finally:
        service.send_signal(signal.SIGTERM)
        await asyncio.wait_for(service.wait(), 60)
        log_file.close()
        db.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    return results


def taskprocessors(version: str, top: int = 6) -> list[dict[str, Any]]:
    """Asterisk's deepest queues since it started (`core show taskprocessors`)."""
    rows: list[dict[str, Any]] = []
    for line in asterisk(version, "rx", "core show taskprocessors").splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1].isdigit():
            rows.append({"name": parts[0], "processed": int(parts[1]), "max_depth": int(parts[3])})
    deepest = sorted(rows, key=lambda r: -r["max_depth"])[:top]
    # Where 16 delivers the app's events (22 names them after the app): always shown.
    return deepest + [
        r for r in rows if r not in deepest and r["name"].startswith(("stasis/pool", "ari", "app"))
    ]


def pg_commits(db: Database) -> int | None:
    """Transactions committed in the database so far (PostgreSQL's own count; reads too)."""
    if db.dialect != "postgresql":
        return None
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )


async def wait_records(db: Database, numbers: list[str], timeout: float, taken: int) -> int:
    """Until the `taken` callers' calls (those not turned away) are stored as ended (the
    service collects the recording after the caller is gone), or `timeout`; how many times it
    looked (each a transaction)."""
    wanted = set(numbers) | {n.lstrip("+") for n in numbers}

    def ended() -> int:
        with db.session() as session:
            rows = session.scalars(
                select(Call.ended_at).where(Call.caller_number.in_(wanted))
            ).all()
            return sum(1 for r in rows if r is not None)

    deadline, looks = time.monotonic() + timeout, 1
    while time.monotonic() < deadline and await asyncio.to_thread(ended) < taken:  # noqa: ASYNC110
        looks += 1
        await asyncio.sleep(0.5)
    return looks


# ---- output -----------------------------------------------------------------------------------


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """The row of the table for one N."""
    app, plain = run["app"], run.get("dialplan")
    n = run.get("placed", run["calls"])  # calls placed (--waves), the divisor of "per call"
    total = app["service_cpu_s"] + app["asterisk_cpu_s"]
    hist = app["service_histograms_ms"]
    lag = hist.get("consent_ivr_event_loop_lag_seconds", {})
    row: dict[str, Any] = {
        "calls": run["calls"],
        "placed": n,
        "at_once": app.get("at_once"),
        "correct": app["correct"],
        "asterisk_cpu_s": app["asterisk_cpu_s"],
        "service_cpu_s": app["service_cpu_s"],
        "service_cpu_ms_per_call": app["service_cpu_s"] / n * 1000,
        "service_peak_rss_mb": app["service_peak_rss_mb"],
        "menu_ms": summary(app["delays"]["menu"]),
        "decision_ms": summary(app["delays"]["decision"]),
        "loop_lag_p99_ms": lag.get("p99"),
        "play_requests_per_call": (
            hist["consent_ivr_ari_playlist_prompts"]["count"] / n
            if "consent_ivr_ari_playlist_prompts" in hist
            else None
        ),
        "db_write_transactions_per_call": hist.get("consent_ivr_db_write_seconds", {}).get(
            "count", 0
        )
        / n,
        "db_write_ms": hist.get("consent_ivr_db_write_seconds"),
        "db_writer_queue_ms": hist.get("consent_ivr_db_queue_seconds,pool=writers"),
        "pg_commits_per_call": app.get("pg_commits_per_call"),
        "call_s": app.get("call_s"),
    }
    if plain:
        row.update(
            dialplan_correct=plain["correct"],
            dialplan_asterisk_cpu_s=plain["asterisk_cpu_s"],
            cpu_ratio=total / plain["asterisk_cpu_s"] if plain["asterisk_cpu_s"] else None,
            asterisk_cpu_ratio=(
                app["asterisk_cpu_s"] / plain["asterisk_cpu_s"] if plain["asterisk_cpu_s"] else None
            ),
            dialplan_menu_ms=summary(plain["delays"]["menu"]),
            dialplan_decision_ms=summary(plain["delays"]["decision"]),
        )
    return row


def _ms(s: dict[str, Any]) -> str:
    return f"{s['median']:.0f}/{s['p99']:.0f}/{s['max']:.0f}"


def report_run(run: dict[str, Any]) -> None:
    r = figures(run)
    app = run["app"]
    steady = ""
    if r["placed"] != r["calls"] and r["at_once"]:
        steady = (
            f" ({r['placed']} placed, at most {r['calls']} at once; in progress: peak"
            f" {r['at_once']['peak']}, steady mean {r['at_once']['steady_mean']:.0f})"
        )
    print(f"--- N={r['calls']}{steady}")
    print(
        f"  app:      {r['correct']}/{r['placed']} correct; CPU Asterisk {r['asterisk_cpu_s']:.1f}s"
        f" + service {r['service_cpu_s']:.1f}s; service {r['service_cpu_ms_per_call']:.1f} ms/call,"
        f" peak RSS {r['service_peak_rss_mb']:.0f} MB; loop lag p99 "
        f"{'-' if r['loop_lag_p99_ms'] is None else round(r['loop_lag_p99_ms'])} ms"
    )
    print(
        f"            key->prompt ms median/p99/max: menu {_ms(r['menu_ms'])},"
        f" decision {_ms(r['decision_ms'])}"
    )
    if r["correct"] != r["placed"]:
        print(
            f"            outcomes {app['outcomes']}; sipp failed {app['sipp_failed']};"
            f" turned away (ari.max_calls) {app.get('turned_away', 0)}"
        )
    print(
        f"            database write transactions per call:"
        f" {r['db_write_transactions_per_call']:.1f}"
    )
    if r["pg_commits_per_call"] is not None:
        print(
            f"            PostgreSQL commits per call (reads too): {r['pg_commits_per_call']:.1f}"
        )
    if r["play_requests_per_call"] is not None:
        print(f"            play requests per call: {r['play_requests_per_call']:.1f}")
    for key, q in app["service_histograms_ms"].items():
        seconds = "_seconds" in key and not key.startswith("consent_ivr_event_loop")
        if q["p50"] is not None and seconds:
            print(
                f"            {key}: p50 {q['p50']:.1f} ms, p99 {q['p99']:.1f} ms,"
                f" {q['count'] / r['placed']:.1f} per call"
            )
    gc_ms = {k: round(v * 1000) for k, v in app.get("gc_pause_s", {}).items()}
    print(f"            garbage collector's pauses in all, ms: {gc_ms}")
    deepest = ", ".join(f"{t['name']} {t['max_depth']}" for t in run["taskprocessors"][:3])
    print(f"            Asterisk's deepest queues since its start: {deepest}")
    if "dialplan" in run:
        print(
            f"  dialplan: {r['dialplan_correct']}/{r['placed']} correct; CPU Asterisk "
            f"{r['dialplan_asterisk_cpu_s']:.1f}s; key->prompt menu {_ms(r['dialplan_menu_ms'])},"
            f" decision {_ms(r['dialplan_decision_ms'])}"
        )
        print(
            f"  ratio to dialplan: total CPU {r['cpu_ratio']:.2f}x,"
            f" Asterisk alone {r['asterisk_cpu_ratio']:.2f}x"
        )


def table(results: dict[str, Any]) -> str:
    head = (
        "| N | correct (app / dialplan) | CPU app total / dialplan (Asterisk alone) "
        "| service CPU per call | service peak RSS | key -> prompt menu, median / p99 / max "
        "| decision, median / p99 / max | dialplan menu / decision p99 | loop lag p99 |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for run in results["runs"]:
        r = figures(run)
        lag = r["loop_lag_p99_ms"]
        plain = "-"
        if "dialplan_menu_ms" in r:
            menu, decision = r["dialplan_menu_ms"]["p99"], r["dialplan_decision_ms"]["p99"]
            plain = f"{menu:.0f} / {decision:.0f} ms"
        ratio = "-"
        if r.get("cpu_ratio"):
            ratio = f"{r['cpu_ratio']:.2f} ({r['asterisk_cpu_ratio']:.2f})"
        n = r["calls"] if r["placed"] == r["calls"] else f"{r['calls']} ({r['placed']} placed)"
        rows.append(
            f"| {n} | {r['correct']} / {r.get('dialplan_correct', '-')} | {ratio} "
            f"| {r['service_cpu_ms_per_call']:.1f} ms | {r['service_peak_rss_mb']:.0f} MB "
            f"| {_ms(r['menu_ms'])} ms | {_ms(r['decision_ms'])} ms | {plain} "
            f"| {'-' if lag is None else f'{lag:.0f} ms'} |"
        )
    return head + "\n".join(rows)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [figures(r) for r in results["runs"]]
    ns = [r["calls"] for r in rows]
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, style in (
        ("menu_ms", "app: menu key", "o-"),
        ("decision_ms", "app: decision key (commit)", "s-"),
        ("dialplan_menu_ms", "plain dialplan: menu key", "o--"),
        ("dialplan_decision_ms", "plain dialplan: decision key", "s--"),
    ):
        if all(key in r for r in rows):
            # On a log axis; the dialplan's (under a millisecond) shows as 1 ms.
            lat.plot(ns, [max(r[key]["p99"], 1.0) for r in rows], style, label=label)
    lat.axhline(100, color="grey", lw=0.8, ls=":")
    lat.set(xlabel="concurrent SIP calls", ylabel="key -> next prompt, p99 (ms)", xticks=ns)
    lat.set_yscale("log")
    lat.legend(fontsize=8)
    cpu.plot(ns, [r["asterisk_cpu_s"] + r["service_cpu_s"] for r in rows], "o-", label="app: total")
    cpu.plot(ns, [r["asterisk_cpu_s"] for r in rows], "^-", label="app: Asterisk")
    cpu.plot(ns, [r["service_cpu_s"] for r in rows], "v-", label="app: service")
    if all("dialplan_asterisk_cpu_s" in r for r in rows):
        cpu.plot(ns, [r["dialplan_asterisk_cpu_s"] for r in rows], "o--", label="plain dialplan")
    cpu.set(xlabel="concurrent SIP calls", ylabel="CPU seconds for the N calls", xticks=ns)
    cpu.legend(fontsize=8)
    fig.suptitle(
        f"consent-ivr, Asterisk {results['asterisk'].split('~')[0]}, {results['database']}, "
        f"{results['cores']} cores, real SIP callers (SIPp)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--calls",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[50, 100, 200],
        help="comma-separated list of N (calls at once)",
    )
    p.add_argument("--asterisk", choices=["22", "16"], default="16")
    p.add_argument("--database", default="sqlite", help="sqlite, postgresql or a URL")
    p.add_argument(
        "--config",
        type=Path,
        default=REPO / "config.yaml",
        help="the service's config to start from (another version's, to compare)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=400,
        help="new calls per second (default: all N within a second, so their keys coincide: "
        "the worst case)",
    )
    p.add_argument(
        "--waves",
        type=int,
        default=1,
        help="place K x N calls per run, at most N at once (the steady state of N in progress)",
    )
    p.add_argument("--port", type=int, default=25100, help="SIPp's SIP port on 127.0.0.2")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    p.add_argument("--no-dialplan", action="store_true", help="skip the plain dialplan runs")
    p.add_argument(
        "--recordings-by-ari",
        action="store_true",
        help="download and delete the recordings through ARI, not in Asterisk's folder",
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--chart", type=Path, help="draw latency and CPU against N into this PNG")
    p.add_argument("--profile", type=Path, help="py-spy the service at the largest N, into DIR")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (logs, SIPp)")
    args = p.parse_args()
    results = asyncio.run(measure(args))
    results["command"] = " ".join(["bench/sip_calls.py", *sys.argv[1:]])
    print()
    print(
        f"Asterisk {results['asterisk']}, {results['database']}, {results['cores']} cores; "
        f"{results['command']}"
    )
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if args.chart:
        chart(results, args.chart)
    rows = [figures(r) for r in results["runs"]]
    return 0 if all(r["correct"] == r["placed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
