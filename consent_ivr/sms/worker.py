"""The SMS worker: claims due jobs, sends them, and records every outcome.

Run it as its own process (``consent-ivr sms-worker``, see ``main``) or inside the service
(``run_worker``). Several workers may run against one PostgreSQL database; see
consent_ivr.sms.jobs for how they share the work and how a crash mid-send is recovered.
Each cycle also releases the SMS of calls that never ended (`sms.hold_max_s`), and a marketing
job is checked against the person's consent once more just before it is sent
(consent_ivr.sms.marketing). SMS people send us over the gateway's own connection (SMPP) are
handled here too (consent_ivr.sms.inbound).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from aiohttp import web

from consent_ivr.clock import now, pause
from consent_ivr.phone import mask
from consent_ivr.sms import inbound, jobs, marketing, outbox, promises
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways import (
    DeliveryReport,
    Gateway,
    GatewaySetupError,
    Incoming,
    InDoubtError,
    Lookup,
    PermanentError,
    TransientError,
)
from consent_ivr.sms.gateways.kannel import KannelGateway
from consent_ivr.sms.gateways.log import LogGateway
from consent_ivr.sms.gateways.smpp import SmppGateway
from consent_ivr.sms.http import routes
from consent_ivr.sms.models import LOGGED, MARKETING, SENT
from consent_ivr.store.db import Database

log = logging.getLogger(__name__)


def retry_delay(attempts: int, sms: SmsConfig, rng: random.Random) -> float:
    """Exponential backoff with jitter, so workers that failed together do not retry together."""
    ceiling = min(sms.retry_max_s, sms.retry_base_s * 2 ** max(attempts - 1, 0))
    return rng.uniform(ceiling / 2, ceiling)


def make_gateway(sms: SmsConfig, *, dlr_url: str) -> Gateway:
    if sms.gateway == "kannel":
        return KannelGateway(sms.kannel, sender=sms.sender, dlr_url=dlr_url)
    if sms.gateway == "smpp":
        return SmppGateway(sms.smpp, sender=sms.sender)
    return LogGateway(sms.log.file, echo=sms.log.echo)


class Worker:
    """One worker's loop over the outbox with one gateway."""

    def __init__(
        self,
        db: Database,
        sms: SmsConfig,
        gateway: Gateway,
        *,
        name: str | None = None,
        rng: random.Random | None = None,
        channels: promises.Channels = outbox.NO_CHANNELS,
        region: str | None = None,
    ) -> None:
        self.db = db
        self.sms = sms
        self.gateway = gateway
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:64]
        self.rng = rng or random.Random()
        self.channels = channels  # for the texts of the confirmations of SMS withdrawals
        self.region = region  # of inbound senders' national numbers
        self.sent = 0

    async def on_report(self, report: DeliveryReport) -> None:
        job_id = await self.db.transaction(partial(jobs.apply_report, report=report, now=now()))
        if job_id is None:
            log.warning("delivery report %s matches no job", report.gateway_status)

    async def on_inbound(self, message: Incoming) -> None:
        handle = partial(
            inbound.handle,
            message=message,
            at=now(),
            sms=self.sms,
            channels=self.channels,
            region=self.region,
        )
        try:
            await self.db.transaction(handle)
        except Exception as e:
            # Not log.exception: the database error would carry the phone number.
            log.error(
                "inbound SMS from %s over %s not stored: %s",
                mask(message.sender),
                message.gateway,
                type(e).__name__,
            )

    async def run(self, stop: asyncio.Event) -> None:
        await self.gateway.start(self.on_report, self.on_inbound)
        failures = 0
        try:
            while not stop.is_set():
                try:
                    done = await self.run_once()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("SMS worker cycle failed (%d in a row)", failures)
                    done = 0
                if done == 0:
                    backoff = min(2 ** max(failures - 1, 0), 30)
                    await pause(self.sms.poll_interval_s * backoff, stop)
        finally:
            await self.gateway.close()

    async def release_stale(self) -> None:
        """Jobs held for a call that never ended (the service died mid-call) go out now."""
        before = now() - timedelta(seconds=self.sms.hold_max_s)
        if not await self.db.transaction(partial(outbox.any_held_since, before=before)):
            return
        released = await self.db.transaction(partial(outbox.release_stale, before=before, at=now()))
        log.warning(
            "released %d SMS held longer than sms.hold_max_s (%gs): their call never ended",
            released,
            self.sms.hold_max_s,
        )

    async def run_once(self) -> int:
        """Claim one batch and see each job to an outcome; returns how many were claimed."""
        await self.release_stale()
        claimed = await self.db.transaction(
            partial(
                jobs.claim,
                worker=self.name,
                limit=self.sms.batch_size,
                lease_s=self.sms.lease_s,
                now=now(),
            )
        )
        if claimed:
            limit = asyncio.Semaphore(self.sms.concurrency)

            async def one(job: jobs.Claimed) -> None:
                async with limit:
                    await self.process(job)

            async with asyncio.TaskGroup() as group:
                for job in claimed:
                    group.create_task(one(job))
        return len(claimed)

    async def process(self, job: jobs.Claimed) -> None:
        job_id, t = job.sms.job_id, now()
        if job.in_doubt:
            verdict = await self.gateway.lookup(job.sms)
            if verdict is Lookup.ACCEPTED:
                log.info("job %s was already with the gateway: not sent again", job_id)
                await self._sent(job_id, None)
                return
            settle = job.attempt_started_at + timedelta(seconds=self.sms.in_doubt_wait_s)
            if verdict is Lookup.UNKNOWN and t < settle:
                await self._retry(job, settle, "in doubt: waiting for a report", in_doubt=True)
                return
        if t - job.created_at > timedelta(seconds=self.sms.max_age_s):
            await self._fail(
                job,
                f"expired: not accepted by the gateway within "
                f"{self.sms.max_age_s:g}s over {job.attempts - 1} attempt(s)",
            )
            return
        if job.in_doubt:
            restarted = await self.db.transaction(
                partial(
                    jobs.restart_attempt,
                    job_id=job_id,
                    token=job.token,
                    lease_s=self.sms.lease_s,
                    now=now(),
                )
            )
            if not restarted:
                return
            log.warning("job %s: no trace at the gateway, sending again", job_id)
        if job.kind == MARKETING:
            recheck = partial(marketing.recheck, job_id=job_id, token=job.token, at=now())
            reason = await self.db.transaction(recheck)
            if reason is not None:
                log.info(
                    "marketing job %s to %s suppressed: %s", job_id, mask(job.sms.phone), reason
                )
                return
        await self._send(job)

    async def _send(self, job: jobs.Claimed) -> None:
        job_id = job.sms.job_id
        try:
            accepted = await self.gateway.send(job.sms)
        except PermanentError as e:
            log.warning("job %s to %s failed for good: %s", job_id, mask(job.sms.phone), e)
            await self._fail(job, str(e))
        except InDoubtError as e:
            log.warning("job %s in doubt: %s", job_id, e)
            settle = now() + timedelta(seconds=self.sms.in_doubt_wait_s)
            await self._retry(job, settle, f"in doubt: {e}", in_doubt=True)
        except TransientError as e:
            delay = retry_delay(job.attempts, self.sms, self.rng)
            log.info("job %s: %s; retry in %.1fs", job_id, e, delay)
            await self._retry(job, now() + timedelta(seconds=delay), str(e), in_doubt=False)
        else:
            self.sent += 1
            await self._sent(job_id, accepted.message_id)

    async def _sent(self, job_id: str, message_id: str | None) -> None:
        await self.db.transaction(
            partial(
                jobs.mark_sent,
                job_id=job_id,
                gateway=self.gateway.name,
                message_id=message_id,
                now=now(),
                status=SENT if self.gateway.delivers else LOGGED,
            )
        )

    async def _retry(self, job: jobs.Claimed, at: datetime, error: str, *, in_doubt: bool) -> None:
        await self.db.transaction(
            partial(
                jobs.retry_later,
                job_id=job.sms.job_id,
                token=job.token,
                at=at,
                error=error,
                in_doubt=in_doubt,
            )
        )

    async def _fail(self, job: jobs.Claimed, error: str) -> None:
        await self.db.transaction(
            partial(jobs.fail, job_id=job.sms.job_id, token=job.token, error=error, now=now())
        )


