"""When an outbox recipient is tried again, and what a send's results do to an entry.

:class:`OutboxSchedule` is an immutable value (like :class:`~reliable_smtp.RetryPolicy`,
but for hours and days instead of seconds). :func:`plan_settlement` and
:func:`plan_recovery` are the only place where outcomes become states: both
stores (SQLite, PostgreSQL) call them and write what they return, so no decision
lives in SQL. Everything here is pure; time and randomness come in as arguments.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .._checks import check_seconds
from .._errors import ConfigurationError
from .._replies import Outcome, Phase, Reply
from .._result import RecipientStatus
from .model import EntryState, OutboxRecipient, RecipientState, entry_state

__all__ = [
    "OutboxSchedule",
    "RecipientUpdate",
    "Settlement",
    "describe_status",
    "plan_recovery",
    "plan_settlement",
    "recipient_update",
    "settlement_of",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxSchedule:
    """How long and how often the outbox retries a recipient that is still pending.

    The defaults are Postfix's (``minimal_backoff_time`` 300 s,
    ``maximal_backoff_time`` 4000 s, ``maximal_queue_lifetime`` 5 days): the wait
    doubles after each try, from ``minimum_backoff`` to ``maximum_backoff``, spread
    by ``jitter`` (a fraction: 0.2 = ±20 %) and always within those bounds. For a
    submission server (port 587/465) a shorter ``minimum_backoff`` (30-60 s) rides
    out a provider hiccup sooner.

    A server's "try again in N seconds" wins over the backoff (capped at
    ``max_hint``); a throttling reply (rate limit, 4.7.x) waits at least
    ``throttled_minimum`` and twice the backoff; a quota, or a failure of our own
    credentials or configuration (AUTH_OR_CONFIG), waits ``maximum_backoff`` - the
    message is fine, the account is not; ``Outbox.retry`` sends at once after the
    fix. A recipient whose next try would fall after ``lifetime`` (counted from
    enqueue) FAILS with the last reply. ``retry_ambiguous=True`` resends recipients
    whose final dot went out without a reply (may deliver twice; off by default).
    """

    minimum_backoff: float = 300.0
    maximum_backoff: float = 4000.0
    lifetime: float = 5 * 86400.0
    jitter: float = 0.2
    throttled_minimum: float = 900.0
    max_hint: float = 86400.0
    retry_ambiguous: bool = False

    def __post_init__(self) -> None:
        # Zero is "no wait" (tests, an immediate retry), so these may be zero.
        for name in (
            "minimum_backoff",
            "maximum_backoff",
            "lifetime",
            "max_hint",
            "throttled_minimum",
        ):
            check_seconds(
                name, getattr(self, name), allow_zero=True, owner="OutboxSchedule.", why=""
            )
        if self.maximum_backoff < self.minimum_backoff:
            raise ConfigurationError(
                f"OutboxSchedule.maximum_backoff ({self.maximum_backoff}) is below "
                f"minimum_backoff ({self.minimum_backoff})",
                setting="maximum_backoff",
            )
        if not (0.0 <= self.jitter < 1.0):
            raise ConfigurationError(
                f"OutboxSchedule.jitter is a fraction in [0, 1), got {self.jitter!r}",
                setting="jitter",
            )

    @classmethod
    def without_waits(cls, *, lifetime: float = 5 * 86400.0) -> OutboxSchedule:
        """Every wait zero (tests); the lifetime still applies."""
        return cls(
            minimum_backoff=0.0,
            maximum_backoff=0.0,
            jitter=0.0,
            throttled_minimum=0.0,
            max_hint=0.0,
            lifetime=lifetime,
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after try number ``attempt`` (1-based): doubling, jittered, bounded."""
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 x anything passes any maximum
        base = min(self.maximum_backoff, self.minimum_backoff * 2.0**exponent)
        spread = base * self.jitter
        wait = rng.uniform(base - spread, base + spread) if spread else base
        return min(self.maximum_backoff, max(self.minimum_backoff, wait))

    def wait_after(self, status: RecipientStatus, attempt: int, rng: random.Random) -> float:
        """Seconds before a recipient that got ``status`` on try ``attempt`` is tried again."""
        if status.split:
            return 0.0  # refused only because the transaction was too large
        if status.outcome is Outcome.AUTH_OR_CONFIG or (
            status.outcome is Outcome.THROTTLED and not status.retryable
        ):
            return self.maximum_backoff  # our account or a quota: only time or a person helps
        if status.delay_hint is not None:
            return min(max(status.delay_hint, 0.0), self.max_hint)
        wait = self.backoff(attempt, rng)
        if status.outcome is Outcome.THROTTLED:
            wait = max(2.0 * wait, self.throttled_minimum)
        return wait


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientUpdate:
    """The new row of one recipient, as a store writes it."""

    position: int
    state: RecipientState
    outcome: Outcome | None
    reply: Reply | None
    phase: Phase | None
    explanation: str
    attempts: int
    due_at: float | None
    dot_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement:
    """What a store writes after a send (or a recovery): recipients, entry state, due time.

    ``updates`` holds only the recipients that change. ``last_error`` is ``None``
    when the entry's last error stays as it was.
    """

    updates: tuple[RecipientUpdate, ...]
    state: EntryState
    due_at: float | None
    last_error: str | None


def describe_status(status: RecipientStatus) -> str:
    """One line for ``last_error``: recipient, reply, phase, explanation."""
    parts = [f"{status.recipient}: {status.outcome}"]
    if status.reply is not None:
        reply = status.reply
        parts.append(" ".join(str(p) for p in (reply.code, reply.enhanced_code, reply.text) if p))
    parts.append(f"during {status.phase}")
    line = " ".join(parts)
    return f"{line} - {status.explanation}" if status.explanation else line


