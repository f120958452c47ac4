"""Token buckets: never more than a second's burst plus the rate, and a bounded table."""

from hypothesis import given
from hypothesis import strategies as st

from loghogd.ratelimit import RateLimits


@given(rate=st.integers(1, 1000), steps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200))
def test_allowed_records_never_exceed_burst_plus_rate_times_elapsed(rate: int, steps: list) -> None:
    limits = RateLimits()
    now, allowed = 1000.0, 0
    for step in steps:
        now += step
        allowed += sum(limits.allow('peer', float(rate), now) for _ in range(3))
    assert allowed <= rate + rate * (now - 1000.0) + 1e-6


def test_a_steady_sender_under_the_rate_is_never_refused_and_one_at_five_times_gets_the_rate() -> None:
    limits = RateLimits()
    assert all(limits.allow('slow', 10.0, 1000.0 + number * 0.1) for number in range(100))
    fast = sum(limits.allow('fast', 10.0, 1000.0 + number * 0.02) for number in range(500))
    assert 10 * 10 <= fast <= 10 * 10 + 10 + 1


def test_the_table_of_buckets_stays_bounded() -> None:
    limits = RateLimits(max_buckets=64)
    for number in range(10000):
        limits.allow(number, 1.0, 1000.0)
    assert len(limits) <= 64
