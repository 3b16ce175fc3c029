"""/metrics, /healthz and /readyz of the real web app, on SQLite and PostgreSQL; the garbage
collector's pauses and the frozen start-up heap; the JSON log lines; the token commands; the
0006 migration up and down with no drift from the models."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import json
import logging
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import inspect, select

import consent_ivr.api.models  # noqa: F401  (the API's tables join the metadata)
import consent_ivr.sms.models  # noqa: F401
from consent_ivr import metrics
from consent_ivr.api.jsonlog import JsonFormatter, bind
from consent_ivr.api.models import ApiToken
from consent_ivr.phone import mask
from consent_ivr.service import settle_heap
from consent_ivr.store.db import make_engine, upgrade
from consent_ivr.store.models import Base
from tests.api.conftest import PHONE, T0, Site

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OTHER_PHONE = "+79031112233"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, labels); parsing it proves the format."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def test_metrics_read_the_database_when_scraped(site: Site) -> None:
    site.store_call(PHONE, "granted")
    site.store_call(OTHER_PHONE, "declined", at=T0 + timedelta(minutes=5), campaign="two")
    site.store_call(OTHER_PHONE, "no_response", at=T0 + timedelta(minutes=9))
    token = site.token("read")
    for _ in range(3):
        await site.call("GET", "/v1/consents", token, params={"phone": PHONE})
    metrics.keypress_answered(T0, T0 + timedelta(milliseconds=180))
    with metrics.db_write():
        pass
    metrics.recording_stored(4000)
    metrics.ari_reconnected()

    status, headers, text = await site.call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    got = samples(text)
    records = {
        dict(labels)["outcome"] + "/" + dict(labels)["campaign"]: value
        for (name, labels), value in got.items()
        if name == "consent_ivr_records"
    }
    assert records == {"granted/default": 1, "declined/two": 2, "no_response/default": 1}
    # Three calls, one SMS each (the two decisions of a call share one); none sent yet.
    assert got[("consent_ivr_sms", (("status", "queued"),))] == 2
    assert got[("consent_ivr_sms_queue_depth", ())] == 2
    assert got[("consent_ivr_sms_oldest_waiting_seconds", ())] > 0
    assert not [k for k in got if k[0] == "consent_ivr_calls_in_progress"]  # no ARI app here
    assert (
        got[
            (
                "consent_ivr_http_requests_total",
                (("method", "GET"), ("route", "/v1/consents"), ("status", "200")),
            )
        ]
        >= 3
    )
    assert got[("consent_ivr_keypress_to_prompt_seconds_count", ())] >= 1
    assert got[("consent_ivr_keypress_to_prompt_seconds_bucket", (("le", "0.2"),))] >= 1
    assert got[("consent_ivr_db_write_seconds_count", ())] >= 1
    assert got[("consent_ivr_recording_bytes_total", ())] >= 4000
    assert got[("consent_ivr_ari_reconnects_total", ())] >= 1
    assert ("consent_ivr_event_loop_lag_seconds_count", ()) in got
    assert ("process_resident_memory_bytes", ()) in got
    assert PHONE not in text and OTHER_PHONE not in text


async def test_garbage_collections_are_timed_and_the_start_up_heap_frozen(site: Site) -> None:
    metrics.watch_gc()
    metrics.watch_gc()  # once per process, however often it is asked
    assert gc.callbacks.count(metrics._gc_timed) == 1
    full = ("consent_ivr_gc_pause_seconds_count", (("generation", "2"),))
    before = samples((await site.call("GET", "/metrics"))[2]).get(full, 0.0)
    gc.collect()
    got = samples((await site.call("GET", "/metrics"))[2])
    # At least ours: in the whole suite's process, threads left by earlier tests (a service's
    # writers, aiohttp) can start a full collection of their own between the two scrapes.
    assert got[full] >= before + 1
    assert got[("consent_ivr_gc_pause_seconds_sum", (("generation", "2"),))] > 0
    try:
        settle_heap()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, mappers and configuration loaded by now
        assert gc.get_count()[0] < 700  # and nothing young left behind
    finally:
        gc.unfreeze()


async def test_healthz_and_readyz_name_the_failing_part(site: Site, tmp_path: Path) -> None:
    status, _, body = await site.call("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok", "pid": os.getpid()})
    status, _, body = await site.call("GET", "/readyz")
    assert status == 503 and body["ready"] is False
    checks = body["checks"]
    assert checks["ari"] == {"ok": False, "detail": "this process runs no ARI app"}
    assert checks["database"]["ok"] and checks["database"]["detail"].endswith("answers")
    assert checks["recordings"]["ok"] and checks["sms_gateway"]["ok"]
    assert checks["sms_gateway"]["detail"].startswith("log gateway: ")

    # The recordings folder is a file now: not writable, and said so.
    folder = Path(site.config.recordings.dir)
    await asyncio.to_thread(shutil.rmtree, folder)
    await asyncio.to_thread(folder.write_text, "not a folder")
    status, _, body = await site.call("GET", "/readyz")
    assert status == 503 and not body["checks"]["recordings"]["ok"]
    assert str(folder) in body["checks"]["recordings"]["detail"]


def test_json_log_lines_carry_the_call_and_mask_numbers() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.jsonlog")
    logger.addHandler(handler)
    logger.propagate = False

    def call_task() -> None:  # a call's task: what it binds stays with its own lines
        bind(call_id="c-1", record_id="2b4e6f2a-1111-4222-8333-944445555666")
        logging.LoggerAdapter(logger, {"call": "ab12cd34"}).warning(
            "caller %s pressed %s; order 1234567", "+79161234567", "1"
        )
        try:
            raise ValueError("no record for 79161234567")
        except ValueError:
            logger.exception("failed")

    try:
        contextvars.copy_context().run(call_task)
        logger.warning("after the call")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == f"caller {mask('+79161234567')} pressed 1; order 1234567"
    assert (first["call"], first["call_id"]) == ("ab12cd34", "c-1")
    assert first["record_id"] == "2b4e6f2a-1111-4222-8333-944445555666"
    assert first["level"] == "WARNING" and first["time"].endswith("Z")
    assert "79161234567" not in second["exception"] and mask("79161234567") in second["exception"]
    assert "call_id" not in third and "record_id" not in third


def test_token_commands(database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from consent_ivr.api import cli as api_cli

    config = tmp_path / "config.yaml"
    config.write_text(f"database:\n  url: {database.url}\n")

    # As consent_ivr.cli.build_parser mounts it: `consent-ivr -c FILE tokens ...`.
    parser = argparse.ArgumentParser(prog="consent-ivr")
    parser.add_argument("-c", "--config")
    api_cli.add_commands(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(["-c", str(config), *argv])
        return int(args.fn(args))

    assert run("tokens", "create", "--name", "crm", "--scope", "read", "--scope", "call") == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("cvr_") and len(token) > 40
    assert "shown once" in err and token not in err
    assert run("tokens", "list", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "crm" and row["scopes"] == ["read", "call"] and row["revoked_at"] is None
    assert token not in json.dumps(row) and token.startswith(row["prefix"])
    assert run("tokens", "revoke", "crm") == 0
    assert run("tokens", "revoke", "crm") == 1
    with database.session() as s:
        [stored] = s.scalars(select(ApiToken)).all()
        assert stored.revoked_at is not None


def test_migration_0006_up_down_and_no_drift(db_url: str) -> None:
    upgrade(db_url, "0006")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert {"api_tokens", "api_audit"} <= set(inspect(conn).get_table_names())
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diffs if "api_" in str(d)] == []
        from alembic import command
        from alembic.config import Config as AlembicConfig

        from consent_ivr.store.db import MIGRATIONS_DIR, normalize_url

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", normalize_url(db_url))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0005")
        with engine.connect() as conn:
            assert not {"api_tokens", "api_audit"} & set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    upgrade(db_url)