def recipient_update(
    recipient: OutboxRecipient,
    state: RecipientState,
    *,
    status: RecipientStatus | None = None,
    due_at: float | None = None,
    explanation: str | None = None,
) -> RecipientUpdate:
    """``recipient`` moved to ``state``; with ``status`` (a new reply) its facts and one
    more attempt, without (an operator's or a recovery's decision) its facts kept."""
    return RecipientUpdate(
        position=recipient.position,
        state=state,
        outcome=status.outcome if status else recipient.outcome,
        reply=status.reply if status else recipient.reply,
        phase=status.phase if status else recipient.phase,
        explanation=explanation
        if explanation is not None
        else (status.explanation if status else recipient.explanation),
        attempts=recipient.attempts + (1 if status else 0),
        due_at=due_at,
        dot_at=None if state is RecipientState.PENDING else recipient.dot_at,
    )


def _outcome_of_send(
    recipient: OutboxRecipient,
    status: RecipientStatus,
    *,
    now: float,
    expires_at: float,
    schedule: OutboxSchedule,
    rng: random.Random,
) -> RecipientUpdate:
    if status.outcome is Outcome.SENT:
        return recipient_update(recipient, RecipientState.SENT, status=status)
    if status.outcome is Outcome.PERMANENT:
        return recipient_update(recipient, RecipientState.FAILED, status=status)
    if status.outcome is Outcome.AMBIGUOUS and not schedule.retry_ambiguous:
        return recipient_update(recipient, RecipientState.AMBIGUOUS, status=status)
    # TRANSIENT, THROTTLED, AUTH_OR_CONFIG (and AMBIGUOUS when resending is allowed).
    due = now + schedule.wait_after(status, recipient.attempts + 1, rng)
    if due > expires_at:
        return recipient_update(
            recipient,
            RecipientState.FAILED,
            status=status,
            explanation=f"expired: the next try would come after the outbox lifetime "
            f"({schedule.lifetime:g} s, OutboxSchedule.lifetime); last reply: "
            f"{status.explanation or status.outcome}",
        )
    return recipient_update(recipient, RecipientState.PENDING, status=status, due_at=due)


def settlement_of(
    recipients: Sequence[OutboxRecipient], updates: list[RecipientUpdate], last_error: str | None
) -> Settlement:
    """The settlement of ``updates`` to an entry's ``recipients``: entry state and due time."""
    by_position = {u.position: u for u in updates}
    states: list[RecipientState] = []
    due: list[float] = []
    tried = False
    for recipient in recipients:
        update = by_position.get(recipient.position)
        state = update.state if update else recipient.state
        due_at = update.due_at if update else recipient.due_at
        attempts = update.attempts if update else recipient.attempts
        states.append(state)
        tried = tried or attempts > 0
        if state is RecipientState.PENDING and due_at is not None:
            due.append(due_at)
    return Settlement(
        updates=tuple(updates),
        state=entry_state(states, tried=tried),
        due_at=min(due) if due else None,
        last_error=last_error,
    )


def plan_settlement(
    recipients: Sequence[OutboxRecipient],
    statuses: Mapping[str, RecipientStatus],
    *,
    claimed: Collection[str],
    now: float,
    expires_at: float,
    schedule: OutboxSchedule,
    rng: random.Random,
) -> Settlement:
    """Apply a send's per-recipient ``statuses`` to an entry's ``recipients``.

    ``claimed`` are the addresses the worker was given. A claimed recipient
    without a status is treated as after a crash (see :func:`plan_recovery`):
    back to pending, or AMBIGUOUS if its final-dot mark is set. Recipients not
    claimed are left as they are.
    """
    updates: list[RecipientUpdate] = []
    errors: list[str] = []
    for recipient in recipients:
        if recipient.address not in claimed or recipient.state not in _LIVE:
            continue
        status = statuses.get(recipient.address)
        if status is None:
            update = _recovered(recipient, now=now, schedule=schedule)
            if update is not None:
                updates.append(update)
            continue
        update = _outcome_of_send(
            recipient, status, now=now, expires_at=expires_at, schedule=schedule, rng=rng
        )
        updates.append(update)
        if status.outcome is not Outcome.SENT:
            errors.append(describe_status(status))
    return settlement_of(recipients, updates, "; ".join(errors) if errors else None)


_LIVE = frozenset({RecipientState.PENDING, RecipientState.IN_FLIGHT})


def _recovered(
    recipient: OutboxRecipient, *, now: float, schedule: OutboxSchedule
) -> RecipientUpdate | None:
    if recipient.state is not RecipientState.IN_FLIGHT:
        return None  # no final dot was about to go: nothing reached the server's queue
    if schedule.retry_ambiguous:
        return recipient_update(recipient, RecipientState.PENDING, due_at=now)
    return recipient_update(
        recipient,
        RecipientState.AMBIGUOUS,
        explanation="the worker stopped after marking the final dot and before recording "
        "the reply: the server may have the message. Decide with `reliable-smtp outbox "
        "resolve` (sent, failed, or resend).",
    )


def plan_recovery(
    recipients: Sequence[OutboxRecipient], *, now: float, schedule: OutboxSchedule
) -> Settlement:
    """An entry whose lease ended without a settlement (the worker died or let go).

    Recipients with the final-dot mark and no reply become AMBIGUOUS (a false
    "ambiguous" is acceptable, a duplicate is not); the other pending ones stay
    pending, due as they were.
    """
    updates = [
        update
        for recipient in recipients
        if (update := _recovered(recipient, now=now, schedule=schedule)) is not None
    ]
    return settlement_of(recipients, updates, None)
