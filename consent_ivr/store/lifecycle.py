"""A consent's life after the call: its state, whether a person may be contacted, withdrawal
by any channel, and the do-not-contact register.

    none --given--> given --withdrawn--> withdrawn
      |               `---validity runs out---> expired
      `---refused--> refused

The state of a person's consent to a purpose is the latest decision among their records for it
(a later call that agrees again replaces an old refusal), read from the lifecycle events the
records cache in ``status``; expiry is derived at read time from the purpose's ``validity``, so
no scheduler has to run for a consent to expire. Every refusal, withdrawal and STOP is also
written to the do-not-contact register (`Suppression`), which keeps only the number, and so
keeps being obeyed after the records themselves are erased. `may_contact` is the one answer to
"may we contact this number for this purpose?" for every part of the product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from consent_ivr import durations
from consent_ivr.clock import iso, now, utc
from consent_ivr.store import chain
from consent_ivr.store.chain import Evidence
from consent_ivr.store.models import ConsentEvent, ConsentRecord, ContactAttempt, Suppression
from consent_ivr.store.records import Decided, DecisionHook

CHANNELS = ("call", "sms")
DECISIVE = ("given", "refused", "withdrawn", "expired")


class Entry(Protocol):
    """A do-not-contact entry as `register` reads it: a Suppression, or a row of its columns."""

    @property
    def id(self) -> int: ...

    @property
    def purpose_id(self) -> str | None: ...

    @property
    def channel(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def by(self) -> str | None: ...

    @property
    def record_id(self) -> str | None: ...

    @property
    def created_at(self) -> datetime: ...


class Decisive(Protocol):
    """What a record's state is derived from: a ConsentRecord, or a row of its columns."""

    @property
    def record_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def purpose(self) -> dict[str, Any]: ...

    @property
    def outcome(self) -> str | None: ...

    @property
    def decided_at(self) -> datetime | None: ...

    @property
    def status(self) -> str | None: ...

    @property
    def status_at(self) -> datetime | None: ...


def expires_at(record: Decisive) -> datetime | None:
    """When a given consent runs out (None: it does not, or it was never given)."""
    validity = (record.purpose or {}).get("validity")
    if record.kind != "consent" or record.decided_at is None or record.outcome != "granted":
        return None
    if not validity:
        return None
    return durations.parse(validity).after(utc(record.decided_at))


def record_state(record: Decisive, at: datetime) -> str:
    """One record's state: requested, given, refused, withdrawn or expired."""
    status = record.status or "requested"
    if status == "given":
        end = expires_at(record)
        if end is not None and utc(at) >= end:
            return "expired"
    return status


@dataclass(frozen=True)
class ConsentState:
    """The state of a person's consent to one purpose, and how it came to be."""

    purpose_id: str
    state: str  # given, refused, withdrawn, expired, none
    since: datetime | None
    record_id: str | None
    channel: str | None  # phone, sms, operator: how the latest decision was made
    expires_at: datetime | None
    records: tuple[str, ...]  # every record of this purpose for the number, newest first

    @classmethod
    def none(cls, purpose_id: str) -> ConsentState:
        return cls(purpose_id, "none", None, None, None, None, ())

    def as_dict(self) -> dict[str, object]:
        return {
            "purpose": self.purpose_id,
            "state": self.state,
            "since": iso(self.since),
            "record_id": self.record_id,
            "channel": self.channel,
            "expires_at": iso(self.expires_at),
            "records": list(self.records),
        }


def consent_records(
    session: Session, phone: str, purpose: str | None = None
) -> list[ConsentRecord]:
    query = select(ConsentRecord).where(
        ConsentRecord.pii_principal_id == phone, ConsentRecord.kind == "consent"
    )
    if purpose is not None:
        query = query.where(ConsentRecord.purpose_id == purpose)
    return list(session.scalars(query.order_by(ConsentRecord.started_at.desc())))


def core(session: Session) -> Connection:
    """The session's connection, for a read through Core: a quarter of the cost of the same
    query through the ORM (the hot path of `GET /v1/consents` runs two). What the session
    holds unwritten is written first, as an ORM query would do."""
    session.flush()
    return session.connection()


