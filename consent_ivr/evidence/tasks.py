"""The evidence part's periodic work inside the running service (checkpoints, retention)."""

from __future__ import annotations

import asyncio

from consent_ivr.config import Config
from consent_ivr.store.db import Database


async def run(config: Config, db: Database, stop: asyncio.Event) -> None:
    """Run until `stop` is set."""
    del config, db
    await stop.wait()
