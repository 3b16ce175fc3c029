"""The API, /metrics and /readyz of a running service with real calls behind them, on a private
Asterisk (22 with SQLite, 16 with PostgreSQL; tests/e2e/conftest.py starts them): simulated
callers on Local channels, the service in-process with its HTTP server on 127.0.0.1.

- /metrics scraped while a call runs shows it in progress, then its outcome;
- a person's status before and after an operator's withdrawal through the API, the records
  filters and pages, the bundle of a real call verified alone;
- an outbound consent call placed through the API reaches Asterisk and leaves its record,
  and a call to the number that withdrew is refused with the reason;
- scopes, audit events and the rate limit on the running service.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from consent_ivr.api import tokens
from consent_ivr.api.models import AuditEvent
from consent_ivr.clock import now
from consent_ivr.config import Campaign, HttpConfig
from consent_ivr.evidence.bundle import verify_bundle
from consent_ivr.prompts import Catalog
from consent_ivr.service import Service, running
from consent_ivr.simulate import place_call, wait_for_record
from consent_ivr.store.models import ConsentRecord
from tests.api.conftest import with_api
from tests.conftest import free_port
from tests.e2e.conftest import (  # noqa: F401  (fixtures of the e2e layer, used here too)
    BACKENDS,
    _stop_asterisks,
    assert_evidence,
    asterisk_env,
    campaign,
    database_url,
    e2e_config,
    e2e_prompts_built,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(600)]

OFFERS = "e2e-offers"


def new_phone() -> str:
    return f"+7902{secrets.randbelow(10**7):07d}"


class Client:
    """The running service's HTTP server, as an integrator reaches it."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session = base, session

    async def __call__(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as r:
            raw = await r.read()
            body: Any = raw
            if "json" in r.headers.get("Content-Type", ""):
                body = await r.json(content_type=None)
            elif r.headers.get("Content-Type", "").startswith("text/"):
                body = raw.decode()
            return r.status, dict(r.headers), body

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, _, text = await self("GET", "/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest_asyncio.fixture(
    loop_scope="session", scope="module", params=BACKENDS, ids=["ast22-sqlite", "ast16-pg"]
)
async def served(
    request: pytest.FixtureRequest,
    e2e_prompts_built: None,  # noqa: F811  (the fixture of that name, imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Service, Client]]:
    """The service with its HTTP server on 127.0.0.1, a campaign that dials a simulated
    person who never presses a key (`silence`), and the API's audit written every 0.1 s."""
    version, database = request.param
    ari = asterisk_env(version)
    tmp = tmp_path_factory.mktemp(f"api-ast{version}-{database}")
    url = database_url(request, database, tmp)
    base = e2e_config(ari, url, tmp)
    dial = Campaign.model_validate(
        {**campaign([OFFERS]), "dialing": {"endpoint": "Local/silence@consent-sim"}}
    )
    config = with_api(
        base,
        {"audit_flush_s": 0.1, "token_cache_s": 0.0},
        http=HttpConfig(host="127.0.0.1", port=free_port()),
        campaigns={**base.campaigns, "dial": dial},
    )
    await asyncio.to_thread(Catalog(config).build)  # the dialing campaign's prompts (cached)
    async with running(config) as svc, aiohttp.ClientSession() as session:
        yield svc, Client(f"http://127.0.0.1:{config.http.port}", session)


def token(svc: Service, *scopes: str, name: str = "e2e", rate: float | None = None) -> str:
    with svc.db.session() as s:
        _, value = tokens.create(s, name, scopes, now(), rate)
    return value


async def start_call(svc: Service, phone: str, scenario: str = "agree") -> str:
    channel_id = f"api-{uuid.uuid4().hex[:12]}"
    await place_call(
        svc.app.ari,
        svc.app.catalog,
        scenario,
        phone,
        channel_id=channel_id,
        campaign="default",
        language="en",
    )
    return channel_id


async def test_metrics_show_the_call_in_progress_then_its_outcome(
    served: tuple[Service, Client],
) -> None:
    svc, client = served
    granted = (
        "consent_ivr_records",
        (("campaign", "default"), ("kind", "consent"), ("outcome", "granted")),
    )
    in_progress = (
        "consent_ivr_calls_in_progress",
        (("campaign", "default"), ("direction", "inbound")),
    )
    before = await client.metrics()
    assert before[("consent_ivr_ari_connected", ())] == 1
    status, _, ready = await client("GET", "/readyz")
    assert status == 200 and ready["ready"], ready
    assert ready["checks"]["ari"]["detail"] == "connected, app consent-ivr registered"

    channel_id = await start_call(svc, new_phone())
    seen: list[float] = []
    for _ in range(200):
        got = await client.metrics()
        seen.append(got.get(in_progress, 0))
        if got.get(in_progress) == 1 and got.get(
            (
                "consent_ivr_records",
                (("campaign", "default"), ("kind", "consent"), ("outcome", "in_progress")),
            )
        ):
            break
        await asyncio.sleep(0.1)
    assert seen[-1] == 1, seen
    view = await wait_for_record(svc.db, channel_id, 120)
    assert view["outcome"] == "granted"
    after = await client.metrics()
    assert after.get(in_progress, 0) == 0
    assert after[granted] == before.get(granted, 0) + 1
    # The confirmation goes held -> queued -> sending -> logged in the background: the gauge
    # follows it to its end (the call has ended, so the job is no longer held).
    logged = ("consent_ivr_sms", (("status", "logged"),))
    for _ in range(300):
        if after.get(logged, 0) == before.get(logged, 0) + 1:
            break
        await asyncio.sleep(0.1)
        after = await client.metrics()
    assert after.get(logged, 0) == before.get(logged, 0) + 1, after
    assert after[("consent_ivr_sms_queue_depth", ())] == 0
    assert after[("consent_ivr_sms_oldest_waiting_seconds", ())] == 0


async def test_the_api_end_to_end(served: tuple[Service, Client], tmp_path: Path) -> None:
    svc, client = served
    ops = token(svc, "read", "withdraw", "export", "call", name="ops")
    reader = token(svc, "read", name="reader")
    phone = new_phone()

    status, _, before = await client("GET", "/v1/consents", ops, params={"phone": phone})
    assert (
        status == 200 and {p["purpose"]: p["state"] for p in before["purposes"]}[OFFERS] == "none"
    )

    # They refuse, then call again and agree: two records, the later decision counts.
    declined = await wait_for_record(svc.db, await start_call(svc, phone, "decline"), 120)
    view = await wait_for_record(svc.db, await start_call(svc, phone, "agree"), 120)
    for stored in (declined, view):
        assert_evidence(stored)
    assert (declined["outcome"], view["outcome"]) == ("declined", "granted")
    record_id = view["record_id"]

    params = {"phone": phone, "purpose": OFFERS}
    status, _, body = await client("GET", "/v1/consents", reader, params=params)
    [offers] = body["purposes"]
    assert offers["state"] == "given" and offers["record_id"] == record_id
    assert offers["records"] == [record_id, declined["record_id"]]
    assert offers["may_contact"]["call"]["allowed"] and offers["may_contact"]["sms"]["allowed"]

    pages, cursor = [], None
    while True:
        params = {"phone": phone, "limit": 1, **({"cursor": cursor} if cursor else {})}
        status, _, page = await client("GET", "/v1/records", reader, params=params)
        assert status == 200 and len(page["items"]) <= 1
        pages += [item["record_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [record_id, declined["record_id"]]
    for params, expected in (
        ({"outcome": "declined"}, [declined["record_id"]]),
        ({"status": "given"}, [record_id]),
        ({"purpose": "e2e-news"}, []),
    ):
        status, _, page = await client(
            "GET", "/v1/records", reader, params={"phone": phone, **params}
        )
        assert [i["record_id"] for i in page["items"]] == expected, params

    status, headers, data = await client("GET", f"/v1/records/{record_id}/bundle", ops)
    assert status == 200 and headers["X-Evidence-Verified"] == "true"
    (tmp_path / "bundle.zip").write_bytes(data)
    report = verify_bundle(tmp_path / "bundle.zip")
    assert report.ok, report.lines()

    # The reader may not withdraw; the operator does, and the status follows.
    withdrawal = {"phone": phone, "purpose": OFFERS, "by": "anna", "reason": "asked by letter"}
    status, _, problem = await client("POST", "/v1/withdrawals", reader, json=withdrawal)
    assert status == 403 and "lacks the scope 'withdraw'" in problem["detail"]
    status, _, done = await client("POST", "/v1/withdrawals", ops, json=withdrawal)
    assert status == 200 and done["withdrawn"] == [{"record_id": record_id, "purpose": OFFERS}]
    status, _, body = await client(
        "GET", "/v1/consents", reader, params={"phone": phone, "purpose": OFFERS}
    )
    [offers] = body["purposes"]
    assert offers["state"] == "withdrawn" and not offers["may_contact"]["call"]["allowed"]

    # Asking them again is refused, with the reason; a new number is called.
    status, _, problem = await client(
        "POST", "/v1/calls", ops, json={"phone": phone, "campaign": "dial"}
    )
    assert status == 409 and problem["refusals"][0]["reason"].startswith("withdrew consent")
    callee = new_phone()
    status, _, started = await client(
        "POST", "/v1/calls", ops, json={"phone": callee, "campaign": "dial"}
    )
    assert status == 202, started
    assert started["phone"] == callee and started["purposes"] == [OFFERS]
    record = await wait_for_outbound(svc, callee)
    assert record.direction == "outbound" and record.phone_source == "dialled"
    assert record.campaign == "dial" and record.outcome == "no_response"

    # Every action of the tokens is in the audit log.
    await asyncio.sleep(0.5)
    with svc.db.session() as s:
        rows = [(r.token_name, r.action, r.target, r.status) for r in s.scalars(select(AuditEvent))]
    # A refused request is audited before its body is read: its target is not known.
    assert ("reader", "withdrawals.create", None, 403) in rows
    assert ("ops", "withdrawals.create", phone, 200) in rows
    assert ("ops", "calls.place", phone, 409) in rows
    assert ("reader", "records.list", phone, 200) in rows
    assert ("ops", "records.bundle", record_id, 200) in rows


async def wait_for_outbound(svc: Service, phone: str) -> ConsentRecord:
    for _ in range(600):
        with svc.db.session() as s:
            found = s.scalars(
                select(ConsentRecord).where(
                    ConsentRecord.pii_principal_id == phone, ConsentRecord.outcome.is_not(None)
                )
            ).first()
        if found is not None:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no finished outbound record for {phone}")


async def test_rate_limit_on_the_running_service(served: tuple[Service, Client]) -> None:
    svc, client = served
    slow = token(svc, "read", name="slow", rate=1.0)
    statuses = []
    for _ in range(svc.config.api.burst + 3):  # type: ignore[attr-defined]
        status, headers, _ = await client(
            "GET", "/v1/consents", slow, params={"phone": new_phone()}
        )
        statuses.append(status)
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses
