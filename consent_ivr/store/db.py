"""Engine, sessions and migrations.

The service is asyncio; SQLAlchemy runs synchronously in worker threads so that the same models,
the same Alembic migrations and the same code serve SQLite and PostgreSQL. SQLite gets one
writer thread (it allows one writer at a time anyway); PostgreSQL gets a small pool. Reads that
a caller waits for (who is calling, what did they consent to) have threads of their own, so they
never queue behind a burst of writes (SQLite's WAL lets them run beside the writer).

Calls' evidence writes go through `Database.batched`: the writes that wait at the same moment
share one transaction (group commit); when anything in it fails, it is rolled back and each
write is run again alone, so that one that fails fails alone. Every evidence write holds the
ledger lock for its whole transaction (see consent_ivr.store.chain), so they run one after
another anyway; 200 callers deciding in the same second then wait for a few commits rather
than for 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from consent_ivr import metrics
from consent_ivr.config_types import redact
from consent_ivr.store import chain
from consent_ivr.store.models import ConsentRecord

T = TypeVar("T")
# A batched write: its function and the consent records it reads; queued with its future.
Job = tuple[Callable[[Session], Any], tuple[str, ...]]
Write = tuple[Callable[[Session], Any], tuple[str, ...], "asyncio.Future[Any]"]

# At most this many writes share a transaction: each waits for the whole batch, and a batch holds
# the ledger lock until it commits (bench/store_calls.py: 200 calls deciding at once wait
# p50 1,258 / p99 1,259 ms with 200, 618 / 957 ms with 32, 780 / 1,392 ms with 8).
MAX_BATCH = 32

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept the URLs people write (postgres://, postgresql://) and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


SUPPORTED_URLS = "sqlite:///PATH or postgresql://USER@HOST/DATABASE"
_DRIVERS = {("sqlite", "pysqlite"), ("postgresql", "psycopg")}


def check_url(url: str) -> str:
    """For the config: ``url`` when it names a database this product can use, else ValueError
    saying what was expected (never repeating the URL: it may hold a password)."""
    try:
        parsed = make_url(normalize_url(url))
        driver = (parsed.get_backend_name(), parsed.get_driver_name())
        port_ok = parsed.port is None or 0 < parsed.port < 65536
    except (ArgumentError, ValueError):
        raise ValueError(f"expected a database URL: {SUPPORTED_URLS}") from None
    if driver not in _DRIVERS:
        raise ValueError(
            f"unsupported database driver {parsed.drivername!r}: expected {SUPPORTED_URLS}"
        )
    if not port_ok:
        raise ValueError("the port in the URL must be a number from 1 to 65535")
    if driver[0] == "postgresql" and not parsed.database:
        raise ValueError(f"the URL names no database: expected {SUPPORTED_URLS}")
    return url


def shown_url(url: str) -> str:
    """The database URL as messages show it: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return redact(url)


class DatabaseUnavailable(Exception):
    """The database cannot serve this version: unreachable, or its schema not at the head of
    the migrations. The message names it (password hidden) and what to do."""


def check(url: str, source: str = "database.url") -> str:
    """Connect and compare the schema with the migrations: the revision it is at, or
    DatabaseUnavailable naming the database, ``source`` (where its URL came from) and what to
    do. A SQLite file that does not exist is reported, not created."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    parsed = make_url(normalize_url(url))
    name = f"database {shown_url(url)} ({source})"
    sqlite = is_sqlite(url)
    file = parsed.database if sqlite and parsed.database not in (None, "", ":memory:") else None
    if file and not Path(file).exists():
        raise DatabaseUnavailable(
            f"{name}: the file does not exist; create it with `consent-ivr db upgrade`"
        )
    engine = create_engine(
        parsed, poolclass=NullPool, connect_args={} if sqlite else {"connect_timeout": 10}
    )
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except DBAPIError as e:
        # The driver's first line says it (later ones are hints like the advice below).
        reason = next((line.strip() for line in str(e.orig).splitlines() if line.strip()), "")
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        failed = (
            "cannot open it ({}); check the path and its permissions"
            if sqlite
            else "cannot connect ({}); check that the server runs, and the host, port, user, "
            "password and database name"
        )
        raise DatabaseUnavailable(f"{name}: {failed.format(redact(reason))}") from None
    finally:
        engine.dispose()
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    heads = set(script.get_heads())
    if current == heads:
        return ", ".join(sorted(heads))
    upgrade_it = "run `consent-ivr db upgrade`"
    if not current:
        raise DatabaseUnavailable(f"{name}: not migrated (no consent-ivr tables); {upgrade_it}")
    at = ", ".join(sorted(current))
    if current - {r.revision for r in script.walk_revisions()}:
        raise DatabaseUnavailable(
            f"{name}: at revision {at}, which this version of consent-ivr does not know "
            f"(migrated by a newer version?): run that version, or upgrade this one"
        )
    raise DatabaseUnavailable(
        f"{name}: at revision {at}, this version needs {', '.join(sorted(heads))}; {upgrade_it}"
    )


def is_sqlite(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 5})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (creates the database file when needed)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


class Database:
    """A synchronous engine used from asyncio through a bounded thread pool."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        workers = 1 if is_sqlite(self.url) else 4
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="db-read")
        self._waiting: list[Write] = []
        self._later: list[Write] = []
        self._batcher: asyncio.Task[None] | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A session for reading only, whose statements all see the database at one moment:
        a record's head and its events, read by two statements, agree even while calls append
        to it (else a live record can look tampered with). REPEATABLE READ on PostgreSQL; on
        SQLite a read transaction (its driver begins one only for writes). Rolled back."""
        with self._sessions() as session:
            if is_sqlite(self.url):
                session.connection().exec_driver_sql("BEGIN")
            else:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                yield session
            finally:
                session.rollback()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the database thread pool, off the event loop."""
        return await self._in(self._pool, "writers", functools.partial(fn, *args))

    async def _in(self, pool: ThreadPoolExecutor, name: str, fn: Callable[[], T]) -> T:
        queued = time.perf_counter()

        def timed() -> T:
            metrics.DB_QUEUE.labels(name).observe(time.perf_counter() - queued)
            return fn()

        return await asyncio.get_running_loop().run_in_executor(pool, timed)

    async def read(self, fn: Callable[[Session], T], *, snapshot: bool = False) -> T:
        """Run ``fn(session)`` in a reader thread: for reads only, which must not wait for
        the writers. `snapshot`: in `Database.snapshot` (several statements that must agree)."""

        def work() -> T:
            with self.snapshot() if snapshot else self.session() as session:
                return fn(session)

        return await self._in(self._readers, "readers", work)

    async def transaction(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` inside one transaction, off the event loop."""

        def work() -> T:
            with metrics.db_write(), self.session() as session:
                return fn(session)

        return await self.run(work)

    async def batched(
        self, fn: Callable[[Session], T], *, later: bool = False, records: Iterable[str] = ()
    ) -> T:
        """Run ``fn(session)`` as part of the next group commit: in a transaction shared with
        the other batched writes waiting now. Its changes are committed when this returns; its
        exception is raised here. When anything in the shared transaction fails, each write is
        run again in a transaction of its own, so ``fn`` may run twice: it must change nothing
        outside the session (return what it made instead). The shared transaction does not
        autoflush: ``fn`` must not query rows another write of the batch may have added.
        Only for writes that append evidence: the transaction takes the ledger lock first. A
        write nobody listens for (`later`: a call's end) goes after those a caller waits for.
        `records`: the consent records ``fn`` reads (`session.get`); the batch loads all its
        writes' records with one query first, rather than one query each.
        """
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._later if later else self._waiting).append((fn, tuple(records), done))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.ensure_future(self._commit_batches())
        return await done

    async def _commit_batches(self) -> None:
        while self._waiting or self._later:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            room = MAX_BATCH - len(batch)
            batch, self._later = batch + self._later[:room], self._later[room:]
            try:
                outcomes = await self.run(self._write_batch, [w[:2] for w in batch])
            except Exception as e:  # the pool refused the work (closed): none of it ran
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(e)
                continue
            except BaseException:  # cancelled (the service stops): so are its writers
                for *_, done in batch + self._waiting + self._later:
                    done.cancel()
                self._waiting, self._later = [], []
                raise
            for (*_, done), (ok, value) in zip(batch, outcomes, strict=True):
                if not done.done():
                    done.set_result(value) if ok else done.set_exception(value)

    def _write_batch(self, writes: list[Job]) -> list[tuple[bool, Any]]:
        metrics.DB_BATCH.observe(len(writes))
        if len(writes) > 1:
            # No autoflush: the writes are different calls' and do not read one another's
            # new rows; the ORM's changes are flushed once, at the end.
            with contextlib.suppress(Exception):  # one failed, or the commit: told below
                return [(True, r) for r in self._write_together(writes, autoflush=False)]
        # Each alone, so that one that fails fails alone (and says why).
        outcomes: list[tuple[bool, Any]] = []
        for write in writes:
            try:
                outcomes.append((True, self._write_together([write], autoflush=True)[0]))
            except Exception as e:
                outcomes.append((False, e))
        return outcomes

    def _write_together(self, writes: list[Job], *, autoflush: bool) -> list[Any]:
        """`writes` in one transaction, the ledger lock taken first (as everywhere), the
        records they read loaded together, their events written together at the end. Any
        exception rolls all of it back."""
        with metrics.db_write(), self.session() as session:
            chain.lock(session)
            wanted = list(dict.fromkeys(r for _, records in writes for r in records))
            # Held here: the session's identity map keeps its objects only weakly.
            loaded = _load_records(session, wanted)
            with chain.deferred(session):
                if autoflush:
                    results = [fn(session) for fn, _ in writes]
                else:
                    with session.no_autoflush:
                        results = [fn(session) for fn, _ in writes]
            del loaded
            return results

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self.engine.dispose()


def _load_records(session: Session, ids: list[str]) -> list[ConsentRecord]:
    """The consent records `ids` into the session, by as few queries as the IN lists allow."""
    found: list[ConsentRecord] = []
    for start in range(0, len(ids), 500):
        chosen = ConsentRecord.record_id.in_(ids[start : start + 500])
        found += session.scalars(select(ConsentRecord).where(chosen))
    return found
