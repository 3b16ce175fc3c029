"""A small typed ARI client: REST calls plus one websocket reader that routes events.

The reader task never awaits a handler: it puts each event on the queue of the call it belongs
to (found by channel id, playback or recording target) and goes on reading, so one slow call can
never delay another. A call registers its queue before the first request that can produce an
event for it, and playbacks and recordings are named by us, so a fast "finished" event is never
missed. When the websocket drops, the reader reconnects with backoff; Asterisk re-subscribes the
app on connect, and `on_reconnect` lets the app check which of its calls survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Protocol

import aiohttp

from consent_ivr import metrics

log = logging.getLogger(__name__)

AriEvent = dict[str, Any]
# Set on each event by the reader: when it arrived here (time.time()), for the call's
# key -> prompt figures (consent_ivr.metrics.KEYPRESS_STAGE).
RECEIVED = "consent_ivr_received"
# How long a finished call waits for its recording while Asterisk is unreachable (restarting).
RECORDING_UNREACHABLE_S = 120.0


DOWNLOAD_CHUNK = 64 * 1024
# Asterisk closes a kept-alive HTTP connection after http.conf's session_keep_alive of quiet
# (15 s unless set), and aiohttp would keep it for 15 s too: a request sent at that moment
# meets a closing connection ("Server disconnected"; at 260 SIP calls, whose prompts and
# timers keep the connections quiet for about that long, 13 calls failed on it). The client
# lets its idle connections go first.
KEEPALIVE_S = 10.0


class Sink(Protocol):
    """Where a download goes as it arrives (audio.AudioWriter)."""

    def restart(self) -> None: ...
    def write(self, chunk: bytes, /) -> None: ...
    @property
    def wav_closed(self) -> bool: ...


class AriError(Exception):
    """An ARI request failed; `status` is the HTTP status (0 when Asterisk could not be reached)."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        # Asterisk's error bodies can be whole HTML pages: one short line for the log.
        detail = " ".join(detail.split())[:300]
        super().__init__(f"ARI {method} {path}: {status} {detail}".strip())
        self.status = status

    @property
    def transient(self) -> bool:
        """Asterisk unreachable or unavailable (restarting, shutting down): worth retrying."""
        return self.status == 0 or self.status >= 500


def _error(method: str, path: str, status: int, body: bytes) -> AriError:
    detail = body.decode("utf-8", "replace")[:200]
    with contextlib.suppress(ValueError, AttributeError):
        detail = json.loads(detail).get("message", detail)
    return AriError(method, path, status, detail)


