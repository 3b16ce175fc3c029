"""HTTP routes of the SMS part: the delivery reports Kannel sends (its dlr-url), for the
service's HTTP server or the worker's own, and the SMS people send us (Kannel's sms-service
get-url), for the service's.

Kannel's smsbox retries a call that fails, so an error answer here (database down) is safe:
the report or message comes again, and a repeated message is recognised by its id. A report
for an unknown job is answered 200 and logged, since retrying it cannot help.

The inbound route acts on what it is told (a STOP withdraws consent), so it is mounted only
with a shared token (`sms.inbound.token_env`), which every call must carry (``token=`` in the
query, as Kannel's get-url can, or ``Authorization: Bearer``); it is compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from functools import partial
from ipaddress import IPv4Network, IPv6Network, ip_address

from aiohttp import web

from consent_ivr.clock import now
from consent_ivr.phone import mask
from consent_ivr.sms import inbound, jobs
from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways import Incoming
from consent_ivr.sms.gateways.kannel import dlr_report, dlr_secret, dlr_signature
from consent_ivr.sms.promises import Channels
from consent_ivr.store.db import Database

log = logging.getLogger(__name__)


def routes(db: Database, sms: SmsConfig) -> list[web.RouteDef]:
    """The delivery-report route: only with Kannel (the other gateways report otherwise), and
    only reports signed for their job (see consent_ivr.sms.gateways.kannel.dlr_signature)."""
    if sms.gateway != "kannel":
        return []
    secret = dlr_secret(sms.kannel)
    if secret is None:
        log.warning(
            "delivery reports not accepted: set %s (the sendsms password signs them)",
            sms.kannel.password_env,
        )
        return []

    allowed = sms.dlr.allow_from

    async def delivery_report(request: web.Request) -> web.Response:
        if allowed and not _from_allowed(request.remote, allowed):
            log.warning(
                "delivery report from %s refused: not in sms.dlr.allow_from", request.remote
            )
            return web.Response(status=403, text="not from the gateway\n")
        report = dlr_report(dict(request.query))
        if report is None or report.job_id is None:
            return web.Response(status=400, text="expected job and type parameters\n")
        expected = dlr_signature(secret, report.job_id)
        if not hmac.compare_digest(request.query.get("sig", "").encode(), expected.encode()):
            log.warning("delivery report for job %s refused: not signed for it", report.job_id)
            return web.Response(status=403, text="not signed\n")
        try:
            job_id = await db.transaction(partial(jobs.apply_report, report=report, now=now()))
        except Exception:
            log.exception("could not store a delivery report for job %s", report.job_id)
            return web.Response(status=503, text="not stored, send it again\n")
        if job_id is None:
            log.warning("delivery report for unknown job %s ignored", report.job_id)
        return web.Response(text="ok\n")

    return [web.get(sms.dlr.path, delivery_report)]


def _from_allowed(remote: str | None, allowed: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        address = ip_address(remote or "")
    except ValueError:
        return False
    return any(address in network for network in allowed)


def _given_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.query.get("token") or None


def inbound_routes(
    db: Database, sms: SmsConfig, channels: Channels, region: str | None
) -> list[web.RouteDef]:
    """The inbound SMS route, or none (and a log line why) when it cannot be mounted."""
    token = sms.inbound_token()
    if not sms.inbound.enabled:
        return []
    if token is None:
        level = logging.WARNING if sms.gateway == "kannel" else logging.INFO
        log.log(
            level,
            "inbound SMS route %s not mounted: set %s to the token in Kannel's get-url "
            "(scripts/kannel.sh env prints it); SMS texts name no STOP reply meanwhile",
            sms.inbound.path,
            sms.inbound.token_env,
        )
        return []
    expected = token.encode()

    async def inbound_sms(request: web.Request) -> web.Response:
        given = _given_token(request)
        if given is None:
            return web.Response(status=401, text="token required\n")
        if not hmac.compare_digest(given.encode(), expected):
            return web.Response(status=403, text="wrong token\n")
        query = request.query
        if "from" not in query or "text" not in query:
            return web.Response(status=400, text="expected from and text parameters\n")
        message = Incoming(
            gateway="kannel",
            sender=query["from"],
            recipient=query.get("to", ""),
            text=query["text"],
            message_id=query.get("id") or None,
        )
        handle = partial(
            inbound.handle, message=message, at=now(), sms=sms, channels=channels, region=region
        )
        try:
            await db.transaction(handle)
        except Exception as e:
            # Not log.exception: the database error would carry the phone number.
            log.error("inbound SMS from %s not stored: %s", mask(message.sender), type(e).__name__)
            return web.Response(status=503, text="not stored, send it again\n")
        return web.Response(text="ok\n")

    return [web.get(sms.inbound.path, inbound_sms)]
