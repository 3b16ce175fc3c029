"""SMS jobs per second through a real Kannel on this machine, against the log gateway.

    .venv/bin/python bench/sms_throughput.py [--jobs 500] [--database URL]

Starts a private Kannel with scripts/kannel.sh (free loopback ports, a temporary directory),
stores N consents with their outbox jobs through the store API (as the call flow does), runs
one worker in this process and measures from the worker's start until every job is `sent`
(accepted by Kannel) and until every job is `delivered` (the fake SMSC's delivery report came
back through the dlr-url). Each of those steps is also an event in the record's chain. The same
N jobs through the log gateway (`logged`) give the baseline: the cost of the outbox itself.
Bounded: gives up after --timeout seconds; always stops its Kannel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.models import DELIVERED, LOGGED, SENT, SmsJob
from consent_ivr.sms.worker import run_worker
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.models import new_id

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import free_port  # noqa: E402
from tests.sms.conftest import SHORT_TEMPLATES, decide  # noqa: E402

SCRIPT = str(REPO / "scripts" / "kannel.sh")


def count(db: Database, campaign: str, *statuses: str) -> int:
    query = select(func.count()).select_from(SmsJob)
    query = query.where(SmsJob.campaign == campaign, SmsJob.status.in_(statuses))
    with db.session() as session:
        return session.scalar(query) or 0


async def measure(url: str, sms: SmsConfig, n: int, timeout: float) -> tuple[float, float]:
    """Seconds until all n jobs were accepted by the gateway, and until all were delivered
    (the log gateway: logged)."""
    upgrade(url)
    db = Database(url)
    campaign = f"bench-{sms.gateway}-{new_id()[:8]}"
    final = LOGGED if sms.gateway == "log" else DELIVERED
    try:
        decide(db, sms, n, campaign=campaign, language="en")
        stop = asyncio.Event()
        start = time.perf_counter()
        task = asyncio.create_task(run_worker(db, sms, stop))
        sent_s = delivered_s = 0.0
        while time.perf_counter() - start < timeout and not task.done():
            accepted = await asyncio.to_thread(count, db, campaign, SENT, final)
            if accepted == n and not sent_s:
                sent_s = time.perf_counter() - start
            if await asyncio.to_thread(count, db, campaign, final) == n:
                delivered_s = time.perf_counter() - start
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task
        if not delivered_s:
            raise SystemExit(f"not all {n} jobs {final} within {timeout}s")
        return sent_s or delivered_s, delivered_s
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a new SQLite file)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sms-bench-") as tmp:
        env = {**os.environ, "CONSENT_IVR_VAR": tmp}
        for name in ("ADMIN", "SMSBOX", "SMSC", "SENDSMS"):
            env[f"CONSENT_IVR_KANNEL_{name}_PORT"] = str(free_port())
        env.pop("CONSENT_IVR_KANNEL_PASSWORD", None)
        env.pop("CONSENT_IVR_KANNEL_ADMIN_PASSWORD", None)
        subprocess.run(["bash", SCRIPT, "start"], env=env, check=True, timeout=60)
        try:
            printed = subprocess.run(
                ["bash", SCRIPT, "env"], env=env, check=True, capture_output=True, text=True
            ).stdout
            for line in printed.splitlines():
                key, _, value = line.removeprefix("export ").partition("=")
                os.environ[key] = value
            common = {
                "templates": SHORT_TEMPLATES,
                "batch_size": 50,
                "concurrency": args.concurrency,
                "poll_interval_s": 0.05,
            }
            kannel = SmsConfig.model_validate(
                {
                    **common,
                    "gateway": "kannel",
                    "kannel": {
                        "sendsms_url": os.environ["CONSENT_IVR_KANNEL_SENDSMS_URL"],
                        "admin_url": os.environ["CONSENT_IVR_KANNEL_ADMIN_URL"],
                        "username": os.environ["CONSENT_IVR_KANNEL_USERNAME"],
                    },
                    "dlr": {"port": free_port()},
                }
            )
            log = SmsConfig.model_validate(
                {**common, "log": {"file": f"{tmp}/log.jsonl", "echo": False}}
            )
            url = args.database or f"sqlite:///{tmp}/kannel.db"
            sent_s, delivered_s = asyncio.run(measure(url, kannel, args.jobs, args.timeout))
            log_url = args.database or f"sqlite:///{tmp}/log.db"
            _, log_s = asyncio.run(measure(log_url, log, args.jobs, args.timeout))
        finally:
            subprocess.run(["bash", SCRIPT, "stop"], env=env, timeout=60)
    n = args.jobs
    print(f"jobs: {n}, database: {args.database or 'sqlite'}, concurrency: {args.concurrency}")
    print(f"kannel: {n / sent_s:.0f} jobs/s accepted by Kannel ({sent_s:.2f} s)")
    print(
        f"kannel: {n / delivered_s:.0f} jobs/s with delivery reports stored ({delivered_s:.2f} s)"
    )
    print(f"log gateway: {n / log_s:.0f} jobs/s ({log_s:.2f} s)")
    print(f"kannel / log: {log_s / delivered_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
