"""How fast one SMTP transport sends: its :class:`~reliable_smtp.RateLimit` at work.

This module owns :class:`Pacing`, the rate-limit state of one
:class:`~.smtp.SMTPTransport` on one event loop (it is made afresh with each
connection pool): the per-connection token bucket (kept in the lease's state, so it
lives as long as the connection), the per-transport bucket, and the adaptive rate
that drops to ``throttle_factor`` of the rate actually sent at whenever a reply is
classified THROTTLED, and doubles back after each ``cooldown`` without one. The buckets and the
adaptive rate themselves are :mod:`reliable_smtp._ratelimit`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import DeliveryError
from .._hooks import note_session_event
from .._ratelimit import AdaptiveRate, RateLimit, TokenBucket
from .._replies import Outcome
from .._result import DeliveryReport
from .pool import Lease

logger = logging.getLogger("reliable_smtp")


class Pacing:
    """One transport's rate limits on one event loop: wait before each transaction,
    slow down when the server throttles."""

    def __init__(
        self,
        rate_limit: RateLimit,
        *,
        transport_name: str,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.rate_limit = rate_limit
        self._server = transport_name
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._transport_bucket: TokenBucket | None = None
        self._adaptive = AdaptiveRate(
            rate_limit.per_transport,
            factor=rate_limit.throttle_factor,
            cooldown=rate_limit.cooldown,
        )
        if rate_limit.per_transport is not None:
            self._transport_bucket = TokenBucket(
                rate_limit.per_transport, capacity=rate_limit.burst, now=now
            )

    @property
    def paced(self) -> bool:
        """Whether a rate limit is in force now: the next message may have to wait its turn."""
        return (
            self.rate_limit.per_connection is not None
            or self._adaptive.current(self._clock()) is not None
        )

    async def wait_turn(self, lease: Lease[Any]) -> None:
        """Sleep until both the connection's and the transport's rate allow a message."""
        limit = self.rate_limit
        now = self._clock()
        wait = 0.0
        if limit.per_connection is not None:
            bucket = lease.state.get("bucket")
            if not isinstance(bucket, TokenBucket):
                bucket = TokenBucket(limit.per_connection, capacity=limit.burst, now=now)
                lease.state["bucket"] = bucket
            wait = bucket.reserve(now)
        rate = self._adaptive.current(now)
        if rate is not None:
            if self._transport_bucket is None:
                self._transport_bucket = TokenBucket(rate, capacity=limit.burst, now=now)
            elif self._transport_bucket.rate != rate:
                self._transport_bucket.set_rate(rate, now)
            wait = max(wait, self._transport_bucket.reserve(now))
        self._adaptive.note_sent(now + wait)
        if wait > 0:
            note_session_event("rate_limit_wait", seconds=wait)
            await self._sleep(wait)

    def observe(self, report: DeliveryReport) -> None:
        """A transaction ended: slow down if any recipient was throttled."""
        if any(s.outcome is Outcome.THROTTLED for s in report.recipients.values()):
            self._throttled()

    def observe_error(self, error: DeliveryError) -> None:
        """A transaction failed: slow down if the server was throttling."""
        if error.outcome is Outcome.THROTTLED:
            self._throttled()

    def _throttled(self) -> None:
        now = self._clock()
        observed = self._adaptive.observed(now)
        rate = self._adaptive.on_throttled(now)
        logger.info(
            "%s is throttling: sending slowed to %.3g messages/s (was sending at %s); "
            "it doubles again every %g s without throttling",
            self._server,
            rate,
            f"{observed:.3g}/s" if observed > 0 else "an unmeasured rate",
            self.rate_limit.cooldown,
            extra={"server": self._server, "rate": rate, "observed_rate": observed},
        )
