"""The compliance console (`/console`): find a person's consents by phone or a record by id, read
the record's evidence, listen to the call and the prompts, download the bundle. Read-only.

Login takes an API token with the read scope; the session is a cookie signed with a key made
when the service starts (a restart signs everybody out), and the token is looked up again on
every request, so revoking it ends the session too (within api.token_cache_s). The call
recording and the bundle need the export scope as in the API. Every page that shows a
person's data is an audit event, as an API read is.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from consent_ivr.api import audit, services
from consent_ivr.api.audit import AuditLog
from consent_ivr.api.http import (
    CALLER,
    Services,
    bundle_response,
    export_bundle,
    recording_response,
)
from consent_ivr.api.models import ApiToken
from consent_ivr.api.problems import Problem
from consent_ivr.api.schemas import RecordsQuery
from consent_ivr.api.tokens import Caller, TokenCache, digest, find
from consent_ivr.clock import iso, now
from consent_ivr.console import pages
from consent_ivr.phone import to_e164
from consent_ivr.prompts import archive_dir
from consent_ivr.store.models import ConsentRecord

COOKIE = "consent_ivr_console"
LANG_COOKIE = "consent_ivr_lang"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
PAGE = 50

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def by_id(session: Session, token_id: int) -> Caller | None:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return None
    return Caller(row.id, row.name, frozenset(row.scopes), row.rate_per_s)


def record_document(session: Session, svc: Services, record_id: str) -> dict[str, Any] | None:
    """What the record page shows: the verified view, its SMS, and the verification as the
    bundle's summary states it (with the checkpoint that covers the record)."""
    from consent_ivr.cli import full_view
    from consent_ivr.evidence import checkpoints, keys, verify

    view = full_view(session, svc.config, record_id)
    if view is None:
        return None
    check = view["integrity"]
    cp = None
    if view["events"]:
        last = view["events"][-1]["ledger_seq"]
        cp = verify.covering(session, last, keys.trusted(svc.config))
    verification = {
        "ok": check["verified"],
        "problems": check["problems"],
        "warnings": check["warnings"],
        "notes": check["notes"],
        "checked_at": iso(now()),
        "checkpoint": {**checkpoints.as_dict(cp), "signed": cp.signature is not None}
        if cp
        else None,
    }
    return {"view": view, "verification": verification}


