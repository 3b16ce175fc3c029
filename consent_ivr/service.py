"""Wiring: config -> database, prompts, HTTP server, ARI app, SMS worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from consent_ivr import http, metrics
from consent_ivr.ari.app import ConsentApp
from consent_ivr.config import Config, ConfigError
from consent_ivr.prompts import Catalog
from consent_ivr.store import db as dbm
from consent_ivr.store.records import DecisionHook

log = logging.getLogger(__name__)


@dataclass
class Service:
    config: Config
    db: dbm.Database
    app: ConsentApp
    runner: web.AppRunner | None


def decision_hooks(config: Config) -> list[DecisionHook]:
    if not config.sms.enabled:
        return []
    from consent_ivr.sms import promises
    from consent_ivr.sms.outbox import decision_hook

    return [decision_hook(config.sms, promises.channels(config))]


def sms_routes(config: Config, db: dbm.Database) -> list[web.RouteDef]:
    """Delivery reports, and the inbound SMS route when its token is set."""
    if not config.sms.enabled:
        return []
    from consent_ivr.sms import promises
    from consent_ivr.sms.http import inbound_routes, routes

    channels = promises.channels(config)
    return routes(db, config.sms) + inbound_routes(db, config.sms, channels, config.default_region)


def preflight(config: Config) -> Catalog:
    """Everything that must be right before the service takes a call; raises ConfigError."""
    if not config.ari.password:
        raise ConfigError("ari.password: not set; export CONSENT_IVR_ARI_PASSWORD")
    from consent_ivr.evidence import tasks as evidence_tasks

    evidence_tasks.preflight(config)
    catalog = Catalog(config)
    catalog.check_audio()
    return catalog


@contextlib.asynccontextmanager
async def running(
    config: Config, *, migrate: bool = True, sms_worker: bool | None = None
) -> AsyncIterator[Service]:
    """The service, started and connected; stopped cleanly on exit."""
    # Everything the service writes (the SQLite file, recordings, journal, SMS log,
    # checkpoints) is for its own user only.
    os.umask(0o077)
    metrics.watch_gc()
    catalog = preflight(config)
    if migrate:
        await asyncio.to_thread(dbm.upgrade, config.database.url)
    db = dbm.Database(config.database.url)
    runner = None
    worker: asyncio.Task[None] | None = None
    evidence: asyncio.Task[None] | None = None
    stop_worker = asyncio.Event()
    app = ConsentApp(config, db, catalog, decision_hooks(config))
    fronts = contextlib.AsyncExitStack()
    try:
        if config.http.enabled:
            web_app = http.make_app(
                config, db, sms_routes(config, db), consent_app=app, hooks=decision_hooks(config)
            )
            runner = await http.serve(web_app, config.http.host, config.http.port)
        await app.start()
        if config.agi.enabled:
            from consent_ivr.agi.server import serving

            await fronts.enter_async_context(
                serving(config, db, catalog, config.agi, decision_hooks(config))
            )
        from consent_ivr.evidence import tasks as evidence_tasks

        evidence = asyncio.create_task(evidence_tasks.run(config, db, stop_worker))
        if sms_worker if sms_worker is not None else _worker_in_process(config):
            from consent_ivr.sms import promises
            from consent_ivr.sms.worker import run_worker

            worker = asyncio.create_task(
                run_worker(
                    db,
                    config.sms,
                    stop_worker,
                    channels=promises.channels(config),
                    region=config.default_region,
                )
            )
            worker.add_done_callback(_report_worker_end)
        log.info(
            "consent-ivr ready: app %s on %s, database %s",
            config.ari.app,
            config.ari.url,
            db.dialect,
        )
        yield Service(config, db, app, runner)
    finally:
        await fronts.aclose()
        await app.stop()
        stop_worker.set()
        if evidence is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(evidence, 30)
        if worker:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(worker, 10)
        if runner:
            await runner.cleanup()
        db.close()


def _worker_in_process(config: Config) -> bool:
    return config.sms.enabled and config.sms.worker_in_process


def _report_worker_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the SMS worker stopped: %s", task.exception())


async def serve_api(config: Config, port: int) -> None:
    """The web app alone (API, console, metrics, gateway callbacks), taking no calls, until
    SIGINT or SIGTERM. Its port is shared (SO_REUSEPORT) with every other `consent-ivr api`
    on it, so more processes answer more requests."""
    stop = stop_on_signals()
    os.umask(0o077)
    db = dbm.Database(config.database.url)
    try:
        hooks = decision_hooks(config)
        app = http.make_app(config, db, sms_routes(config, db), hooks=hooks, takes_calls=False)
        runner = await http.serve(app, config.http.host, port, reuse_port=True)
        metrics.watch_gc()
        settle_heap()
        try:
            log.info(
                "consent-ivr api on %s:%d (pid %d), database %s",
                config.http.host,
                port,
                os.getpid(),
                db.dialect,
            )
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        db.close()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (call from the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def settle_heap() -> None:
    """Once a process has started: what is loaded by now (modules, SQLAlchemy's mappers, the
    configuration, the prompt catalog, phone number metadata) lives as long as the process.
    Frozen, it is out of the garbage collector's sight: a full collection then scans only what
    the calls and requests create. It stops every thread while it runs: at 200 SIP calls,
    13-89 ms (median 43) instead of 102-114 ms (bench/RESULTS.md, change 10)."""
    gc.collect()
    gc.freeze()


async def serve_forever(config: Config) -> None:
    stop = stop_on_signals()
    async with running(config):
        settle_heap()
        await stop.wait()
        log.info("stopping")
