"""Capacity benchmark: N simulated customers call at once; print what happened.

    .venv/bin/python bench/calls.py --calls 200 [--asterisk 22|16] [--database URL]

Starts a private Asterisk (scripts/asterisk.sh) and the service as its own process
(`consent-ivr run`, short test prompts, SQLite unless --database), runs a baseline of a few
calls, then N "agree" calls at once, and prints: calls completed correctly, wall time, CPU
seconds used by the service and by Asterisk, service peak memory, and the delay from a keypress
to the start of the next prompt (median, p99; measured on Asterisk's own event timestamps), with
the ratio of the loaded run to the baseline run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from consent_ivr.ari.client import AriClient  # noqa: E402
from consent_ivr.config import load  # noqa: E402
from consent_ivr.prompts import Catalog  # noqa: E402
from consent_ivr.simulate import place_call, timings, wait_for_record  # noqa: E402
from consent_ivr.store.db import Database  # noqa: E402
from tests.e2e.conftest import E2E_PROMPTS, SHARE, e2e_config  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
_numbers = itertools.count(0, 100_000)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def asterisk(version: str, *args: str) -> str:
    env = {
        **os.environ,
        "CONSENT_IVR_SHARE_DIRS": str(SHARE),
        "CONSENT_IVR_DIALPLAN_DIRS": f"{REPO / 'dialplan'}:{REPO / 'bench'}",
    }
    return subprocess.run(
        ["bash", str(REPO / "scripts/asterisk.sh"), args[0], version, *args[1:]],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def asterisk_pid(version: str) -> int:
    out = subprocess.run(
        ["pgrep", "-f", f"var/asterisk-{version}/etc/asterisk.conf"], capture_output=True, text=True
    ).stdout.split()
    return int(out[0])


def key_to_prompt_ms(view: dict[str, Any]) -> list[float]:
    """For each acted-on key, the delay until the next prompt started playing."""
    delays = []
    events = view["events"]
    for i, e in enumerate(events):
        if e["kind"] == "key" and e["data"].get("acted_on"):
            nxt = next((x for x in events[i + 1 :] if x["kind"] == "prompt"), None)
            if nxt:
                t0 = datetime.fromisoformat(e["at"])
                t1 = datetime.fromisoformat(nxt["at"])
                delays.append((t1 - t0).total_seconds() * 1000)
    return delays


def answer_to_notice_ms(view: dict[str, Any]) -> float | None:
    """From the call entering the app to the first word of the notice."""
    first = next((e for e in view["events"] if e["kind"] == "prompt"), None)
    if first is None:
        return None
    t0 = datetime.fromisoformat(view["started_at"])
    return (datetime.fromisoformat(first["at"]) - t0).total_seconds() * 1000


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run_calls(
    ari: AriClient, db: Database, catalog: Catalog, n: int, timeout: float
) -> dict[str, Any]:
    ids = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    first = next(_numbers)
    t0 = time.monotonic()
    await asyncio.gather(
        *(
            place_call(
                ari,
                catalog,
                "agree",
                # Each caller new: a number that has already agreed hears the withdrawal menu.
                f"+7901{first + i:07d}",
                channel_id=cid,
                campaign="default",
                language="en",
            )
            for i, cid in enumerate(ids)
        )
    )
    views = await asyncio.gather(
        *(wait_for_record(db, cid, timeout) for cid in ids), return_exceptions=True
    )
    wall = time.monotonic() - t0
    ok = [
        v
        for v in views
        if isinstance(v, dict)
        and v["outcome"] == "granted"
        and v["integrity"]["chain_ok"]
        and v["recording"]
    ]
    delays = [d for v in ok for d in key_to_prompt_ms(v)]
    starts = [
        ms for v in views if isinstance(v, dict) and (ms := answer_to_notice_ms(v)) is not None
    ]
    outcomes = Counter(
        (v["outcome"], "recorded" if v["recording"] else "no recording")
        if isinstance(v, dict)
        else ("no record", type(v).__name__)
        for v in views
    )
    return {
        "calls": n,
        "correct": len(ok),
        "wall_s": wall,
        "delays": delays,
        "starts": starts,
        "outcomes": dict(outcomes),
    }


async def run_dialplan(
    ari: AriClient, version: str, catalog: Catalog, n: int, timeout: float
) -> dict[str, Any]:
    """The same calls answered by plain dialplan (bench/dialplan-baseline.conf), no app."""
    asterisk(version, "rx", "database deltree consentbench")
    variables = timings(catalog, "default", "en")
    variables["CONSENT_PROMPTS"] = str(catalog.audio_dir / "default" / "en")
    ids = [f"dial-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    t0 = time.monotonic()
    for i, cid in enumerate(ids):
        await ari.originate(
            "Local/agree@consent-sim",
            channel_id=cid,
            context="consent-bench-dialplan",
            extension=f"7903{i:07d}",
            variables=variables,
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        live = {c["id"] for c in await ari.request("GET", "/channels")}
        if not live & set(ids):
            break
        await asyncio.sleep(0.5)
    wall = time.monotonic() - t0
    shown = asterisk(version, "rx", "database show consentbench")
    correct = sum(1 for line in shown.splitlines() if line.startswith("/consentbench/"))
    return {"calls": n, "correct": correct, "wall_s": wall}


async def main_async(args: argparse.Namespace) -> int:
    asterisk(args.asterisk, "install")
    asterisk(args.asterisk, "start")
    asterisk(args.asterisk, "reload")  # an instance started elsewhere lacks the bench's dialplan
    ari_env = {}
    for line in asterisk(args.asterisk, "env").splitlines():
        k, _, v = line.partition("=")
        ari_env[k] = shlex.split(v)[0] if v else ""
    tmp = Path(tempfile.mkdtemp(prefix="consent-bench-"))
    db_url = args.database or f"sqlite:///{tmp / 'bench.db'}"
    conf = e2e_config(ari_env, db_url, tmp)
    Catalog(conf).build()
    data = conf.model_dump(mode="json", exclude={"sms"})
    data["ari"].pop("password", None)
    data["http"]["enabled"] = False
    data["prompts"]["dir"] = str(E2E_PROMPTS)
    (tmp / "config.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    env = {**os.environ, "CONSENT_IVR_ARI_PASSWORD": ari_env["CONSENT_IVR_ARI_PASSWORD"]}
    service = await asyncio.create_subprocess_exec(
        str(REPO / ".venv/bin/consent-ivr"),
        "--log-level",
        "WARNING",
        "-c",
        str(tmp / "config.yaml"),
        "run",
        env=env,
        cwd=tmp,
    )
    conf = load(tmp / "config.yaml", env=env)
    catalog = Catalog(conf)
    catalog.check_audio()
    db = Database(db_url)
    # An overloaded Asterisk can take long to accept an originate: measure, do not give up.
    ari = AriClient(conf.ari.url, conf.ari.user, conf.ari.password, conf.ari.app, timeout_s=300)
    await ari.start(events=False)
    try:
        for _ in range(100):  # wait for the service's websocket
            apps = await ari.request("GET", "/applications")
            if any(a["name"] == conf.ari.app and a.get("channel_ids") is not None for a in apps):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        ast_pid = asterisk_pid(args.asterisk)
        base = await run_calls(ari, db, catalog, args.baseline, 120)
        cpu_svc0, cpu_ast0 = cpu_seconds(service.pid), cpu_seconds(ast_pid)
        load_run = await run_calls(ari, db, catalog, args.calls, args.timeout)
        cpu_svc = cpu_seconds(service.pid) - cpu_svc0
        cpu_ast = cpu_seconds(ast_pid) - cpu_ast0
        rss = peak_rss_mb(service.pid)
        plain = None
        if args.dialplan:
            cpu_plain0 = cpu_seconds(ast_pid)
            plain = await run_dialplan(ari, args.asterisk, catalog, args.calls, args.timeout)
            plain["asterisk_cpu_s"] = cpu_seconds(ast_pid) - cpu_plain0
    finally:
        await ari.close()
        service.send_signal(signal.SIGTERM)
        await asyncio.wait_for(service.wait(), 30)
        db.close()

    def show(name: str, r: dict[str, Any]) -> tuple[float, float]:
        d = r["delays"] or [float("nan")]
        med, p99 = statistics.median(d), pct(d, 99)
        print(
            f"{name:>9}: {r['correct']}/{r['calls']} correct in {r['wall_s']:.1f}s; "
            f"keypress->next prompt median {med:.1f} ms, p99 {p99:.1f} ms "
            f"({len(r['delays'])} keypresses)"
        )
        if r["starts"]:
            print(
                f"           call entering the app -> notice playing: median "
                f"{statistics.median(r['starts']):.0f} ms, p99 {pct(r['starts'], 99):.0f} ms"
            )
        if r["correct"] != r["calls"]:
            print(f"           outcomes: {r['outcomes']}")
        return med, p99

    print(f"Asterisk {args.asterisk}, database {Database(db_url).dialect}, {os.cpu_count()} cores")
    bmed, bp99 = show("baseline", base)
    lmed, lp99 = show("load", load_run)
    print(
        f"     load: service CPU {cpu_svc:.1f}s, Asterisk CPU {cpu_ast:.1f}s, "
        f"service peak RSS {rss:.0f} MB"
    )
    print(f"    ratio: load/baseline median {lmed / bmed:.2f}x, p99 {lp99 / bp99:.2f}x")
    if plain:
        print(
            f" dialplan: the same {plain['calls']} calls without the app: {plain['correct']} "
            f"correct in {plain['wall_s']:.1f}s, Asterisk CPU {plain['asterisk_cpu_s']:.1f}s "
            f"(app run / dialplan run: {cpu_ast / plain['asterisk_cpu_s']:.2f}x Asterisk CPU)"
        )
    return 0 if load_run["correct"] == args.calls else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--baseline", type=int, default=5, help="calls in the baseline run")
    p.add_argument("--asterisk", choices=["22", "16"], default="16")
    p.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument(
        "--dialplan",
        action="store_true",
        help="also run the same calls as plain dialplan, without the app",
    )
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
