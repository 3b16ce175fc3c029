"""The default gateway: prints each SMS and appends it to a JSONL file.

It lets the first run of the service show the exact confirmation text without any SMS
provider. Its jobs end `logged`, never `delivered`: nobody received them, and the record must
not say otherwise. It receives no SMS, so texts sent through it never promise a reply.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from consent_ivr.phone import mask
from consent_ivr.sms.gateways import Accepted, InboundSink, Lookup, Outgoing, ReportSink


class LogGateway:
    name = "log"
    delivers = False

    def __init__(self, file: Path, *, echo: bool = True) -> None:
        self.file = file
        self.echo = echo
        self._lock = asyncio.Lock()

    async def start(self, reports: ReportSink, inbound: InboundSink | None = None) -> None:
        await asyncio.to_thread(self.file.parent.mkdir, parents=True, exist_ok=True)

    def _append(self, line: str) -> None:
        with self.file.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    async def send(self, sms: Outgoing) -> Accepted:
        message_id = "log-" + sms.job_id
        entry = {
            "at": datetime.now(UTC).isoformat(),
            "job_id": sms.job_id,
            "message_id": message_id,
            "to": mask(sms.phone),
            "encoding": sms.encoding,
            "segments": sms.segments,
            "text": sms.text,
        }
        async with self._lock:
            await asyncio.to_thread(self._append, json.dumps(entry, ensure_ascii=False))
        if self.echo:
            print(
                f"SMS to {mask(sms.phone)} [{sms.job_id}]: {sms.text}", file=sys.stdout, flush=True
            )
        return Accepted(message_id)

    def _contains(self, job_id: str) -> bool:
        if not self.file.exists():
            return False
        with self.file.open(encoding="utf-8") as f:
            for line in f:
                try:
                    if json.loads(line).get("job_id") == job_id:
                        return True
                except ValueError:
                    continue  # a line cut short by a crash was never a delivery
        return False

    async def lookup(self, sms: Outgoing) -> Lookup:
        found = await asyncio.to_thread(self._contains, sms.job_id)
        return Lookup.ACCEPTED if found else Lookup.ABSENT

    async def close(self) -> None:
        return None
