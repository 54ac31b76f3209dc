"""Scoped switches for retry waits: tests that retry without waiting.

This module owns two context managers, each acting on one mailer and undone on
exit (never a process-wide switch, unlike a global testing flag):

* :func:`no_retry_waits` - the mailer retries as its policy says, but every wait
  is zero (the policy's :meth:`~reliable_smtp.RetryPolicy.without_waits`);
* :func:`recorded_waits` - the mailer keeps its policy, but sleeps on a
  :class:`~reliable_smtp.testing.FakeClock`: each wait is recorded, none is slept,
  and the deadline sees time pass as it would.

Both accept a :class:`~reliable_smtp.Mailer` or an :class:`~reliable_smtp.AsyncMailer`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

from .._mailer import AsyncMailer, Mailer
from .._retry import RetryPolicy
from ._clock import FakeClock

__all__ = ["no_retry_waits", "recorded_waits"]


def _engine(mailer: object) -> AsyncMailer:
    # A Mailer is a blocking shell around one AsyncMailer: the policy, the sleep and
    # the clock live there.
    if isinstance(mailer, Mailer):
        return mailer._async
    if isinstance(mailer, AsyncMailer):
        return mailer
    raise TypeError(
        f"expected a Mailer, an AsyncMailer or a RetryPolicy, got {type(mailer).__name__}"
    )


def no_retry_waits(
    target: Mailer | AsyncMailer | RetryPolicy,
) -> contextlib.AbstractContextManager[RetryPolicy]:
    """Remove the retry waits of ``target`` inside the ``with`` block; yield the policy used.

    ::

        with no_retry_waits(mailer):
            mailer.send(message)      # 451, then retried at once

    For a mailer, its policy is swapped for ``policy.without_waits()`` (same attempts,
    deadline and rules; every wait zero) and restored on exit - unless the block
    set another policy itself, which is then left alone. A
    :class:`~reliable_smtp.RetryPolicy` is immutable: the block just yields its
    no-wait copy, to pass to a mailer.
    """
    if isinstance(target, RetryPolicy):
        return contextlib.nullcontext(target.without_waits())
    return _swap_policy(_engine(target))


@contextlib.contextmanager
def _swap_policy(engine: AsyncMailer) -> Iterator[RetryPolicy]:
    original = engine.retry
    quick = original.without_waits()
    engine.retry = quick
    try:
        yield quick
    finally:
        if engine.retry is quick:
            engine.retry = original


@contextlib.contextmanager
def recorded_waits(
    mailer: Mailer | AsyncMailer, clock: FakeClock | None = None
) -> Iterator[FakeClock]:
    """Run ``mailer``'s retry waits on a fake clock inside the ``with`` block; yield it.

    ::

        with recorded_waits(mailer) as clock:
            mailer.send(message)      # 451, 451, then 250
        assert len(clock.sleeps) == 2

    The policy is unchanged, so ``clock.sleeps`` holds exactly the waits it asked
    for (backoff, jitter, server hints), and the deadline counts them. The mailer's
    own sleep and clock come back on exit.
    """
    engine = _engine(mailer)
    fake = clock if clock is not None else FakeClock()
    original: tuple[Callable[[float], Awaitable[None]], Callable[[], float]] = (
        engine._sleep,
        engine._clock,
    )
    engine._sleep, engine._clock = fake.sleep, fake
    try:
        yield fake
    finally:
        engine._sleep, engine._clock = original
