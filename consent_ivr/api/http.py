"""The `/v1` application: its routes, and the two middlewares every request passes.

One table, `Api.endpoints`, drives everything about a route: the router mounts its handler,
the guard reads the scope it needs and the audit action it is, and the OpenAPI document
(consent_ivr.api.openapi) is drawn from it with its query, body and response models.

    request -> problems -> guard: token (401), rate limit (429), scope (403) -> handler
                  ^            `-- audit event: token, action, target, status --'
                  `-- any Problem, validation or database error as RFC 9457 details

Handlers never block the loop: database work runs in the database's threads (`Database.read`
for reads, which never queue behind writes; `Database.transaction` for changes), the bundle
export in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from consent_ivr import metrics
from consent_ivr.api import audit, openapi, schemas, services
from consent_ivr.api.audit import AuditLog
from consent_ivr.api.config import ApiConfig
from consent_ivr.api.problems import Problem, field_error, invalid
from consent_ivr.api.ratelimit import RateLimiter
from consent_ivr.api.tokens import Caller, TokenCache, digest, find
from consent_ivr.ari.client import AriClient, AriError
from consent_ivr.clock import now
from consent_ivr.config import Config
from consent_ivr.phone import mask, to_e164
from consent_ivr.store import pgasync
from consent_ivr.store.db import Database
from consent_ivr.store.records import DecisionHook

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
# What a request carries from the guard to its handler, and back for the audit event.
CALLER = web.RequestKey("caller", Caller)
TARGET = web.RequestKey("target", str)  # the phone or the record the action is about
AUDITED = web.RequestKey("audited", bool)  # the handler wrote its own audit event
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON = "application/json"


@dataclass(frozen=True)
class Endpoint:
    """One route of the API, as the router, the guard and the OpenAPI document see it."""

    method: str
    path: str  # relative to /v1
    name: str  # operationId, and the audit action
    handler: Handler
    summary: str
    scope: str | None  # None: public
    ok: tuple[int, type[BaseModel] | str]  # status, and a response model or a media type
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    record_path: bool = False  # {id} is a record id
    errors: tuple[int, ...] = ()
    description: str = ""


@dataclass
class Services:
    """What the API uses of the running service (the web app gets it from service.py)."""

    config: Config
    api: ApiConfig
    db: Database
    ari: AriClient | None = None
    hooks: Sequence[DecisionHook] = field(default_factory=tuple)
    takes_calls: bool = True  # False: `consent-ivr api`, which places no calls
    pg: pgasync.AsyncPg | None = None  # PostgreSQL: the hot path's connections


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(doc, ensure_ascii=False), status=status, content_type=JSON)


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class Api:
    def __init__(self, svc: Services, audit_log: AuditLog) -> None:
        self.svc = svc
        self.config = svc.config
        self.db = svc.db
        self.audit = audit_log
        self.tokens = TokenCache(svc.api.token_cache_s)
        self.limiter = RateLimiter(svc.api.rate_per_s, svc.api.burst)
        self.endpoints = self._endpoints()
        self.by_name = {e.name: e for e in self.endpoints}
        self.document = openapi.document(self.endpoints)
        self.reference = openapi.reference_page(self.document)

    # ---- the table -----------------------------------------------------------------------

    def _endpoints(self) -> list[Endpoint]:
        s = schemas
        read, unavailable = (401, 403, 422, 429, 503), 503
        record = (*read, 404)
        return [
            Endpoint(
                "GET",
                "/consents",
                "consents.read",
                self.consents,
                "May we contact this number? The state of each purpose, and the answer per "
                "channel with the reason",
                "read",
                (200, s.Consents),
                query=s.ConsentsQuery,
                errors=read,
                description="The hot path: ask before every call or SMS. `may_contact.call` "
                "and `may_contact.sms` answer for a contact *for* the purpose (an offer); a "
                "call that only asks for consent is `POST /v1/calls`.",
            ),
            Endpoint(
                "GET",
                "/records",
                "records.list",
                self.records,
                "Consent records, newest first, filtered, a page at a time",
                "read",
                (200, s.RecordPage),
                query=s.RecordsQuery,
                errors=read,
            ),
            Endpoint(
                "GET",
                "/records/{id}",
                "records.read",
                self.record,
                "One record with its evidence and its verification (`consent-ivr show --json`)",
                "read",
                (200, s.RecordView),
                record_path=True,
                errors=record,
            ),
            Endpoint(
                "GET",
                "/records/{id}/bundle",
                "records.bundle",
                self.bundle,
                "The record's evidence bundle (zip), checkable alone with "
                "`consent-ivr verify FILE.zip`",
                "export",
                (200, "application/zip"),
                record_path=True,
                errors=record,
                description="Header `X-Evidence-Verified` tells whether the record verified "
                "when exported; the bundle's summary.html says the same.",
            ),
            Endpoint(
                "GET",
                "/records/{id}/recording",
                "records.recording",
                self.recording,
                "The call recording of the record (WAV; byte ranges allowed)",
                "export",
                (200, "audio/wav"),
                record_path=True,
                errors=(*record, 410),
            ),
            Endpoint(
                "POST",
                "/calls",
                "calls.place",
                self.place_call,
                "Place an outbound consent call (refused with the reason when the number may "
                "not be asked)",
                "call",
                (202, s.CallStarted),
                body=s.CallRequest,
                errors=(400, 401, 403, 409, 422, 429, 502, unavailable),
                description="Dials `campaigns.<campaign>.dialing.endpoint` (set in the "
                "config, never by the caller) into the consent-outbound context. A refusal, "
                "a withdrawal or the do-not-contact register stops it: 409 with `refusals`, "
                "and the refusal is kept as a suppressed contact attempt.",
            ),
            Endpoint(
                "POST",
                "/withdrawals",
                "withdrawals.create",
                self.withdraw,
                "Withdraw a person's consent on their behalf (operator): who and why",
                "withdraw",
                (200, s.WithdrawalResult),
                body=s.WithdrawalRequest,
                errors=(400, 401, 403, 422, 429, unavailable),
                description="Each withdrawn consent gets a `withdrawn` event (channel "
                "operator, by, reason), the number goes on the do-not-contact register for "
                "the purpose, and the person is sent the withdrawal SMS.",
            ),
            Endpoint(
                "GET",
                "/openapi.json",
                "openapi",
                self.openapi_json,
                "This document",
                None,
                (200, JSON),
            ),
            Endpoint(
                "GET",
                "/docs",
                "docs",
                self.docs,
                "This document as a reference page",
                None,
                (200, "text/html"),
            ),
        ]

    def routes(self) -> list[web.RouteDef]:
        return [web.route(e.method, e.path, e.handler, name=e.name) for e in self.endpoints]

    # ---- middlewares -----------------------------------------------------------------------

    @web.middleware
    async def problems(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as p:
            return p.response(request.path)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            slug = {404: "not-found", 405: "method-not-allowed"}.get(e.status, "invalid-request")
            return Problem(e.status, slug, e.reason).response(request.path)
        except (SQLAlchemyError, psycopg.Error) as e:
            # Not the exception itself: its SQL parameters may hold a phone number.
            log.error("%s %s: database error %s", request.method, request.path, type(e).__name__)
            return Problem(
                503, "unavailable", "the database did not answer", headers={"Retry-After": "5"}
            ).response(request.path)

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = self.by_name.get(request.match_info.route.name or "")
        if endpoint is None or endpoint.scope is None:
            return await handler(request)
        caller = await self._caller(request)
        wait = self.limiter.take(caller.token_id, caller.rate_per_s)
        if wait:
            metrics.RATE_LIMITED.labels(caller.name).inc()
            raise Problem(
                429,
                "rate-limited",
                f"token {caller.name}: rate limit reached, retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )
        status = 500
        try:
            if endpoint.scope not in caller.scopes:
                status = 403
                raise Problem(
                    403,
                    "forbidden",
                    f"token {caller.name} lacks the scope {endpoint.scope!r} "
                    f"(it has: {', '.join(sorted(caller.scopes))})",
                )
            request[CALLER] = caller
            response = await handler(request)
            status = response.status
            return response
        except Problem as p:
            status = p.status
            raise
        finally:
            if not request.get(AUDITED):
                target = request.get(TARGET) or request.match_info.get("id")
                self.audit.record(audit.event(caller, endpoint.name, target, status))

    async def _caller(self, request: web.Request) -> Caller:
        token = bearer(request)
        if token is None:
            raise Problem(
                401,
                "unauthorized",
                "send the API token: Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": 'Bearer realm="consent-ivr"'},
            )
        key = digest(token)
        caller = await self.tokens.caller(key, lambda: self.db.read(lambda s: find(s, key)))
        if caller is None:
            raise Problem(
                401,
                "unauthorized",
                "unknown or revoked API token",
                headers={"WWW-Authenticate": 'Bearer realm="consent-ivr", error="invalid_token"'},
            )
        return caller

    # ---- helpers ---------------------------------------------------------------------------

    @staticmethod
    def query(request: web.Request, model: type[M]) -> M:
        try:
            return model.model_validate(dict(request.query))
        except ValidationError as e:
            raise invalid("query", e) from None

    @staticmethod
    async def body(request: web.Request, model: type[M]) -> M:
        try:
            data = await request.json()
        except ValueError:
            raise Problem(400, "invalid-request", "the body is not JSON") from None
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise invalid("body", e) from None

    def phone(self, raw: str, where: str) -> str:
        phone = to_e164(raw, self.config.default_region)
        if phone is None:
            raise field_error(
                "phone",
                where,
                f"not a phone number (E.164 such as +79161234567, or national in "
                f"{self.config.default_region})",
            )
        return phone

    @staticmethod
    def record_id(request: web.Request) -> str:
        try:
            return schemas.RecordPath.model_validate(dict(request.match_info)).id
        except ValidationError as e:
            raise invalid("path", e) from None

    # ---- handlers --------------------------------------------------------------------------

    async def consents(self, request: web.Request) -> web.Response:
        q = self.query(request, schemas.ConsentsQuery)
        phone = request[TARGET] = self.phone(q.phone, "query")
        at = now()

        def read(session: Session) -> dict[str, Any]:
            return services.consent_status(session, self.config, phone, q.purpose, at)

        try:
            if self.svc.pg is None:
                return json_response(await self.db.read(read))
            # PostgreSQL: one statement, awaited on the loop (consent_ivr.store.pgasync).
            rows, entries = await self.svc.pg.consents(phone, q.purpose)
            return json_response(
                services.consent_status_of(self.config, phone, q.purpose, rows, entries, at)
            )
        except services.UnknownPurpose as e:
            raise field_error("purpose", "query", str(e)) from None

    async def records(self, request: web.Request) -> web.Response:
        q = self.query(request, schemas.RecordsQuery)
        if q.limit > self.svc.api.page_max:
            raise field_error("limit", "query", f"at most {self.svc.api.page_max} (api.page_max)")
        phone = self.phone(q.phone, "query") if q.phone else None
        if phone:
            request[TARGET] = phone
        at = now()

        def read(session: Session) -> dict[str, Any]:
            return services.record_page(session, q, phone, q.limit, at)

        try:
            return json_response(await self.db.read(read))
        except services.BadCursor as e:
            raise field_error("cursor", "query", str(e)) from None

    async def record(self, request: web.Request) -> web.Response:
        from consent_ivr.cli import full_view

        rid = self.record_id(request)
        view = await self.db.read(lambda s: full_view(s, self.config, rid), snapshot=True)
        if view is None:
            raise Problem(404, "not-found", f"no record {rid}")
        return json_response(view)

    async def bundle(self, request: web.Request) -> web.Response:
        rid = self.record_id(request)
        try:
            data, ok = await asyncio.to_thread(export_bundle, self.db, self.config, rid)
        except LookupError:
            raise Problem(404, "not-found", f"no record {rid}") from None
        return bundle_response(rid, data, ok)

    async def recording(self, request: web.Request) -> web.StreamResponse:
        return await recording_response(self.db, self.record_id(request))

    async def place_call(self, request: web.Request) -> web.Response:
        body = await self.body(request, schemas.CallRequest)
        phone = request[TARGET] = self.phone(body.phone, "body")
        try:
            name, campaign = self.config.campaign(body.campaign)
        except KeyError:
            raise field_error(
                "campaign",
                "body",
                f"unknown campaign (configured: {', '.join(self.config.campaigns)})",
            ) from None
        language = body.language or campaign.language
        if language not in campaign.languages:
            raise field_error(
                "language", "body", f"campaign {name} speaks {', '.join(campaign.languages)}"
            )
        endpoint = campaign.dialing.endpoint
        if not endpoint:
            raise field_error(
                "campaign",
                "body",
                f"campaign {name} cannot dial: campaigns.{name}.dialing.endpoint is not set",
            )
        caller: Caller = request[CALLER]
        at = now()

        def check(session: Session) -> list[dict[str, Any]]:
            found = services.refusals(session, phone, name, campaign, at)
            if found:
                detail = {"campaign": name, "refusals": found}
                audit.add(session, caller, "calls.place", phone, 409, detail)
            return found

        refused = await self.db.transaction(check)
        if refused:
            request[AUDITED] = True
            reasons = "; ".join(f"{r['purpose']}: {r['reason']}" for r in refused)
            raise Problem(409, "not-allowed", f"not calling: {reasons}", refusals=refused)
        ari = self.svc.ari
        if not self.svc.takes_calls:
            raise Problem(
                503,
                "unavailable",
                "this process answers the API but places no calls (consent-ivr api): send "
                "POST /v1/calls to the service that takes the calls (consent-ivr run)",
            )
        if ari is None or not ari.connected.is_set():
            raise Problem(
                503, "unavailable", "Asterisk (ARI) is not connected", headers={"Retry-After": "5"}
            )
        digits = phone.lstrip("+")
        try:
            # dialplan/consent-inbound.conf's consent-outbound context starts the recording
            # when the person answers and hands the call to the app.
            channel = await ari.originate(
                endpoint.format(number=phone, digits=digits),
                context="consent-outbound",
                extension=digits,
                variables={"CONSENT_CAMPAIGN": name, "CONSENT_LANGUAGE": language},
            )
        except AriError as e:
            log.error("outbound call to %s not placed: %s", mask(phone), e.status)
            raise Problem(502, "upstream", f"Asterisk did not place the call ({e.status})") from e
        log.info("outbound consent call to %s placed by token %s", mask(phone), caller.name)
        return json_response(
            {
                "channel_id": str(channel["id"]),
                "phone": phone,
                "campaign": name,
                "language": language,
                "purposes": list(campaign.purposes),
            },
            202,
        )

    async def withdraw(self, request: web.Request) -> web.Response:
        body = await self.body(request, schemas.WithdrawalRequest)
        phone = request[TARGET] = self.phone(body.phone, "body")
        caller: Caller = request[CALLER]
        at = now()

        def work(session: Session) -> list[dict[str, Any]]:
            done = services.withdraw(
                session,
                self.config,
                phone,
                body.purpose,
                by=body.by,
                reason=body.reason,
                hooks=self.svc.hooks,
                at=at,
            )
            withdrawn = services.withdrawn(done)
            detail = {"purpose": body.purpose, "by": body.by, "withdrawn": withdrawn}
            audit.add(session, caller, "withdrawals.create", phone, 200, detail)
            return withdrawn

        try:
            withdrawn = await self.db.transaction(work)
        except services.UnknownPurpose as e:
            raise field_error("purpose", "body", str(e)) from None
        request[AUDITED] = True
        return json_response({"phone": phone, "withdrawn": withdrawn})

    async def openapi_json(self, _request: web.Request) -> web.Response:
        return json_response(self.document)

    async def docs(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.reference, content_type="text/html")


# ---- shared with the console ------------------------------------------------------------------


def export_bundle(db: Database, config: Config, record_id: str) -> tuple[bytes, bool]:
    """The record's bundle as bytes, and whether it verified (blocking: run it in a thread).
    LookupError when there is no such record."""
    from consent_ivr.evidence import bundle

    folder = Path(tempfile.mkdtemp(prefix="consent-bundle-"))
    try:
        out = folder / f"consent-{record_id}.zip"
        report = bundle.export(db, config, record_id, out)
        return out.read_bytes(), report.ok
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bundle_response(record_id: str, data: bytes, verified: bool) -> web.Response:
    return web.Response(
        body=data,
        content_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="consent-{record_id}.zip"',
            "X-Evidence-Verified": "true" if verified else "false",
        },
    )


async def recording_response(db: Database, record_id: str) -> web.FileResponse:
    try:
        found = await db.read(lambda s: services.recording_file(s, record_id))
    except services.Erased as e:
        raise Problem(410, "gone", str(e)) from None
    except LookupError as e:
        raise Problem(404, "not-found", str(e)) from None
    return web.FileResponse(
        found.path,
        headers={
            "Content-Type": f"audio/{found.format}",
            "Content-Disposition": f'inline; filename="{record_id}.{found.format}"',
        },
    )


def make_app(svc: Services, audit_log: AuditLog) -> web.Application:
    """The /v1 application (mount it with `add_subapp("/v1", ...)`)."""
    api = Api(svc, audit_log)
    app = web.Application(middlewares=[api.problems, api.guard])
    app.add_routes(api.routes())
    return app
