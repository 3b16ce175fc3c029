"""Errors as RFC 9457 problem details (`application/problem+json`): a type naming the kind of
problem (documented on the reference page, /v1/docs#problems), a title, the HTTP status, a
detail for a person, and for a request that was wrong, each field with what was expected."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

MEDIA_TYPE = "application/problem+json"

# type slug: (title, what it means), listed on the reference page.
TYPES: dict[str, tuple[str, str]] = {
    "invalid-request": (
        "The request is not valid",
        "A parameter or a field of the body is missing or wrong: `errors` names each one.",
    ),
    "unauthorized": (
        "No valid API token",
        "Send `Authorization: Bearer TOKEN` with a live token (`consent-ivr tokens create`).",
    ),
    "forbidden": (
        "The token lacks the scope",
        "The token may not do this: `detail` names the scope it needs.",
    ),
    "rate-limited": (
        "Too many requests",
        "The token's rate limit is used up: wait `Retry-After` seconds.",
    ),
    "not-found": ("Not found", "No such record, recording or route."),
    "gone": ("Gone", "The data existed but was erased by the retention policy."),
    "not-allowed": (
        "This number may not be contacted",
        "A refusal, a withdrawal or the do-not-contact register stops the call: `refusals` "
        "names the reason for each purpose.",
    ),
    "unavailable": (
        "A part the service needs is not available",
        "Asterisk is not connected, or the database did not answer: try again later.",
    ),
    "upstream": ("Asterisk refused the request", "`detail` says what Asterisk answered."),
    "method-not-allowed": ("Method not allowed", "The route exists, not with this method."),
    "internal": ("Internal error", "A fault of the service; it is logged."),
}


def type_uri(slug: str) -> str:
    return f"/v1/docs#problem-{slug}"


class Problem(Exception):
    """Raised by a handler; the error middleware answers it as problem details."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: Sequence[dict[str, str]] = (),
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": type_uri(self.slug),
            "title": TYPES[self.slug][0],
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors:
            doc["errors"] = self.errors
        return doc | self.extra

    def response(self, instance: str) -> web.Response:
        return web.Response(
            status=self.status,
            text=json.dumps(self.body(instance), ensure_ascii=False),
            content_type=MEDIA_TYPE,
            headers=self.headers,
        )


def invalid(where: str, err: ValidationError) -> Problem:
    """A pydantic validation error as the fields that were wrong (`where`: query, body, path)."""
    errors = []
    for e in err.errors(include_url=False):
        field = ".".join(str(p) for p in e["loc"]) or where
        errors.append({"field": field, "in": where, "message": e["msg"]})
    shown = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return Problem(422, "invalid-request", f"invalid {where}: {shown}", errors=errors)


def field_error(field: str, where: str, message: str) -> Problem:
    return Problem(
        422,
        "invalid-request",
        f"invalid {where}: {field}: {message}",
        errors=[{"field": field, "in": where, "message": message}],
    )
