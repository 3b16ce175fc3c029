"""The service's HTTP server (127.0.0.1 by default). What it serves:

/v1/...          the API (consent_ivr.api), token and scope per route
/console/...     the compliance console (consent_ivr.console), token login
/metrics         Prometheus metrics (consent_ivr.metrics)
/healthz         the process is up (/health: the same, as before)
/readyz          ready to take calls, or which part is not
/prompts/...     prompt audio for Asterisk's HTTP media cache, when it does not share our
                 filesystem
and the routes other parts mount (SMS delivery reports, inbound SMS).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy import text

from consent_ivr import metrics
from consent_ivr.api.audit import AuditLog
from consent_ivr.api.http import Services
from consent_ivr.config import Config
from consent_ivr.store.db import Database
from consent_ivr.store.pgasync import AsyncPg
from consent_ivr.store.records import DecisionHook

if TYPE_CHECKING:
    from consent_ivr.ari.app import ConsentApp

Check = Callable[[], Awaitable[str]]


@web.middleware
async def measured(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        route = metrics.route_label(request.match_info)
        metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - start)
        metrics.HTTP_REQUESTS.labels(route, request.method, str(status)).inc()


def make_app(
    config: Config,
    db: Database,
    extra_routes: Iterable[web.RouteDef] = (),
    *,
    consent_app: ConsentApp | None = None,
    hooks: Sequence[DecisionHook] = (),
    takes_calls: bool = True,
) -> web.Application:
    """The web app of a service whose database is `db` and whose calls `consent_app` takes
    (None: a process that serves the API without taking calls). A process that is not meant
    to take calls (`takes_calls` false: `consent-ivr api`) is ready without ARI."""
    from consent_ivr.api import http as api_http
    from consent_ivr.console import http as console_http

    app = web.Application(middlewares=[measured])
    audio_dir = config.prompts.audio_dir.resolve()
    audio_dir.mkdir(parents=True, exist_ok=True)
    pg = AsyncPg(db.engine.url) if db.dialect == "postgresql" else None
    svc = Services(
        config, config.api, db, consent_app.ari if consent_app else None, hooks, takes_calls, pg
    )
    audit = AuditLog(db, config.api.audit_flush_s, pg)

    async def background(_app: web.Application) -> AsyncIterator[None]:
        audit.start()
        lag = asyncio.create_task(metrics.watch_loop(), name="loop-lag")
        yield
        lag.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag
        await audit.stop()
        if pg is not None:
            await pg.close()

    app.cleanup_ctx.append(background)

    async def health(_request: web.Request) -> web.Response:
        # The pid tells which of the processes sharing a port answered.
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def ready(_request: web.Request) -> web.Response:
        checks = await readiness(config, db, consent_app, ari=takes_calls)
        ok = all(c["ok"] for c in checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    async def scrape(_request: web.Request) -> web.Response:
        snap = await db.read(metrics.snapshot)
        live = metrics.Live(
            [(s.setup.campaign, s.setup.direction) for s in consent_app.calls.values()]
            if consent_app
            else [],
            consent_app.ari.connected.is_set() if consent_app else None,
        )
        return web.Response(
            body=metrics.exposition(snap, live), headers={"Content-Type": metrics.CONTENT_TYPE}
        )

    app.router.add_get("/health", health)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/metrics", scrape)
    app.router.add_static("/prompts/", audio_dir, follow_symlinks=False)
    if config.api.enabled:
        app.add_subapp("/v1", api_http.make_app(svc, audit))
        if config.api.console:
            app.add_subapp("/console", console_http.make_app(svc, audit))
    app.add_routes(list(extra_routes))
    return app


async def serve(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> web.AppRunner:
    """Listen on host:port. With `reuse_port`, several processes that all set it share the
    port, and the kernel spreads the connections among them."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    return runner


# ---- readiness --------------------------------------------------------------------------------


async def readiness(
    config: Config, db: Database, consent_app: ConsentApp | None, *, ari: bool = True
) -> dict[str, dict[str, object]]:
    """Each part the service needs to take a call (without `ari`: to answer the API),
    checked at once, each within its time."""

    async def ari_check() -> str:
        if consent_app is None:
            raise RuntimeError("this process runs no ARI app")
        client = consent_app.ari
        if not client.connected.is_set():
            raise RuntimeError(f"websocket to {config.ari.url} not connected")
        await client.request("GET", f"/applications/{config.ari.app}")
        return f"connected, app {config.ari.app} registered"

    async def database() -> str:
        await db.read(lambda s: s.execute(text("SELECT 1")))
        return f"{db.dialect} answers"

    async def recordings() -> str:
        folder = await asyncio.to_thread(_writable, Path(config.recordings.dir))
        return f"{folder} writable"

    checks: dict[str, Check] = {
        "ari": ari_check,
        "database": database,
        "recordings": recordings,
        "sms_gateway": lambda: sms_gateway(config),
    }
    if not ari:
        del checks["ari"]
    timeout = config.api.ready_timeout_s
    results = await asyncio.gather(
        *(asyncio.wait_for(check(), timeout) for check in checks.values()),
        return_exceptions=True,
    )
    report: dict[str, dict[str, object]] = {}
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, BaseException):
            why = "no answer in time" if isinstance(result, TimeoutError) else str(result)
            report[name] = {"ok": False, "detail": why or type(result).__name__}
        else:
            report[name] = {"ok": True, "detail": result}
    return report


def _writable(folder: Path) -> Path:
    """The folder, made if need be, once a file could be written in it (OSError if not)."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".ready-"):
        pass
    return folder


async def sms_gateway(config: Config) -> str:
    sms = config.sms
    if not sms.enabled:
        return "SMS disabled"
    if sms.gateway == "log":
        folder = await asyncio.to_thread(_writable, sms.log.file.parent)
        return f"log gateway: {folder} writable"
    if sms.gateway == "kannel":
        url = urlsplit(sms.kannel.sendsms_url)
        host, port = url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
    else:
        host, port = sms.smpp.host, sms.smpp.port
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        raise RuntimeError(f"{sms.gateway} at {host}:{port} unreachable: {e.strerror or e}") from e
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return f"{sms.gateway} at {host}:{port} accepts connections"
