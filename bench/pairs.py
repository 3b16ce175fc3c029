"""Scale-out checked by a run: two Asterisk + service pairs writing one PostgreSQL.

    .venv/bin/python bench/pairs.py --calls 50 [--json FILE]

Pair A is a private Asterisk 16 with its own `consent-ivr run`, pair B a private Asterisk 22
with another; both services write the same fresh PostgreSQL database, so their calls' evidence
goes into one ledger (every write takes the ledger-head row). SIPp callers (as in
bench/sip_calls.py: real SIP, audio all the time, RFC 4733 keys, each its own caller ID) call
each pair; all N of a pair start within a second.

Baseline, in the same process and on the same database: N callers through pair A alone, pair B
idle. Then N callers through each pair at the same time. Printed for both: calls correct per
pair; write transactions per call and their latency (the services' own
`consent_ivr_db_write_seconds`: the ledger row's wait included), PostgreSQL commits per call
(reads too), the decision key -> next prompt; the ratio of the two runs' commit latency; and the
whole ledger verified at the end (`consent_ivr.evidence.verify.verify_all`: one unbroken chain
of both services' events, every record's chain and recording). On this 2-core machine the two
Asterisks and two services share the cores, so the latencies say more about the machine than
about PostgreSQL; the transactions per call and the ledger's integrity are what carry over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import asterisk, asterisk_env, cpu_seconds, own_code  # noqa: E402
from bench.sip_calls import (  # noqa: E402
    AUDIO_DIR,
    app_results,
    bucket_quantile,
    callers_for,
    database_url,
    drained,
    metrics_text,
    pg_commits,
    run_callers,
    scrape,
    service_config,
    summary,
    wait_for_app,
    wait_records,
)
from consent_ivr.config import load  # noqa: E402
from consent_ivr.evidence.verify import verify_all  # noqa: E402
from consent_ivr.prompts import Catalog  # noqa: E402
from consent_ivr.store.db import Database  # noqa: E402

WRITES = "consent_ivr_db_write_seconds"


class Pair:
    """One private Asterisk and its service, on the shared database."""

    def __init__(self, name: str, version: str, http_port: int, sipp_port: int) -> None:
        self.name, self.version = name, version
        self.http_port, self.sipp_port = http_port, sipp_port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, base_config: Path, tmp: Path, db_url: str) -> None:
        asterisk(self.version, "install")
        asterisk(self.version, "start")
        ari = asterisk_env(self.version)
        self.ari_url, self.target = (
            ari["CONSENT_IVR_ARI_URL"],
            (f"127.0.0.1:{ari['CONSENT_IVR_SIP_PORT']}"),
        )
        self.folder = tmp / self.name
        self.folder.mkdir()
        cfg = service_config(base_config, self.folder, ari, db_url, self.http_port)
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "CONSENT_IVR_HTTP_PORT"},
            "CONSENT_IVR_ARI_PASSWORD": ari["CONSENT_IVR_ARI_PASSWORD"],
        }
        self.config = load(cfg, env=self.env)
        self.catalog = Catalog(self.config)
        await asyncio.to_thread(self.catalog.build)
        self.log = (self.folder / "service.log").open("wb")  # noqa: ASYNC230 (before any call)
        self.proc = await asyncio.create_subprocess_exec(
            str(REPO / ".venv/bin/consent-ivr"),
            "--log-level",
            "WARNING",
            "-c",
            str(cfg),
            "run",
            env=own_code(self.env),
            cwd=self.folder,
            stderr=self.log,
        )
        self.session = aiohttp.ClientSession(
            headers={
                "Authorization": aiohttp.encode_basic_auth(
                    ari["CONSENT_IVR_ARI_USER"], ari["CONSENT_IVR_ARI_PASSWORD"]
                )
            }
        )
        await wait_for_app(self.session, self.ari_url, self.config.ari.app, 60)

    async def metrics(self) -> dict[str, dict[str, float]]:
        return scrape(
            await metrics_text(self.session, f"http://127.0.0.1:{self.http_port}/metrics")
        )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 60)
        if hasattr(self, "session"):
            await self.session.close()
            self.log.close()


async def one_run(
    pairs: list[Pair], db: Database, n: int, round_: int, args: argparse.Namespace
) -> dict[str, Any]:
    """N callers through each of `pairs` at the same time."""
    numbers = {p.name: callers_for(n, 3 + i, round_) for i, p in enumerate(pairs)}
    before = {p.name: await p.metrics() for p in pairs}
    assert all(p.proc for p in pairs)
    cpu0 = {p.name: cpu_seconds(p.proc.pid) for p in pairs if p.proc}
    commits0 = await asyncio.to_thread(pg_commits, db)
    await asyncio.gather(
        *(
            run_callers(
                p.catalog,
                numbers[p.name],
                "100",
                p.target,
                p.folder / f"callers-{round_}",
                p.sipp_port,
                args.rate,
                args.timeout,
            )
            for p in pairs
        )
    )
    everyone = [x for p in pairs for x in numbers[p.name]]
    looks = await wait_records(db, everyone, args.timeout)
    for p in pairs:
        await drained(p.session, p.ari_url, 60)
    await asyncio.sleep(1)  # PostgreSQL publishes its counters within a second
    commits = await asyncio.to_thread(pg_commits, db)
    out: dict[str, Any] = {"pairs": [p.name for p in pairs], "calls_per_pair": n, "per_pair": {}}
    writes = 0.0
    for p in pairs:
        after = await p.metrics()
        b, a = before[p.name].get(WRITES, {}), after.get(WRITES, {})
        count = a.get("+Inf", 0.0) - b.get("+Inf", 0.0)
        writes += count
        app = await asyncio.to_thread(app_results, db, numbers[p.name])
        out["per_pair"][p.name] = {
            "asterisk": p.version,
            "correct": app["correct"],
            "outcomes": app["outcomes"],
            "write_transactions": count,
            "write_ms": {
                "p50": bucket_quantile(b, a, 0.5),
                "p99": bucket_quantile(b, a, 0.99),
            },
            "decision_ms": summary(app["delays"]["decision"]),
            "service_cpu_ms_per_call": (cpu_seconds(p.proc.pid) - cpu0[p.name]) * 1000 / n
            if p.proc
            else None,
        }
    calls = n * len(pairs)
    out["write_transactions_per_call"] = writes / calls
    if commits is not None and commits0 is not None:
        out["pg_commits_per_call"] = (commits - commits0 - looks) / calls
    return out


def report(label: str, run: dict[str, Any]) -> None:
    print(f"--- {label}: {run['calls_per_pair']} callers through {' and '.join(run['pairs'])}")
    for name, r in run["per_pair"].items():
        d, w = r["decision_ms"], r["write_ms"]
        print(
            f"  {name} (Asterisk {r['asterisk']}): {r['correct']}/{run['calls_per_pair']} correct;"
            f" write transactions {r['write_transactions']:.0f}, p50 {w['p50']:.1f} /"
            f" p99 {w['p99']:.1f} ms; decision key -> prompt median {d['median']:.0f} /"
            f" p99 {d['p99']:.0f} ms; service CPU {r['service_cpu_ms_per_call']:.1f} ms/call"
        )
        if r["correct"] != run["calls_per_pair"]:
            print(f"    outcomes {r['outcomes']}")
    print(
        f"  write transactions per call {run['write_transactions_per_call']:.2f};"
        f" PostgreSQL commits per call (reads too) {run.get('pg_commits_per_call', 0):.1f}"
    )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="consent-pairs-bench-"))
    db_url = database_url("postgresql", tmp)
    pairs = [Pair("A", "16", 28180, args.port), Pair("B", "22", 28280, args.port + 600)]
    db = Database(db_url)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "database": "postgresql",
    }
    try:
        for p in pairs:
            await p.start(args.config, tmp, db_url)
        print(f"built prompts into {AUDIO_DIR}; both services registered", file=sys.stderr)
        results["baseline"] = await one_run(pairs[:1], db, args.calls, 0, args)
        report("baseline (pair A alone)", results["baseline"])
        await asyncio.sleep(2)
        results["both"] = await one_run(pairs, db, args.calls, 1, args)
        report("both pairs at once", results["both"])
        base_p99 = results["baseline"]["per_pair"]["A"]["write_ms"]["p99"]
        both_p99 = max(r["write_ms"]["p99"] for r in results["both"]["per_pair"].values())
        results["write_p99_ratio"] = both_p99 / base_p99 if base_p99 else None
        print(
            f"  write transaction p99, both pairs / A alone: {both_p99:.1f} / {base_p99:.1f} ms"
            f" = {results['write_p99_ratio']:.2f}x"
        )

        def check() -> Any:
            with db.session() as session:
                return verify_all(session, pairs[0].config)

        found = await asyncio.to_thread(check)
        results["ledger"] = {
            "entries": found.counts.get("ledger entries"),
            "problems": [str(x) for x in found.problems],
            "warnings": [str(x) for x in found.warnings],
        }
        print(
            f"  ledger verified: {results['ledger']['entries']} entries from both services,"
            f" {len(found.problems)} problems"
        )
        for line in results["ledger"]["problems"][:10]:
            print(f"    {line}")
    finally:
        for p in pairs:
            await p.stop()
            asterisk(p.version, "stop")
        db.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=50, help="callers through each pair at once")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml", help="the services' config")
    p.add_argument("--rate", type=float, default=400, help="new calls per second per pair")
    p.add_argument("--port", type=int, default=25100, help="pair A's SIPp port on 127.0.0.2")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    results = asyncio.run(measure(args))
    results["command"] = " ".join(["bench/pairs.py", *sys.argv[1:]])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    runs = [results["baseline"], results["both"]]
    correct = all(
        r["correct"] == run["calls_per_pair"] for run in runs for r in run["per_pair"].values()
    )
    return 0 if correct and not results["ledger"]["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
