"""`consent-ivr agi`: the FastAGI server on its own (for a PBX without ARI)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from consent_ivr.agi.config import AgiConfig
from consent_ivr.config import Config, ConfigError

log = logging.getLogger(__name__)


def agi_config(conf: Config, args: argparse.Namespace) -> AgiConfig:
    """The `agi` section of the config (defaults until the config has one), then the flags."""
    base: AgiConfig = conf.agi
    values: dict[str, Any] = base.model_dump()
    if args.listen:
        host, sep, port = args.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT, e.g. 0.0.0.0:4573")
        values.update(host=host, port=int(port))
    if args.recordings_on_asterisk:
        values["recordings_on_asterisk"] = Path(args.recordings_on_asterisk)
    if args.recordings_here:
        values["recordings_here"] = Path(args.recordings_here)
    return AgiConfig.model_validate(values)


def cmd_agi(args: argparse.Namespace) -> int:
    from consent_ivr.cli import config_of

    conf = config_of(args)
    asyncio.run(serve_forever(conf, agi_config(conf, args)))
    return 0


async def serve_forever(conf: Config, agi: AgiConfig) -> None:
    from consent_ivr.agi.server import serving
    from consent_ivr.prompts import Catalog
    from consent_ivr.service import decision_hooks
    from consent_ivr.store import db as dbm

    catalog = Catalog(conf)
    catalog.check_audio()
    await asyncio.to_thread(dbm.upgrade, conf.database.url)
    db = dbm.Database(conf.database.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serving(conf, db, catalog, agi, decision_hooks(conf)):
            await stop.wait()
            log.info("stopping")
    finally:
        db.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:4573)")
    p.add_argument(
        "--recordings-on-asterisk",
        help="the folder MixMonitor writes to, as Asterisk sees it "
        "(default /var/spool/asterisk/recording)",
    )
    p.add_argument(
        "--recordings-here",
        help="the same folder as this machine sees it (a shared mount; default: the same path)",
    )


def add_commands(sub: Any) -> None:
    p = sub.add_parser("agi", help="run the FastAGI server (consent calls from a PBX without ARI)")
    add_arguments(p)
    p.set_defaults(fn=cmd_agi)
