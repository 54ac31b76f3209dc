"""One event-loop timer for a sequence of waits that each have their own deadline.

A wait with ``loop.call_later`` costs a ``TimerHandle``, a push onto the loop's timer
heap (compared in Python, ``TimerHandle.__lt__``) and a cancel - and almost every
wait of a mail transaction (a reply, a pool slot) ends long before its deadline, so
the timer only ever gets cancelled. An :class:`Alarm` keeps at most one timer armed:
:meth:`Alarm.set` arms a new one only when the deadline is earlier than the armed
one; a timer that goes off and finds the deadline moved later re-arms for it;
:meth:`Alarm.clear` costs nothing. Across a chain of messages on one connection this
is one timer instead of two or three per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Alarm"]


class Alarm:
    """Calls ``ring()`` once the deadline last :meth:`set` (and not cleared) has passed."""

    __slots__ = ("_deadline", "_handle", "_loop", "_ring", "_when")

    def __init__(self, ring: Callable[[], None]) -> None:
        self._ring = ring
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._when = 0.0

    def set(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Ring at ``deadline`` (``loop.time()`` clock), unless set again or cleared first."""
        self._deadline = deadline
        handle = self._handle
        if handle is not None:
            if self._loop is loop and self._when <= deadline:
                return  # armed earlier: it re-arms for this deadline when it goes off
            handle.cancel()
        self._arm(loop, deadline)

    def clear(self) -> None:
        """No deadline now; an armed timer stays, and does nothing when it goes off."""
        self._deadline = None

    def close(self) -> None:
        """Clear, and cancel the armed timer (the owner is done with waiting)."""
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._loop, self._when = loop, when
        self._handle = loop.call_at(when, self._go_off)

    def _go_off(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None or self._loop is None:
            return
        if deadline > self._when:
            self._arm(self._loop, deadline)  # set again, later, since this timer was armed
            return
        self._deadline = None
        self._ring()
