"""The service's small HTTP server (127.0.0.1 by default): prompt audio for Asterisk's HTTP
media cache when Asterisk does not share our filesystem, a health check, and the routes other
parts mount (SMS delivery reports)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from consent_ivr.config import Config


def make_app(config: Config, extra_routes: Iterable[web.RouteDef] = ()) -> web.Application:
    app = web.Application()
    audio_dir = config.prompts.audio_dir.resolve()
    audio_dir.mkdir(parents=True, exist_ok=True)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)
    app.router.add_static("/prompts/", audio_dir, follow_symlinks=False)
    app.add_routes(list(extra_routes))
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
