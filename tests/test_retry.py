"""RetryPolicy's pure decisions: no I/O, no sleeping."""

from __future__ import annotations

import random

import pytest

from reliable_smtp._errors import ConfigurationError
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._result import RecipientStatus
from reliable_smtp._retry import RetryPolicy


def status(outcome: Outcome, **fields: object) -> RecipientStatus:
    return RecipientStatus(
        recipient="r@example.org",
        outcome=outcome,
        phase=Phase.RCPT,
        **fields,  # type: ignore[arg-type]
    )


def test_defaults_suit_an_in_process_call() -> None:
    policy = RetryPolicy()
    assert policy.attempts == 5
    assert policy.deadline == 120.0
    assert not policy.retry_ambiguous


@pytest.mark.parametrize(
    ("outcome", "retryable", "ambiguous_ok", "expected"),
    [
        (Outcome.TRANSIENT, True, False, True),
        (Outcome.THROTTLED, True, False, True),
        (Outcome.THROTTLED, False, False, False),  # a quota: not now
        (Outcome.PERMANENT, False, False, False),
        (Outcome.AUTH_OR_CONFIG, False, False, False),
        (Outcome.AMBIGUOUS, False, False, False),
        (Outcome.AMBIGUOUS, False, True, True),
        (Outcome.SENT, False, True, False),
    ],
)
def test_should_retry(
    outcome: Outcome, retryable: bool, ambiguous_ok: bool, expected: bool
) -> None:
    policy = RetryPolicy(retry_ambiguous=ambiguous_ok)
    assert policy.should_retry(status(outcome, retryable=retryable)) is expected


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_wait=1.0, max_wait=10.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    jittery = RetryPolicy(initial_wait=1.0, max_wait=10.0, jitter=1.0)
    rng = random.Random(7)
    waits = [jittery.backoff(1, rng=rng) for _ in range(200)]
    assert all(1.0 <= w <= 2.0 for w in waits)
    assert len(set(waits)) > 100


def test_wait_prefers_hint_then_throttled_minimum() -> None:
    policy = RetryPolicy(jitter=0.0, throttled_wait=30.0, max_hint=60.0)
    assert policy.wait_before_next(1, [status(Outcome.TRANSIENT)]) == 1.0
    assert policy.wait_before_next(1, [status(Outcome.THROTTLED)]) == 30.0
    assert policy.wait_before_next(1, [status(Outcome.THROTTLED, delay_hint=7.0)]) == 7.0
    assert policy.wait_before_next(1, [status(Outcome.TRANSIENT, delay_hint=900.0)]) == 60.0
    assert policy.wait_before_next(3, [status(Outcome.TRANSIENT, split=True)]) == 0.0
    mixed = [status(Outcome.TRANSIENT, split=True), status(Outcome.TRANSIENT)]
    assert policy.wait_before_next(3, mixed) == 4.0


def test_stop_by_attempts_or_deadline() -> None:
    policy = RetryPolicy(attempts=3, deadline=60.0)
    assert not policy.should_stop(1, 0.0, 1.0)
    assert policy.should_stop(3, 0.0, 1.0)
    assert policy.should_stop(1, 50.0, 11.0)
    assert not policy.should_stop(1, 50.0, 10.0)


def test_without_waits_and_never() -> None:
    fast = RetryPolicy(attempts=4).without_waits()
    assert fast.attempts == 4
    assert fast.wait_before_next(3, [status(Outcome.THROTTLED, delay_hint=5.0)]) == 0.0
    assert RetryPolicy.never().attempts == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"attempts": 0},
        {"attempts": 1.5},
        {"attempts": True},
        {"deadline": 0},
        {"initial_wait": -1},
        {"max_wait": float("inf")},
        {"jitter": float("nan")},
    ],
)
def test_impossible_policies_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**changes)  # type: ignore[arg-type]
