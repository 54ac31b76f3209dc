"""The retry policy: how often, how long, and how long to wait between tries.

:class:`RetryPolicy` is an immutable value. The decisions it makes - which
recipient statuses are worth another attempt, how long to wait, when to stop -
are pure methods tested without sleeping; the mailer hands them to tenacity's
``AsyncRetrying`` together with an injected ``sleep`` and ``clock``.

Defaults suit an in-process call (a web request, a task): up to 5 attempts
within 2 minutes, exponential backoff from 1 s to 30 s with up to 1 s of random
jitter, at least 30 s after a throttling reply, and a server's "try again in N
seconds" honoured up to 5 minutes (bounded by the deadline). Beyond that the
caller should persist the message and try again later (RFC 5321 expects a
queue to retry for days; an in-process call is not a queue).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ._checks import check_count, check_seconds
from ._replies import Outcome
from ._result import RecipientStatus

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how a send is retried. Immutable; use :meth:`replace` for variants.

    Only transient and throttled failures are retried, and only to the recipients
    still pending: a recipient that got a 250 is never sent the message again.
    Permanent, auth/config and quota failures are never retried; ambiguous ones
    (link lost after the final dot) only with ``retry_ambiguous=True``, which
    resends the same bytes, Message-ID included, so receivers can deduplicate.
    """

    attempts: int = 5
    """Total tries, the first included (1 = no retry)."""
    deadline: float = 120.0
    """Seconds from the first try after which no new try starts (waits included)."""
    initial_wait: float = 1.0
    """The first backoff, doubled after each try."""
    max_wait: float = 30.0
    """The largest exponential backoff."""
    jitter: float = 1.0
    """Up to this many random seconds added to each backoff, so clients spread out."""
    throttled_wait: float = 30.0
    """The least wait after a throttling reply (rate limit, 4.7.x) without a hint."""
    max_hint: float = 300.0
    """The longest server-suggested wait ("try again in N seconds") honoured."""
    retry_ambiguous: bool = False
    """Resend when the link broke after the final dot (may deliver twice)."""

    def __post_init__(self) -> None:
        check_count("attempts", self.attempts, owner="RetryPolicy.", why="1 = no retry")
        # The deadline must leave room for the first try; a wait of 0 is "do not wait"
        # (without_waits() for tests), so the waits may be zero.
        check_seconds("deadline", self.deadline, owner="RetryPolicy.", why="")
        for name in ("initial_wait", "max_wait", "jitter", "throttled_wait", "max_hint"):
            check_seconds(name, getattr(self, name), allow_zero=True, owner="RetryPolicy.", why="")

    @classmethod
    def never(cls) -> RetryPolicy:
        """One attempt, no retry."""
        return cls(attempts=1)

    def without_waits(self) -> RetryPolicy:
        """The same policy with every wait set to zero: for tests."""
        return replace(
            self, initial_wait=0.0, max_wait=0.0, jitter=0.0, throttled_wait=0.0, max_hint=0.0
        )

    def replace(self, **changes: object) -> RetryPolicy:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # -- pure decisions ------------------------------------------------------------------

    def should_retry(self, status: RecipientStatus) -> bool:
        """Whether ``status`` makes its recipient worth another attempt."""
        if status.outcome in (Outcome.TRANSIENT, Outcome.THROTTLED):
            return status.retryable
        return status.outcome is Outcome.AMBIGUOUS and self.retry_ambiguous

    def backoff(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Exponential backoff with jitter after try number ``attempt`` (1-based)."""
        exponential = min(self.max_wait, self.initial_wait * 2.0 ** (attempt - 1))
        jitter = (rng or random).uniform(0.0, self.jitter) if self.jitter else 0.0
        return exponential + jitter

    def wait_before_next(
        self,
        attempt: int,
        pending: Iterable[RecipientStatus],
        *,
        rng: random.Random | None = None,
    ) -> float:
        """How long to wait after try ``attempt`` before retrying ``pending``.

        Recipients refused only because the transaction was too large ("452 too
        many recipients") go again at once. A server hint wins over the backoff,
        capped at ``max_hint``; a throttling reply waits at least ``throttled_wait``.
        """
        statuses = list(pending)
        if statuses and all(s.split for s in statuses):
            return 0.0
        hints = [s.delay_hint for s in statuses if s.delay_hint is not None]
        if hints:
            return min(max(hints), self.max_hint)
        wait = self.backoff(attempt, rng=rng)
        if any(s.outcome is Outcome.THROTTLED for s in statuses):
            wait = max(wait, self.throttled_wait)
        return wait

    def should_stop(self, attempt: int, elapsed: float, upcoming_wait: float) -> bool:
        """Stop after ``attempt`` tries, or when the next try would start past the deadline."""
        return attempt >= self.attempts or elapsed + upcoming_wait > self.deadline
