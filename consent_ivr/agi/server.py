"""The FastAGI server: takes `AGI(agi://host:port/consent...)` connections and runs one
`AgiCall` each, on the same flow, prompts and store as the Stasis app.

What the dialplan says about the call comes as AGI arguments, the same as the Stasis app's
(`inbound`|`outbound`, then key=value pairs, see consent_ivr.calls.parse_args), or as the URL's
query (`/consent?campaign=C&language=ru`), so that a PBX needs only one line of its own
dialplan. Either is checked, never trusted: a call that cannot be taken is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from consent_ivr.agi.call import AgiCall, AgiContext
from consent_ivr.agi.config import AgiConfig
from consent_ivr.agi.protocol import HEADER_LIMIT, AgiApplication, AgiChannel
from consent_ivr.calls import BadArgs, CallSetup, describe_call, parse_args
from consent_ivr.clock import now
from consent_ivr.config import Config
from consent_ivr.prompts import Catalog
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook

log = logging.getLogger(__name__)

ROUTE = "consent"


def setup_of(config: Config, channel: AgiChannel) -> CallSetup:
    """The call a FastAGI connection describes; BadArgs when it cannot be taken."""
    h = channel.headers
    query = dict(channel.query)
    args = channel.args() or [query.pop("direction", "inbound")]
    args += [f"{k}={v}" for k, v in query.items()]
    direction, pairs = parse_args(args)
    pairs.pop("recording", None)  # this server records, always
    return describe_call(
        config,
        direction,
        pairs,
        caller=h.get("agi_callerid", ""),
        exten=h.get("agi_extension", ""),
        connected="",
        channel_id=h.get("agi_uniqueid", ""),
        started_at=now(),
    )


class AgiServer:
    def __init__(
        self,
        config: Config,
        db: Database,
        catalog: Catalog,
        agi: AgiConfig,
        decision_hooks: Sequence[DecisionHook] = (),
    ) -> None:
        self.config = config
        self.agi = agi
        self.context = AgiContext(
            config, db, catalog, tuple(decision_hooks), Path(config.recordings.dir).resolve(), agi
        )
        self.calls: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        app = AgiApplication(header_timeout_s=self.agi.header_timeout_s)
        app.add_route(ROUTE, self._consent)
        self.context.recordings_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(
            app.handler, self.agi.host, self.agi.port, limit=HEADER_LIMIT
        )
        log.info(
            "FastAGI server on %s:%d (agi://HOST:%d/%s)", self.agi.host, self.port, self.port, ROUTE
        )

    async def stop(self, grace_s: float = 20.0) -> None:
        """Take no new call; let calls in progress end (bounded), then close them."""
        if self._server is not None:
            self._server.close()
        if self.calls:
            await asyncio.wait(list(self.calls), timeout=grace_s)
        for task in list(self.calls):
            task.cancel()
        if self.calls:
            await asyncio.wait(list(self.calls), timeout=10)

    async def _consent(self, channel: AgiChannel) -> None:
        try:
            setup = setup_of(self.config, channel)
        except BadArgs as e:
            log.error("FastAGI call refused: %s", e)
            await channel.command("HANGUP")
            return
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        try:
            await AgiCall(self.context, channel, setup).run()
        finally:
            self.calls.discard(task)


@contextlib.asynccontextmanager
async def serving(
    config: Config,
    db: Database,
    catalog: Catalog,
    agi: AgiConfig,
    decision_hooks: Sequence[DecisionHook] = (),
) -> AsyncIterator[AgiServer]:
    """The FastAGI server, listening; stopped cleanly on exit (for `consent-ivr run`)."""
    server = AgiServer(config, db, catalog, agi, decision_hooks)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
