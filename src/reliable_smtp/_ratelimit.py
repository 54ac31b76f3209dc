"""Rate limits: token buckets, and a transport rate that backs off when throttled.

This module owns :class:`RateLimit` (the user's setting, an immutable value),
the token-bucket arithmetic (:func:`refill`, :func:`wait_for_token`) as pure
functions, :class:`TokenBucket` (the small mutable holder a connection or a
transport keeps) and :class:`AdaptiveRate` (the feedback rule below). Time is
always passed in; nothing here sleeps or reads a clock.

**The throttling rule.** When a server answers THROTTLED (a 4.7.x rate limit,
"too many messages", "try again later"), the transport's rate drops to
``throttle_factor`` (default one half) of the rate it was actually sending at,
or of the rate in force (the configured limit), whichever is lower - but never
below one message a minute (:data:`FLOOR_RATE`).

*The rate actually sent at* (:func:`observed_rate`) is measured over the time
the recent sends cover, not over a fixed window: the sends of the last
:data:`WINDOW` seconds, from the first of them to the last, plus one more
interval for the last send - the time since it, or the average interval between
the sends if that is longer. A steady burst of any length at ``r`` messages/s
therefore reads as ``r``, however short it was or however long the transport
was idle before it; a fixed window would read four messages at 20/s as 0.4/s
and drop the rate fifty-fold. With no send in the window, or no time covered,
nothing is measured and the rate in force is lowered instead.

*One lowering per episode.* Replies to messages already in flight when the rate
was lowered say nothing about the lowered rate, so a throttle lowers the rate
again only once a message has been sent since the previous lowering.

*Recovery.* After every ``cooldown`` seconds (default 10) without a lowering,
the rate doubles, until it is back at the configured limit (or unlimited, when
none was configured). A single throttle therefore costs one cool-down at half
speed: a per-second cap (Amazon SES, SendGrid, Postmark) has long cleared after
10 s, and transactional mail should not crawl for minutes because of one
"slow down". For a limit counted per minute (Microsoft 365: 30 messages a
minute), configure it (``RateLimit.per_minute(per_transport=30)``) so that it is
never hit, or raise ``cooldown`` to 60 so that recovery does not run into the
same minute's limit again.

The arithmetic is in pure functions (:func:`observed_rate`,
:func:`throttled_rate`, :func:`recovered_rate`) so that a rate shared across
processes (the outbox's workers) can apply the same rule to its own records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ._checks import check_count, check_rate, check_seconds
from ._errors import ConfigurationError

__all__ = [
    "AdaptiveRate",
    "RateLimit",
    "TokenBucket",
    "observed_rate",
    "recovered_rate",
    "refill",
    "throttled_rate",
    "wait_for_token",
]

#: The lowest rate throttling feedback may push a transport to: one message a minute.
FLOOR_RATE = 1.0 / 60.0
#: How far back sends count towards the "rate actually sent at".
WINDOW = 10.0
#: At most this many of the latest send times are kept to measure the rate actually sent.
KEPT_SENDS = 1024
#: Without a configured limit and without a measurement, a throttle starts from this rate.
UNMEASURED_RATE = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """How fast a transport may send, in messages per second.

    ``RateLimit(per_connection=2)`` - at most 2 messages/s on each connection;
    ``RateLimit.per_minute(per_transport=30)`` - Microsoft 365's 30 messages a
    minute across all connections. ``burst`` messages may go back to back after
    a quiet period.
    """

    per_connection: float | None = None
    per_transport: float | None = None
    burst: int = 1
    throttle_factor: float = 0.5
    """On a throttling reply, the rate is multiplied by this (0 < factor < 1)."""
    cooldown: float = 10.0
    """Seconds without a lowering after which a lowered rate doubles again."""

    def __post_init__(self) -> None:
        check_rate("per_connection", self.per_connection, owner="RateLimit.")
        check_rate("per_transport", self.per_transport, owner="RateLimit.")
        check_count("burst", self.burst, owner="RateLimit.", why="messages sent back to back")
        if not 0 < self.throttle_factor < 1:
            raise ConfigurationError(
                f"RateLimit.throttle_factor must be between 0 and 1, got {self.throttle_factor!r}",
                setting="throttle_factor",
            )
        check_seconds("cooldown", self.cooldown, owner="RateLimit.", why="")

    @classmethod
    def per_minute(
        cls,
        *,
        per_connection: float | None = None,
        per_transport: float | None = None,
        burst: int = 1,
        throttle_factor: float = 0.5,
        cooldown: float = 10.0,
    ) -> RateLimit:
        """The same limits given in messages per minute (``cooldown`` stays in seconds)."""
        return cls(
            per_connection=per_connection / 60 if per_connection is not None else None,
            per_transport=per_transport / 60 if per_transport is not None else None,
            burst=burst,
            throttle_factor=throttle_factor,
            cooldown=cooldown,
        )


def refill(tokens: float, *, capacity: float, rate: float, elapsed: float) -> float:
    """Tokens in a bucket after ``elapsed`` seconds of refilling at ``rate`` per second."""
    return min(capacity, tokens + max(0.0, elapsed) * rate)


def wait_for_token(tokens: float, *, rate: float) -> float:
    """Seconds until the bucket holds a whole token (0 when it already does)."""
    return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate


class TokenBucket:
    """A token bucket that hands out reservations: ``reserve(now)`` returns how long to wait.

    Reserving takes the token at once - the bucket may go into debt - so
    concurrent callers are served first come, first served, without a lock.
    """

    __slots__ = ("_tokens", "_updated", "capacity", "rate")

    def __init__(self, rate: float, *, capacity: int = 1, now: float) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self._tokens = float(capacity)
        self._updated = now

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before using it."""
        self._tokens = refill(
            self._tokens, capacity=self.capacity, rate=self.rate, elapsed=now - self._updated
        )
        self._updated = now
        wait = wait_for_token(self._tokens, rate=self.rate)
        self._tokens -= 1.0
        return wait

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate from ``now`` on (tokens earned so far are kept)."""
        self._tokens = refill(
            self._tokens, capacity=self.capacity, rate=self.rate, elapsed=now - self._updated
        )
        self._updated = now
        self.rate = rate


def observed_rate(sent: Iterable[float], now: float, *, window: float = WINDOW) -> float | None:
    """Messages per second actually sent, over the time the recent sends cover.

    ``sent`` are send times (any order; later than ``now`` means not sent yet).
    The sends of the last ``window`` seconds cover the span from the first to the
    last of them, plus one interval for the last send: the time since it, or the
    average interval between them if that is longer (a reply can come back at
    the very moment of its send). ``None`` when nothing can be measured.
    """
    recent = [t for t in sent if now - window <= t <= now]
    if not recent:
        return None
    first, last, count = min(recent), max(recent), len(recent)
    since_last = now - last
    average = (last - first) / (count - 1) if count > 1 else 0.0
    covered = (last - first) + max(since_last, average)
    if covered <= 0:
        return None
    return count / covered


def throttled_rate(current: float | None, observed: float | None, *, factor: float = 0.5) -> float:
    """The rate after a throttling reply.

    ``factor`` times the lower of the rate in force (``None``: unlimited) and the
    rate observed (``None``: not measured), never below :data:`FLOOR_RATE` - and
    never above the rate in force: a throttle does not speed up a configured
    rate that is below the floor.
    """
    candidates = [rate for rate in (current, observed) if rate is not None]
    base = min(candidates) if candidates else UNMEASURED_RATE
    lowered = max(FLOOR_RATE, base * factor)
    return lowered if current is None else min(current, lowered)


def recovered_rate(lowered: float, *, elapsed: float, cooldown: float) -> float:
    """A lowered rate after ``elapsed`` seconds without throttling: doubled every ``cooldown``."""
    steps = max(0, int(elapsed // cooldown))
    # Capped: past 2**64 any configured or observed rate has long been reached.
    return lowered * 2.0 ** min(steps, 64)


class AdaptiveRate:
    """The transport-wide rate: the configured limit, lowered while the server throttles.

    See the module docstring for the rule. ``current(now)`` is ``None`` when
    there is no limit at all.
    """

    __slots__ = ("_configured", "_cooldown", "_factor", "_lowered", "_sent", "_since")

    def __init__(self, configured: float | None, *, factor: float = 0.5, cooldown: float = 10.0):
        self._configured = configured
        self._factor = factor
        self._cooldown = cooldown
        self._lowered: float | None = None
        self._since = 0.0
        # The latest sends only: at thousands of messages a second, ten seconds of them
        # would be tens of thousands of floats (2.6 MB at 8,000/s), for a rate that the
        # last thousand measure as well (observed_rate: over the time they cover).
        self._sent: deque[float] = deque(maxlen=KEPT_SENDS)

    def note_sent(self, now: float) -> None:
        """Record a message handed to the server (to measure the rate actually used)."""
        self._sent.append(now)
        # Keep the last WINDOW seconds, and always the latest send (for "sent since").
        while len(self._sent) > 1 and self._sent[0] < now - WINDOW:
            self._sent.popleft()

    def observed(self, now: float) -> float:
        """Messages per second actually sent recently (:func:`observed_rate`; 0 if unmeasured)."""
        return observed_rate(self._sent, now) or 0.0

    def on_throttled(self, now: float) -> float:
        """Lower the rate after a throttling reply; return the rate now in force."""
        current = self.current(now)
        if self._lowered is not None and not any(self._since < t <= now for t in self._sent):
            # Nothing was sent since the last lowering: this reply is about a message
            # that was in flight then, not about the lowered rate.
            assert current is not None
            return current
        self._lowered = throttled_rate(current, observed_rate(self._sent, now), factor=self._factor)
        self._since = now
        return self._lowered

    def current(self, now: float) -> float | None:
        """The rate in force at ``now``: lowered and recovering, or the configured one."""
        if self._lowered is None:
            return self._configured
        elapsed = now - self._since
        recovered = recovered_rate(self._lowered, elapsed=elapsed, cooldown=self._cooldown)
        if recovered == self._lowered:
            return self._lowered
        if self._configured is not None:
            if recovered < self._configured:
                return recovered
        elif recovered <= 4 * max(self.observed(now), FLOOR_RATE):
            # No configured limit: recover until the rate is clearly not binding (well
            # above what we actually send), then drop it.
            return recovered
        self._lowered = None
        return self._configured
