"""The outbox's pure parts: the retry schedule, the settle and recovery plans, entry states."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliable_smtp import ConfigurationError
from reliable_smtp._outbox.model import EntryState, OutboxRecipient, RecipientState, entry_state
from reliable_smtp._outbox.schedule import OutboxSchedule, plan_recovery, plan_settlement
from reliable_smtp._replies import Outcome, Phase, Reply
from reliable_smtp._result import RecipientStatus

SCHEDULE = OutboxSchedule()
NOW = 1_000_000.0

attempts = st.integers(min_value=1, max_value=10_000)
seeds = st.integers(min_value=0, max_value=2**32)


def status(
    outcome: Outcome,
    *,
    recipient: str = "a@example.org",
    code: int = 451,
    retryable: bool = True,
    hint: float | None = None,
    split: bool = False,
) -> RecipientStatus:
    return RecipientStatus(
        recipient=recipient,
        outcome=outcome,
        phase=Phase.RCPT,
        reply=Reply(code, None, "the reply text"),
        explanation="why",
        retryable=retryable,
        delay_hint=hint,
        split=split,
    )


def pending(address: str = "a@example.org", position: int = 0, **kw: object) -> OutboxRecipient:
    return OutboxRecipient(
        address=address,
        position=position,
        state=kw.pop("state", RecipientState.PENDING),  # type: ignore[arg-type]
        due_at=NOW,
        **kw,  # type: ignore[arg-type]
    )


@given(attempts, seeds)
def test_backoff_stays_between_minimum_and_maximum(attempt: int, seed: int) -> None:
    wait = SCHEDULE.backoff(attempt, random.Random(seed))
    assert SCHEDULE.minimum_backoff <= wait <= SCHEDULE.maximum_backoff


def test_backoff_doubles_and_is_jittered() -> None:
    waits = {SCHEDULE.backoff(2, random.Random(seed)) for seed in range(50)}
    assert len(waits) > 40  # spread out, not one value
    assert all(480 <= w <= 720 for w in waits)  # 600 s +- 20 %
    flat = OutboxSchedule(jitter=0.0)
    assert [flat.backoff(n, random.Random(0)) for n in (1, 2, 3, 4, 5)] == [
        300,
        600,
        1200,
        2400,
        4000,
    ]


@given(attempts, seeds, st.floats(min_value=0, max_value=10 * 86400))
def test_a_server_hint_is_honoured_up_to_max_hint(attempt: int, seed: int, hint: float) -> None:
    wait = SCHEDULE.wait_after(status(Outcome.TRANSIENT, hint=hint), attempt, random.Random(seed))
    assert wait == min(hint, SCHEDULE.max_hint)


@given(attempts, seeds)
def test_throttled_waits_longer_than_transient(attempt: int, seed: int) -> None:
    transient = SCHEDULE.wait_after(status(Outcome.TRANSIENT), attempt, random.Random(seed))
    throttled = SCHEDULE.wait_after(status(Outcome.THROTTLED), attempt, random.Random(seed))
    assert throttled > transient
    assert throttled >= SCHEDULE.throttled_minimum


def test_quota_and_our_own_config_wait_the_maximum() -> None:
    rng = random.Random(1)
    quota = status(Outcome.THROTTLED, retryable=False)
    config = status(Outcome.AUTH_OR_CONFIG, code=535, retryable=False)
    assert SCHEDULE.wait_after(quota, 1, rng) == SCHEDULE.maximum_backoff
    assert SCHEDULE.wait_after(config, 1, rng) == SCHEDULE.maximum_backoff


@given(attempts, seeds)
def test_split_is_due_now(attempt: int, seed: int) -> None:
    split = status(Outcome.TRANSIENT, code=452, split=True)
    assert SCHEDULE.wait_after(split, attempt, random.Random(seed)) == 0.0
    plan = plan_settlement(
        [pending()],
        {"a@example.org": split},
        claimed={"a@example.org"},
        now=NOW,
        expires_at=NOW + 10,
        schedule=SCHEDULE,
        rng=random.Random(seed),
    )
    assert plan.updates[0].state is RecipientState.PENDING
    assert plan.due_at == NOW
    assert plan.state is EntryState.DEFERRED


@pytest.mark.parametrize(
    ("outcome", "state", "entry"),
    [
        (Outcome.SENT, RecipientState.SENT, EntryState.SENT),
        (Outcome.PERMANENT, RecipientState.FAILED, EntryState.FAILED),
        (Outcome.AMBIGUOUS, RecipientState.AMBIGUOUS, EntryState.AMBIGUOUS),
        (Outcome.TRANSIENT, RecipientState.PENDING, EntryState.DEFERRED),
        (Outcome.THROTTLED, RecipientState.PENDING, EntryState.DEFERRED),
        (Outcome.AUTH_OR_CONFIG, RecipientState.PENDING, EntryState.DEFERRED),
    ],
)
def test_settle_maps_each_outcome(
    outcome: Outcome, state: RecipientState, entry: EntryState
) -> None:
    plan = plan_settlement(
        [pending()],
        {"a@example.org": status(outcome)},
        claimed={"a@example.org"},
        now=NOW,
        expires_at=NOW + 86400,
        schedule=SCHEDULE,
        rng=random.Random(0),
    )
    (update,) = plan.updates
    assert (update.state, plan.state) == (state, entry)
    assert update.attempts == 1
    assert update.outcome is outcome
    assert (plan.due_at is not None) == (state is RecipientState.PENDING)
    assert (plan.last_error is None) == (outcome is Outcome.SENT)


@given(attempts, seeds, st.floats(min_value=0, max_value=5000))
def test_expiry_fails_with_the_last_reply(attempt: int, seed: int, left: float) -> None:
    recipient = pending(attempts=attempt - 1)
    last = status(Outcome.TRANSIENT)
    plan = plan_settlement(
        [recipient],
        {"a@example.org": last},
        claimed={"a@example.org"},
        now=NOW,
        expires_at=NOW + left,
        schedule=SCHEDULE,
        rng=random.Random(seed),
    )
    (update,) = plan.updates
    wait = SCHEDULE.wait_after(last, attempt, random.Random(seed))
    if wait > left:
        assert update.state is RecipientState.FAILED
        assert plan.state is EntryState.FAILED
        assert update.reply == last.reply
        assert "OutboxSchedule.lifetime" in update.explanation
    else:
        assert update.state is RecipientState.PENDING
        assert update.due_at == NOW + wait


def test_settle_touches_only_claimed_recipients_and_takes_the_earliest_due() -> None:
    recipients = [
        pending("a@example.org", 0),
        pending("b@example.org", 1, state=RecipientState.SENT, attempts=1),
        pending("c@example.org", 2),
    ]
    plan = plan_settlement(
        recipients,
        {"a@example.org": status(Outcome.TRANSIENT, hint=60)},
        claimed={"a@example.org"},
        now=NOW,
        expires_at=NOW + 86400,
        schedule=SCHEDULE,
        rng=random.Random(0),
    )
    assert [u.position for u in plan.updates] == [0]
    assert plan.due_at == NOW  # c is still due now
    assert plan.state is EntryState.DEFERRED


def test_a_claimed_recipient_without_a_reply_is_ambiguous_only_if_its_dot_was_marked() -> None:
    marked = pending("a@example.org", 0, state=RecipientState.IN_FLIGHT, dot_at=NOW)
    unmarked = pending("b@example.org", 1)
    for plan in (
        plan_recovery([marked, unmarked], now=NOW, schedule=SCHEDULE),
        plan_settlement(
            [marked, unmarked],
            {},
            claimed={"a@example.org", "b@example.org"},
            now=NOW,
            expires_at=NOW + 1,
            schedule=SCHEDULE,
            rng=random.Random(0),
        ),
    ):
        assert [(u.position, u.state) for u in plan.updates] == [(0, RecipientState.AMBIGUOUS)]
        assert plan.state is EntryState.QUEUED  # b goes back to the queue, never tried
    alone = plan_recovery([marked], now=NOW, schedule=SCHEDULE)
    assert alone.state is EntryState.AMBIGUOUS
    resend = plan_recovery([marked], now=NOW, schedule=OutboxSchedule(retry_ambiguous=True))
    assert resend.updates[0].state is RecipientState.PENDING
    assert resend.updates[0].dot_at is None


recipient_states = st.lists(st.sampled_from(list(RecipientState)), min_size=1, max_size=6)


@given(recipient_states, st.booleans())
def test_entry_state_follows_its_recipients(states: list[RecipientState], tried: bool) -> None:
    state = entry_state(states, tried=tried)
    live = {RecipientState.PENDING, RecipientState.IN_FLIGHT} & set(states)
    if live:
        assert state is (EntryState.DEFERRED if tried else EntryState.QUEUED)
    elif RecipientState.AMBIGUOUS in states:
        assert state is EntryState.AMBIGUOUS
    elif RecipientState.FAILED in states:
        assert state is EntryState.FAILED
    elif RecipientState.CANCELLED in states:
        assert state is EntryState.CANCELLED
    else:
        assert set(states) == {RecipientState.SENT}
        assert state is EntryState.SENT
    assert state.final == (state in (EntryState.SENT, EntryState.FAILED, EntryState.CANCELLED))


@pytest.mark.parametrize(
    "changes",
    [
        {"minimum_backoff": -1},
        {"maximum_backoff": float("inf")},
        {"minimum_backoff": 500, "maximum_backoff": 400},
        {"jitter": 1.0},
        {"lifetime": True},
    ],
)
def test_impossible_schedules_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        OutboxSchedule(**changes)  # type: ignore[arg-type]


def test_without_waits_waits_nothing_but_keeps_the_lifetime() -> None:
    schedule = OutboxSchedule.without_waits(lifetime=10)
    assert schedule.wait_after(status(Outcome.THROTTLED), 3, random.Random(0)) == 0.0
    assert schedule.lifetime == 10
