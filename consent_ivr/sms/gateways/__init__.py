"""What every SMS gateway offers the worker, and how a send can end.

A send ends in one of four ways, and the worker treats each differently:
accepted (record it), transient failure (retry later), permanent failure (never retry) and in
doubt (the request may have reached the gateway but its answer was lost: ask before resending).
Delivery reports arrive later and on their own, through the ``ReportSink`` given to ``start``;
so do the SMS people send us, through the ``InboundSink``, from a gateway that receives them
over its own connection (SMPP; Kannel calls the service's HTTP route instead).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ReportStatus = Literal["accepted", "delivered", "failed"]


@dataclass(frozen=True)
class Outgoing:
    job_id: str  # the idempotency key: the gateway sees it and reports carry it back
    phone: str  # E.164
    text: str
    encoding: str  # "gsm7" | "ucs2"
    segments: int


@dataclass(frozen=True)
class Incoming:
    """An SMS a person sent us, as the gateway gave it."""

    gateway: str
    sender: str  # as received: E.164, digits, or a name
    recipient: str
    text: str
    message_id: str | None = None  # the gateway's id, when it gives one

    def __post_init__(self) -> None:
        # U+0000 (binary or UCS-2 texts can carry it) cannot be stored in PostgreSQL text: it
        # is kept as U+FFFD, so the SMS is stored and read (a STOP still counts) rather than
        # refused again and again.
        for name in ("sender", "recipient", "text", "message_id"):
            value = getattr(self, name)
            if value is not None and "\x00" in value:
                object.__setattr__(self, name, value.replace("\x00", "\ufffd"))


@dataclass(frozen=True)
class Accepted:
    message_id: str | None = None


@dataclass(frozen=True)
class DeliveryReport:
    status: ReportStatus
    gateway_status: str
    job_id: str | None = None
    message_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Lookup(enum.Enum):
    """What a gateway knows about a message the worker is unsure it sent."""

    ACCEPTED = "accepted"
    ABSENT = "absent"
    UNKNOWN = "unknown"


class GatewayError(Exception):
    """Base of the ways a send can fail; the message is stored as the job's error."""


class TransientError(GatewayError):
    """Not sent; sending again later may work (gateway down, throttled)."""


class PermanentError(GatewayError):
    """Not sent and never will be (number or text rejected)."""


class InDoubtError(GatewayError):
    """The gateway may have the message; it must not be resent before a lookup."""


class GatewaySetupError(Exception):
    """The gateway cannot start (missing password variable, bad URL): the worker exits."""


ReportSink = Callable[[DeliveryReport], Awaitable[None]]
InboundSink = Callable[[Incoming], Awaitable[None]]


class Gateway(Protocol):
    name: str
    # False for a gateway that only writes messages down (the log gateway): its jobs end
    # `logged`, since nobody received them.
    delivers: bool

    async def start(self, reports: ReportSink, inbound: InboundSink | None = None) -> None: ...

    async def send(self, sms: Outgoing) -> Accepted: ...

    async def lookup(self, sms: Outgoing) -> Lookup: ...

    async def close(self) -> None: ...
