"""The evidence part's periodic work inside the running service: a checkpoint of the ledger
every ``evidence.checkpoint_interval_s`` when it moved and once more at stop, and the purge
(retention and erasure) at start and every ``evidence.purge_interval_s``, followed by a
checkpoint of what it wrote. Both run in worker threads; a failure is logged and retried at
the next turn, never fatal to the calls."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

from consent_ivr.clock import now, pause
from consent_ivr.config import Config, ConfigError
from consent_ivr.evidence import checkpoints, keys, purge
from consent_ivr.evidence.keys import Signer
from consent_ivr.store.db import Database

log = logging.getLogger(__name__)


def preflight(config: Config) -> None:
    """ConfigError when the signing key is malformed or not in ``evidence.public_keys``: the
    service calls this before it takes calls (a missing key is only warned about, by `run`)."""
    keys.signer(config, warn=False)


async def _checkpoint(db: Database, path: Path, signer: Signer | None) -> None:
    try:
        entry = await db.run(checkpoints.checkpoint, db, path, signer)
    except Exception:
        log.exception("checkpoint failed; retrying at the next interval")
        return
    if entry is not None:
        log.info("checkpoint %s: ledger entry %s", entry["id"], entry["ledger_seq"])


async def _purge(config: Config, db: Database) -> bool:
    """The purge, one short transaction at a time through the database's own writer: calls'
    writes take turns with it instead of waiting out the whole run (on SQLite, or failing)."""
    try:
        at = now()
        done = await db.read(lambda session: purge.plan(session, config, at))
        for call_id, step in purge.steps(done, at):
            doomed = await db.transaction(step)
            if doomed is not None:
                await asyncio.to_thread(purge.delete_file, done, call_id, doomed)
    except Exception:
        log.exception("purge failed; retrying at the next interval")
        return False
    if done:
        log.info(
            "purge: %d record(s) erased, %d recording(s) deleted, %d consent(s) marked expired",
            len(done.erasures),
            len(done.deleted),
            len(done.expiries),
        )
    return bool(done)


async def run(config: Config, db: Database, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then make a last checkpoint."""
    try:
        signer = keys.signer(config)
    except ConfigError as e:
        log.error("evidence: %s; no checkpoint and no purge until this is fixed", e)
        await stop.wait()
        return
    path = Path(config.evidence.checkpoints)
    loop = asyncio.get_running_loop()
    every = config.evidence.purge_interval_s
    next_purge = loop.time() if every else math.inf
    next_checkpoint = loop.time() + config.evidence.checkpoint_interval_s
    while not stop.is_set():
        if loop.time() >= next_purge:
            next_purge = loop.time() + every
            if await _purge(config, db):
                await _checkpoint(db, path, signer)
        if loop.time() >= next_checkpoint:
            next_checkpoint = loop.time() + config.evidence.checkpoint_interval_s
            await _checkpoint(db, path, signer)
        await pause(min(next_purge, next_checkpoint) - loop.time(), stop)
    await _checkpoint(db, path, signer)
