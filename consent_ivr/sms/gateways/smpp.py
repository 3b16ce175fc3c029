"""SMPP 3.4 directly to an SMSC, through aiosmpplib's ESME (transceiver bind).

aiosmpplib keeps the session: bind, enquire_link on a timer, rebind with backoff after a drop.
This module turns its callbacks into the gateway contract: a submit_sm_resp resolves the send
of the job whose id travels as the message's ``log_id``; a deliver_sm receipt becomes a
delivery report matched by the SMSC's message id, and any other deliver_sm is an SMS a person
sent us, handed to the inbound sink. SMPP has no field an SMSC keeps for a client's own key,
so a send whose answer was lost stays in doubt (see Worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from aiosmpplib import (
    ESME,
    NPI,
    TON,
    AbstractHook,
    BindMode,
    DeliverSm,
    PhoneNumber,
    SmppCommandStatus,
    SmppMessage,
    SmppSessionState,
    SubmitSm,
    SubmitSmResp,
)
from aiosmpplib.broker import SimpleBroker

from consent_ivr.phone import mask
from consent_ivr.sms.config import SmppConfig
from consent_ivr.sms.gateways import (
    Accepted,
    DeliveryReport,
    GatewaySetupError,
    InboundSink,
    Incoming,
    InDoubtError,
    Lookup,
    Outgoing,
    PermanentError,
    ReportSink,
    TransientError,
)

log = logging.getLogger(__name__)

_REMEMBERED = 10_000

RECEIPT_STATES: dict[str, str] = {
    "DELIVRD": "delivered",
    "ACCEPTD": "accepted",
    "ENROUTE": "accepted",
    "UNDELIV": "failed",
    "REJECTD": "failed",
    "EXPIRED": "failed",
    "DELETED": "failed",
    "UNKNOWN": "failed",
}

# Retrying cannot help a message the SMSC finds malformed or misaddressed.
_TRANSIENT_STATUSES = {
    SmppCommandStatus.ESME_RMSGQFUL,
    SmppCommandStatus.ESME_RTHROTTLED,
    SmppCommandStatus.ESME_RSYSERR,
    SmppCommandStatus.ESME_RINVBNDSTS,
    SmppCommandStatus.ESME_RSUBMITFAIL,
    SmppCommandStatus.ESME_RX_T_APPN,
    SmppCommandStatus.ESME_RUNKNOWNERR,
}


def _source(sender: str) -> PhoneNumber:
    if sender.isdigit():
        return PhoneNumber(sender, TON.UNKNOWN, NPI.ISDN)
    return PhoneNumber(sender[:11], TON.ALPHANUMERIC, NPI.UNKNOWN)


class _Hook(AbstractHook):
    def __init__(self, gateway: SmppGateway) -> None:
        self.gateway = gateway

    async def sending(self, smpp_message: SmppMessage, pdu: bytes, client_id: str) -> None:
        return None

    async def received(self, smpp_message: SmppMessage | None, pdu: bytes, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSmResp):
            self.gateway._answered(smpp_message)
        elif isinstance(smpp_message, DeliverSm):
            self.gateway._delivered(smpp_message)

    async def send_error(self, smpp_message: SmppMessage, error: Exception, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSm):
            self.gateway._failed(smpp_message, error)


def _address(number: PhoneNumber) -> str:
    """An SMPP address as text: an international number gets its +."""
    if number.ton == TON.INTERNATIONAL and number.number.isdigit():
        return "+" + number.number
    return number.number


class SmppGateway:
    name = "smpp"
    delivers = True

    def __init__(self, config: SmppConfig, *, sender: str) -> None:
        self.config = config
        self.sender = sender
        self._esme: ESME | None = None
        self._runner: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[SubmitSmResp]] = {}
        # message id -> job id: a receipt may overtake the worker's write of the message id.
        self._jobs: OrderedDict[str, str] = OrderedDict()
        self._reports: ReportSink | None = None
        self._inbound: InboundSink | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # reports and inbound SMS being stored
        self.receipts = 0

    async def start(self, reports: ReportSink, inbound: InboundSink | None = None) -> None:
        password = os.environ.get(self.config.password_env)
        if password is None:
            raise GatewaySetupError(
                f"sms.smpp: set {self.config.password_env} to the bind password"
            )
        self._reports = reports
        self._inbound = inbound
        self._esme = ESME(
            smsc_host=self.config.host,
            smsc_port=self.config.port,
            system_id=self.config.system_id,
            password=password,
            system_type=self.config.system_type,
            bind_mode=BindMode.TRANSCEIVER,
            enquire_link_interval=float(self.config.enquire_link_s),
            socket_timeout=float(self.config.timeout_s),
            hook=_Hook(self),
            broker=SimpleBroker(),
            log_level=logging.WARNING,
        )
        self._runner = asyncio.create_task(self._esme.start(), name="smpp-esme")

    @property
    def bound(self) -> bool:
        return self._esme is not None and self._esme.session_state == SmppSessionState.BOUND_TRX

    async def wait_bound(self, timeout: float) -> bool:
        """For start-up and tests: True once the transceiver bind has succeeded."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.bound:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def send(self, sms: Outgoing) -> Accepted:
        if self._esme is None or not self.bound:
            raise TransientError("not bound to the SMSC")
        answer: asyncio.Future[SubmitSmResp] = asyncio.get_running_loop().create_future()
        self._pending[sms.job_id] = answer
        try:
            await self._esme.broker.enqueue(
                SubmitSm(
                    short_message=sms.text,
                    source=_source(self.sender),
                    destination=PhoneNumber(sms.phone.lstrip("+"), TON.INTERNATIONAL, NPI.ISDN),
                    registered_delivery=1,
                    encoding="ucs2" if sms.encoding == "ucs2" else None,
                    log_id=sms.job_id,
                )
            )
            resp = await asyncio.wait_for(answer, self.config.timeout_s)
        except TimeoutError:
            raise InDoubtError("no submit_sm_resp from the SMSC in time") from None
        finally:
            self._pending.pop(sms.job_id, None)
        status = resp.command_status
        if status == SmppCommandStatus.ESME_ROK:
            return Accepted(resp.message_id or None)
        if status in _TRANSIENT_STATUSES:
            raise TransientError(f"SMSC answered {status.name}")
        raise PermanentError(f"rejected by the SMSC: {status.name}")

    def _answered(self, resp: SubmitSmResp) -> None:
        if resp.message_id and resp.log_id:
            self._jobs[resp.message_id] = resp.log_id
            while len(self._jobs) > _REMEMBERED:
                self._jobs.popitem(last=False)
        waiter = self._pending.get(resp.log_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def _failed(self, message: SubmitSm, error: Exception) -> None:
        waiter = self._pending.get(message.log_id)
        if waiter is None or waiter.done():
            return
        if isinstance(error, ValueError):
            waiter.set_exception(PermanentError(f"cannot encode the message: {error}"))
        else:
            waiter.set_exception(InDoubtError(f"connection failed while sending: {error!r}"))

    def _delivered(self, message: DeliverSm) -> None:
        if not message.is_receipt():
            self._received(message)
            return
        receipt: dict[str, Any] = message.parse_receipt()
        state = str(receipt.get("stat", "UNKNOWN"))
        message_id = str(receipt.get("id", "")) or None
        self.receipts += 1
        report = DeliveryReport(
            RECEIPT_STATES.get(state, "failed"),  # type: ignore[arg-type]
            gateway_status=f"smpp:{state}",
            job_id=message.log_id or self._jobs.get(message_id or "") or None,
            message_id=message_id,
            detail={"stat": state, "err": str(receipt.get("err", ""))},
        )
        if self._reports is not None:
            self._spawn(self._report(report))

    def _received(self, message: DeliverSm) -> None:
        incoming = Incoming(
            gateway=self.name,
            sender=_address(message.source),
            recipient=_address(message.destination),
            text=message.short_message or message.message_payload,
        )
        if self._inbound is None:
            log.info("inbound SMS from %s ignored: no inbound handler", mask(incoming.sender))
            return
        self._spawn(self._inbound(incoming))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, report: DeliveryReport) -> None:
        # Some SMSCs send the receipt before the submit_sm_resp that names its message id.
        for _ in range(40):
            if report.job_id or not report.message_id:
                break
            job_id = self._jobs.get(report.message_id)
            if job_id:
                report = replace(report, job_id=job_id)
                break
            await asyncio.sleep(0.05)
        assert self._reports is not None
        await self._reports(report)

    async def lookup(self, sms: Outgoing) -> Lookup:
        return Lookup.UNKNOWN

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.config.timeout_s)
        if self._esme is not None and self._runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._esme.stop(), self.config.timeout_s)
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._esme = None
        self._runner = None
