"""Token buckets pace calls as documented limits allow: a burst at once, then one per period."""

from __future__ import annotations

from bot.pacing import Bucket


def test_a_burst_goes_at_once_then_one_per_period() -> None:
    now = [0.0]
    bucket = Bucket(every=1.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == 1.0  # the fourth waits a period
    assert bucket.take() == 2.0  # and the fifth two: each reserved its token
    now[0] = 10.0  # a long quiet: the bucket is full again, never more than the burst
    assert [bucket.take() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_no_period_means_no_pacing() -> None:
    bucket = Bucket(every=0.0, burst=1)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
