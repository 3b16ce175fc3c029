"""The SMPP gateway (aiosmpplib) against an SMSC driven by PyPI `smpp34` (someone else's SMPP
server implementation): transceiver bind, submit_sm with registered delivery, deliver_sm
receipts, enquire_link, a rebind after the SMSC dropped the session, and a person's STOP
arriving as a deliver_sm."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

import pytest
import smpp34
from sqlalchemy import select

from consent_ivr.sms.config import SmsConfig
from consent_ivr.sms.gateways.smpp import SmppGateway
from consent_ivr.sms.models import SmsInbound
from consent_ivr.sms.outbox import sms_status
from consent_ivr.store import chain, lifecycle
from consent_ivr.store.db import Database

from .conftest import SHORT_TEMPLATES, decide, free_port, job_counts, new_phone, wait_until

pytestmark = pytest.mark.integration

MESSAGE_PAYLOAD = 0x0424


@dataclass
class Smsc:
    """A test SMSC: answers every submit_sm with a message id, then a DELIVRD receipt."""

    port: int
    submits: list[tuple[str, str, int]] = field(default_factory=list)
    sessions: dict[str, smpp34.Esme] = field(default_factory=dict)
    binds: int = 0
    server: smpp34.Server | None = None
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.server = smpp34.Server(host="127.0.0.1", port=self.port, system_id="TESTSMSC")
        await self.server.start()
        self.task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        assert self.server is not None and self.task is not None
        for esme in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(esme.unbind(), 2)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.server.stop()
        self.sessions.clear()

    async def _serve(self) -> None:
        assert self.server is not None
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.Esme):
                self.sessions[event.session_id] = event
                self.binds += 1
            elif isinstance(event, smpp34.SubmitSmEvent):
                payload = event.short_message or next(
                    (t.value for t in event.tlvs if t.tag == MESSAGE_PAYLOAD), b""
                )
                coding = event.data_coding
                text = payload.decode("utf-16-be" if coding == 8 else "latin-1")
                self.submits.append((event.destination_addr, text, coding))
                message_id = uuid.uuid4().hex[:16]
                event.accept(message_id=message_id)
                receipt = (
                    f"id:{message_id} sub:001 dlvrd:001 submit date:2611300000 "
                    f"done date:2611300000 stat:DELIVRD err:000 text:"
                ).encode()
                await self.sessions[event.session_id].deliver_sm(
                    source_addr=event.destination_addr,
                    destination_addr=event.source_addr,
                    esm_class=0x04,
                    short_message=receipt,
                )
            elif isinstance(event, smpp34.Unbound):
                self.sessions.pop(event.session_id, None)

    async def send_sms(self, sender: str, text: str) -> None:
        """A person's SMS to us, in UCS-2 from an international number."""
        [esme] = self.sessions.values()
        await esme.deliver_sm(
            "12345",
            text.encode("utf-16-be"),
            source_addr=sender.lstrip("+"),
            source_addr_ton=1,
            source_addr_npi=1,
            data_coding=8,
        )

    def texts_to(self, phone: str) -> list[str]:
        return [text for dest, text, _ in self.submits if dest == phone.lstrip("+")]


