"""Rate-limit arithmetic and the throttling feedback rule: pure, with explicit times."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reliable_smtp._errors import ConfigurationError
from reliable_smtp._ratelimit import (
    FLOOR_RATE,
    KEPT_SENDS,
    WINDOW,
    AdaptiveRate,
    RateLimit,
    TokenBucket,
    observed_rate,
    refill,
    throttled_rate,
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
    assert RateLimit.per_minute(per_transport=30, cooldown=60.0).cooldown == 60.0


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
    for i in range(30):
        rate.note_sent(float(i))  # each lowering was tried, and throttled again
        rate.on_throttled(float(i))
    assert rate.current(29.0) == FLOOR_RATE


# -- the throttling rule over bursts of any length and timing (issue 17) -------------------

FACTORS = st.sampled_from([0.5, 0.25, 0.75, 0.1])
CONFIGURED = st.one_of(st.none(), st.floats(min_value=0.01, max_value=1000.0))
#: Steady rates with at least two sends in any WINDOW, even one interval after the last.
RATES = st.floats(min_value=2 / WINDOW, max_value=5000.0)


def expected_rate(configured: float | None, sent_at: float, factor: float) -> float:
    """The documented rule: factor x the lower of configured and observed, floored, capped."""
    in_force = sent_at if configured is None else min(configured, sent_at)
    lowered = max(FLOOR_RATE, factor * in_force)
    return lowered if configured is None else min(configured, lowered)


def bursts(rate: AdaptiveRate, start: float, gaps: list[float]) -> float:
    """Record sends at ``start`` and then after each gap; return the last send time."""
    now = start
    rate.note_sent(now)
    for gap in gaps:
        now += gap
        rate.note_sent(now)
    return now


@pytest.mark.parametrize(
    ("configured", "burst", "expected"),
    [(20.0, 4, 10.0), (10.0, 2, 5.0), (100.0, 1, 50.0)],
)
def test_a_throttle_after_a_short_burst_halves_the_rate_sent(
    configured: float, burst: int, expected: float
) -> None:
    # The report: `burst` messages at the configured rate, then the next MAIL gets
    # "451 4.7.1 Rate limit exceeded, slow down". It used to read the burst over a full
    # 10 s window: 20/s fell to 0.25/s, 10/s to 0.15/s.
    rate = AdaptiveRate(configured)
    last = bursts(rate, 1000.0, [1 / configured] * burst)  # the throttled one is sent too
    assert rate.on_throttled(last) == pytest.approx(expected)


@settings(max_examples=300, deadline=None)
@given(
    sent_at=RATES,
    count=st.integers(min_value=2, max_value=3000),
    reply_after=st.floats(min_value=0.0, max_value=1.0),
    idle_before=st.one_of(st.none(), st.floats(min_value=WINDOW, max_value=1e6)),
    start=st.floats(min_value=0.0, max_value=1e6),
    configured=CONFIGURED,
    factor=FACTORS,
)
def test_a_steady_burst_of_any_length_reads_as_its_own_rate(
    sent_at: float,
    count: int,
    reply_after: float,
    idle_before: float | None,
    start: float,
    configured: float | None,
    factor: float,
) -> None:
    gap = 1 / sent_at
    rate = AdaptiveRate(configured, factor=factor)
    if idle_before is not None:  # an earlier burst, long enough ago to be forgotten
        bursts(rate, start - idle_before - 5.0, [0.01] * 5)
    last = bursts(rate, start, [gap] * (count - 1))
    # The throttling reply comes back at most one interval after the last send.
    now = last + reply_after * gap
    assert observed_rate(list(rate._sent), now) == pytest.approx(sent_at, rel=1e-6)
    assert rate.on_throttled(now) == pytest.approx(expected_rate(configured, sent_at, factor))


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=WINDOW / 4), max_size=60),
    reply_after=st.floats(min_value=0.0, max_value=WINDOW / 4),
    history=st.lists(st.floats(min_value=WINDOW, max_value=1e5), max_size=5),
    configured=CONFIGURED,
    factor=FACTORS,
)
def test_a_burst_is_never_read_as_slower_than_its_slowest_interval(
    gaps: list[float],
    reply_after: float,
    history: list[float],
    configured: float | None,
    factor: float,
) -> None:
    start = 1e5 + 10 * WINDOW
    rate = AdaptiveRate(configured, factor=factor)
    for ago in history:  # sends from before the window: they must not count
        rate.note_sent(start - ago - 1.0)
    last = bursts(rate, start, gaps)
    now = last + reply_after
    lowered = rate.on_throttled(now)

    if configured is None:
        assert lowered >= FLOOR_RATE
    else:  # never below the floor, never above the configured rate
        assert lowered >= min(FLOOR_RATE, configured)
        assert lowered <= configured
    # Only the sends of the last WINDOW seconds count, however irregular: the rate read
    # is at least one send per longest interval between them (or since the last one).
    recent = [start] + [start + sum(gaps[: i + 1]) for i in range(len(gaps))]
    recent = [t for t in recent if t >= now - WINDOW]
    intervals = [b - a for a, b in itertools.pairwise(recent)] + [now - recent[-1]]
    slowest = max(intervals)
    if slowest > 0:
        assert lowered >= expected_rate(configured, 1 / slowest, factor) * (1 - 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    sent_at=RATES,
    count=st.integers(min_value=2, max_value=200),
    configured=CONFIGURED,
    factor=FACTORS,
    cooldown=st.floats(min_value=0.5, max_value=120.0),
    checks=st.lists(st.floats(min_value=0.0, max_value=5000.0), min_size=1, max_size=20),
)
def test_recovery_doubles_every_cooldown_up_to_the_configured_rate(
    sent_at: float,
    count: int,
    configured: float | None,
    factor: float,
    cooldown: float,
    checks: list[float],
) -> None:
    rate = AdaptiveRate(configured, factor=factor, cooldown=cooldown)
    last = bursts(rate, 0.0, [1 / sent_at] * (count - 1))
    lowered = rate.on_throttled(last)
    previous = lowered
    for elapsed in sorted(checks):
        now = last + elapsed
        current = rate.current(now)
        if configured is None:
            # Unlimited: doubles until it is clearly not binding, then lifted entirely.
            if current is None:
                previous = math.inf
                continue
        else:
            assert current is not None
            steps = min(int((now - last) // cooldown), 200)  # whole cool-downs elapsed
            expected = min(configured, lowered * 2.0**steps)
            assert current == pytest.approx(expected, rel=1e-9)
        assert current >= previous * (1 - 1e-12)  # recovery never lowers the rate
        previous = current


def test_one_throttle_at_the_configured_rate_recovers_after_one_cooldown() -> None:
    rate = AdaptiveRate(20.0, cooldown=10.0)
    last = bursts(rate, 0.0, [0.05] * 4)
    assert rate.on_throttled(last) == pytest.approx(10.0)
    assert rate.current(last + 9.9) == pytest.approx(10.0)
    assert rate.current(last + 10.0) == 20.0
    assert RateLimit().cooldown == 10.0  # the documented default


@settings(max_examples=100, deadline=None)
@given(replies=st.integers(min_value=2, max_value=20), configured=CONFIGURED, factor=FACTORS)
def test_replies_to_messages_in_flight_lower_the_rate_once(
    replies: int, configured: float | None, factor: float
) -> None:
    # Several connections: messages sent before the first throttling reply are all
    # answered "slow down" too. They say nothing about the lowered rate.
    rate = AdaptiveRate(configured, factor=factor)
    last = bursts(rate, 0.0, [0.01] * 9)
    first = rate.on_throttled(last + 0.05)
    for i in range(1, replies):
        assert rate.on_throttled(last + 0.05 + i * 0.001) == first
    # Once a message went out at the lowered rate, another throttle lowers it again.
    rate.note_sent(last + 1.0)
    again = rate.on_throttled(last + 1.0)
    floor = FLOOR_RATE if configured is None else min(FLOOR_RATE, configured)
    assert again == floor or again <= first * factor * (1 + 1e-9)


def test_nothing_measured_lowers_the_rate_in_force() -> None:
    assert observed_rate([], 10.0) is None
    assert observed_rate([10.0], 10.0) is None  # no time covered yet
    assert observed_rate([20.0], 10.0) is None  # reserved, not yet sent
    assert observed_rate([9.5], 10.0) == pytest.approx(2.0)
    assert throttled_rate(8.0, None) == 4.0
    assert throttled_rate(None, None) == 0.5  # nothing configured, nothing measured
    assert throttled_rate(None, 0.001) == FLOOR_RATE
    # The floor never lifts a rate above what is in force (a configured 1 per 2 minutes).
    assert throttled_rate(1 / 120, 5.0) == 1 / 120


def test_a_fast_sender_keeps_only_the_latest_send_times_and_the_rate_stays_right() -> None:
    # 20 s at 1000 messages/s: the window alone would keep 10,000 times.
    rate = AdaptiveRate(None)
    for i in range(20_000):
        rate.note_sent(i / 1000)
    assert len(rate._sent) == KEPT_SENDS
    assert rate.observed(20.0) == pytest.approx(1000, rel=0.01)
