"""Database transitions of a campaign's numbers, each one short transaction the runner makes.

Theory of operation. `load` adds a file's numbers to the campaign once (a number already there
keeps its state, so rerunning the same file continues it). A runner *claims* numbers in a
transaction that first updates the campaign's row: that row lock makes claims of one campaign
take turns across runners and machines (on SQLite the same UPDATE takes the database's write
lock), so the count of calls in progress and the calls-per-second schedule (`next_dial_at`) it
reads are exact, and no number is claimed twice; on PostgreSQL the candidate rows are also
read with ``FOR UPDATE SKIP LOCKED``, as the SMS worker claims its jobs. The claim is committed
before the call is placed, with the channel id the call will have, under a lease the runner
renews while it lives. Just before a number is claimed it is checked again: outside its
calling window it is put off until the window opens; a number that may not be asked (it
refused, withdrew, or is on the do-not-contact list) is skipped, and the refusal is kept as a
`suppressed` contact attempt. A number whose lease ran out (its runner died) is settled by the
next claim: if its call reached the service (a call with that channel id exists) it is done;
otherwise the attempt is counted as `interrupted` and the number is dialled again later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from consent_ivr import durations
from consent_ivr.clock import utc
from consent_ivr.dialing import window as w
from consent_ivr.dialing.config import Dialing
from consent_ivr.dialing.models import DIALLING, DONE, PENDING, SKIPPED, DialCampaign, DialNumber
from consent_ivr.store import lifecycle
from consent_ivr.store.models import Call, ConsentRecord, ContactAttempt, new_id


@dataclass(frozen=True)
class Entry:
    """One number read from a campaign file."""

    phone: str
    name: str | None
    language: str | None
    source: str


@dataclass(frozen=True)
class Claimed:
    id: int
    phone: str
    language: str | None
    channel_id: str
    token: str
    dial_at: datetime  # not before: the campaign's calls-per-second schedule
    attempt: int


@dataclass(frozen=True)
class Claims:
    """What one claim took, and when the calls-per-second schedule lets the next claim take a
    number if it is what stopped this one (None when places or numbers ran out first)."""

    numbers: list[Claimed]
    rate_opens_at: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    """What Asterisk said about one call: `result` is answered, no_answer, busy, congestion,
    failed or machine; `cause` is the hang-up cause (Q.850) when Asterisk gave one."""

    channel_id: str
    result: str
    placed_at: datetime
    cause: int | None = None
    cause_text: str = ""
    amd: str | None = None  # AMD's status and cause, when it ran

    def describe(self) -> str:
        parts = []
        if self.cause is not None:
            parts.append(
                f"cause {self.cause}" + (f" ({self.cause_text})" if self.cause_text else "")
            )
        if self.amd:
            parts.append(f"AMD {self.amd}")
        return "; ".join(parts)


def ensure_campaign(session: Session, name: str, now: datetime) -> None:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(DialCampaign)
        .values(name=name, created_at=now, next_dial_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def load(session: Session, campaign: str, entries: Sequence[Entry], now: datetime) -> int:
    """Add the numbers not yet in the campaign; returns how many were new."""
    ensure_campaign(session, campaign, now)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    added = 0
    for start in range(0, len(entries), 500):
        rows = [
            {
                "campaign": campaign,
                "phone": e.phone,
                "name": e.name,
                "language": e.language,
                "source": e.source[:255],
                "zones": ",".join(w.zones_of(e.phone))[:255],
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for e in entries[start : start + 500]
        ]
        result = session.execute(
            insert(DialNumber)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["campaign", "phone"])
            .returning(DialNumber.id)
        )
        added += len(result.all())
    return added


def _lock_campaign(session: Session, campaign: str, now: datetime) -> DialCampaign:
    session.execute(
        update(DialCampaign)
        .where(DialCampaign.name == campaign)
        .values(next_dial_at=func.coalesce(DialCampaign.next_dial_at, now))
        .execution_options(synchronize_session=False)
    )
    row = session.get(DialCampaign, campaign, populate_existing=True)
    if row is None:
        raise LookupError(f"campaign {campaign} has no numbers loaded")
    return row


def settle_lost(session: Session, campaign: str, dialing: Dialing, now: datetime) -> int:
    """Numbers whose runner stopped holding them mid-call (see the module docstring)."""
    lost = session.scalars(
        select(DialNumber).where(
            DialNumber.campaign == campaign,
            DialNumber.status == DIALLING,
            DialNumber.lease_until <= now,
        )
    ).all()
    for row in lost:
        reached = row.channel_id is not None and session.scalar(
            select(func.count()).select_from(Call).where(Call.channel_id == row.channel_id)
        )
        result = "answered" if reached else "interrupted"
        reason = "settled after its runner stopped"
        _record_attempt(session, row, campaign, result, reason, now)
        row.result, row.reason = result, reason
        if reached or row.attempts >= dialing.retry.max_attempts:
            row.status, row.finished_at = DONE, now
        else:
            row.status, row.next_attempt_at = PENDING, now
        row.claim_token = row.claimed_by = row.lease_until = None
    return len(lost)


def claim(
    session: Session,
    campaign: str,
    purposes: Sequence[str],
    dialing: Dialing,
    *,
    runner: str,
    limit: int,
    now: datetime,
    lookahead_s: float = 1.0,
) -> Claims:
    """Up to `limit` numbers to dial now, within the campaign's limits (module docstring)."""
    camp = _lock_campaign(session, campaign, now)
    settle_lost(session, campaign, dialing, now)
    in_call = session.scalar(
        select(func.count())
        .select_from(DialNumber)
        .where(DialNumber.campaign == campaign, DialNumber.status == DIALLING)
    )
    free = min(limit, dialing.max_concurrent - int(in_call or 0))
    spacing = timedelta(seconds=1 / dialing.calls_per_second)
    slot = max(utc(camp.next_dial_at), now)
    horizon = now + timedelta(seconds=lookahead_s)
    claimed: list[Claimed] = []
    while free > len(claimed) and slot <= horizon:
        query = (
            select(DialNumber)
            .where(
                DialNumber.campaign == campaign,
                DialNumber.status == PENDING,
                DialNumber.next_attempt_at <= now,
            )
            .order_by(DialNumber.next_attempt_at, DialNumber.id)
            .limit(50)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        if not rows:
            break
        for row in rows:
            if free <= len(claimed) or slot > horizon:
                break
            zones = tuple(row.zones.split(","))
            opens = w.next_open(dialing.window, zones, now)
            if opens is None:
                _skip(session, row, "no_window", _zone_problem(zones), now)
                continue
            if opens > now:
                row.next_attempt_at = opens
                continue
            refused = refusals(session, row.phone, purposes, campaign, now)
            if refused:
                _skip(session, row, "suppressed", "; ".join(refused), now)
                continue
            token = new_id()
            row.status, row.claim_token, row.claimed_by = DIALLING, token, runner
            row.lease_until = now + timedelta(seconds=dialing.lease_s)
            row.attempts += 1
            row.channel_id = f"dial-{new_id()}"
            claimed.append(
                Claimed(row.id, row.phone, row.language, row.channel_id, token, slot, row.attempts)
            )
            slot += spacing
        session.flush()
    camp.next_dial_at = slot
    rate_bound = free > len(claimed) and slot > horizon
    return Claims(claimed, slot - timedelta(seconds=lookahead_s) if rate_bound else None)


def _zone_problem(zones: tuple[str, ...]) -> str:
    if w.UNKNOWN in zones and len(zones) == 1:
        return "the number does not tell its time zone; set dialing.window.timezone"
    return f"the window is never open in all of {', '.join(zones)} at once"


def _skip(session: Session, row: DialNumber, result: str, reason: str, now: datetime) -> None:
    row.status, row.result, row.reason, row.finished_at = SKIPPED, result, reason, now


def refusals(
    session: Session, phone: str, purposes: Sequence[str], campaign: str, at: datetime
) -> list[str]:
    """Why `phone` may not be asked for these purposes, one line per purpose (kept as
    suppressed contact attempts: see lifecycle.refusals)."""
    refused = lifecycle.refusals(session, phone, purposes, campaign, at)
    return [f"{pid}: {verdict.reason}" for pid, verdict in refused]


def renew(session: Session, tokens: Sequence[str], lease_s: float, now: datetime) -> None:
    if tokens:
        session.execute(
            update(DialNumber)
            .where(DialNumber.claim_token.in_(list(tokens)), DialNumber.status == DIALLING)
            .values(lease_until=now + timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False)
        )


def release(session: Session, number_id: int, token: str) -> None:
    """A claimed number that was not dialled after all (the runner is stopping)."""
    session.execute(
        update(DialNumber)
        .where(DialNumber.id == number_id, DialNumber.claim_token == token)
        .values(
            status=PENDING,
            attempts=DialNumber.attempts - 1,
            claim_token=None,
            claimed_by=None,
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )


def _record_attempt(
    session: Session,
    row: DialNumber | None,
    campaign: str,
    result: str,
    reason: str,
    at: datetime,
    *,
    phone: str | None = None,
    channel_id: str | None = None,
) -> None:
    session.add(
        ContactAttempt(
            at=utc(at),
            phone=phone or (row.phone if row else ""),
            campaign=campaign,
            purpose_id=None,
            channel="call",
            result=result,
            reason=reason or None,
            channel_id=channel_id or (row.channel_id if row else None),
        )
    )


def record_attempt(session: Session, phone: str, campaign: str, attempt: Attempt) -> None:
    """Keep one call attempt with Asterisk's result and cause (also for one call outside a
    campaign)."""
    _record_attempt(
        session,
        None,
        campaign,
        attempt.result,
        attempt.describe(),
        attempt.placed_at,
        phone=phone,
        channel_id=attempt.channel_id,
    )


def finish(
    session: Session,
    claimed: Claimed,
    campaign: str,
    attempt: Attempt,
    dialing: Dialing,
    now: datetime,
) -> str:
    """Record the attempt and move the number on: done, or pending for a retry. Returns the
    number's status."""
    record_attempt(session, claimed.phone, campaign, attempt)
    row = session.get(DialNumber, claimed.id, with_for_update=True)
    if row is None or row.claim_token != claimed.token:
        return "lost"  # settled by another runner after our lease ran out
    row.result, row.reason = attempt.result, attempt.describe() or None
    retry = dialing.retry
    if attempt.result in retry.on and row.attempts < retry.max_attempts:
        row.status = PENDING
        row.next_attempt_at = durations.parse(retry.delay).after(now)
    else:
        row.status, row.finished_at = DONE, now
    row.claim_token = row.claimed_by = row.lease_until = None
    return row.status


# ---- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    total: int
    finished: int  # done or skipped
    in_call: int
    pending: int
    next_at: datetime | None  # the earliest pending number's time
    outcomes: dict[str, int]  # per outcome, of the finished numbers


def progress(session: Session, campaign: str) -> Progress:
    """Where the campaign stands; `outcomes` names a finished number by the outcome of its
    answered call's consent (granted, declined, ...; several purposes joined with +), or the
    result of its last attempt (no_answer, busy, machine, suppressed, ...)."""
    rows = session.execute(
        select(
            DialNumber.status, DialNumber.result, DialNumber.channel_id, DialNumber.next_attempt_at
        ).where(DialNumber.campaign == campaign)
    ).all()
    answered = [r.channel_id for r in rows if r.status == DONE and r.result == "answered"]
    by_channel: dict[str, list[str]] = {}
    for start in range(0, len(answered), 500):
        found = session.execute(
            select(Call.channel_id, ConsentRecord.outcome, Call.ended_at)
            .join(ConsentRecord, ConsentRecord.call_id == Call.call_id)
            .where(Call.channel_id.in_(answered[start : start + 500]))
            .order_by(ConsentRecord.started_at, ConsentRecord.record_id)
        ).all()
        for channel_id, outcome, ended in found:
            by_channel.setdefault(channel_id, []).append(
                (outcome or "in_call") if ended is not None else "in_call"
            )
    outcomes: Counter[str] = Counter()
    pending = [utc(r.next_attempt_at) for r in rows if r.status == PENDING]
    for r in rows:
        if r.status not in (DONE, SKIPPED):
            continue
        if r.status == DONE and r.result == "answered":
            outcomes["+".join(dict.fromkeys(by_channel.get(r.channel_id, ["not_handled"])))] += 1
        else:
            outcomes[r.result or r.status] += 1
    return Progress(
        total=len(rows),
        finished=sum(1 for r in rows if r.status in (DONE, SKIPPED)),
        in_call=sum(1 for r in rows if r.status == DIALLING),
        pending=len(pending),
        next_at=min(pending, default=None),
        outcomes=dict(outcomes),
    )