class Console:
    def __init__(self, svc: Services, audit_log: AuditLog) -> None:
        self.svc = svc
        self.db = svc.db
        self.audit = audit_log
        self.key = secrets.token_bytes(32)
        self.lifetime = int(svc.api.console_session_h * 3600)
        self.tokens = TokenCache(svc.api.token_cache_s)

    # ---- session -------------------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def cookie_for(self, caller: Caller) -> str:
        value = f"{caller.token_id}.{int(time.time()) + self.lifetime}"
        return f"{value}.{self._sign(value)}"

    async def who(self, request: web.Request) -> Caller | None:
        token_id, _, rest = request.cookies.get(COOKIE, "").partition(".")
        expires, _, signature = rest.partition(".")
        if not (token_id.isdigit() and expires.isdigit()):
            return None
        if not hmac.compare_digest(signature, self._sign(f"{token_id}.{expires}")):
            return None
        if int(expires) < time.time():
            return None
        caller = await self.tokens.caller(
            f"id:{token_id}", lambda: self.db.read(lambda s: by_id(s, int(token_id)))
        )
        return caller if caller is not None and "read" in caller.scopes else None

    @staticmethod
    def words(request: web.Request) -> pages.Words:
        chosen = request.query.get("lang") or request.cookies.get(LANG_COOKIE)
        if chosen not in pages.LANGUAGES:
            accept = request.headers.get("Accept-Language", "").lower()
            chosen = "ru" if accept.startswith("ru") else "en"
        return pages.Words(chosen)

    @web.middleware
    async def language(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """`?lang=ru` sticks: it is kept in a cookie."""
        response = await handler(request)
        lang = request.query.get("lang")
        if lang in pages.LANGUAGES:
            response.set_cookie(
                LANG_COOKIE, lang, path="/console", samesite="Strict", httponly=True
            )
        return response

    @web.middleware
    async def signed_in(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name in ("login", "login.post"):
            return await handler(request)
        caller = await self.who(request)
        if caller is None:
            if request.method == "GET" and request.match_info.route.name in ("home", "record"):
                raise web.HTTPSeeOther("/console/login")
            raise web.HTTPUnauthorized(text="sign in at /console/login\n")
        request[CALLER] = caller
        return await handler(request)

    def _audit(self, request: web.Request, action: str, target: str | None, status: int) -> None:
        self.audit.record(audit.event(request[CALLER], action, target, status))

    # ---- pages ---------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        return web.Response(text=pages.login(self.words(request)), content_type="text/html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        w = self.words(request)
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="cross-site login refused\n")
        form = await request.post()
        token = str(form.get("token") or "").strip()
        caller = await self.db.read(lambda s: find(s, digest(token))) if token else None
        if caller is None or "read" not in caller.scopes:
            error = "login.wrong" if caller is None else "login.scope"
            return web.Response(text=pages.login(w, error), content_type="text/html", status=401)
        self.audit.record(audit.event(caller, "console.login", None, 303))
        response = web.HTTPSeeOther("/console/")
        response.set_cookie(
            COOKIE,
            self.cookie_for(caller),
            max_age=self.lifetime,
            path="/console",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        raise response

    async def logout(self, _request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther("/console/login")
        response.del_cookie(COOKIE, path="/console")
        raise response

    async def home(self, request: web.Request) -> web.StreamResponse:
        w, caller = self.words(request), request[CALLER]
        q = request.query.get("q", "").strip()
        if not q:
            return self.html(pages.home(w, who=caller.name))
        if UUID.match(q.lower()):
            exists = await self.db.read(lambda s: s.get(ConsentRecord, q.lower()))
            if exists is not None:
                raise web.HTTPSeeOther(f"/console/records/{q.lower()}")
            return self.html(pages.message(w, w("search.none", q=q), who=caller.name, q=q), 404)
        phone = to_e164(q, self.svc.config.default_region)
        if phone is None:
            return self.html(pages.message(w, w("search.bad", q=q), who=caller.name, q=q), 422)
        cursor = request.query.get("cursor") or None
        at = now()

        def read(session: Session) -> tuple[dict[str, Any], dict[str, Any]]:
            status = services.consent_status(session, self.svc.config, phone, None, at)
            query = RecordsQuery.model_validate({"cursor": cursor, "limit": PAGE})
            return status, services.record_page(session, query, phone, PAGE, at)

        try:
            status, found = await self.db.read(read)
        except services.BadCursor:
            raise web.HTTPBadRequest(text="not a cursor this console handed out\n") from None
        self._audit(request, "console.person", phone, 200)
        body = pages.person(w, status, found["items"], found["next_cursor"], who=caller.name, q=q)
        return self.html(body)

    async def record(self, request: web.Request) -> web.StreamResponse:
        from consent_ivr.evidence import summary

        w, caller = self.words(request), request[CALLER]
        rid = self.record_id(request)
        doc = await self.db.read(lambda s: record_document(s, self.svc, rid), snapshot=True)
        if doc is None:
            return self.html(pages.message(w, w("search.none", q=rid), who=caller.name, q=rid), 404)
        view = doc["view"]
        can_export = "export" in caller.scopes
        media = {
            p["sha256"]: f"/console/prompts/{p['sha256']}.wav"
            for p in view["prompts"]
            if p.get("sha256")
        }
        if can_export and view.get("recording") and not view.get("erased"):
            media["recording"] = f"/console/records/{rid}/recording"
        rendered = summary.render(view, view["sms"], doc["verification"], media)
        self._audit(request, "console.record", rid, 200)
        page = pages.around_summary(w, rendered, rid, who=caller.name, can_export=can_export)
        return self.html(page)

    async def recording(self, request: web.Request) -> web.StreamResponse:
        rid = self.record_id(request)
        self.export_scope(request)
        try:
            response = await recording_response(self.db, rid)
        except Problem as p:
            self._audit(request, "console.recording", rid, p.status)
            raise web.HTTPNotFound(text=f"{p.detail}\n") from None
        self._audit(request, "console.recording", rid, 200)
        return response

    async def prompt(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        path = archive_dir(self.svc.config) / f"{sha}.wav"
        if not SHA256.match(sha) or not await asyncio.to_thread(path.is_file):
            raise web.HTTPNotFound(text="no such prompt audio\n")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def bundle(self, request: web.Request) -> web.StreamResponse:
        rid = self.record_id(request)
        self.export_scope(request)
        try:
            data, ok = await asyncio.to_thread(export_bundle, self.db, self.svc.config, rid)
        except LookupError:
            raise web.HTTPNotFound(text=f"no record {rid}\n") from None
        self._audit(request, "console.bundle", rid, 200)
        return bundle_response(rid, data, ok)

    # ---- helpers ---------------------------------------------------------------------------

    @staticmethod
    def html(text: str, status: int = 200) -> web.Response:
        return web.Response(
            text=text,
            status=status,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
        )

    @staticmethod
    def record_id(request: web.Request) -> str:
        rid = request.match_info["id"]
        if not UUID.match(rid):
            raise web.HTTPNotFound(text="no such record\n")
        return rid

    def export_scope(self, request: web.Request) -> None:
        if "export" not in request[CALLER].scopes:
            self._audit(request, "console.export", request.match_info.get("id"), 403)
            raise web.HTTPForbidden(text="this token has no export scope\n")


def make_app(svc: Services, audit_log: AuditLog) -> web.Application:
    """The console application (mount it with `add_subapp("/console", ...)`)."""
    console = Console(svc, audit_log)
    app = web.Application(middlewares=[console.language, console.signed_in])
    app.router.add_get("/", console.home, name="home")
    app.router.add_get("/login", console.login_form, name="login")
    app.router.add_post("/login", console.login, name="login.post")
    app.router.add_post("/logout", console.logout, name="logout")
    app.router.add_get("/records/{id}", console.record, name="record")
    app.router.add_get("/records/{id}/recording", console.recording, name="recording")
    app.router.add_get("/records/{id}/bundle", console.bundle, name="bundle")
    app.router.add_get("/prompts/{sha}.wav", console.prompt, name="prompt")
    return app
