"""Claiming jobs: the batch limit, disjoint batches under concurrency, expired leases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consent_ivr.clock import now
from consent_ivr.sms import jobs
from consent_ivr.sms.config import SmsConfig
from consent_ivr.store.db import Database

from .conftest import decide

pytestmark = pytest.mark.integration


def test_postgresql_open_claims_are_disjoint_and_limited(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        decide(db, SmsConfig(), count=10)
        first, second = db._sessions(), db._sessions()
        try:
            # Both transactions open at once: the second skips the rows the first has locked.
            a = jobs.claim(first, worker="a", limit=4, lease_s=60, now=now())
            b = jobs.claim(second, worker="b", limit=4, lease_s=60, now=now())
            first.commit()
            second.commit()
        finally:
            first.close()
            second.close()
        with db.session() as session:
            rest = jobs.claim(session, worker="c", limit=50, lease_s=60, now=now())
    finally:
        db.close()
    ids = [j.sms.job_id for j in a + b + rest]
    assert (len(a), len(b), len(rest)) == (4, 4, 2)
    assert len(set(ids)) == 10


def test_expired_lease_is_claimed_again_in_doubt(sqlite_db: Database) -> None:
    decide(sqlite_db, SmsConfig(), count=1)
    t0 = now()
    with sqlite_db.session() as session:
        [first] = jobs.claim(session, worker="a", limit=5, lease_s=10, now=t0)
    with sqlite_db.session() as session:
        assert (
            jobs.claim(session, worker="b", limit=5, lease_s=10, now=t0 + timedelta(seconds=9))
            == []
        )
    later = t0 + timedelta(seconds=11)
    with sqlite_db.session() as session:
        [again] = jobs.claim(session, worker="b", limit=5, lease_s=10, now=later)
    assert not first.in_doubt and again.in_doubt
    assert again.attempts == 2 and again.attempt_started_at == later
    # The first worker's claim is void: its outcome can no longer move the job.
    with sqlite_db.session() as session:
        jobs.fail(session, first.sms.job_id, first.token, error="late", now=later)
        assert jobs.restart_attempt(session, again.sms.job_id, again.token, lease_s=10, now=later)