# What the state of a purpose is derived from: a few columns of the person's records, read
# without loading whole records (this is the hot path of `GET /v1/consents`).
_STATE_COLUMNS = select(
    ConsentRecord.record_id,
    ConsentRecord.kind,
    ConsentRecord.purpose_id,
    ConsentRecord.purpose,
    ConsentRecord.outcome,
    ConsentRecord.decided_at,
    ConsentRecord.status,
    ConsentRecord.status_at,
    ConsentRecord.started_at,
).where(
    ConsentRecord.pii_principal_id == bindparam("phone"),
    ConsentRecord.kind == "consent",
)
_STATES_ALL = _STATE_COLUMNS.order_by(ConsentRecord.started_at.desc())
_STATES_ONE = _STATE_COLUMNS.where(ConsentRecord.purpose_id == bindparam("purpose")).order_by(
    ConsentRecord.started_at.desc()
)


def states(
    session: Session, phone: str, purpose: str | None = None, at: datetime | None = None
) -> dict[str, ConsentState]:
    """Per purpose, the person's current state (purposes they have no record of are absent)."""
    if purpose is None:
        rows = core(session).execute(_STATES_ALL, {"phone": phone})
    else:
        rows = core(session).execute(_STATES_ONE, {"phone": phone, "purpose": purpose})
    return derive(rows, at or now(), lambda r: _withdrawal_channel(session, r))


class StateRow(Decisive, Protocol):
    """A row `derive` reads: a record's state columns and its purpose."""

    @property
    def purpose_id(self) -> str | None: ...


def derive(
    rows: Iterable[StateRow], at: datetime, withdrawal_channel: Callable[[Any], str]
) -> dict[str, ConsentState]:
    """Per purpose, the state its records (newest first) add up to at `at`: the latest
    decision among them. `withdrawal_channel(row)` says how a withdrawn one was withdrawn."""
    by_purpose: dict[str, list[StateRow]] = {}
    for row in rows:
        if row.purpose_id:
            by_purpose.setdefault(row.purpose_id, []).append(row)
    result = {}
    for pid, found in by_purpose.items():
        decisive = [
            (utc(r.status_at), r) for r in found if r.status in DECISIVE and r.status_at is not None
        ]
        ids = tuple(r.record_id for r in found)
        if not decisive:
            result[pid] = ConsentState(pid, "none", None, None, None, None, ids)
            continue
        decided, latest = max(decisive, key=lambda d: d[0])
        state = record_state(latest, at)
        end = expires_at(latest) if latest.status == "given" else None
        # Expired at read time: since the end of its validity; by a purge's event: since then.
        since = end if state == "expired" and end else decided
        channel = withdrawal_channel(latest) if latest.status == "withdrawn" else "phone"
        result[pid] = ConsentState(pid, state, since, latest.record_id, channel, end, ids)
    return result


_LAST_WITHDRAWAL = (
    select(ConsentEvent.data)
    .where(ConsentEvent.record_id == bindparam("record"), ConsentEvent.kind == "withdrawn")
    .order_by(ConsentEvent.seq.desc())
    .limit(1)
)


def _withdrawal_channel(session: Session, record: Decisive) -> str:
    data = core(session).execute(_LAST_WITHDRAWAL, {"record": record.record_id}).scalar()
    return str(data.get("channel", "phone")) if data else "phone"


def active(
    session: Session, phone: str, purposes: Iterable[str] | None = None, at: datetime | None = None
) -> list[ConsentRecord]:
    """The person's given, unexpired consents (newest first), optionally of some purposes."""
    return _active_of(consent_records(session, phone), purposes, at or now())


def active_states(
    session: Session, phone: str, purposes: Iterable[str] | None = None, at: datetime | None = None
) -> list[Any]:
    """`active` as rows of the state columns (and `started_at`), read through Core: what a
    call's start needs (its withdrawal menu), at a third of the ORM's cost."""
    rows = core(session).execute(_STATES_ALL, {"phone": phone})
    return _active_of(rows, purposes, at or now())


def _active_of(rows: Iterable[Any], purposes: Iterable[str] | None, at: datetime) -> list[Any]:
    """The given, unexpired ones of a person's records (or their state rows), of `purposes`
    if given, in the order the withdrawal menu names them: the newest decision first."""
    wanted = None if purposes is None else set(purposes)
    found = [
        r
        for r in rows
        if r.status == "given"
        and record_state(r, at) == "given"
        and (wanted is None or r.purpose_id in wanted)
    ]
    return sorted(found, key=lambda r: (utc(r.status_at or r.started_at), r.record_id))[::-1]


