"""ConnectionPool with fake connections and a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from reliable_smtp._transports.pool import ConnectionPool, PoolClosedError, PoolTimeoutError
from reliable_smtp.testing import FakeClock


@dataclass
class FakeConnection:
    number: int
    open: bool = True
    healthy: bool = True
    closed_by_pool: bool = False


@dataclass
class Factory:
    made: list[FakeConnection] = field(default_factory=list)
    checks: int = 0
    fail_next_open: bool = False

    async def open(self) -> FakeConnection:
        if self.fail_next_open:
            self.fail_next_open = False
            raise ConnectionRefusedError("nope")
        connection = FakeConnection(len(self.made) + 1)
        self.made.append(connection)
        return connection

    async def check(self, connection: FakeConnection) -> bool:
        self.checks += 1
        return connection.healthy

    async def close(self, connection: FakeConnection) -> None:
        connection.open = False
        connection.closed_by_pool = True

    def drop(self, connection: FakeConnection) -> None:
        connection.open = False
        connection.closed_by_pool = True


def make_pool(
    factory: Factory, clock: FakeClock, **options: object
) -> ConnectionPool[FakeConnection]:
    settings: dict[str, object] = {
        "size": 2,
        "max_messages": 3,
        "idle_timeout": 60.0,
        "check_after": 5.0,
        "acquire_timeout": 0.2,
        **options,
    }
    return ConnectionPool(
        open=factory.open,
        check=factory.check,
        close=factory.close,
        drop=factory.drop,
        alive=lambda c: c.open,
        clock=clock,
        **settings,  # type: ignore[arg-type]
    )


async def test_reuses_the_warmest_connection() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock)
    first = await pool.acquire()
    await pool.release(first, reusable=True)
    again = await pool.acquire()
    assert again.connection is first.connection
    assert again.reused
    assert pool.opened == 1


async def test_at_most_size_connections_and_waiting_is_bounded() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock)
    a, b = await pool.acquire(), await pool.acquire()
    with pytest.raises(PoolTimeoutError, match="2 connection"):
        await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.release(a, reusable=True)
    c = await waiter
    assert c.connection is a.connection
    await pool.release(b, reusable=True)
    await pool.release(c, reusable=True)
    assert pool.opened == 2


async def test_retired_after_max_messages() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, max_messages=2)
    lease = await pool.acquire()
    lease.messages = 2
    await pool.release(lease, reusable=True)
    assert lease.connection.closed_by_pool
    fresh = await pool.acquire()
    assert fresh.connection is not lease.connection


async def test_idle_too_long_is_closed_not_reused() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, idle_timeout=30.0)
    lease = await pool.acquire()
    await pool.release(lease, reusable=True)
    clock.advance(31.0)
    fresh = await pool.acquire()
    assert lease.connection.closed_by_pool
    assert fresh.connection is not lease.connection
    assert factory.checks == 0


async def test_checked_with_noop_after_sitting_idle() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, check_after=5.0)
    lease = await pool.acquire()
    await pool.release(lease, reusable=True)
    clock.advance(1.0)
    quick = await pool.acquire()
    assert factory.checks == 0  # recently used: no check
    await pool.release(quick, reusable=True)
    clock.advance(10.0)
    quick.connection.healthy = False
    replaced = await pool.acquire()
    assert factory.checks == 1
    assert replaced.connection is not quick.connection
    assert quick.connection.closed_by_pool


async def test_dead_or_unusable_connections_are_replaced() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock)
    lease = await pool.acquire()
    await pool.release(lease, reusable=False)
    assert lease.connection.closed_by_pool
    other = await pool.acquire()
    other.connection.open = False  # the server went away while it was idle
    await pool.release(other, reusable=True)
    third = await pool.acquire()
    assert third.connection.number == 3


async def test_a_failed_open_gives_the_slot_back() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, size=1)
    factory.fail_next_open = True
    with pytest.raises(ConnectionRefusedError):
        await pool.acquire()
    lease = await pool.acquire()  # the slot was released: no PoolTimeoutError
    assert lease.connection.number == 1


async def test_aclose_closes_idle_and_later_released_connections() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock)
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a, reusable=True)
    await pool.aclose()
    assert a.connection.closed_by_pool
    await pool.release(b, reusable=True)
    assert b.connection.closed_by_pool


async def test_double_release_is_a_bug() -> None:
    pool = make_pool(Factory(), FakeClock())
    lease = await pool.acquire()
    await pool.release(lease, reusable=True)
    with pytest.raises(RuntimeError, match="already released"):
        await pool.release(lease, reusable=True)


class HangingFactory(Factory):
    """A factory whose NOOP check or QUIT never answers (until cancelled)."""

    def __init__(self, *, hang_check: bool = False, hang_close: bool = False) -> None:
        super().__init__()
        self.hang_check = hang_check
        self.hang_close = hang_close
        self.dropped: list[FakeConnection] = []

    async def check(self, connection: FakeConnection) -> bool:
        if self.hang_check:
            await asyncio.Event().wait()
        return await super().check(connection)

    async def close(self, connection: FakeConnection) -> None:
        if self.hang_close:
            await asyncio.Event().wait()
        await super().close(connection)

    def drop(self, connection: FakeConnection) -> None:
        self.dropped.append(connection)
        super().drop(connection)


async def test_cancelled_during_the_health_check_the_connection_is_dropped() -> None:
    factory, clock = HangingFactory(hang_check=True), FakeClock()
    pool = make_pool(factory, clock, size=1, check_after=5.0)
    lease = await pool.acquire()
    await pool.release(lease, reusable=True)
    clock.advance(10.0)
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert factory.dropped == [lease.connection]  # not lost with the cancelled task
    assert pool.idle == 0
    factory.hang_check = False
    again = await pool.acquire()  # and the slot came back
    assert again.connection.number == 2


async def test_cancelled_during_quit_the_connection_is_dropped() -> None:
    factory, clock = HangingFactory(hang_close=True), FakeClock()
    pool = make_pool(factory, clock, size=1)
    lease = await pool.acquire()
    releasing = asyncio.create_task(pool.release(lease, reusable=False))
    await asyncio.sleep(0.01)
    releasing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await releasing
    assert factory.dropped == [lease.connection]
    factory.hang_close = False
    assert (await pool.acquire()).connection.number == 2


async def test_cancelled_aclose_drops_every_idle_connection() -> None:
    factory, clock = HangingFactory(hang_close=True), FakeClock()
    pool = make_pool(factory, clock, size=3)
    leases = [await pool.acquire() for _ in range(3)]
    for lease in leases:
        await pool.release(lease, reusable=True)
    closing = asyncio.create_task(pool.aclose())
    await asyncio.sleep(0.01)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert sorted(c.number for c in factory.dropped) == [1, 2, 3]


async def test_fresh_never_reuses_and_stays_within_size() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, size=2)
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a, reusable=True)
    await pool.release(b, reusable=True)
    fresh = await pool.acquire(fresh=True)
    assert not fresh.reused
    assert fresh.connection.number == 3
    # Two idle + one new would be three: the one idle the longest was retired.
    assert a.connection.closed_by_pool
    assert not b.connection.closed_by_pool
    assert pool.idle == 1


async def test_no_connection_is_opened_once_the_pool_is_closed() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, size=1, acquire_timeout=5.0)
    busy = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.aclose()
    await pool.release(busy, reusable=True)
    with pytest.raises(PoolClosedError):
        await waiter
    with pytest.raises(PoolClosedError):
        await pool.acquire()
    assert pool.opened == 1


async def test_each_waiter_times_out_at_its_own_deadline() -> None:
    # One alarm serves every waiter (they queue in deadline order): a waiter that came
    # later must not expire at an earlier waiter's deadline, nor be forgotten.
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, size=1, acquire_timeout=0.2)
    loop = asyncio.get_running_loop()
    held = await pool.acquire()
    first = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.1)
    second_started = loop.time()
    second = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.release(held, reusable=True)  # the first waiter gets it at 0.1 s
    lease = await first
    with pytest.raises(PoolTimeoutError):
        await second
    assert loop.time() - second_started >= 0.2 - 1e-3
    await pool.release(lease, reusable=True)


# -- resize: the outbox worker's share of the shared connection slots ---------------------


async def test_shrinking_closes_idle_connections_now_and_lent_ones_as_they_come_back() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, size=4, acquire_timeout=0.05)
    leases = [await pool.acquire() for _ in range(4)]
    for lease in leases[:3]:
        await pool.release(lease, reusable=True)
    assert (pool.counts.idle, pool.counts.in_use) == (3, 1)
    await pool.resize(2)
    # The two idle the longest are closed at once: one idle and one lent remain.
    assert [c.closed_by_pool for c in factory.made] == [True, True, False, False]
    assert (pool.counts.idle, pool.counts.in_use) == (1, 1)
    second = await pool.acquire()  # the idle one: two lent out, the new size
    assert second.connection is factory.made[2]
    with pytest.raises(PoolTimeoutError):
        await pool.acquire()  # no third connection
    await pool.resize(1)
    await pool.release(second, reusable=True)  # one too many: closed, not kept
    assert factory.made[2].closed_by_pool
    await pool.release(leases[3], reusable=True)  # within the size: kept
    assert (pool.counts.idle, pool.counts.in_use) == (1, 0)
    assert not factory.made[3].closed_by_pool
    assert pool.opened == 4


async def test_growing_hands_the_new_slots_to_waiting_tasks() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, size=1, acquire_timeout=5.0)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    await pool.resize(2)
    second = await asyncio.wait_for(waiter, 1)
    assert second.connection is not held.connection
    with pytest.raises(ValueError, match="at least 0"):
        await pool.resize(-1)


async def test_a_connection_lent_beyond_the_new_size_is_not_handed_over() -> None:
    factory, clock = Factory(), FakeClock()
    pool = make_pool(factory, clock, size=2, acquire_timeout=5.0)
    first, second = await pool.acquire(), await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0)
    await pool.resize(1)
    assert not pool.hand_over(first, object())  # two lent out for one slot: it must go
    await pool.release(first, reusable=True)
    assert first.connection.closed_by_pool
    await pool.release(second, reusable=True)  # now within the size: to the waiter
    third = await asyncio.wait_for(waiter, 1)
    assert third.connection is second.connection
