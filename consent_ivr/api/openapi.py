"""The OpenAPI 3.1 document of /v1, drawn from the endpoint table and its pydantic models
(JSON Schema 2020-12, which OpenAPI 3.1 uses as it is), and the reference page that renders it
on the server: plain HTML, no script, nothing fetched from elsewhere."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from consent_ivr import __version__
from consent_ivr.api import problems, schemas

if TYPE_CHECKING:
    from consent_ivr.api.http import Endpoint

REF = "#/components/schemas/{model}"
PROBLEM = {"$ref": "#/components/schemas/ProblemDetails"}
STATUS_TEXT = {
    200: "OK",
    202: "Accepted: the call is being placed",
    400: "The body is not JSON",
    401: "No valid API token",
    403: "The token lacks the scope",
    404: "Not found",
    409: "The number may not be contacted",
    410: "Erased by the retention policy",
    422: "A parameter or field is wrong",
    429: "Rate limit reached (see Retry-After)",
    502: "Asterisk refused the call",
    503: "Asterisk or the database is not available",
}
SCOPES_TEXT = {
    "read": "consents, records and their evidence as JSON",
    "call": "place outbound consent calls",
    "withdraw": "withdraw consents on a person's behalf",
    "export": "download evidence bundles and call recordings",
}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string, never JSON null."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        merged = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(rest) == 1:
            return {**rest[0], **merged}
        return {**merged, "anyOf": rest}
    return schema


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    bodies = [e.body for e in endpoints if e.body is not None]
    outputs = [e.ok[1] for e in endpoints if isinstance(e.ok[1], type)]
    outputs += [schemas.ProblemDetails, schemas.Health, schemas.Readiness]
    _, defs = models_json_schema(
        [(m, "validation") for m in bodies] + [(m, "serialization") for m in outputs],
        ref_template=REF,
    )
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault("/v1" + e.path, {})[e.method.lower()] = _operation(e)
    paths.update(_service_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "consent-ivr API",
            "version": __version__,
            "description": "Consent captured by phone: may a number be contacted, the records "
            "and their evidence, outbound consent calls, withdrawals. Every request but this "
            "document carries `Authorization: Bearer TOKEN` (`consent-ivr tokens create "
            "--scope read|call|withdraw|export --name NAME`); errors are RFC 9457 problem "
            "details (application/problem+json).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token; its scopes: "
                    + "; ".join(f"{k}: {v}" for k, v in SCOPES_TEXT.items()),
                }
            },
        },
    }


def _content(kind: type[BaseModel] | str) -> dict[str, Any]:
    if isinstance(kind, str):
        if kind == "application/json":
            return {kind: {"schema": {"type": "object"}}}
        if kind.startswith("text/"):
            return {kind: {"schema": {"type": "string"}}}
        return {kind: {"schema": {"type": "string", "format": "binary"}}}
    return {"application/json": {"schema": {"$ref": REF.format(model=kind.__name__)}}}


def _operation(e: Endpoint) -> dict[str, Any]:
    status, kind = e.ok
    op: dict[str, Any] = {
        "operationId": e.name,
        "summary": e.summary,
        "responses": {str(status): {"description": STATUS_TEXT[status], "content": _content(kind)}},
    }
    if e.description:
        op["description"] = e.description
    if e.scope is not None:
        op["security"] = [{"token": []}]
        op["x-scope"] = e.scope
        op["description"] = f"Scope: `{e.scope}`. " + e.description
    else:
        op["security"] = []
    params = _parameters(e.query) if e.query is not None else []
    if e.record_path:
        path_schema = schemas.RecordPath.model_json_schema()["properties"]["id"]
        path_schema.pop("title", None)
        params.insert(
            0,
            {"name": "id", "in": "path", "required": True, "schema": path_schema},
        )
    if params:
        op["parameters"] = params
    if e.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=e.body.__name__)}}
            },
        }
    for code in sorted(e.errors):
        response: dict[str, Any] = {
            "description": STATUS_TEXT[code],
            "content": {problems.MEDIA_TYPE: {"schema": PROBLEM}},
        }
        if code in (429, 503):
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        op["responses"][str(code)] = response
    return op


def _service_paths() -> dict[str, Any]:
    def plain(summary: str, ok: dict[str, Any], extra: dict[str, Any] | None = None) -> Any:
        responses = {"200": {"description": "OK", "content": ok}, **(extra or {})}
        return {"get": {"summary": summary, "security": [], "responses": responses}}

    readiness = {"application/json": {"schema": {"$ref": REF.format(model="Readiness")}}}
    return {
        "/healthz": plain(
            "The process is up",
            {"application/json": {"schema": {"$ref": REF.format(model="Health")}}},
        ),
        "/readyz": plain(
            "Ready to take calls: ARI connected and the app registered, the database "
            "answers, the recordings folder is writable, the SMS gateway is reachable",
            readiness,
            {"503": {"description": "Not ready: the failing part is named", "content": readiness}},
        ),
        "/metrics": plain(
            "Prometheus metrics",
            {"text/plain": {"schema": {"type": "string"}}},
        ),
    }


# ---- the reference page -----------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _schema_block(schema: dict[str, Any]) -> str:
    return f"<pre>{_e(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"


def reference_page(doc: dict[str, Any]) -> str:
    parts = [
        f"<h1>{_e(doc['info']['title'])} <small>{_e(doc['info']['version'])}</small></h1>",
        f"<p>{_e(doc['info']['description'])}</p>",
        '<p>The machine-readable document: <a href="/v1/openapi.json">/v1/openapi.json</a> '
        "(OpenAPI 3.1).</p>",
        "<h2>Scopes</h2><ul>"
        + "".join(f"<li><code>{_e(k)}</code>: {_e(v)}</li>" for k, v in SCOPES_TEXT.items())
        + "</ul>",
        "<h2>Operations</h2>",
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            anchor = op.get("operationId", path.strip("/"))
            parts.append(
                f'<section id="{_e(anchor)}"><h3><span class="method">{_e(method.upper())}</span> '
                f"<code>{_e(path)}</code></h3><p>{_e(op['summary'])}</p>"
            )
            if op.get("description"):
                parts.append(f"<p>{_e(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                rows = "".join(
                    f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                    f"<td>{'yes' if p.get('required') else ''}</td>"
                    f"<td><code>{_e(json.dumps(p['schema'], ensure_ascii=False))}</code></td>"
                    f"<td>{_e(p.get('description', ''))}</td></tr>"
                    for p in params
                )
                parts.append(
                    "<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th>"
                    f"<th></th></tr>{rows}</table>"
                )
            body = op.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                parts.append(f'<p>Body: <a href="#schema-{_e(ref)}">{_e(ref)}</a></p>')
            items = []
            for code, response in op["responses"].items():
                media = ", ".join(response.get("content", {}))
                items.append(
                    f"<li><b>{_e(code)}</b> {_e(response['description'])} ({_e(media)})</li>"
                )
            parts.append(f"<ul>{''.join(items)}</ul></section>")
    parts.append("<h2>Problem types</h2><dl>")
    for slug, (title, meaning) in problems.TYPES.items():
        parts.append(
            f'<dt id="problem-{_e(slug)}"><code>{_e(problems.type_uri(slug))}</code>: '
            f"{_e(title)}</dt><dd>{_e(meaning)}</dd>"
        )
    parts.append("</dl><h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        parts.append(
            f'<section id="schema-{_e(name)}"><h3>{_e(name)}</h3>{_schema_block(schema)}</section>'
        )
    css = (
        "body{font:15px/1.5 sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "pre{background:#f4f4f2;padding:.5rem;overflow:auto;font-size:.8rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .4rem;"
        "text-align:left;vertical-align:top}.method{background:#1b1b1b;color:#fff;padding:0 .4rem}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(doc['info']['title'])}</title><style>{css}</style></head><body>"
        + "".join(parts)
        + "</body></html>"
    )
