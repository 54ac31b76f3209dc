"""A worker's share of the outbox's shared limits: :class:`SharedLimits`.

:class:`~reliable_smtp.OutboxLimits` caps every worker of an outbox together,
through rows in its database (``limit_rows``): each transaction reserves its
place in the shared rate before it starts, a THROTTLED reply lowers that rate
for all, and a worker sends on at most as many connections as the shared
connection slots it leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .limits import OutboxLimits

__all__ = ["SharedLimits"]

logger = logging.getLogger("reliable_smtp")

_SLOTS = "connections"
"""The slot rows' name: the shared ``max_connections``."""


class SharedLimits:
    """The limits as one worker takes part in them.

    ``call`` runs a store method on the worker's database thread; ``wait`` sleeps
    unless the worker is stopped (a reservation's wait must not hold up a stop);
    ``limit_connections`` is told the number of slots held whenever a lease of them
    changes it (the worker's transport's :meth:`~reliable_smtp.Transport.limit_connections`).
    """

    def __init__(
        self,
        limits: OutboxLimits,
        *,
        store: Any,
        owner: str,
        concurrency: int,
        lease_seconds: float,
        poll_interval: float,
        call: Callable[..., Awaitable[Any]],
        clock: Callable[[], float],
        wait: Callable[[float], Awaitable[None]],
        limit_connections: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.limits = limits
        self._store = store
        self._owner = owner
        self._concurrency = concurrency
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._call = call
        self._clock = clock
        self._wait = wait
        self._limit_connections = limit_connections
        self._limiting: set[asyncio.Future[None]] = set()  # referenced until they end
        self.rates = {name: (rate, limits.burst_of(name)) for name, rate in limits.rates.items()}
        """Per limiter name, (configured messages/s, burst): what the store reserves on."""
        # Connection slots held (the shared max_connections); without that cap, all of them.
        self.slots = 0 if limits.max_connections is not None else concurrency
        self._slots_tried_at = float("-inf")

    async def acquire_slots(self) -> None:
        """Take (or renew) shared connection slots, up to ``concurrency``; at most once a
        poll interval while short of them (the heartbeat renews the ones held)."""
        total = self.limits.max_connections
        if total is None or self.slots >= self._concurrency:
            return
        now = self._clock()
        if now - self._slots_tried_at < self._poll_interval:
            return
        self._slots_tried_at = now
        try:
            self._held(await self._lease_slots(total, now))
        except Exception as exc:
            logger.warning(
                "outbox: taking connection slots failed (%s)",
                exc,
                extra={"event": "outbox_slots_failed"},
            )

    async def renew_slots(self) -> None:
        """Extend the lease of the slots held (the worker's heartbeat)."""
        total = self.limits.max_connections
        if total is None or not self.slots:
            return
        self._held(await self._lease_slots(total, self._clock()))

    def _held(self, slots: int) -> None:
        """Now ``slots`` are held: a change goes to the transport, which closes the
        connections beyond them (a lease that ran out during a stall lets another
        worker take its slots, while our connections would otherwise stay open)."""
        changed = slots != self.slots
        self.slots = slots
        if changed and self._limit_connections is not None:
            # In a task of its own: closing connections (QUIT, seconds on a slow server)
            # must hold up neither the claims nor the heartbeat's renewal of the entries.
            task = asyncio.ensure_future(self._limit(self._limit_connections, slots))
            self._limiting.add(task)
            task.add_done_callback(self._limiting.discard)

    @staticmethod
    async def _limit(limit_connections: Callable[[int], Awaitable[None]], slots: int) -> None:
        try:
            await limit_connections(slots)
        except Exception as exc:
            logger.warning(
                "outbox: closing the connections beyond %d slot(s) failed (%s)",
                slots,
                exc,
                extra={"event": "outbox_limit_connections_failed"},
            )

    async def _lease_slots(self, total: int, now: float) -> int:
        held: int = await self._call(
            self._store.acquire_slots,
            _SLOTS,
            self._owner,
            want=self._concurrency,
            total=total,
            lease_seconds=self._lease_seconds,
            now=now,
        )
        return held

    async def release_slots(self) -> None:
        """Give the slots back (the worker stops)."""
        if self.limits.max_connections is None or not self.slots:
            return
        with contextlib.suppress(Exception):  # they expire anyway
            await self._call(self._store.release_slots, _SLOTS, self._owner)
        self.slots = 0

    async def reserve(self) -> float:
        """Wait for this transaction's place in the shared rate; return when it was reserved."""
        now = self._clock()
        if self.rates:
            wait = await self._call(
                self._store.reserve, self.rates, now=now, cooldown=self.limits.cooldown
            )
            if wait > 0:
                await self._wait(wait)
                await asyncio.sleep(0)  # an injected sleep may not yield
        return now

    async def throttled(self, reserved_at: float) -> None:
        """A THROTTLED reply: lower the rate every worker of the outbox shares."""
        if not self.rates:
            return
        try:
            await self._call(
                self._store.throttle,
                self.rates,
                reserved_at=reserved_at,
                now=self._clock(),
                cooldown=self.limits.cooldown,
            )
        except Exception as exc:
            logger.warning(
                "outbox: lowering the shared rate failed (%s)",
                exc,
                extra={"event": "outbox_throttle_failed"},
            )
