"""Soak: many real SIP callers with random behaviour, a SIGKILL and restart of the service and a
restart of Asterisk in the middle; then the invariants a dispute depends on are checked.

    .venv/bin/python bench/soak.py [--calls 1000] [--rate 4] [--asterisk 22|16] [--database URL]

Callers are SIPp processes on 127.0.0.2 (tests/sipp/caller.py), one per behaviour: agree,
decline, silence, wrong keys then agree, keys during the notice then decline, and hang-up at a
random step (notice, question, between the choice and the confirmation, during the
confirmation). They call the private Asterisk's `sipp` PJSIP endpoint (scripts/asterisk.sh),
which sends them to the shipped consent-inbound dialplan and the service (`consent-ivr run`,
the tests' short English prompts, SQLite unless --database). At 35% of the placing time the
service is SIGKILLed and started again 3 s later; at 70% Asterisk is restarted.

At the end it prints the calls per behaviour and outcome and checks, exiting 1 on any failure:
- every call the service answered (SIPp saw the 200 OK) has exactly one call with one closed
  record, and no number has more than one call;
- nothing is left open (every call ended, every record has an outcome);
- every `granted` has its recording (file present, SHA-256 matching) and its SMS job;
- no `recorded_*` prompt was played without the decision event committed before it;
- every record's hash chain is intact.
Calls that were not disturbed (they started after the service was back and ended before
Asterisk stopped, or started after it was back) must have the outcome their behaviour implies;
the others may end `abandoned` or `failed` with their partial evidence.

Bounded: loopback only, at most --calls calls, and every stage has a deadline (--timeout).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select  # noqa: E402

from bench.harness import Service, asterisk, start_asterisk  # noqa: E402
from consent_ivr.audio import read  # noqa: E402
from consent_ivr.prompts import Catalog  # noqa: E402
from consent_ivr.simulate import timings  # noqa: E402
from consent_ivr.store.db import Database  # noqa: E402
from consent_ivr.store.models import Call, ConsentEvent, ConsentRecord  # noqa: E402
from consent_ivr.store.records import record_view  # noqa: E402
from tests.sipp import caller  # noqa: E402
from tests.sipp.caller import Behaviour  # noqa: E402


def behaviours(catalog: Catalog) -> list[tuple[Behaviour, str, float]]:
    """(behaviour, the outcome an undisturbed call of it has, weight)."""
    t = timings(catalog, "default", "en")
    t1, t2 = float(t["__SIM_T1"]), float(t["__SIM_T2"])
    return [
        (Behaviour("agree", [(t1, "1"), (t1 + t2, "1")]), "granted", 4),
        (Behaviour("decline", [(t1, "2"), (t1 + t2, "1")]), "declined", 2),
        (Behaviour("silence"), "no_response", 1),
        (
            Behaviour("wrong", [(t1, "9"), (t1 + t2, "8"), (t1 + 2 * t2, "1"), (t1 + 3 * t2, "1")]),
            "granted",
            1,
        ),
        (Behaviour("early", [(0.5, "11"), (t1, "2"), (t1 + t2, "1")]), "declined", 1),
        (Behaviour("hangup-notice", hangup_at=1.0), "abandoned", 0.5),
        (Behaviour("hangup-question", hangup_at=t1 - 0.3), "abandoned", 0.5),
        (Behaviour("hangup-chosen", [(t1, "1")], hangup_at=t1 + 0.5), "abandoned", 0.5),
        (Behaviour("hangup-confirm", [(t1, "1")], hangup_at=t1 + t2 - 0.4), "abandoned", 0.5),
    ]


@dataclass
class Events:
    """When the disruptions happened (UTC), to tell disturbed calls from the others."""

    killed: datetime | None = None
    service_back: datetime | None = None
    asterisk_stopped: datetime | None = None
    asterisk_back: datetime | None = None


def disrupt(svc: Service, version: str, placing_s: float, ev: Events, log: list[str]) -> None:
    def stamp() -> datetime:
        return datetime.now(UTC)

    time.sleep(placing_s * 0.35)
    ev.killed = stamp()
    svc.kill()
    log.append(f"{ev.killed:%H:%M:%S} service SIGKILLed")
    time.sleep(3)
    svc.start()
    ev.service_back = stamp()
    log.append(f"{ev.service_back:%H:%M:%S} service started again")
    time.sleep(max(placing_s * 0.35 - 3, 1))
    ev.asterisk_stopped = stamp()
    asterisk(version, "stop")
    log.append(f"{ev.asterisk_stopped:%H:%M:%S} Asterisk stopped")
    asterisk(version, "start")
    ev.asterisk_back = stamp()
    log.append(f"{ev.asterisk_back:%H:%M:%S} Asterisk started again")


def undisturbed(view: dict[str, Any], ev: Events) -> bool:
    start = datetime.fromisoformat(view["started_at"])
    end = datetime.fromisoformat(view["ended_at"]) if view["ended_at"] else None
    windows = [(ev.killed, ev.service_back), (ev.asterisk_stopped, ev.asterisk_back)]
    for a, b in windows:
        if a is None or b is None:
            continue
        # a call overlapping a window, or started within 5 s after it (the app re-registering)
        if start <= b + timedelta(seconds=5) and (end is None or end >= a):
            return False
    return True


def check(
    db: Database, groups: list[caller.Callers], expected: dict[str, str], ev: Events
) -> tuple[list[str], Counter[tuple[str, str]], int]:
    problems: list[str] = []
    outcomes: Counter[tuple[str, str]] = Counter()
    by_number = {n: g.behaviour.name for g in groups for n in g.numbers}
    answered = {n for g in groups for n in g.answered()}
    wrong_outcome = 0
    with db.session() as s:
        calls: dict[str, list[Call]] = defaultdict(list)
        for c in s.scalars(select(Call).where(Call.caller_number.in_(list(by_number)))):
            calls[c.caller_number or ""].append(c)
        open_records = s.scalar(
            select(ConsentRecord.record_id).where(ConsentRecord.outcome.is_(None)).limit(1)
        )
        if open_records:
            problems.append(f"record {open_records} has no outcome (left open)")
        for number in answered - set(calls):
            problems.append(f"{by_number[number]} caller {number[:-4]}****: answered, no call row")
        for number, rows in calls.items():
            name = by_number[number]
            if len(rows) != 1:
                problems.append(f"{name} {number[:-4]}****: {len(rows)} calls")
            for call in rows:
                if call.ended_at is None:
                    problems.append(f"call {call.call_id}: never ended")
                if len(call.records) != 1:
                    problems.append(f"call {call.call_id}: {len(call.records)} records")
                for rec in call.records:
                    view = record_view(s, rec.record_id)
                    outcomes[(name, view["outcome"] or "open")] += 1
                    outcomes[("*echoes", "")] += echoes(view)
                    problems += record_problems(view)
                    if undisturbed(view, ev) and view["outcome"] != expected[name]:
                        wrong_outcome += 1
                        problems.append(
                            f"{name} record {rec.record_id}: undisturbed, outcome "
                            f"{view['outcome']}, expected {expected[name]}"
                        )
    return problems, outcomes, wrong_outcome


def echoes(view: dict[str, Any]) -> int:
    """Keys that follow the same digit within 100 ms: one press read as several."""
    keys = [(datetime.fromisoformat(k["at"]), k["digit"]) for k in view["keys"]]
    return sum(
        1
        for (t0, d0), (t1, d1) in zip(keys, keys[1:], strict=False)
        if d0 == d1 and (t1 - t0).total_seconds() < 0.1
    )


def record_problems(view: dict[str, Any]) -> list[str]:
    rid, out = view["record_id"], []
    if not view["integrity"]["chain_ok"]:
        out.append(f"record {rid}: chain broken: {view['integrity']['problems']}")
    kinds = [e["kind"] for e in view["events"]]
    decided = [i for i, e in enumerate(view["events"]) if e["kind"] in ("given", "refused")]
    for i, e in enumerate(view["events"]):
        recorded = e["kind"] == "prompt" and e["data"]["prompt"].startswith("recorded_")
        if recorded and (not decided or decided[0] > i):
            out.append(f"record {rid}: {e['data']['prompt']} played before any decision")
    if view["outcome"] == "granted":
        rec = view["recording"]
        if not rec or not rec.get("sha256"):
            out.append(f"record {rid}: granted without a recording")
        else:
            path = Path(rec["path"])
            if not path.exists():
                out.append(f"record {rid}: recording file {path} missing")
            elif hashlib.sha256(read(path)).hexdigest() != rec["sha256"]:
                out.append(f"record {rid}: recording {path} does not match its SHA-256")
        if "sms_enqueued" not in kinds:
            out.append(f"record {rid}: granted without an SMS job")
    return out


def log_problems(log: Path, numbers: list[str]) -> list[str]:
    """The service's log: no crash, and no caller's full number (they are masked)."""
    text = log.read_text(errors="replace")
    out = [f"service log: {line}" for line in text.splitlines() if "Traceback" in line][:5]
    leaked = [n for n in numbers if n in text or n.lstrip("+") in text]
    if leaked:
        out.append(f"service log: {len(leaked)} full caller numbers, e.g. {leaked[0][:-4]}****")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--rate", type=float, default=4.0, help="new calls per second, all callers")
    p.add_argument("--asterisk", choices=["22", "16"], default="22")
    p.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    p.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-faults", action="store_true", help="no SIGKILL, no Asterisk restart")
    args = p.parse_args()
    rng = random.Random(args.seed)
    t_start = time.monotonic()

    ast = start_asterisk(args.asterisk)
    tmp = Path(tempfile.mkdtemp(prefix="consent-soak-"))
    db_url = args.database or f"sqlite:///{tmp / 'soak.db'}"
    svc = Service(ast, db_url, tmp)
    catalog = Catalog(svc.config)
    plan = behaviours(catalog)
    expected = {b.name: outcome for b, outcome, _ in plan}
    # Each caller a number of its own: a number that agreed would hear the withdrawal menu.
    prefix = rng.randrange(100, 999)
    picks = rng.choices(range(len(plan)), weights=[w for *_, w in plan], k=args.calls)
    numbers: dict[int, list[str]] = defaultdict(list)
    for i, k in enumerate(picks):
        numbers[k].append(f"+7999{prefix:03d}{i:04d}")
    placing_s = args.calls / args.rate
    print(
        f"soak: {args.calls} calls at {args.rate:g}/s (~{placing_s:.0f}s of placing), Asterisk "
        f"{args.asterisk}, {Database(db_url).dialect}, work folder {tmp}",
        flush=True,
    )

    svc.start()
    svc.wait_registered(ast["CONSENT_IVR_ARI_URL"], ast["CONSENT_IVR_ARI_PASSWORD"])
    target = f"127.0.0.1:{ast['CONSENT_IVR_SIP_PORT']}"
    groups = [
        caller.start(
            plan[k][0],
            nums,
            target=target,
            exten="c-default",
            folder=tmp / "sipp",
            port=5100 + 2 * k,
            media_port=40000 + 2200 * k,
            rate=len(nums) / placing_s,
        )
        for k, nums in sorted(numbers.items())
    ]
    ev, log = Events(), []
    faults = None
    if not args.no_faults:
        faults = threading.Thread(
            target=disrupt, args=(svc, args.asterisk, placing_s, ev, log), daemon=True
        )
        faults.start()
    deadline = t_start + args.timeout - 120  # room left for settling and the checks
    for g in groups:
        g.wait(max(deadline - time.monotonic(), 0.1))
    if faults:
        faults.join(60)
    # Let the service close what is still open (its watchdogs), then stop it (drain).
    db = Database(db_url)
    settle = time.monotonic() + 90
    while time.monotonic() < settle:
        with db.session() as s:
            if s.scalar(select(Call.call_id).where(Call.ended_at.is_(None)).limit(1)) is None:
                break
        time.sleep(1)
    rc = svc.stop()
    for line in log:
        print(f"  {line}")
    print(f"  service exited {rc} on SIGTERM")

    problems, outcomes, wrong = check(db, groups, expected, ev)
    with db.session() as s:
        recovered = s.scalar(
            select(func.count()).select_from(ConsentEvent).where(ConsentEvent.kind == "recovered")
        )
    db.close()
    problems += log_problems(svc.log, [n for g in groups for n in g.numbers])
    print(f"\n{'behaviour':<16} {'callers':>7} {'answered':>8}  outcomes")
    for g in groups:
        name = g.behaviour.name
        shown = ", ".join(f"{o} {n}" for (b, o), n in sorted(outcomes.items()) if b == name)
        print(f"{name:<16} {len(g.numbers):>7} {len(g.answered()):>8}  {shown}")
    key_echoes = outcomes.pop(("*echoes", ""), 0)
    total = Counter[str]()
    for (_, o), n in outcomes.items():
        total[o] += n
    print(f"{'all':<16} {args.calls:>7} {sum(len(g.answered()) for g in groups):>8}  ", end="")
    print(", ".join(f"{o} {n}" for o, n in total.most_common()))
    print(
        f"wall {time.monotonic() - t_start:.0f}s; records closed by the restart's recovery: "
        f"{recovered}; undisturbed calls with another outcome: {wrong}; keys read twice "
        f"(the same digit within 100 ms): {key_echoes}"
    )
    if problems:
        print(f"\n{len(problems)} problems:")
        for line in problems[:50]:
            print(f"  {line}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
