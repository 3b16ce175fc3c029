"""The CPU of three database steps every call takes, one at a time (no concurrency, so the
figures are steady enough to compare versions): the caller's active consents read when the
call starts, the call's opening (its row, its record's row, the first event), and its end
(the row closed with its recording, the record's outcome, the held SMS released, their
events) after a decision that holds its SMS; 20 calls to a transaction as the group commit
batches them.

Baseline, in the same process: the same statements through the driver's own cursor (the floor
of what each step costs); the ratio is CPU per call over the baseline's.

    .venv/bin/python bench/store_steps.py --calls 2000 --database sqlite
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402

from bench.store_calls import call_stores, drop_database, fresh_database, quiet  # noqa: E402
from consent_ivr.clock import now  # noqa: E402
from consent_ivr.config import Config  # noqa: E402
from consent_ivr.service import decision_hooks  # noqa: E402
from consent_ivr.store import chain  # noqa: E402
from consent_ivr.store import records as store  # noqa: E402
from consent_ivr.store.db import Database, normalize_url  # noqa: E402
from consent_ivr.store.records import RecordingInfo  # noqa: E402

BATCH = 20
WARM_UP = 200
RECORDING = RecordingInfo("/var/rec/x.wav", "0" * 64, 41.5, "wav", 664_000)


def cpu_per_call(n: int, step: Callable[[int], None], per: int = 1) -> float:
    """Run `step(i)` for i in 0, per, 2*per... below n; CPU ms per call."""
    for i in range(0, WARM_UP, per):
        step(n + i)  # numbers the measured calls do not use
    t0 = time.process_time()
    for i in range(0, n, per):
        step(i)
    return 1000 * (time.process_time() - t0) / n


def service_steps(url: str, n: int) -> dict[str, float]:
    config = Config.model_validate({"database": {"url": url}})
    db = Database(url)
    hooks = decision_hooks(config)
    stores = call_stores(db, config, n + WARM_UP, hooks)

    def read(i: int) -> None:
        with db.session() as session:
            stores[i]._read_active(session)

    def open_batch(i: int) -> None:
        with db.session() as session, chain.deferred(session):
            for call in stores[i : i + BATCH]:
                call.ids = call._ensure_open(session)

    def finish_batch(i: int) -> None:
        with db.session() as session, chain.deferred(session):
            for call_id, records in opened[i : i + BATCH]:
                by_record = dict.fromkeys(records, "failed")
                store.finish_call(session, call_id, by_record, now(), [], RECORDING)

    figures = {"read": cpu_per_call(n, read), "open": cpu_per_call(n, open_batch, BATCH)}
    # The same calls decide (untimed), then end.
    opened = [s.ids for s in stores]
    for i in range(0, n + WARM_UP, BATCH):
        with db.session() as session, chain.deferred(session):
            for _call_id, records in opened[i : i + BATCH]:
                store.store_decision(
                    session, records[0], "granted", now(), (), hooks, first_in_call=True
                )
    figures["finish"] = cpu_per_call(n, finish_batch, BATCH)
    db.close()
    return figures


def baseline_steps(url: str, n: int) -> dict[str, float]:
    """The same work through the driver: one SELECT of the state columns; per batch an INSERT
    of the calls, of the records and of the events (executemany), one transaction."""
    engine = create_engine(normalize_url(url))
    raw: Any = engine.raw_connection()
    cur = raw.cursor()
    mark = "?" if url.startswith("sqlite") else "%s"
    read_sql = (
        "SELECT record_id, kind, purpose_id, purpose, outcome, decided_at, status, status_at,"
        f" started_at FROM consent_records WHERE pii_principal_id = {mark} AND kind = 'consent'"
        " ORDER BY started_at DESC"
    )

    def read(i: int) -> None:
        cur.execute(read_sql, (f"+7917{i:07d}",))
        cur.fetchall()
        raw.commit()

    cur.execute("CREATE TABLE bench_floor (id TEXT, a TEXT, b TEXT, c TEXT, d TEXT)")
    insert = f"INSERT INTO bench_floor VALUES ({', '.join([mark] * 5)})"

    def open_batch(i: int) -> None:
        for _table in ("calls", "records", "events"):
            cur.executemany(
                insert, [(f"{j}", "x" * 36, "y" * 64, "z" * 200, "w") for j in range(BATCH)]
            )
        raw.commit()

    def finish_batch(i: int) -> None:
        """An UPDATE of the calls, of the records and of the SMS jobs, and an INSERT of the
        events (each an executemany of the batch's rows)."""
        for _table in ("calls", "records", "jobs"):
            cur.executemany(
                f"UPDATE bench_rows SET b = {mark}, c = {mark} WHERE id = {mark}",
                [("y" * 64, "z" * 200, f"{j}") for j in range(BATCH)],
            )
        cur.executemany(
            insert, [(f"{j}", "x" * 36, "y" * 64, "z" * 200, "w") for j in range(2 * BATCH)]
        )
        raw.commit()

    cur.execute("CREATE TABLE bench_rows (id VARCHAR(36) PRIMARY KEY, b TEXT, c TEXT)")
    cur.executemany(
        f"INSERT INTO bench_rows VALUES ({mark}, {mark}, {mark})",
        [(f"{j}", "", "") for j in range(BATCH)],
    )
    figures = {
        "read": cpu_per_call(n, read),
        "open": cpu_per_call(n, open_batch, BATCH),
        "finish": cpu_per_call(n, finish_batch, BATCH),
    }
    cur.execute("DROP TABLE bench_floor")
    cur.execute("DROP TABLE bench_rows")
    raw.commit()
    raw.close()
    engine.dispose()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    quiet()
    with tempfile.TemporaryDirectory(prefix="store-steps-") as tmp:
        url = fresh_database(args.database, Path(tmp))
        try:
            ours = service_steps(url, args.calls)
            floor = baseline_steps(url, args.calls)
        finally:
            drop_database(args.database)
    steps = (("read", "active consents read"), ("open", "call opened"), ("finish", "call ended"))
    for step, label in steps:
        print(
            f"{args.database} {label}: CPU per call {ours[step]:.3f} ms "
            f"(floor {floor[step]:.3f} ms, ratio {ours[step] / floor[step]:.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
