"""The delivery-report endpoint Kannel calls (its dlr-url), for the service's HTTP server
or the worker's own.

Kannel's smsbox retries a report whose HTTP call fails, so an error answer here (database down)
is safe: the report comes again. A report for an unknown job is answered 200 and logged,
since retrying it cannot help.
"""

from __future__ import annotations

import logging
from functools import partial

from aiohttp import web

from consent_ivr.clock import now
from consent_ivr.sms import jobs
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways.kannel import dlr_report
from consent_ivr.store.db import Database

log = logging.getLogger(__name__)


def routes(db: Database, sms: SmsConfig) -> list[web.RouteDef]:
    async def delivery_report(request: web.Request) -> web.Response:
        report = dlr_report(dict(request.query))
        if report is None:
            return web.Response(status=400, text="expected job and type parameters\n")
        try:
            job_id = await db.transaction(partial(jobs.apply_report, report=report, now=now()))
        except Exception:
            log.exception("could not store a delivery report for job %s", report.job_id)
            return web.Response(status=503, text="not stored, send it again\n")
        if job_id is None:
            log.warning("delivery report for unknown job %s ignored", report.job_id)
        return web.Response(text="ok\n")

    return [web.get(sms.dlr.path, delivery_report)]
