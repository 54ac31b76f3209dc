"""Rate-limit arithmetic and the throttling feedback rule: pure, with explicit times."""

from __future__ import annotations

import pytest

from reliable_smtp.errors import ConfigurationError
from reliable_smtp.ratelimit import (
    FLOOR_RATE,
    AdaptiveRate,
    RateLimit,
    TokenBucket,
    refill,
    wait_for_token,
)


def test_refill_is_capped_by_capacity() -> None:
    assert refill(0.0, capacity=3, rate=1.0, elapsed=2.0) == 2.0
    assert refill(0.0, capacity=3, rate=1.0, elapsed=10.0) == 3.0
    assert refill(-2.0, capacity=1, rate=0.5, elapsed=2.0) == -1.0
    assert refill(1.0, capacity=1, rate=1.0, elapsed=-5.0) == 1.0  # clocks never run back


def test_wait_for_token() -> None:
    assert wait_for_token(1.0, rate=2.0) == 0.0
    assert wait_for_token(0.5, rate=2.0) == 0.25
    assert wait_for_token(-1.0, rate=1.0) == 2.0


def test_bucket_reservations_queue_fairly() -> None:
    bucket = TokenBucket(2.0, capacity=1, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]
    # After a quiet period the burst is available again, but never more than capacity.
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) == 0.5


def test_burst_lets_messages_go_back_to_back() -> None:
    bucket = TokenBucket(1.0, capacity=3, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_set_rate_keeps_earned_tokens() -> None:
    bucket = TokenBucket(1.0, capacity=1, now=0.0)
    bucket.reserve(0.0)
    bucket.set_rate(0.5, 0.5)  # half a token earned at the old rate
    assert bucket.reserve(0.5) == pytest.approx(1.0)


def test_per_minute() -> None:
    limit = RateLimit.per_minute(per_transport=30, per_connection=6)
    assert limit.per_transport == 0.5
    assert limit.per_connection == 0.1


@pytest.mark.parametrize(
    "fields",
    [
        {"per_connection": 0},
        {"per_transport": -1},
        {"per_connection": float("inf")},
        {"per_connection": float("nan")},
        {"per_transport": 1e-9},
        {"burst": 0},
        {"burst": 1.5},
        {"throttle_factor": 1.0},
        {"cooldown": 0},
        {"per_connection": "10/s"},
    ],
)
def test_impossible_rates_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RateLimit(**fields)  # type: ignore[arg-type]
    assert caught.value.setting is not None


def test_throttle_halves_the_configured_rate_then_recovers_by_doubling() -> None:
    rate = AdaptiveRate(10.0, factor=0.5, cooldown=60.0)
    assert rate.current(0.0) == 10.0
    assert rate.on_throttled(0.0) == 5.0
    assert rate.current(59.0) == 5.0
    # one cooldown without throttling: doubled, which is back at the configured rate
    assert rate.current(60.0) == 10.0
    assert rate.current(1000.0) == 10.0


def test_throttle_uses_the_rate_actually_sent_when_lower() -> None:
    rate = AdaptiveRate(100.0, factor=0.5, cooldown=60.0)
    for i in range(20):  # 20 messages in the last 10 s = 2/s
        rate.note_sent(i * 0.5)
    assert rate.on_throttled(10.0) == pytest.approx(1.0)
    assert rate.current(70.0) == pytest.approx(2.0)
    assert rate.current(130.0) == pytest.approx(4.0)


def test_unlimited_transport_gets_a_temporary_limit() -> None:
    rate = AdaptiveRate(None)
    for i in range(40):  # 4 messages/s
        rate.note_sent(i * 0.25)
    assert rate.on_throttled(10.0) == pytest.approx(2.0)
    assert rate.current(10.0) == pytest.approx(2.0)
    # Much later nothing is being sent any more: the temporary limit is lifted.
    assert rate.current(10_000.0) is None


def test_repeated_throttling_never_goes_below_the_floor() -> None:
    rate = AdaptiveRate(1.0)
    for _ in range(30):
        rate.on_throttled(0.0)
    assert rate.current(0.0) == FLOOR_RATE
