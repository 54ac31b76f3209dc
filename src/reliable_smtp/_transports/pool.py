"""A small pool of connections: reuse, limits, health checks, clean shutdown.

This module owns :class:`ConnectionPool`. It knows nothing about SMTP: the
transport gives it callables to open, check (NOOP), close (QUIT), drop (close the
socket at once, no I/O) and test a connection, so it is tested with fake
connections and a fake clock.

Rules:

* at most ``size`` connections exist at once; waiting for one is bounded by
  ``acquire_timeout`` (:class:`PoolTimeoutError`);
* the most recently used idle connection is handed out first (warm TLS sessions);
* a connection is retired after ``max_messages`` messages, or when it has been
  idle longer than ``idle_timeout`` (closed when next looked at, or by ``aclose``);
* a connection idle longer than ``check_after`` is checked before reuse; one that
  fails the check, or that the caller reports as unusable, is closed and replaced;
* a connection the pool has taken out of its idle list is always either lent out,
  put back or closed - whatever is raised meanwhile, cancellation included. When
  the polite close (QUIT) itself is interrupted, the connection is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["ConnectionCounts", "ConnectionPool", "Lease", "PoolClosedError", "PoolTimeoutError"]

C = TypeVar("C")


class PoolTimeoutError(Exception):
    """No connection became free within ``acquire_timeout``."""


class PoolClosedError(Exception):
    """The pool was closed (``aclose``) while waiting for, or before asking for, a connection."""


@dataclass(slots=True)
class Lease(Generic[C]):
    """A connection lent out by the pool, with what the pool knows about it."""

    connection: C
    opened_at: float
    last_used: float
    messages: int = 0
    reused: bool = False
    """True when the connection had served an earlier lease (it may have gone stale)."""
    state: dict[str, object] = field(default_factory=dict)
    """Per-connection data for the owner (e.g. its rate-limit bucket)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionCounts:
    """How many connections a pool holds right now (a snapshot, for metrics)."""

    idle: int = 0
    """Open and waiting in the pool for the next message."""
    in_use: int = 0
    """Lent out: a message is being sent on it."""

    @property
    def open(self) -> int:
        return self.idle + self.in_use


class ConnectionPool(Generic[C]):
    """Connections for one transport on one event loop."""

    def __init__(
        self,
        *,
        size: int,
        max_messages: int,
        idle_timeout: float,
        check_after: float,
        acquire_timeout: float,
        open: Callable[[], Awaitable[C]],
        check: Callable[[C], Awaitable[bool]],
        close: Callable[[C], Awaitable[None]],
        drop: Callable[[C], None],
        alive: Callable[[C], bool],
        clock: Callable[[], float],
    ) -> None:
        self.size = size
        self.max_messages = max_messages
        self.idle_timeout = idle_timeout
        self.check_after = check_after
        self.acquire_timeout = acquire_timeout
        self._open = open
        self._check = check
        self._close = close
        self._drop = drop
        self._alive = alive
        self._clock = clock
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Lease[C]] = []
        self._leased: set[int] = set()
        self._closed = False
        self.opened = 0
        """How many connections this pool has opened (for tests and stats)."""

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def counts(self) -> ConnectionCounts:
        """Idle and lent-out connections now. A connection being opened is in neither
        (it is not open yet); an idle one the server closed counts until it is looked at.
        Read-only and lock-free: a metrics thread may read it while the loop runs."""
        return ConnectionCounts(idle=len(self._idle), in_use=len(self._leased))

    async def acquire(self, *, fresh: bool = False) -> Lease[C]:
        """A connection to use exclusively until :meth:`release`.

        ``fresh`` asks for a newly opened connection, never an idle one: after a
        pooled connection turned out to be dead, the next try must not depend on
        another idle one (it may have died the same way, or be put back by a
        concurrent send).
        """
        if self._closed:
            raise PoolClosedError("the connection pool is closed")
        try:
            await asyncio.wait_for(self._slots.acquire(), self.acquire_timeout)
        except asyncio.TimeoutError:
            raise PoolTimeoutError(
                f"all {self.size} connection(s) stayed busy for {self.acquire_timeout:g} s"
            ) from None
        try:
            if self._closed:
                raise PoolClosedError("the connection pool was closed while waiting")
            lease = None if fresh else await self._reuse()
            if lease is None:
                if fresh and self._idle and len(self._idle) + len(self._leased) >= self.size:
                    # Never more than ``size`` connections: make room by retiring the
                    # connection idle the longest.
                    await self._retire(self._idle.pop(0))
                connection = await self._open()
                self.opened += 1
                now = self._clock()
                lease = Lease(connection=connection, opened_at=now, last_used=now)
        except BaseException:
            self._slots.release()
            raise
        self._leased.add(id(lease))
        return lease

    async def _reuse(self) -> Lease[C] | None:
        while self._idle:
            lease = self._idle.pop()
            # From here until it is returned, ``lease`` is ours alone: close it on any
            # exception, cancellation included, or it outlives the pool (issue 11 B3).
            try:
                now = self._clock()
                idle_for = now - lease.last_used
                usable = self._alive(lease.connection) and idle_for <= self.idle_timeout
                if usable and idle_for > self.check_after:
                    usable = await self._check(lease.connection)
            except BaseException:
                self._drop_quietly(lease)
                raise
            if not usable:
                await self._retire(lease)
                continue
            lease.reused = True
            return lease
        return None

    async def release(self, lease: Lease[C], *, reusable: bool) -> None:
        """Give ``lease`` back; close its connection unless it can serve another message."""
        if id(lease) not in self._leased:
            raise RuntimeError("this lease was already released")
        self._leased.discard(id(lease))
        lease.last_used = self._clock()
        try:
            if (
                reusable
                and not self._closed
                and lease.messages < self.max_messages
                and self._alive(lease.connection)
            ):
                self._idle.append(lease)
            else:
                await self._retire(lease)
        finally:
            self._slots.release()

    async def _retire(self, lease: Lease[C]) -> None:
        # Closing is best effort (QUIT on a dead link fails); the socket goes anyway.
        try:
            await self._close(lease.connection)
        except Exception:
            self._drop_quietly(lease)
        except BaseException:
            # Cancelled (or interrupted) during QUIT: drop the socket, then go on.
            self._drop_quietly(lease)
            raise

    def _drop_quietly(self, lease: Lease[C]) -> None:
        with contextlib.suppress(Exception):
            self._drop(lease.connection)

    async def aclose(self) -> None:
        """Close the idle connections; leased ones are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        try:
            while idle:
                await self._retire(idle.pop())
        except BaseException:
            for lease in idle:
                self._drop_quietly(lease)
            raise
