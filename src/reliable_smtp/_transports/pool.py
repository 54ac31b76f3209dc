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
  the polite close (QUIT) itself is interrupted, the connection is dropped;
* a holder may hand its lease straight to the longest-waiting :meth:`acquire`
  (:meth:`hand_over`) with something still owed on the connection (an :class:`Owed`:
  for SMTP, the previous message's final reply). Such a lease is never idle, so it
  is never checked, reaped or closed by the pool; if its new holder lets it go before
  taking the debt over (cancelled while waiting, or released unused), the pool gives
  it back to the earlier holder (:meth:`Owed.give_back`), or drops it when that one is
  gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ._alarm import Alarm

__all__ = [
    "ConnectionCounts",
    "ConnectionPool",
    "Lease",
    "Owed",
    "PoolClosedError",
    "PoolTimeoutError",
]

C = TypeVar("C")


class PoolTimeoutError(Exception):
    """No connection became free within ``acquire_timeout``."""


class PoolClosedError(Exception):
    """The pool was closed (``aclose``) while waiting for, or before asking for, a connection."""


class Owed(Protocol):
    """What a lease handed over (:meth:`ConnectionPool.hand_over`) still owes its earlier holder."""

    def give_back(self) -> bool:
        """The new holder will not pay it: True if the earlier holder takes the lease back
        (and releases it itself later), False if that holder is gone."""


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
    owed: Owed | None = None
    """Set by :meth:`ConnectionPool.hand_over`: owed to the previous holder; the new one
    takes it (sets ``None``) before using the connection."""


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
        self._free = size  # slots nobody holds or has been granted
        # Tasks in acquire(), oldest first: a granted slot (None) or a handed-over lease
        # arrives in the future; ``fresh`` ones never get a handed-over lease. The last
        # item is the waiter's deadline (loop time): they come in order, so one alarm
        # for the oldest serves them all.
        self._waiters: deque[tuple[asyncio.Future[Lease[C] | None], bool, float]] = deque()
        self._alarm = Alarm(self._expire_due)
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
        handed = await self._slot(fresh)
        if handed is not None:
            return handed  # lent straight from its previous holder (hand_over)
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
            self._free_slot()
            raise
        self._leased.add(id(lease))
        return lease

    async def _slot(self, fresh: bool) -> Lease[C] | None:
        """Wait for a slot (``None``) or a lease handed over to this waiter."""
        if self._free and not self._waiters:
            self._free -= 1
            return None
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[Lease[C] | None] = loop.create_future()
        entry = (granted, fresh, loop.time() + self.acquire_timeout)
        self._waiters.append(entry)
        self._alarm.set(loop, self._waiters[0][2])
        try:
            return await granted
        except BaseException:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                # Granted, then cancelled before this task ran again: pass it on.
                lease = granted.result()
                if lease is None:
                    self._free_slot()
                else:
                    self._let_go(lease)
            raise
        finally:
            if not self._waiters:
                self._alarm.clear()

    def _expire_due(self) -> None:
        """The oldest waiters' deadlines passed: they fail; the alarm moves to the next."""
        waiters = self._waiters
        loop = asyncio.get_running_loop()
        now = loop.time()
        while waiters:
            granted, _, deadline = waiters[0]
            if granted.done():
                waiters.popleft()
                continue
            if deadline > now:
                self._alarm.set(loop, deadline)
                return
            waiters.popleft()
            granted.set_exception(
                PoolTimeoutError(
                    f"all {self.size} connection(s) stayed busy for {self.acquire_timeout:g} s"
                )
            )

    def _free_slot(self) -> None:
        """A slot is free: to the longest waiter, else back to the count."""
        if self._free < 0:
            self._free += 1  # shrunk (resize) while it was held: it goes, nobody gets it
            return
        while self._waiters:
            granted, _, _ = self._waiters.popleft()
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1

    @property
    def waiting(self) -> bool:
        """Whether a task waits in :meth:`acquire` that :meth:`hand_over` could serve."""
        return any(not fresh and not granted.done() for granted, fresh, _ in self._waiters)

    def hand_over(self, lease: Lease[C], owed: Owed) -> bool:
        """Lend ``lease`` straight to the longest-waiting :meth:`acquire`, with ``owed``.

        False - and the caller keeps the lease - when nobody waits (a ``fresh`` waiter
        wants a new connection and does not count), or when the lease could not be
        put back anyway (pool closed, ``max_messages`` reached, connection gone). The
        lease never passes through the idle list: no check, no reaping, no QUIT.
        """
        if (
            self._closed
            or self._free < 0  # shrunk (resize): this connection is one too many
            or lease.messages >= self.max_messages
            or not self._alive(lease.connection)
        ):
            return False
        for entry in self._waiters:
            granted, fresh, _ = entry
            if fresh or granted.done():
                continue
            self._waiters.remove(entry)
            lease.owed = owed
            lease.reused = True
            lease.last_used = self._clock()
            granted.set_result(lease)
            return True
        return False

    def _let_go(self, lease: Lease[C]) -> None:
        """A handed-over lease its new holder will not use: back to the earlier holder."""
        owed, lease.owed = lease.owed, None
        if owed is not None and owed.give_back():
            return  # the earlier holder has it again and releases it itself
        # Nobody will take what is owed: the connection cannot be trusted to be in step.
        self._leased.discard(id(lease))
        self._drop_quietly(lease)
        self._free_slot()

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
        if lease.owed is not None:
            self._let_go(lease)  # handed over, released before the debt was taken over
            return
        self._leased.discard(id(lease))
        lease.last_used = self._clock()
        try:
            if (
                reusable
                and not self._closed
                and self._free >= 0  # not one too many after a resize
                and lease.messages < self.max_messages
                and self._alive(lease.connection)
            ):
                self._idle.append(lease)
            else:
                await self._retire(lease)
        finally:
            self._free_slot()

    async def resize(self, size: int) -> None:
        """Hold at most ``size`` connections from now on (idle, lent out or being opened).

        Growing hands the new slots to waiting tasks at once. Shrinking closes idle
        connections beyond ``size`` now (QUIT, the longest idle first) and lent ones
        beyond it as they come back, and grants no slot until fewer than ``size`` are
        lent out.
        """
        if size < 0:
            raise ValueError(f"a pool holds at least 0 connections, got {size}")
        self._free += size - self.size
        self.size = size
        while self._free > 0 and self._waiters:
            self._free -= 1
            self._free_slot()
        # Idle connections hold no slot (a lease does); they count towards the size too.
        while self._idle and len(self._idle) + len(self._leased) > size:
            await self._retire(self._idle.pop(0))

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
        if not self._waiters:
            self._alarm.close()
        idle, self._idle = self._idle, []
        try:
            while idle:
                await self._retire(idle.pop())
        except BaseException:
            for lease in idle:
                self._drop_quietly(lease)
            raise