# ---- may we contact this number? --------------------------------------------------------------


@dataclass(frozen=True)
class Permission:
    allowed: bool
    state: str
    reason: str
    record_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "state": self.state,
            "reason": self.reason,
            "record_id": self.record_id,
        }


def blocking(
    entries: Iterable[Entry], purpose: str, channel: str, after: datetime | None = None
) -> list[Entry]:
    """Of a number's register entries (`register`), those that stop this contact. A person's
    own refusal, withdrawal or STOP gives way to a consent they gave later (`after`); an
    operator's entry never does."""
    return [
        s
        for s in entries
        if s.purpose_id in (None, purpose)
        and s.channel in ("all", channel)
        and (s.source == "operator" or after is None or utc(s.created_at) > utc(after))
    ]


def blocking_entries(
    session: Session, phone: str, purpose: str, channel: str, after: datetime | None = None
) -> list[Entry]:
    return blocking(register(session, phone), purpose, channel, after)


def decide(
    state: ConsentState | None,
    entries: Iterable[Entry],
    purpose: str,
    channel: str,
    *,
    asking: bool = False,
) -> Permission:
    """`may_contact` over what was read already: the state of the purpose and the number's
    register entries."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    given_since = state.since if state is not None and state.state == "given" else None
    blocked = blocking(entries, purpose, channel, given_since)
    if blocked:
        entry = blocked[0]
        return Permission(False, state.state if state else "none", describe(entry), entry.record_id)
    if state is None or state.state == "none":
        if asking:
            return Permission(True, "none", "no decision yet: asking is allowed")
        return Permission(False, "none", f"no consent to {purpose}")
    if state.state == "given":
        return Permission(True, "given", f"consent given on {iso(state.since)}", state.record_id)
    if state.state == "expired":
        if asking:
            return Permission(True, "expired", "the consent expired: asking again is allowed")
        return Permission(
            False, "expired", f"the consent expired on {iso(state.since)}", state.record_id
        )
    return Permission(False, state.state, f"{state.state} on {iso(state.since)}", state.record_id)


def may_contact(
    session: Session,
    phone: str,
    purpose: str,
    channel: str,
    *,
    asking: bool = False,
    at: datetime | None = None,
) -> Permission:
    """May we contact `phone` on `channel` ("call" or "sms") for `purpose`?

    A contact *for* the purpose (an offer) needs a given, unexpired consent. A call that only
    asks for consent (`asking`) is allowed unless the person refused or withdrew, or is on
    the do-not-contact list. When the answer is no, `reason` says why."""
    state = states(session, phone, purpose, at or now()).get(purpose)
    return decide(state, register(session, phone), purpose, channel, asking=asking)


def describe(entry: Entry) -> str:
    what = {
        "refused": "refused",
        "withdrawn": "withdrew consent",
        "stop": "sent STOP",
        "operator": "put on the do-not-contact list",
    }.get(entry.source, entry.source)
    scope = entry.purpose_id or "every purpose"
    text = f"{what} ({scope}, {entry.channel}) on {iso(entry.created_at)}"
    if entry.reason:
        text += f": {entry.reason}"
    return text


# ---- writing ----------------------------------------------------------------------------------


def suppress(
    session: Session,
    phone: str,
    purpose: str | None,
    source: str,
    at: datetime,
    *,
    channel: str = "all",
    reason: str | None = None,
    by: str | None = None,
    record: str | None = None,
) -> Suppression:
    entry = Suppression(
        phone=phone,
        purpose_id=purpose,
        channel=channel,
        source=source,
        reason=reason,
        by=by,
        record_id=record,
        created_at=utc(at),
    )
    session.add(entry)
    return entry


def lift(session: Session, entry_id: int, at: datetime) -> Suppression:
    entry = session.get(Suppression, entry_id)
    if entry is None:
        raise LookupError(f"no do-not-contact entry {entry_id}")
    if entry.source != "operator":
        raise ValueError(
            f"entry {entry_id} is the person's own {entry.source}: only a new consent from "
            f"them replaces it"
        )
    entry.lifted_at = utc(at)
    return entry


def withdraw(
    session: Session,
    records: Sequence[ConsentRecord],
    at: datetime,
    *,
    channel: str,
    hooks: Iterable[DecisionHook] = (),
    by: str | None = None,
    reason: str | None = None,
    via_record: str | None = None,
    via_call: str | None = None,
    via_sms: str | None = None,
    evidence: Iterable[tuple[str, Evidence]] = (),
) -> list[ConsentRecord]:
    """Withdraw given consents: a `withdrawn` event on each, the register, the SMS (hooks).

    Returns the records withdrawn (those not currently given are skipped: nothing to do)."""
    chain.lock(session)
    targets = [r for r in records if r.status == "given" and r.kind == "consent"]
    data = {"channel": channel}
    for key, value in (
        ("by", by),
        ("reason", reason),
        ("via_record", via_record),
        ("via_call", via_call),
        ("via_sms", via_sms),
    ):
        if value is not None:
            data[key] = value
    items = list(evidence)
    for r in targets:
        items.append(
            (r.record_id, Evidence(at, "withdrawn", None, {**data, "purpose_id": r.purpose_id}))
        )
        if r.pii_principal_id:
            suppress(
                session,
                r.pii_principal_id,
                r.purpose_id,
                "withdrawn",
                at,
                reason=reason,
                by=by,
                record=r.record_id,
            )
    if targets:
        decided = Decided(
            "withdrawn",
            at,
            tuple(targets),
            channel,
            via_call,
            (via_record,) if via_record else (),
        )
        for hook in hooks:
            items += list(hook(session, decided))
    chain.append(session, items)
    return targets


def store_phone_withdrawal(
    session: Session,
    record_id: str,
    target_ids: Sequence[str],
    at: datetime,
    evidence: Iterable[tuple[str, Evidence]] = (),
    hooks: Iterable[DecisionHook] = (),
) -> list[ConsentRecord]:
    """The decision of a withdrawal call: its own record says what was withdrawn, each
    withdrawn consent gets a `withdrawn` event pointing at that record and call."""
    chain.lock(session)
    record = session.get(ConsentRecord, record_id)
    if record is None:
        raise LookupError(f"no consent record {record_id}")
    if record.outcome is not None:
        raise ValueError(f"record {record_id} already has outcome {record.outcome}")
    targets = [t for t in (session.get(ConsentRecord, i) for i in target_ids) if t is not None]
    still = [t for t in targets if t.status == "given"]
    decision = Evidence(
        at,
        "withdrawal",
        "saving",
        {
            "records": [t.record_id for t in still],
            "purposes": [t.purpose_id for t in still],
        },
    )
    record.outcome, record.decided_at = "withdrawn", utc(at)
    return withdraw(
        session,
        still,
        at,
        channel="phone",
        hooks=hooks,
        via_record=record_id,
        via_call=record.call_id,
        evidence=[*evidence, (record_id, decision)],
    )


_REGISTER = (
    select(Suppression.__table__)
    .where(Suppression.phone == bindparam("phone"), Suppression.lifted_at.is_(None))
    .order_by(Suppression.created_at.desc())
)


def register(session: Session, phone: str) -> list[Entry]:
    """The number's do-not-contact entries still in force, newest first."""
    return cast(list[Entry], core(session).execute(_REGISTER, {"phone": phone}).all())


def suppressed(
    session: Session,
    phone: str,
    purpose: str,
    channel: str,
    reason: str,
    at: datetime,
    *,
    campaign: str | None = None,
) -> ContactAttempt:
    """Keep a contact we refused to make, with why: the refusal is shown to have been obeyed."""
    attempt = ContactAttempt(
        at=utc(at),
        phone=phone,
        campaign=campaign,
        purpose_id=purpose,
        channel=channel,
        result="suppressed",
        reason=reason,
    )
    session.add(attempt)
    return attempt


def refusals(
    session: Session, phone: str, purposes: Sequence[str], campaign: str, at: datetime
) -> list[tuple[str, Permission]]:
    """The purposes for which `phone` may not even be asked (a consent call), with why; each
    refusal is kept as a suppressed contact attempt, so it is shown to have been obeyed."""
    entries = register(session, phone)
    found = states(session, phone, None, at)
    refused = []
    for pid in purposes:
        verdict = decide(found.get(pid), entries, pid, "call", asking=True)
        if not verdict.allowed:
            refused.append((pid, verdict))
            suppressed(session, phone, pid, "call", verdict.reason, at, campaign=campaign)
    return refused
