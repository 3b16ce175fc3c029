"""`consent-ivr verify --all` on N records, on SQLite and on PostgreSQL.

    .venv/bin/python bench/verify.py [--records 10000] [--postgres URL | --no-postgres]

Stores N consent calls through the store API (open_call, store_decision with prompts and keys,
finish_call with a real WAV recording made with sox), one record per call, 11 events each, and
a signed checkpoint; then times `verify_all` over everything: the ledger, every chain, every
cache, the commitment, every recording and prompt file re-hashed, the checkpoints and the
checkpoint file. The baseline is reading every event row once in ledger order (no check can be
faster than reading the evidence): verify / read is the cost of the checks themselves.
PostgreSQL: a temporary database on --postgres (default: $CONSENT_IVR_TEST_PG or the local
server the tests use), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from consent_ivr.config import Config
from consent_ivr.evidence import checkpoints, keys, verify
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.models import ConsentEvent

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import DEFAULT_PG_BASES, PG_ENV, PgServer, _base  # noqa: E402
from tests.evidence.calls import archive_prompts, recording, sox, store_call  # noqa: E402

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BATCH = 200


def config_for(url: str, root: Path, public: str) -> Config:
    return Config.model_validate(
        {
            "database": {"url": url},
            "prompts": {"audio_dir": str(root / "audio")},
            "evidence": {"checkpoints": str(root / "checkpoints.jsonl"), "public_keys": [public]},
        }
    )


def store(db: Database, config: Config, root: Path, n: int, seconds: float) -> None:
    """n calls through the store API, BATCH calls per transaction."""
    shas = archive_prompts(verify.prompt_archive(config), root / "made", 2.0)
    template = sox(root / "made" / "recording.wav", seconds, 300).read_bytes()
    folder = root / "recordings"
    folder.mkdir()
    for start in range(0, n, BATCH):
        with db.session() as s:
            for i in range(start, min(n, start + BATCH)):
                path = folder / f"{i}.wav"
                path.write_bytes(template[:-2] + i.to_bytes(2, "little"))  # each its own hash
                store_call(
                    s,
                    config,
                    channel_id=f"PJSIP/trunk-{i:08d}",
                    at=T0 + timedelta(seconds=60 * i),
                    phone=f"+7916{i:07d}",
                    prompt_sha=shas,
                    outcome="granted" if i % 3 else "declined",
                    played=recording(path, seconds),
                )


def read_all(db: Database) -> float:
    """The baseline: every event row read once, in ledger order."""
    start = time.perf_counter()
    with db.session() as s:
        last = 0
        while True:
            rows = s.execute(
                select(*verify.EVENT_COLUMNS)
                .where(ConsentEvent.ledger_seq > last)
                .order_by(ConsentEvent.ledger_seq)
                .limit(verify.LEDGER_PAGE)
            ).all()
            if not rows:
                break
            last = rows[-1].ledger_seq
    return time.perf_counter() - start


def measure(url: str, root: Path, n: int, seconds: float) -> tuple[float, float, float]:
    """(seconds to store, seconds to verify --all, seconds to read every event)."""
    private, public = keys.generate()
    config = config_for(url, root, public)
    upgrade(url)
    db = Database(url)
    try:
        start = time.perf_counter()
        store(db, config, root, n, seconds)
        stored_s = time.perf_counter() - start
        signer = keys.signer(config, {config.evidence.signing_key_env: private})
        checkpoints.checkpoint(db, Path(config.evidence.checkpoints), signer)
        read_s = read_all(db)
        start = time.perf_counter()
        with db.session() as s:
            report = verify.verify_all(s, config)
        verify_s = time.perf_counter() - start
        if not report.ok or report.counts.get("records") != n:
            raise SystemExit("verify failed:\n" + "\n".join(report.lines()[-20:]))
        return stored_s, verify_s, read_s
    finally:
        db.close()


def postgres_server(url: str | None) -> PgServer:
    for text in [url] if url else [os.environ.get(PG_ENV) or "", *DEFAULT_PG_BASES]:
        if not text:
            continue
        server = PgServer(_base(text))
        try:
            with server.connect() as conn:
                conn.execute("SELECT 1")
            return server
        except Exception as e:  # the next candidate
            print(f"postgres {text}: {e}", file=sys.stderr)
    raise SystemExit("no PostgreSQL reachable: pass --postgres URL or --no-postgres")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--recording-seconds", type=float, default=1.0)
    parser.add_argument("--postgres", help="server URL (no database part)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    n = args.records
    results = []
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        sqlite_root = Path(tmp) / "sqlite"
        sqlite_root.mkdir()
        url = f"sqlite:///{sqlite_root / 'consent.db'}"
        results.append(("sqlite", measure(url, sqlite_root, n, args.recording_seconds)))
        if not args.no_postgres:
            server = postgres_server(args.postgres)
            name = server.create_database()
            pg_root = Path(tmp) / "postgresql"
            pg_root.mkdir()
            try:
                results.append(
                    ("postgresql", measure(server.url(name), pg_root, n, args.recording_seconds))
                )
            finally:
                server.drop_database(name)
    print(f"records: {n} (11 events each, a {args.recording_seconds:g} s recording each)")
    for backend, (stored_s, verify_s, read_s) in results:
        print(
            f"{backend}: verify --all {n / verify_s:.0f} records/s ({verify_s:.2f} s); "
            f"reading every event {read_s:.2f} s; verify / read: {verify_s / read_s:.1f}; "
            f"storing them took {stored_s:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