def without_credentials(url: str) -> str:
    """A URL fit for a log line: any user:password@ in it replaced."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def event_time(event: AriEvent) -> datetime:
    """The time Asterisk stamped on an event (UTC), or now if it has none."""
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        # Asterisk writes 2026-12-01T12:00:00.123+0000; fromisoformat reads it 70 times
        # faster than strptime (3 % of the service's CPU at 200 calls).
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(stamp)
            if at.tzinfo is not None:
                return at.astimezone(UTC)
    return datetime.now(UTC)


def event_target(event: AriEvent) -> str | None:
    """The channel id an event belongs to, for routing (None for anything malformed)."""
    for key in ("playback", "recording"):
        obj = event.get(key)
        if obj:
            uri = obj.get("target_uri") if isinstance(obj, dict) else None
            if not isinstance(uri, str):
                return None
            return uri.split(":", 1)[1] if uri.startswith("channel:") else None
    channel = event.get("channel")
    if isinstance(channel, dict) and isinstance(channel.get("id"), str):
        return str(channel["id"])
    return None


def _timed_requests() -> aiohttp.TraceConfig:
    """Measures each request and any wait for a free connection of the pool."""

    async def pool_wait_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        ctx.queued = time.perf_counter()

    async def pool_wait_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        metrics.ARI_POOL_WAIT.observe(time.perf_counter() - ctx.queued)

    async def request_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        ctx.started = time.perf_counter()

    async def request_end(_s: Any, ctx: SimpleNamespace, p: Any) -> None:
        metrics.ARI_REQUEST.labels(p.method).observe(time.perf_counter() - ctx.started)

    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(pool_wait_start)
    trace.on_connection_queued_end.append(pool_wait_end)
    trace.on_request_start.append(request_start)
    trace.on_request_end.append(request_end)
    return trace


class AriClient:
    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        app: str,
        *,
        reconnect_max_s: float = 10.0,
        timeout_s: float = 30.0,
        connections: int = 64,
    ) -> None:
        self.base = url.rstrip("/") + "/ari"
        self.app = app
        self._headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
        self._reconnect_max_s = reconnect_max_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._routes: dict[str, asyncio.Queue[Any]] = {}
        self.connected = asyncio.Event()
        self.on_stasis_start: Callable[[AriEvent], None] | None = None
        self.on_reconnect: Callable[[], Coroutine[Any, Any, None]] | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self, *, events: bool = True) -> None:
        """Open the HTTP session and, unless `events` is false (a REST-only client beside a
        running service), the event websocket; returns once connected."""
        # A request that finds every connection busy waits for one (the metric
        # consent_ivr_ari_pool_wait_seconds): at 200 SIP calls with 64, up to 0.9 s.
        connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=KEEPALIVE_S)
        self._session = aiohttp.ClientSession(
            headers=self._headers,
            connector=connector,
            timeout=self._timeout,
            trace_configs=[_timed_requests()],
        )
        if not events:
            return
        ws = await self._connect()
        self._reader = asyncio.create_task(self._read_forever(ws), name="ari-reader")

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session:
            await self._session.close()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        ws_url = self.base.replace("http", "ws", 1) + "/events"
        # Credentials go in the Authorization header, never in the URL.
        params = {"app": self.app, "subscribeAll": "false"}
        ws = await self._session.ws_connect(ws_url, params=params, heartbeat=20)
        self.connected.set()
        log.info("ARI websocket connected to %s (app %s)", without_credentials(ws_url), self.app)
        return ws

    async def _read_forever(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        delay = 0.2
        while True:
            await self._read(ws)
            self.connected.clear()
            log.warning("ARI websocket closed; reconnecting")
            while True:
                await asyncio.sleep(delay * (0.5 + random.random()))
                try:
                    ws = await self._connect()
                except (aiohttp.ClientError, OSError) as e:
                    delay = min(delay * 2, self._reconnect_max_s)
                    log.warning("ARI reconnect failed (%s); next try in ~%.1fs", e, delay)
                    continue
                delay = 0.2
                if self.on_reconnect:
                    asyncio.create_task(self.on_reconnect(), name="ari-resync")
                break

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(msg.data)
                    event[RECEIVED] = time.time()
                    self.dispatch(event)
                except Exception:  # one bad event must not stop the reader
                    log.exception("could not dispatch an ARI event")
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                break

    def dispatch(self, event: AriEvent) -> None:
        if event.get("type") == "ApplicationReplaced":
            # Asterisk now sends this app's calls to another connection, and none to us.
            log.error("another client connected as ARI app %s and takes its calls now", self.app)
            return
        if event.get("type") == "StasisStart" and self.on_stasis_start:
            target = event_target(event)
            if target is None:
                log.warning("ignored a StasisStart without a channel id")
                return
            if target not in self._routes:
                self.on_stasis_start(event)
                return
        target = event_target(event)
        if target is not None:
            queue = self._routes.get(target)
            if queue is not None:
                queue.put_nowait(event)

    # ---- routing --------------------------------------------------------------------------

    def route(self, channel_id: str, queue: asyncio.Queue[Any]) -> None:
        """Send events of `channel_id` (and its playbacks and recordings) to `queue`."""
        self._routes[channel_id] = queue

    def unroute(self, channel_id: str) -> None:
        self._routes.pop(channel_id, None)

    # ---- REST -----------------------------------------------------------------------------

    async def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        assert self._session is not None, "start() first"
        retried = False
        while True:
            try:
                async with self._session.request(method, self.base + path, params=params) as r:
                    body = await r.read()
                    if r.status >= 400:
                        raise _error(method, path, r.status, body)
                    return json.loads(body) if body else None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                # The connection closed under the request: a kept-alive one that Asterisk was
                # closing as the request went out (session_keep_alive below KEEPALIVE_S), so
                # Asterisk never read it. aiohttp sends a GET or a DELETE once more by itself;
                # a POST (a prompt, an answer) goes once more here, on a new connection.
                if retried or method != "POST" or isinstance(e, aiohttp.ClientConnectorError):
                    raise AriError(method, path, 0, str(e)) from e
                retried = True
                log.debug("ARI %s %s: the connection closed under it; sent again", method, path)
            except aiohttp.ClientError as e:
                raise AriError(method, path, 0, str(e)) from e

    async def download(self, path: str, sink: Sink) -> None:
        """GET `path` into `sink` as it arrives (the sink restarted first)."""
        assert self._session is not None, "start() first"
        sink.restart()
        try:
            async with self._session.get(self.base + path) as resp:
                if resp.status >= 400:
                    raise _error("GET", path, resp.status, await resp.read())
                async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                    sink.write(chunk)
        except aiohttp.ClientError as e:
            raise AriError("GET", path, 0, str(e)) from e

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self.request("DELETE", f"/channels/{channel_id}", {"reason": reason})

    async def get_channel(self, channel_id: str) -> AriEvent:
        return await self.request("GET", f"/channels/{channel_id}")  # type: ignore[no-any-return]

    async def play(self, channel_id: str, playback_id: str, media: str, lang: str = "") -> None:
        params = {"media": media}
        if lang:
            params["lang"] = lang
        await self.request("POST", f"/channels/{channel_id}/play/{playback_id}", params)

    async def start_silence(self, channel_id: str) -> None:
        """Play silence until the next playback (which suspends it)."""
        await self.request("POST", f"/channels/{channel_id}/silence")

    async def stop_playback(self, playback_id: str) -> None:
        await self.request("DELETE", f"/playbacks/{playback_id}")

    async def snoop(self, channel_id: str, snoop_id: str, app_args: str) -> AriEvent:
        params = {"spy": "both", "app": self.app, "appArgs": app_args}
        return await self.request(  # type: ignore[no-any-return]
            "POST", f"/channels/{channel_id}/snoop/{snoop_id}", params
        )

    async def record(self, channel_id: str, name: str, fmt: str = "wav") -> None:
        params = {"name": name, "format": fmt, "terminateOn": "none", "ifExists": "overwrite"}
        await self.request("POST", f"/channels/{channel_id}/record", params)

    async def stop_recording(self, name: str) -> None:
        await self.request("POST", f"/recordings/live/{name}/stop")

    async def stored_recording(self, name: str, sink: Sink) -> None:
        await self.download(f"/recordings/stored/{name}/file", sink)

    async def closed_recording(
        self,
        name: str,
        timeout: float,
        sink: Sink,
        unreachable_s: float = RECORDING_UNREACHABLE_S,
    ) -> bool:
        """A stored recording into `sink` once its writer has closed it: MixMonitor closes its
        file a moment after the channel is gone, and only then writes the sizes into the WAV
        header, so this downloads until the header matches the file. False when it does not
        in `timeout`. While Asterisk is unreachable or unavailable (a restart: the file stays
        in its spool) it keeps trying for up to `unreachable_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        give_up = deadline + unreachable_s
        warned = False
        while True:
            try:
                await self.stored_recording(name, sink)
                if sink.wav_closed:
                    return True
            except AriError as e:
                if e.transient and loop.time() < give_up:
                    if not warned:
                        log.warning("recording %s: %s; trying again", name, e)
                        warned = True
                    # once Asterisk is back, the file may still need its moment to close
                    deadline = loop.time() + timeout
                    await asyncio.sleep(1.0)
                    continue
                if e.status != 404:
                    log.error("could not download recording %s: %s", name, e)
                    return False
            if loop.time() > deadline:
                log.error("recording %s was not closed in %.0fs", name, timeout)
                return False
            await asyncio.sleep(0.2)

    async def delete_stored_recording(self, name: str) -> None:
        await self.request("DELETE", f"/recordings/stored/{name}")

    async def originate(
        self,
        endpoint: str,
        *,
        channel_id: str | None = None,
        app_args: str | None = None,
        context: str | None = None,
        extension: str | None = None,
        caller_id: str | None = None,
        variables: dict[str, str] | None = None,
        timeout: int = 30,
    ) -> AriEvent:
        """Place a call. With `app_args` it enters this app; with context/extension, dialplan."""
        params: dict[str, Any] = {"endpoint": endpoint, "timeout": timeout}
        if context:
            params.update(context=context, extension=extension or "s", priority=1)
        else:
            params.update(app=self.app, appArgs=app_args or "")
        if channel_id:
            params["channelId"] = channel_id
        if caller_id:
            params["callerId"] = caller_id
        assert self._session is not None
        body = {"variables": variables or {}}
        url = self.base + "/channels"
        async with self._session.post(url, params=params, json=body) as resp:
            data = await resp.read()
            if resp.status >= 400:
                raise AriError("POST", "/channels", resp.status, data.decode()[:200])
            return json.loads(data)  # type: ignore[no-any-return]

    async def info(self) -> AriEvent:
        return await self.request("GET", "/asterisk/info")  # type: ignore[no-any-return]
