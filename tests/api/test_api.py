"""The /v1 API over real SQLite and PostgreSQL, served by the real web app on 127.0.0.1: the
consent status before and after a withdrawal, records with every filter and cursor pages, a
record's verified view, the bundle (verified alone), the recording, outbound calls refused with
the reason, scopes, revocation, audit events, rate limits and problem details."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from consent_ivr.api.models import ApiToken, AuditEvent
from consent_ivr.evidence.bundle import verify_bundle
from consent_ivr.store.models import ContactAttempt
from tests.api.conftest import NEWS, OFFERS, PHONE, T0, Site
from tests.integration.test_pgasync import kill_connections

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OTHER = "+79031112233"


def audit_rows(site: Site) -> list[AuditEvent]:
    with site.db.session() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


async def audited(site: Site, count: int) -> list[AuditEvent]:
    """The audit log once it holds `count` events (reads are written in batches)."""
    for _ in range(100):
        rows = audit_rows(site)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    return audit_rows(site)


def purposes(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["purpose"]: p for p in body["purposes"]}


# ---- GET /v1/consents -------------------------------------------------------------------------


async def test_consent_state_before_and_after_a_withdrawal(site: Site) -> None:
    token = site.token("read", "withdraw")
    [record_id] = site.store_call(PHONE, "granted")

    status, _, body = await site.call(
        "GET", "/v1/consents", token, params={"phone": "8 916 123-45-67"}
    )
    assert status == 200, body
    assert body["phone"] == PHONE
    offers = purposes(body)[OFFERS]
    assert offers["state"] == "given" and offers["record_id"] == record_id
    assert offers["records"] == [record_id] and offers["channel"] == "phone"
    assert offers["may_contact"]["call"]["allowed"] is True
    assert offers["may_contact"]["sms"]["allowed"] is True
    assert "consent given on" in offers["may_contact"]["call"]["reason"]
    news = purposes(body)[NEWS]  # configured, never asked
    assert news["state"] == "none" and news["may_contact"]["call"]["allowed"] is False
    assert body["do_not_contact"] == []

    status, _, done = await site.call(
        "POST",
        "/v1/withdrawals",
        token,
        json={"phone": PHONE, "purpose": OFFERS, "by": "anna", "reason": "asked by e-mail"},
    )
    assert status == 200, done
    assert done == {"phone": PHONE, "withdrawn": [{"record_id": record_id, "purpose": OFFERS}]}

    status, _, body = await site.call(
        "GET", "/v1/consents", token, params={"phone": PHONE, "purpose": OFFERS}
    )
    assert status == 200
    [offers] = body["purposes"]
    assert offers["state"] == "withdrawn" and offers["channel"] == "operator"
    for channel in ("call", "sms"):
        verdict = offers["may_contact"][channel]
        assert verdict["allowed"] is False and "withdrew consent" in verdict["reason"], verdict
    [entry] = body["do_not_contact"]
    assert entry["source"] == "withdrawn" and entry["purpose"] == OFFERS
    assert entry["reason"] == "asked by e-mail" and entry["by"] == "anna"

    # The evidence says who withdrew and why; the withdrawal SMS was queued with it.
    status, _, view = await site.call("GET", f"/v1/records/{record_id}", token)
    assert status == 200
    [withdrawal] = view["withdrawals"]
    assert withdrawal["channel"] == "operator" and withdrawal["by"] == "anna"
    assert withdrawal["reason"] == "asked by e-mail"
    assert [m["template"] for m in view["sms"]] == ["granted", "withdrawn"]
    assert view["integrity"]["chain_ok"] and view["integrity"]["verified"], view["integrity"]

    # Withdrawing again finds nothing active: an empty answer, nothing written twice.
    status, _, again = await site.call(
        "POST",
        "/v1/withdrawals",
        token,
        json={"phone": PHONE, "all": True, "by": "anna", "reason": "again"},
    )
    assert status == 200 and again["withdrawn"] == []


async def test_refusal_and_unknown_numbers(site: Site) -> None:
    token = site.token("read")
    site.store_call(OTHER, "declined")
    status, _, body = await site.call("GET", "/v1/consents", token, params={"phone": OTHER})
    offers = purposes(body)[OFFERS]
    assert offers["state"] == "refused"
    assert offers["may_contact"]["call"] == {
        "allowed": False,
        "state": "refused",
        "reason": offers["may_contact"]["call"]["reason"],
        "record_id": offers["record_id"],
    }
    assert offers["may_contact"]["call"]["reason"].startswith("refused (marketing-calls, all)")
    status, _, body = await site.call(
        "GET", "/v1/consents", token, params={"phone": "+447700900123"}
    )
    assert status == 200 and all(p["state"] == "none" for p in body["purposes"])


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
# The audit log writes through the same connections: no flush may take the killed one first.
@pytest.mark.parametrize("site_settings", [{"audit_flush_s": 3600.0}])
async def test_a_hot_read_connection_the_server_killed_is_one_503_then_replaced(
    site: Site, pg_server: Any
) -> None:
    """PostgreSQL's hot path reads on its own connections (consent_ivr.store.pgasync): one the
    server terminated answers 503 as any database failure does, and the next request opens a
    new one."""
    token = site.token("read")
    site.store_call(OTHER, "declined")
    ask = {"phone": OTHER, "purpose": OFFERS}
    assert (await site.call("GET", "/v1/consents", token, params=ask))[0] == 200
    assert kill_connections(pg_server, site.db) == 1
    status, headers, body = await site.call("GET", "/v1/consents", token, params=ask)
    assert status == 503 and body["type"] == "/v1/docs#problem-unavailable", body
    assert headers["Retry-After"] == "5" and OTHER not in str(body)
    status, _, body = await site.call("GET", "/v1/consents", token, params=ask)
    assert status == 200 and purposes(body)[OFFERS]["state"] == "refused"


async def test_bad_parameters_are_problem_details_naming_the_field(site: Site) -> None:
    token = site.token("read")
    cases = [
        ({"phone": "not a phone"}, "phone"),
        ({"phone": PHONE, "purpose": "no-such-purpose"}, "purpose"),
        ({"phone": PHONE, "purpse": OFFERS}, "purpse"),
        ({}, "phone"),
    ]
    for params, field in cases:
        status, headers, body = await site.call("GET", "/v1/consents", token, params=params)
        assert status == 422, (params, body)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["type"] == "/v1/docs#problem-invalid-request" and body["status"] == 422
        assert body["instance"] == "/v1/consents"
        assert [e["field"] for e in body["errors"]] == [field], body
        assert body["errors"][0]["in"] == "query" and body["errors"][0]["message"]
    status, _, body = await site.call("GET", "/v1/nothing-here", token)
    assert status == 404 and body["type"] == "/v1/docs#problem-not-found"
    status, _, body = await site.call("DELETE", "/v1/consents", token)
    assert status == 405 and body["type"] == "/v1/docs#problem-method-not-allowed"
    status, _, body = await site.call(
        "POST",
        "/v1/withdrawals",
        site.token("withdraw"),
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and body["detail"] == "the body is not JSON"
    status, _, body = await site.call(
        "POST",
        "/v1/withdrawals",
        site.token("withdraw"),
        json={"phone": PHONE, "purpose": OFFERS, "all": True, "by": "x", "reason": "y"},
    )
    assert status == 422 and body["errors"][0]["in"] == "body"
    assert "either purpose or all" in body["errors"][0]["message"]


# ---- GET /v1/records --------------------------------------------------------------------------


async def test_records_filters_and_pages(site: Site) -> None:
    token = site.token("read")
    ids: dict[str, list[str]] = {}
    for n in range(5):
        ids.setdefault("offers-granted", []).extend(
            site.store_call(PHONE, "granted", at=T0 + timedelta(hours=n))
        )
    ids["two"] = site.store_call(OTHER, "declined", at=T0 + timedelta(days=1), campaign="two")
    ids["outbound"] = site.store_call(
        OTHER, "no_response", at=T0 + timedelta(days=2), direction="outbound"
    )
    site.withdraw(ids["offers-granted"][0], T0 + timedelta(days=3))
    news = {r for r in ids["two"] if r != ids["two"][0]}  # the second purpose of the call
    ids["two"].sort(reverse=True)  # one call: the same start, then newest id first
    everything = [*ids["outbound"], *ids["two"], *reversed(ids["offers-granted"])]

    async def listed(**params: Any) -> list[str]:
        """Every page of the query, following the cursor; each page at most `limit` long."""
        found: list[str] = []
        cursor = None
        for _ in range(50):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            status, _, page = await site.call("GET", "/v1/records", token, params=query)
            assert status == 200, page
            assert len(page["items"]) <= int(params.get("limit", 50))
            found += [item["record_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return found
        raise AssertionError("the cursor never ended")

    assert await listed() == everything
    assert await listed(limit=2) == everything  # pages: no record lost, none twice
    assert await listed(limit=1, phone=PHONE) == list(reversed(ids["offers-granted"]))
    assert await listed(campaign="two") == ids["two"]
    assert await listed(purpose=NEWS) == [r for r in ids["two"] if r in news]
    assert await listed(outcome="no_response") == ids["outbound"]
    assert await listed(status="withdrawn") == [ids["offers-granted"][0]]
    assert await listed(status="given", limit=2) == list(reversed(ids["offers-granted"][1:]))
    assert await listed(status="refused") == ids["two"]
    since = (T0 + timedelta(hours=3)).isoformat()
    until = (T0 + timedelta(days=1, hours=1)).isoformat()
    assert await listed(**{"from": since, "to": until}) == [
        *ids["two"],
        ids["offers-granted"][4],
        ids["offers-granted"][3],
    ]
    assert await listed(**{"to": "2026-03-14"}) == []

    status, _, page = await site.call("GET", "/v1/records", token, params={"limit": 1})
    [item] = page["items"]
    assert item["record_id"] == ids["outbound"][0]
    assert item["direction"] == "outbound" and item["outcome"] == "no_response"
    assert item["phone"] == OTHER and item["status"] == "requested"

    for params, field in (({"cursor": "garbage"}, "cursor"), ({"limit": 0}, "limit")):
        status, _, body = await site.call("GET", "/v1/records", token, params=params)
        assert status == 422 and body["errors"][0]["field"] == field, body


@pytest.mark.parametrize("site_settings", [{"page_max": 3}])
async def test_a_page_is_never_cut_silently(site: Site) -> None:
    token = site.token("read")
    status, _, body = await site.call("GET", "/v1/records", token, params={"limit": 4})
    assert status == 422 and "at most 3 (api.page_max)" in body["errors"][0]["message"]


# ---- one record: view, bundle, recording ------------------------------------------------------


async def test_record_bundle_and_recording(site: Site, tmp_path: Path) -> None:
    reader, exporter = site.token("read"), site.token("export", name="dpo")
    [record_id] = site.store_call(PHONE, "granted")

    status, _, view = await site.call("GET", f"/v1/records/{record_id}", reader)
    assert status == 200
    assert view["record_id"] == record_id and view["phone"] == PHONE
    assert [k["digit"] for k in view["keys"]] == ["1", "1"]
    assert [p["prompt"] for p in view["prompts"]] == [
        "notice",
        "purpose",
        "ask",
        "confirm",
        "recorded_agree",
    ]
    assert view["integrity"]["verified"], view["integrity"]
    [sms] = view["sms"]
    assert sms["status"] == "queued" and sms["template"] == "granted"

    status, headers, data = await site.call("GET", f"/v1/records/{record_id}/bundle", exporter)
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"] == f'attachment; filename="consent-{record_id}.zip"'
    assert headers["X-Evidence-Verified"] == "true"
    out = tmp_path / "bundle.zip"
    out.write_bytes(data)
    report = verify_bundle(out)
    assert report.ok, report.lines()
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"summary.html", "record.json", "events.json", "recording.wav"} <= names

    status, headers, audio = await site.call("GET", f"/v1/records/{record_id}/recording", exporter)
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    assert hashlib.sha256(audio).hexdigest() == view["recording"]["sha256"]
    status, headers, part = await site.call(
        "GET", f"/v1/records/{record_id}/recording", exporter, headers={"Range": "bytes=0-43"}
    )
    assert status == 206 and part == audio[:44] and part.startswith(b"RIFF")

    # A reader may not export; unknown and malformed ids are told apart.
    status, _, body = await site.call("GET", f"/v1/records/{record_id}/bundle", reader)
    assert status == 403 and "lacks the scope 'export'" in body["detail"]
    missing = "00000000-0000-4000-8000-000000000000"
    for path in (f"/v1/records/{missing}", f"/v1/records/{missing}/bundle"):
        status, _, body = await site.call("GET", path, site.token("read", "export"))
        assert status == 404 and body["detail"] == f"no record {missing}", body
    status, _, body = await site.call("GET", "/v1/records/not-a-uuid", reader)
    assert status == 422 and body["errors"][0] == {
        "field": "id",
        "in": "path",
        "message": body["errors"][0]["message"],
    }


async def test_an_erased_recording_is_gone(site: Site) -> None:
    from consent_ivr.evidence import purge

    token = site.token("export")
    [record_id] = site.store_call(PHONE, "granted")
    site.withdraw(record_id, T0 + timedelta(days=1))
    done = await asyncio.to_thread(purge.run, site.db, site.config, at=T0 + timedelta(days=40))
    assert [e.record_id for e in done.erasures] == [record_id]
    status, _, body = await site.call("GET", f"/v1/records/{record_id}/recording", token)
    assert status == 410 and body["type"] == "/v1/docs#problem-gone", body
    assert "erased on 2026-04-23" in body["detail"]


# ---- POST /v1/calls ---------------------------------------------------------------------------


async def test_a_call_to_a_number_that_refused_is_not_placed(site: Site) -> None:
    token = site.token("call")
    [record_id] = site.store_call(OTHER, "declined", campaign="dial")
    status, _, body = await site.call(
        "POST", "/v1/calls", token, json={"phone": OTHER, "campaign": "dial"}
    )
    assert status == 409, body
    assert body["type"] == "/v1/docs#problem-not-allowed"
    [refusal] = body["refusals"]
    assert refusal["purpose"] == OFFERS and refusal["record_id"] == record_id
    assert refusal["reason"].startswith("refused (marketing-calls, all)")
    with site.db.session() as s:
        [attempt] = s.scalars(select(ContactAttempt)).all()
        assert (attempt.phone, attempt.result, attempt.campaign) == (OTHER, "suppressed", "dial")
        assert attempt.reason == refusal["reason"]
    [event] = await audited(site, 1)
    assert (event.action, event.target, event.status) == ("calls.place", OTHER, 409)
    assert event.detail == {"campaign": "dial", "refusals": [refusal]}


async def test_a_call_needs_asterisk_and_a_dialing_endpoint(site: Site) -> None:
    token = site.token("call")
    status, headers, body = await site.call(
        "POST", "/v1/calls", token, json={"phone": PHONE, "campaign": "dial"}
    )
    assert status == 503 and body["detail"] == "Asterisk (ARI) is not connected"
    assert headers["Retry-After"] == "5"
    status, _, body = await site.call("POST", "/v1/calls", token, json={"phone": PHONE})
    assert status == 422 and "dialing.endpoint is not set" in body["errors"][0]["message"]
    status, _, body = await site.call(
        "POST", "/v1/calls", token, json={"phone": PHONE, "campaign": "dial", "language": "de"}
    )
    assert status == 422 and body["errors"][0]["field"] == "language"
    status, _, body = await site.call(
        "POST", "/v1/calls", token, json={"phone": PHONE, "endpoint": "Local/x@y"}
    )
    assert status == 422 and body["errors"][0]["field"] == "endpoint"  # never from the caller


# ---- tokens, scopes, audit, rate limits -------------------------------------------------------


async def test_every_scope_is_enforced(site: Site) -> None:
    reader = site.token("read", name="crm")
    calls = [
        (
            "POST",
            "/v1/withdrawals",
            {"phone": PHONE, "all": True, "by": "x", "reason": "y"},
            "withdraw",
        ),
        ("POST", "/v1/calls", {"phone": PHONE}, "call"),
    ]
    for method, path, body, scope in calls:
        status, _, problem = await site.call(method, path, reader, json=body)
        assert status == 403, problem
        assert problem["detail"] == f"token crm lacks the scope '{scope}' (it has: read)"
    caller = site.token("call", name="dialer")
    status, _, problem = await site.call("GET", "/v1/consents", caller, params={"phone": PHONE})
    assert status == 403 and "lacks the scope 'read'" in problem["detail"]
    for token in (None, "cvr_not-a-token"):
        status, headers, problem = await site.call(
            "GET", "/v1/consents", token, params={"phone": PHONE}
        )
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert problem["type"] == "/v1/docs#problem-unauthorized"
    rows = await audited(site, 3)
    assert [(r.token_name, r.action, r.status) for r in rows] == [
        ("crm", "withdrawals.create", 403),
        ("crm", "calls.place", 403),
        ("dialer", "consents.read", 403),
    ]


async def test_tokens_are_stored_hashed_and_revocable(site: Site) -> None:
    from consent_ivr.api import tokens

    token = site.token("read", name="crm")
    status, _, _ = await site.call("GET", "/v1/consents", token, params={"phone": PHONE})
    assert status == 200
    with site.db.session() as s:
        [row] = s.scalars(select(ApiToken)).all()
        assert token not in str([row.token_sha256, row.prefix, row.name])
        assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
        assert token.startswith(row.prefix) and len(row.prefix) < len(token) / 4
        assert [t.name for t in tokens.revoke(s, "crm", T0)] == ["crm"]
    status, _, problem = await site.call("GET", "/v1/consents", token, params={"phone": PHONE})
    assert status == 401 and problem["detail"] == "unknown or revoked API token"


async def test_every_action_is_an_audit_event(site: Site) -> None:
    token = site.token("read", "withdraw", "export", name="dpo")
    [record_id] = site.store_call(PHONE, "granted")
    await site.call("GET", "/v1/consents", token, params={"phone": PHONE})
    await site.call("GET", "/v1/records", token, params={"phone": PHONE})
    await site.call("GET", f"/v1/records/{record_id}", token)
    await site.call("GET", f"/v1/records/{record_id}/recording", token)
    await site.call(
        "POST",
        "/v1/withdrawals",
        token,
        json={"phone": PHONE, "purpose": OFFERS, "by": "anna", "reason": "letter"},
    )
    await site.call("GET", "/v1/openapi.json")  # public: nobody to audit
    rows = await audited(site, 5)
    assert sorted((r.action, r.target, r.status, r.token_name) for r in rows) == sorted(
        [
            ("consents.read", PHONE, 200, "dpo"),
            ("records.list", PHONE, 200, "dpo"),
            ("records.read", record_id, 200, "dpo"),
            ("records.recording", record_id, 200, "dpo"),
            ("withdrawals.create", PHONE, 200, "dpo"),
        ]
    )
    [withdrawal] = [r for r in rows if r.action == "withdrawals.create"]
    assert withdrawal.detail == {
        "purpose": OFFERS,
        "by": "anna",
        "withdrawn": [{"record_id": record_id, "purpose": OFFERS}],
    }


@pytest.mark.parametrize("site_settings", [{"rate_per_s": 2.0, "burst": 3}])
async def test_rate_limit_answers_429_with_retry_after(site: Site) -> None:
    limited, other = site.token("read", name="limited"), site.token("read", name="fast", rate=100)
    statuses = []
    for _ in range(5):
        status, headers, body = await site.call(
            "GET", "/v1/consents", limited, params={"phone": PHONE}
        )
        statuses.append(status)
    assert statuses == [200, 200, 200, 429, 429]
    assert headers["Retry-After"] == "1" and body["type"] == "/v1/docs#problem-rate-limited"
    # Per token: another token is not held back; the first one recovers with time.
    status, _, _ = await site.call("GET", "/v1/consents", other, params={"phone": PHONE})
    assert status == 200
    await asyncio.sleep(0.6)
    status, _, _ = await site.call("GET", "/v1/consents", limited, params={"phone": PHONE})
    assert status == 200


# ---- the document -----------------------------------------------------------------------------


async def test_openapi_document_and_reference_page(site: Site) -> None:
    status, _, doc = await site.call("GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    ops = {(m.upper(), p): op for p, methods in doc["paths"].items() for m, op in methods.items()}
    assert set(ops) >= {
        ("GET", "/v1/consents"),
        ("GET", "/v1/records"),
        ("GET", "/v1/records/{id}"),
        ("GET", "/v1/records/{id}/bundle"),
        ("GET", "/v1/records/{id}/recording"),
        ("POST", "/v1/calls"),
        ("POST", "/v1/withdrawals"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }
    assert ops[("POST", "/v1/withdrawals")]["x-scope"] == "withdraw"
    assert "409" in ops[("POST", "/v1/calls")]["responses"]
    status, headers, page = await site.call("GET", "/v1/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'id="problem-rate-limited"' in page and "/v1/records/{id}/bundle" in page
    assert "<script" not in page


async def test_a_nul_byte_in_a_text_field_is_refused_not_stored(site: Site) -> None:
    """PostgreSQL cannot store U+0000 in text: a withdrawal whose `by` or `reason` holds one
    is refused with 422 naming the field (before, on PostgreSQL, the write failed with a 5xx),
    and the consent stays as it was."""
    token = site.token("read", "withdraw")
    [record_id] = site.store_call(PHONE, "granted")
    for field in ("by", "reason"):
        body = {"phone": PHONE, "purpose": OFFERS, "by": "anna", "reason": "asked by e-mail"}
        body[field] = "a\x00b"
        status, _, answer = await site.call("POST", "/v1/withdrawals", token, json=body)
        assert status == 422, answer
        assert field in str(answer), answer
    status, _, body = await site.call("GET", "/v1/consents", token, params={"phone": PHONE})
    assert status == 200
    assert purposes(body)[OFFERS]["state"] == "given"
    assert purposes(body)[OFFERS]["record_id"] == record_id
