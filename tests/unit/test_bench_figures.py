"""The SIP benchmark's count of calls in progress (bench/sip_calls.py --waves), from the calls'
start and end times alone."""

from __future__ import annotations

import pytest

from bench.sip_calls import at_once


def test_the_peak_and_the_steady_mean_of_calls_in_progress() -> None:
    # 3 in progress from t=2 (the peak) to 10, 2 until the last start at 11.
    got = at_once([(0.0, 10.0), (1.0, 12.0), (2.0, 20.0), (11.0, 20.0)])
    assert got["peak"] == 3
    assert got["steady_mean"] == pytest.approx((3 * 8 + 2 * 1) / 9)


def test_calls_all_at_once_are_their_number_in_progress() -> None:
    assert at_once([(5.0, 30.0)] * 4) == {"peak": 4, "steady_mean": 4.0}
    assert at_once([]) == {"peak": 0, "steady_mean": 0.0}
