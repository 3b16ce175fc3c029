"""Kannel's HTTP sendsms interface, with our job id in the dlr-url as the idempotency key.

sendsms answers 202 without a message id, so the id (Kannel's ``%F``, the SMSC's id) arrives
with the first delivery report. Every report carries the job id back from the dlr-url, which is
how a job is recognised as sent even when the worker that sent it died before recording it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import xml.etree.ElementTree as ET
from urllib.parse import unquote_to_bytes

import aiohttp

from consent_ivr.phone import mask
from consent_ivr.sms.config import KannelConfig
from consent_ivr.sms.gateways import (
    Accepted,
    DeliveryReport,
    GatewaySetupError,
    InboundSink,
    InDoubtError,
    Lookup,
    Outgoing,
    PermanentError,
    ReportSink,
    TransientError,
)

log = logging.getLogger(__name__)

# Kannel's dlr-url escapes: %d report type, %F the SMSC's message id, %A the SMSC's answer.
# `sig` proves the report comes from the URL we gave Kannel for this job (see dlr_signature).
DLR_QUERY = "job={job}&sig={sig}&type=%d&fid=%F&reply=%A"
_JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def dlr_secret(config: KannelConfig) -> bytes | None:
    """The key that signs our dlr-urls, derived from the sendsms password (a secret Kannel and
    every worker already share, and stable across restarts); None when it is not set."""
    password = os.environ.get(config.password_env)
    if not password:
        return None
    return hmac.new(password.encode(), b"consent-ivr delivery reports", hashlib.sha256).digest()


def dlr_signature(secret: bytes, job_id: str) -> str:
    """Without it a report is refused: anyone who learns a job id (logs, `show`) could
    otherwise mark an SMS that never went out as delivered."""
    return hmac.new(secret, job_id.encode(), hashlib.sha256).hexdigest()[:32]


# Report types (Kannel's dlr-mask bits) and what they mean for a job.
DLR_TYPES: dict[str, str] = {
    "1": "delivered",  # delivered to the phone
    "2": "failed",  # not delivered to the phone
    "4": "accepted",  # buffered by the SMSC
    "8": "accepted",  # accepted by the SMSC
    "16": "failed",  # rejected by the SMSC
}


def dlr_report(params: dict[str, str]) -> DeliveryReport | None:
    """The report a dlr-url call describes, or None when it is not one of ours."""
    job, kind = params.get("job", ""), params.get("type", "")
    if not _JOB_ID.match(job) or kind not in DLR_TYPES:
        return None
    status = DLR_TYPES[kind]
    return DeliveryReport(
        status,  # type: ignore[arg-type]
        gateway_status=f"kannel:{kind}",
        job_id=job,
        message_id=params.get("fid", "")[:200] or None,
        # bounded: what a report may store, whatever its size on the wire
        detail={k: v[:200] for k, v in params.items() if k in ("type", "fid", "reply")},
    )


def _stored_text(data: str, flags: str) -> str | None:
    """Decode msg-data of store-status: URL-encoded bytes, UTF-16BE when coding is 2."""
    raw = unquote_to_bytes(data.replace("+", "%20"))
    coding = flags.split(":")[1] if flags.count(":") >= 1 else "0"
    for charset in ("utf-16-be",) if coding == "2" else ("utf-8", "latin-1"):
        try:
            return raw.decode(charset)
        except UnicodeDecodeError:
            continue
    return None


class KannelGateway:
    name = "kannel"
    delivers = True

    def __init__(self, config: KannelConfig, *, sender: str, dlr_url: str) -> None:
        self.config = config
        self.sender = sender
        self.dlr_url = dlr_url
        self._password = ""
        self._secret: bytes | None = None
        self._admin_password = ""
        self._http: aiohttp.ClientSession | None = None

    async def start(self, reports: ReportSink, inbound: InboundSink | None = None) -> None:
        # Reports and inbound SMS come through HTTP routes (consent_ivr.sms.http), not here.
        password = os.environ.get(self.config.password_env)
        if password is None:
            raise GatewaySetupError(
                f"sms.kannel: set {self.config.password_env} to the sendsms-user password"
            )
        self._password = password
        self._secret = dlr_secret(self.config)
        self._admin_password = os.environ.get(self.config.admin_password_env, "")
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        self._http = aiohttp.ClientSession(timeout=timeout)

    def _dlr_url(self, job_id: str) -> str:
        joiner = "&" if "?" in self.dlr_url else "?"
        assert self._secret is not None, "start() first"
        sig = dlr_signature(self._secret, job_id)
        return self.dlr_url + joiner + DLR_QUERY.format(job=job_id, sig=sig)

    async def send(self, sms: Outgoing) -> Accepted:
        assert self._http is not None, "start() first"
        params = {
            "username": self.config.username,
            "password": self._password,
            "from": self.sender,
            "to": sms.phone,
            "text": sms.text,
            "charset": "UTF-8",
            "coding": "2" if sms.encoding == "ucs2" else "0",
            "dlr-mask": str(self.config.dlr_mask),
            "dlr-url": self._dlr_url(sms.job_id),
        }
        if self.config.smsc:
            params["smsc"] = self.config.smsc
        try:
            async with self._http.get(self.config.sendsms_url, params=params) as resp:
                body = (await resp.text()).strip()
                status = resp.status
        except aiohttp.ClientConnectorError as e:
            raise TransientError(f"Kannel unreachable: {e.os_error or e}") from None
        except (TimeoutError, aiohttp.ClientError) as e:
            # The request may have been read by smsbox before the answer was lost.
            raise InDoubtError(f"no answer from Kannel: {type(e).__name__} {e}") from None
        log.debug("kannel %s to %s: %s %s", sms.job_id, mask(sms.phone), status, body)
        if status in (200, 202):
            return Accepted()
        if status in (401, 403):
            # A credentials problem: fixable by ops, so retried until the job's max age.
            raise TransientError(f"Kannel refused the credentials ({status} {body})")
        if 400 <= status < 500:
            raise PermanentError(f"rejected by Kannel: {status} {body}")
        raise TransientError(f"Kannel error {status} {body}")

    async def lookup(self, sms: Outgoing) -> Lookup:
        """ACCEPTED when Kannel still holds the message in its store; otherwise UNKNOWN.

        A message that already left for the SMSC is no longer in the store: its delivery report
        (which smsbox retries) is what proves it, so the worker waits for one before resending.
        """
        if not self.config.admin_url or self._http is None:
            return Lookup.UNKNOWN
        url = self.config.admin_url.rstrip("/") + "/store-status.xml"
        try:
            async with self._http.get(url, params={"password": self._admin_password}) as resp:
                if resp.status != 200:
                    return Lookup.UNKNOWN
                body = await resp.text()
        except (TimeoutError, aiohttp.ClientError):
            return Lookup.UNKNOWN
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return Lookup.UNKNOWN
        digits = sms.phone.lstrip("+")
        for message in root.iter("message"):
            receiver = (message.findtext("receiver") or "").lstrip("+")
            text = _stored_text(message.findtext("msg-data") or "", message.findtext("flags") or "")
            if receiver == digits and text == sms.text:
                return Lookup.ACCEPTED
        return Lookup.UNKNOWN

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
