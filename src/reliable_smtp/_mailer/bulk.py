"""Sending many messages at once: in input order (:func:`stream`) or as each ends
(:func:`as_completed`, yielding :class:`Completed`).

This module owns the window of sends in flight: at most ``concurrency`` at a time,
a bounded number of messages held, the input pulled lazily, one message's failure
never stopping the others, and an abandoned iteration cancelling its sends and
waiting until they have given their connections back. What one send comes to is
the caller's ``outcome_of`` (for :class:`~reliable_smtp.AsyncMailer`: send(), its
error returned rather than raised).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from .._errors import DeliveryError, ReliableSMTPError
from .._result import SendResult
from .values import AnyMessage, SendResultOrError

T = TypeVar("T")

OutcomeOf: TypeAlias = Callable[[AnyMessage], Awaitable[SendResultOrError]]
"""What one send comes to, its error returned rather than raised."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Completed:
    """One message's end, as :meth:`AsyncMailer.as_completed` yields it: which input, and how.

    ``index`` is the message's position in the input (from 0) and ``message`` the
    object given. As in :class:`~reliable_smtp.SendFinished`: ``error`` is what
    send() would have raised (``None`` when every recipient accepted the message) and
    ``result`` the :class:`~reliable_smtp.SendResult` - also when the send failed (the
    one the error carries), ``None`` only when nothing was tried (an invalid message,
    every recipient refused by the recipient policy).
    """

    index: int
    message: AnyMessage
    result: SendResult | None
    error: ReliableSMTPError | None

    @classmethod
    def of(cls, index: int, message: AnyMessage, ended: SendResultOrError) -> Completed:
        if isinstance(ended, SendResult):
            return cls(index=index, message=message, result=ended, error=None)
        result = ended.result if isinstance(ended, DeliveryError) else None
        return cls(index=index, message=message, result=result, error=ended)

    @property
    def ok(self) -> bool:
        """Every recipient accepted the message."""
        return self.error is None

    @property
    def result_or_error(self) -> SendResultOrError:
        """What :meth:`AsyncMailer.stream` would have yielded for this message."""
        if self.error is not None:
            return self.error
        assert self.result is not None  # one of the two is always set
        return self.result


async def stream(
    outcome_of: OutcomeOf,
    messages: Iterable[AnyMessage] | AsyncIterable[AnyMessage],
    *,
    concurrency: int,
) -> AsyncGenerator[SendResultOrError, None]:
    """Each message's ``outcome_of``, in input order (see :meth:`AsyncMailer.stream`)."""
    _check_concurrency(concurrency)
    slots = asyncio.Semaphore(concurrency)
    window: deque[asyncio.Task[SendResultOrError]] = deque()

    async def outcome(message: AnyMessage) -> SendResultOrError:
        async with slots:
            return await outcome_of(message)

    try:
        async for message in _aiter(messages):
            window.append(asyncio.create_task(outcome(message)))
            if len(window) >= 4 * concurrency:
                # Awaited while still in the window: if the consumer is cancelled
                # meanwhile, the clean-up below still waits for this send.
                sent = await window[0]
                window.popleft()
                yield sent
        while window:
            sent = await window[0]
            window.popleft()
            yield sent
    finally:
        await _cancel_and_wait(window)


async def as_completed(
    outcome_of: OutcomeOf,
    messages: Iterable[AnyMessage] | AsyncIterable[AnyMessage],
    *,
    concurrency: int,
) -> AsyncGenerator[Completed, None]:
    """Each message's ``outcome_of`` as it ends (see :meth:`AsyncMailer.as_completed`)."""
    _check_concurrency(concurrency)
    slots = asyncio.Semaphore(concurrency)
    # Twice the concurrency: a message is ready the moment a slot frees up, while
    # the consumer has not yet taken the results of those that just finished.
    window = 2 * concurrency
    held: dict[asyncio.Task[SendResultOrError], tuple[int, AnyMessage]] = {}

    async def outcome(message: AnyMessage) -> SendResultOrError:
        async with slots:
            return await outcome_of(message)

    inputs = _aiter(messages)
    pulled = 0
    exhausted = False
    broken: Exception | None = None  # what the input raised, once the sends it fed end
    try:
        while True:
            while not exhausted and len(held) < window:
                try:
                    message = await inputs.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                except Exception as exc:
                    # Sends already started may deliver: finish and report them
                    # before raising, so no message's fate is left unknown.
                    exhausted, broken = True, exc
                    break
                held[asyncio.create_task(outcome(message))] = (pulled, message)
                pulled += 1
            if not held:
                if broken is not None:
                    raise broken
                return
            finished, _ = await asyncio.wait(held, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(finished, key=lambda task: held[task][0]):
                # Taken out of ``held`` one at a time: if the consumer stops here,
                # the clean-up below still sees every task not yet yielded.
                index, message = held.pop(task)
                yield Completed.of(index, message, task.result())
    finally:
        await _cancel_and_wait(held)
        await inputs.aclose()


def _check_concurrency(concurrency: object) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")


async def _cancel_and_wait(tasks: Iterable[asyncio.Task[SendResultOrError]]) -> None:
    """Cancel the sends of an abandoned stream and wait until they have ended.

    Waiting lets the cancelled sends finish their clean-up (connections go back to
    the pool or are closed) before the caller goes on, e.g. to aclose().
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> Any:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