class Link:
    """A loopback TCP relay between the client and the SMSC that a test can cut: a real drop
    (connections reset, new ones refused) without restarting the SMSC."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target_port = free_port(), target_port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def smsc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONSENT_IVR_SMPP_PASSWORD", "secret")
    server = Smsc(free_port())
    await server.start()
    yield server
    with contextlib.suppress(Exception):
        await server.stop()


def smpp_config(port: int, **kw) -> SmsConfig:
    return SmsConfig.model_validate(
        {
            "gateway": "smpp",
            "smpp": {"port": port, "enquire_link_s": 0.5, "timeout_s": 3.0},
            "lease_s": 10.0,
            "poll_interval_s": 0.1,
            "retry_base_s": 0.2,
            "retry_max_s": 1.0,
            **kw,
        }
    )


async def test_submit_receipt_and_rebind(sqlite_db: Database, smsc: Smsc, start_worker):
    link = Link(smsc.port)
    await link.up()
    sms = smpp_config(link.port)
    latin = decide(sqlite_db, sms, count=2, phone="+4915112345678", language="en")
    cyrillic = decide(sqlite_db, sms, count=2)  # the default Russian text: message_payload
    gateway = SmppGateway(sms.smpp, sender=sms.sender)
    worker = start_worker(sqlite_db, sms, gateway=gateway)
    await wait_until(lambda: job_counts(sqlite_db) == {"delivered": 4}, 15, "4 receipts")

    with sqlite_db.session() as session:
        statuses = [sms_status(session, r) for r in latin + cyrillic]
    texts = {text for _, text, _ in smsc.submits}
    assert all(s is not None and s["text"] in texts and s["message_id"] for s in statuses)
    assert sorted(c for _, _, c in smsc.submits) == [0, 0, 8, 8]
    assert {dest for dest, _, _ in smsc.submits} == {"4915112345678", "79001234567"}
    assert gateway.receipts == 4

    # Idle longer than enquire_link_s: keep-alives answered, still bound.
    await asyncio.sleep(1.5)
    assert gateway.bound

    # The link to the SMSC drops and stays down for a while: the gateway binds again after.
    await link.cut()
    await wait_until(lambda: not gateway.bound, 10, "the drop to be noticed")
    later = decide(sqlite_db, sms, count=1, phone="+4915112345678", language="en")
    await asyncio.sleep(1.0)
    assert job_counts(sqlite_db).get("delivered") == 4  # nothing goes out while unbound
    await link.up()
    await wait_until(lambda: job_counts(sqlite_db) == {"delivered": 5}, 20, "rebind + send")
    await worker.close()
    await link.cut()
    assert smsc.binds == 2 and len(smsc.submits) == 5
    with sqlite_db.session() as session:
        assert sms_status(session, later[0])["status"] == "delivered"


async def test_missing_password_variable_stops_the_worker(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
):
    from consent_ivr.sms.gateways import GatewaySetupError
    from consent_ivr.sms.worker import run_worker

    monkeypatch.delenv("CONSENT_IVR_SMPP_PASSWORD", raising=False)
    sms = SmsConfig.model_validate({"gateway": "smpp", "lease_s": 30})
    with pytest.raises(GatewaySetupError, match="CONSENT_IVR_SMPP_PASSWORD"):
        await asyncio.wait_for(run_worker(sqlite_db, sms, asyncio.Event()), 5)


async def test_stop_over_smpp_withdraws_and_confirms_once(
    sqlite_db: Database, smsc: Smsc, start_worker
):
    sms = smpp_config(smsc.port, templates=SHORT_TEMPLATES)
    phone = new_phone()
    [record_id] = decide(sqlite_db, sms, phone=phone)
    gateway = SmppGateway(sms.smpp, sender=sms.sender)
    worker = start_worker(sqlite_db, sms, gateway=gateway)
    await wait_until(lambda: job_counts(sqlite_db) == {"delivered": 1}, 15, "the consent's SMS")

    await smsc.send_sms(phone, "Стоп")
    withdrawn = f"withdrawn {record_id}"
    await wait_until(lambda: withdrawn in smsc.texts_to(phone), 15, "the confirmation")
    await wait_until(lambda: job_counts(sqlite_db) == {"delivered": 2}, 15, "its receipt")
    await asyncio.sleep(0.5)  # a duplicate would show by now
    await worker.close()

    assert smsc.texts_to(phone) == [f"granted {record_id}", withdrawn]
    with sqlite_db.session() as session:
        [row] = session.scalars(select(SmsInbound)).all()  # receipts are not inbound SMS
        state = lifecycle.states(session, phone)["marketing-calls"]
        [event] = [e.data for e in chain.events_of(session, record_id) if e.kind == "withdrawn"]
    assert (row.gateway, row.sender, row.text, row.action) == ("smpp", phone, "Стоп", "withdrawn")
    assert (state.state, state.channel) == ("withdrawn", "sms")
    assert event["via_sms"] == row.id
