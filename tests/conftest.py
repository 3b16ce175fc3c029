"""Shared fixtures: real databases for the storage tests.

PostgreSQL is a required part of the test run, not an optional extra: when the server cannot be
reached the tests that need it FAIL with a message saying so. Set ``CONSENT_IVR_SKIP_PG=1`` to
skip them instead (a laptop without PostgreSQL). ``CONSENT_IVR_TEST_PG`` points the tests at
another server, e.g. ``postgresql://user:secret@db.example:5432`` (any database part is ignored:
the tests create and drop their own databases there).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from consent_ivr.store.db import Database, upgrade

PG_ENV = "CONSENT_IVR_TEST_PG"
SKIP_PG_ENV = "CONSENT_IVR_SKIP_PG"
DEFAULT_PG_BASES = ("postgresql://root@127.0.0.1:5432", "postgresql://postgres@127.0.0.1:5432")


@dataclass(frozen=True)
class PgServer:
    """A reachable PostgreSQL server on which the tests may create databases."""

    base: URL  # no database part

    def url(self, database: str) -> str:
        """The URL of one database, as the application is configured with it."""
        return self.base.set(database=database).render_as_string(hide_password=False)

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=5)

    def create_database(self) -> str:
        name = f"consent_ivr_t_{secrets.token_hex(6)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            _terminate_others(conn, name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _terminate_others(conn: psycopg.Connection, database: str) -> None:
    """End every other session on ``database`` (a leaked engine must not block a DROP)."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def _pg_unavailable(message: str) -> NoReturn:
    if os.environ.get(SKIP_PG_ENV) == "1":
        pytest.skip(f"{message} ({SKIP_PG_ENV}=1)")
    pytest.fail(
        f"{message}\nPostgreSQL is required by these tests. Start it, point {PG_ENV} at a "
        f"server (e.g. postgresql://user@host:5432), or set {SKIP_PG_ENV}=1 to skip them.",
        pytrace=False,
    )


def _base(text: str) -> URL:
    url = make_url(text)
    return url.set(drivername="postgresql", database=None)


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The PostgreSQL server the tests use (fails the test when it is unreachable)."""
    configured = os.environ.get(PG_ENV)
    candidates = [configured] if configured else list(DEFAULT_PG_BASES)
    errors = []
    for text in candidates:
        try:
            server = PgServer(_base(text))
        except Exception as e:  # a malformed CONSENT_IVR_TEST_PG
            errors.append(f"{text}: {e}")
            continue
        try:
            with server.connect() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            shown = server.base.render_as_string(hide_password=True)
            errors.append(f"{shown}: {str(e).strip()}")
            continue
        return server
    _pg_unavailable("PostgreSQL is not reachable:\n  " + "\n  ".join(errors))


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database for the whole session; dropped at the end."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def _pg_scratch(pg_server: PgServer) -> Iterator[str]:
    """A database of its own for `db_url`, whose schema is wiped before each test."""
    name = pg_server.create_database()
    try:
        yield name
    finally:
        pg_server.drop_database(name)


def _reset_schema(server: PgServer, database: str) -> None:
    with server.connect(database) as conn:
        _terminate_others(conn, database)
        conn.execute("SET lock_timeout = '10s'")
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database: a SQLite file, or a PostgreSQL database with a clean schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'consent.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    name: str = request.getfixturevalue("_pg_scratch")
    _reset_schema(server, name)
    return server.url(name)


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """The migrated database of `db_url`, closed after the test."""
    upgrade(db_url)
    db = Database(db_url)
    try:
        yield db
    finally:
        db.close()


def free_port() -> int:
    """A port nothing listens on right now, on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
