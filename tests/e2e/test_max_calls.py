"""`ari.max_calls`: past it an inbound call is turned away before a word is said (hung up with
"congestion"), leaves no record and no recording, and is counted; the calls in progress go on,
and a caller who dials to withdraw is taken all the same. On a real Asterisk 16."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ivr import metrics
from consent_ivr.service import running
from consent_ivr.simulate import find_records, wait_for_record
from tests.e2e.conftest import asterisk_env, e2e_config
from tests.e2e.test_faults import call, stored_recordings, until

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def turned_away() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "consent_ivr_calls_turned_away_total", {"reason": "busy"}
    )
    return value or 0.0


async def test_past_max_calls_an_inbound_call_is_turned_away(
    e2e_prompts_built: None, tmp_path: Path
) -> None:
    conf = e2e_config(asterisk_env("16"), f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
    conf = conf.model_copy(update={"ari": conf.ari.model_copy(update={"max_calls": 1})})
    before = turned_away()
    async with running(conf, sms_worker=False) as svc:
        first = await call(svc, "agree")

        async def taken() -> bool:
            return first in svc.app.calls

        await until(taken, 30, "the first call to be taken")
        second = await call(svc, "agree")

        async def counted() -> bool:
            return turned_away() == before + 1

        await until(counted, 30, "the second call to be turned away")
        withdrawal = await call(svc, "silence", extension="withdraw")
        taken_anyway = await wait_for_record(svc.db, withdrawal, 120)
        assert (taken_anyway["kind"], taken_anyway["outcome"]) == ("withdrawal", "nothing_active")

        granted = await wait_for_record(svc.db, first, 120)
        assert granted["outcome"] == "granted"
        assert turned_away() == before + 1

        stored = await svc.db.run(lambda: find_records(svc.db, second, finished=False))
        assert stored is None, "a call turned away left a record"

        async def recording_gone() -> bool:
            return f"consent-{second}" not in await stored_recordings(svc)

        await until(recording_gone, 15, "the turned-away call's recording to be deleted")