async def _dlr_server(db: Database, sms: SmsConfig) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes(db, sms))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, sms.dlr.host, sms.dlr.port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else sms.dlr.port
    return runner, port


async def run_worker(
    db: Database,
    sms: SmsConfig,
    stop: asyncio.Event,
    *,
    gateway: Gateway | None = None,
    channels: promises.Channels = outbox.NO_CHANNELS,
    region: str | None = None,
) -> None:
    """The worker loop until ``stop`` is set; with Kannel it also serves delivery reports.

    ``gateway`` replaces the configured one (tests wrap a real gateway to inject a crash);
    ``channels`` and ``region`` come from the whole config (see ``main``).
    """
    if not sms.enabled:
        log.info("sms.enabled is false: the SMS worker has nothing to do")
        await stop.wait()
        return
    runner: web.AppRunner | None = None
    port = sms.dlr.port
    if sms.gateway == "kannel" and sms.dlr.listen:
        runner, port = await _dlr_server(db, sms)
        log.info("delivery reports on http://%s:%d%s", sms.dlr.host, port, sms.dlr.path)
    try:
        gateway = gateway or make_gateway(sms, dlr_url=sms.dlr_url(port))
        await Worker(db, sms, gateway, channels=channels, region=region).run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()


async def main(config: Any) -> int:
    """``consent-ivr sms-worker``: run until SIGTERM or SIGINT; 2 when the gateway cannot start."""
    os.umask(0o077)  # the SMS log and anything else it writes: owner-only
    db = Database(config.database.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        channels = promises.channels(config)
        await run_worker(db, config.sms, stop, channels=channels, region=config.default_region)
        return 0
    except GatewaySetupError as e:
        log.error("%s", e)
        return 2
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(db.close)
