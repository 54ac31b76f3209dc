"""_transports/_alarm.py: one loop timer for a sequence of waits, each with its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reliable_smtp._transports._alarm import Alarm


def timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers armed on ``loop`` and not cancelled (asyncio's own heap)."""
    return sum(not handle.cancelled() for handle in loop._scheduled)  # type: ignore[attr-defined]


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``condition`` on the loop (a loaded machine may run timers late)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not condition():
        assert loop.time() < give_up, "the alarm never rang"
        await asyncio.sleep(0.005)


async def test_rings_once_its_deadline_passed_and_not_before() -> None:
    loop = asyncio.get_running_loop()
    rung: list[float] = []
    alarm = Alarm(lambda: rung.append(loop.time()))
    deadline = loop.time() + 0.05
    alarm.set(loop, deadline)
    await _until(lambda: bool(rung))
    await asyncio.sleep(0.05)  # and never again
    assert len(rung) == 1
    assert rung[0] >= deadline - 1e-3  # a late loop may ring it late, never early


async def test_a_cleared_alarm_does_not_ring() -> None:
    loop = asyncio.get_running_loop()
    rung: list[int] = []
    alarm = Alarm(lambda: rung.append(1))
    alarm.set(loop, loop.time() + 0.02)
    alarm.clear()
    await asyncio.sleep(0.05)
    assert rung == []


async def test_later_deadlines_reuse_the_armed_timer_and_ring_at_the_last_one() -> None:
    # The point of it: a wait per reply, most over long before their deadline, and
    # still only one timer on the loop.
    loop = asyncio.get_running_loop()
    rung: list[float] = []
    alarm = Alarm(lambda: rung.append(loop.time()))
    before = timers(loop)
    start = loop.time()
    for step in range(50):
        alarm.set(loop, start + 0.02 + step * 0.001)
        alarm.clear()
    alarm.set(loop, start + 0.08)
    assert timers(loop) == before + 1
    # The timer armed for 0.02 goes off, finds the deadline moved and re-arms for 0.08.
    await _until(lambda: bool(rung))
    assert len(rung) == 1
    assert rung[0] >= start + 0.08 - 1e-3


async def test_an_earlier_deadline_re_arms_earlier() -> None:
    loop = asyncio.get_running_loop()
    rung: list[float] = []
    alarm = Alarm(lambda: rung.append(loop.time()))
    start = loop.time()
    alarm.set(loop, start + 10.0)
    alarm.set(loop, start + 0.02)
    await _until(lambda: bool(rung))
    assert len(rung) == 1
    assert rung[0] < start + 1.0


async def test_close_cancels_the_timer() -> None:
    loop = asyncio.get_running_loop()
    alarm = Alarm(lambda: None)
    before = timers(loop)
    alarm.set(loop, loop.time() + 30.0)
    assert timers(loop) == before + 1
    alarm.close()
    assert timers(loop) == before
