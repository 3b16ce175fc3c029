"""Run the SMS worker as its own process, for the crash tests.

``--crash-after-send N`` wraps the real gateway so that the process kills itself with SIGKILL
right after the Nth message was accepted by the gateway and before the worker could record
it: the exact window an idempotency key has to cover.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways import (
    Accepted,
    Gateway,
    InboundSink,
    Lookup,
    Outgoing,
    ReportSink,
)
from consent_ivr.sms.worker import make_gateway, run_worker
from consent_ivr.store.db import Database


class CrashAfterSend:
    def __init__(self, inner: Gateway, after: int) -> None:
        self.inner, self.after, self.count = inner, after, 0
        self.name, self.delivers = inner.name, inner.delivers

    async def start(self, reports: ReportSink, inbound: InboundSink | None = None) -> None:
        await self.inner.start(reports, inbound)

    async def send(self, sms: Outgoing) -> Accepted:
        accepted = await self.inner.send(sms)
        self.count += 1
        if self.count >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)
        return accepted

    async def lookup(self, sms: Outgoing) -> Lookup:
        return await self.inner.lookup(sms)

    async def close(self) -> None:
        await self.inner.close()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("sms_json")
    parser.add_argument("--crash-after-send", type=int, default=0)
    args = parser.parse_args()
    sms = SmsConfig.model_validate_json(args.sms_json)
    db = Database(args.db_url)
    gateway = None
    if args.crash_after_send:
        inner = make_gateway(sms, dlr_url=sms.dlr_url())
        gateway = CrashAfterSend(inner, args.crash_after_send)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await run_worker(db, sms, stop, gateway=gateway)
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
