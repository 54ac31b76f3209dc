"""The facade applications use: :class:`AsyncMailer` and its synchronous twin :class:`Mailer`.

A send goes: render the message once -> derive the envelope (Bcc included,
deduplicated) -> try the transport -> keep every recipient's status -> retry
only the recipients still pending, as the :class:`~reliable_smtp.RetryPolicy`
allows -> return a :class:`~reliable_smtp.SendResult`, or raise the last
classified :class:`~reliable_smtp.DeliveryError` carrying that result.

Time (``clock``, ``sleep``) and randomness (``rng``) are injected so tests never
wait for real backoff.

:class:`Mailer` runs the same async core on one private event-loop thread (an
anyio blocking portal): started on first use, shared by every calling thread,
re-created in a child process after ``fork``, stopped by ``close()``. It never
calls ``asyncio.run()`` per send, so connections stay warm between sends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from dataclasses import dataclass, replace
from email.message import EmailMessage
from enum import Enum
from functools import partial
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

import anyio
from anyio.from_thread import BlockingPortal
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from ._hooks import HookSet, MailerHooks, SendWatch, _CallableHook
from .envelope import Envelope
from .errors import (
    AmbiguousDeliveryError,
    DeliveryError,
    ReliableSMTPError,
    TransportClosedError,
    error_for,
)
from .message import Message, render
from .replies import Outcome, Phase
from .result import Attempt, RecipientStatus, SendResult, missing_status
from .retry import RetryPolicy
from .transports.base import Transport
from .transports.smtp import TokenProvider
from .validation import RecipientPolicy

__all__ = ["AsyncMailer", "Completed", "Mailer", "SendOutcome", "SendResultOrError"]

logger = logging.getLogger("reliable_smtp")

T = TypeVar("T")
_HookFunction = TypeVar("_HookFunction", bound=Callable[[Any], Any])
AnyMessage: TypeAlias = "Message | EmailMessage"
SendResultOrError: TypeAlias = "SendResult | ReliableSMTPError"
"""What ``send_many`` returns per message: the result, or the error that send() would raise."""
SendOutcome: TypeAlias = SendResultOrError
"""Deprecated name of :data:`SendResultOrError` (it is not an :class:`~reliable_smtp.Outcome`);
kept for one release."""


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


class _Default(Enum):
    """Sentinel type: "argument not given, use the default" (``None`` means "off")."""

    DEFAULT = "default"


DEFAULT = _Default.DEFAULT


def _chunks(items: tuple[str, ...], size: int | None) -> Iterator[tuple[str, ...]]:
    if not size or len(items) <= size:
        yield items
        return
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _PendingRecipients(Exception):  # noqa: N818 - a control-flow signal for tenacity, not an error
    """Raised inside the retry loop when some recipients are worth another attempt."""

    def __init__(self, statuses: list[RecipientStatus]) -> None:
        super().__init__(f"{len(statuses)} recipients pending")
        self.statuses = statuses


class AsyncMailer:
    """Send messages through a transport, with retries and a per-recipient account.

    ``retry`` defaults to :class:`~reliable_smtp.RetryPolicy()`. ``sleep``,
    ``clock`` (monotonic seconds) and ``rng`` replace ``asyncio.sleep``,
    ``time.monotonic`` and ``random`` - for tests. ``message_id_domain`` is the
    right-hand side of generated Message-IDs (default: the sender's domain).
    ``recipient_policy`` checks every address before anything is sent (default:
    :class:`~reliable_smtp.RecipientPolicy()` - syntax, IDNA, deduplication, at
    most 100 recipients per transaction); ``None`` turns the checks off (e.g. for
    ``dev@localhost``, which email-validator refuses). ``hooks`` are told of every
    send, attempt and result (see :class:`~reliable_smtp.MailerHooks`, and
    :meth:`on_attempt` / :meth:`on_result` for plain callables).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        message_id_domain: str | None = None,
        recipient_policy: RecipientPolicy | _Default | None = DEFAULT,
        hooks: Iterable[MailerHooks | object] = (),
    ) -> None:
        if not isinstance(transport, Transport):
            raise TypeError(
                f"transport must be a reliable_smtp Transport, got {type(transport).__name__}"
            )
        self.transport = transport
        self.retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self._clock = clock or time.monotonic
        self._rng = rng or random.Random()
        self._message_id_domain = message_id_domain
        self.recipient_policy: RecipientPolicy | None = (
            RecipientPolicy() if recipient_policy is DEFAULT else recipient_policy
        )
        self._closed = False
        self.hooks = HookSet(hooks)

    def add_hook(self, hook: MailerHooks | object) -> None:
        """Register a :class:`~reliable_smtp.MailerHooks` (any object with some of its methods)."""
        self.hooks.add(hook)

    def on_attempt(self, function: _HookFunction) -> _HookFunction:
        """Call ``function(AttemptFinished)`` after each attempt (sync or async; a decorator)."""
        self.hooks.add(_CallableHook("on_attempt", function))
        return function

    def on_result(self, function: _HookFunction) -> _HookFunction:
        """Call ``function(SendFinished)`` once per send, when it ends (sync or async)."""
        self.hooks.add(_CallableHook("on_result", function))
        return function

    @classmethod
    def from_env(
        cls,
        *,
        oauth_token_provider: TokenProvider | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **settings: Any,
    ) -> AsyncMailer:
        """A mailer configured from ``RELIABLE_SMTP_*`` variables (and ``.env``).

        Keyword arguments override the environment; see
        :class:`~reliable_smtp.MailerSettings` for the names. ``ssl_context`` (SMTP)
        replaces the one built from ``RELIABLE_SMTP_CA_FILE``.
        """
        transport, retry = _configured(oauth_token_provider, ssl_context, settings)
        return cls(transport, retry=retry)

    # -- sending -------------------------------------------------------------------------

    async def send(self, message: AnyMessage, *, envelope: Envelope | None = None) -> SendResult:
        """Send one message; return its result when every recipient accepted it.

        Raises :class:`~reliable_smtp.InvalidMessageError` before anything is
        sent if the message is malformed, or a :class:`~reliable_smtp.DeliveryError`
        (with ``.result``) when any recipient did not get it. ``envelope``
        overrides the one derived from the message (MAIL FROM / RCPT TO).
        """
        if self._closed:
            raise TransportClosedError("this mailer is closed; create a new one to send")
        watch = self.hooks.watch(message)
        try:
            rendered = render(message, domain=self._message_id_domain)
            if envelope is None:
                envelope = Envelope.build(rendered.sender, rendered.recipients)
            refused: dict[str, RecipientStatus] = {}
            chunk_size: int | None = None
            policy = self.recipient_policy
            if policy is not None:
                # Raises RecipientsRejectedError (nothing sent) unless the policy skips.
                checked = await policy.acheck(envelope.sender, envelope.recipients)
                envelope = checked.envelope()
                refused = checked.refused_statuses(server="recipient-policy")
                chunk_size = policy.max_recipients_per_transaction
            return await self._deliver(
                envelope,
                rendered.content,
                rendered.message_id,
                refused=refused,
                chunk_size=chunk_size,
                watch=watch,
            )
        except BaseException as exc:
            # Invalid, refused by the policy, a bug, cancelled: the hooks still get the end
            # (a no-op when _deliver already reported it).
            await watch.finish(getattr(exc, "result", None), exc, now=self._clock())
            raise

    async def send_many(
        self,
        messages: Iterable[AnyMessage] | AsyncIterable[AnyMessage],
        *,
        concurrency: int = 4,
    ) -> list[SendResultOrError]:
        """Send every message; return, in order, a result or an error for each.

        One message's failure never stops the others. At most ``concurrency``
        sends are in flight, and messages are pulled from the (async) iterable as
        slots free up, so a generator of any length is consumed lazily. For very
        large batches use :meth:`stream`, which does not keep every result.
        """
        return [outcome async for outcome in self.stream(messages, concurrency=concurrency)]

    async def stream(
        self,
        messages: Iterable[AnyMessage] | AsyncIterable[AnyMessage],
        *,
        concurrency: int = 4,
    ) -> AsyncGenerator[SendResultOrError, None]:
        """Send every message, yielding each one's result or error in order as it is known.

        Memory stays flat however many messages there are: at most ``concurrency``
        sends are in flight and at most ``4 * concurrency`` messages are held
        (sent or waiting for an earlier one to finish). Stopping the iteration
        cancels the sends not yet finished, and waits until they have given their
        connections back. An exception that is not one of the library's (a bug) is
        that message's :class:`~reliable_smtp.AmbiguousDeliveryError` - logged with
        its traceback, kept as ``__cause__`` - and the other messages go on.

        Input order has a price: one slow message holds back every result after it
        (and, once ``4 * concurrency`` are waiting, new sends). When the order does
        not matter, :meth:`as_completed` yields each result as soon as it is known.
        """
        _check_concurrency(concurrency)
        slots = asyncio.Semaphore(concurrency)
        window: deque[asyncio.Task[SendResultOrError]] = deque()

        async def outcome(message: AnyMessage) -> SendResultOrError:
            async with slots:
                return await self._outcome(message)

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
        self,
        messages: Iterable[AnyMessage] | AsyncIterable[AnyMessage],
        *,
        concurrency: int = 4,
    ) -> AsyncGenerator[Completed, None]:
        """Send every message, yielding each one's :class:`Completed` as soon as it ends.

        :meth:`stream` without the input order, so a slow message (a greylisting
        server, a long timeout, retries with backoff) never holds back the others:
        each value says which input it is for (``index`` from 0, the ``message``
        itself), its ``result`` and its ``error`` (what send() would raise, if anything).
        The same guarantees as :meth:`stream`: at most ``concurrency`` sends in
        flight and at most ``2 * concurrency`` messages held (in flight, waiting for
        a slot, or finished and not yet taken), so memory stays flat; one message's
        failure, even a foreign exception, never stops the others; stopping the
        iteration cancels the unfinished sends and waits until they have given their
        connections back. Messages finishing together come in input order. If the input
        raises, no more messages are taken; the sends already started end and are
        yielded, then the input's exception is raised.
        """
        _check_concurrency(concurrency)
        slots = asyncio.Semaphore(concurrency)
        # Twice the concurrency: a message is ready the moment a slot frees up, while
        # the consumer has not yet taken the results of those that just finished.
        window = 2 * concurrency
        held: dict[asyncio.Task[SendResultOrError], tuple[int, AnyMessage]] = {}

        async def outcome(message: AnyMessage) -> SendResultOrError:
            async with slots:
                return await self._outcome(message)

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

    async def _outcome(self, message: AnyMessage) -> SendResultOrError:
        """send(), its error returned rather than raised (for send_many, stream, as_completed)."""
        try:
            return await self.send(message)
        except ReliableSMTPError as error:
            return error
        except Exception as exc:
            # One message's bug must not end the stream and cancel the sends in
            # flight: it becomes that message's (ambiguous, logged) outcome.
            return _unexpected(exc, self.transport.name, "while sending")

    async def aclose(self) -> None:
        """Close the transport (QUIT on open connections). Closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncMailer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the retry loop ------------------------------------------------------------------

    async def _deliver(
        self,
        envelope: Envelope,
        content: bytes,
        message_id: str,
        *,
        refused: Mapping[str, RecipientStatus],
        chunk_size: int | None,
        watch: SendWatch | None = None,
        policy: RetryPolicy | None = None,
    ) -> SendResult:
        # ``policy`` overrides ``self.retry`` for one call: the outbox worker makes one
        # attempt per claim (the outbox schedule retries) and only resends 452 splits.
        policy = policy or self.retry
        started = self._clock()
        if watch is None:
            watch = self.hooks.watch()
        await watch.started(message_id, envelope, self.transport, now=started)
        statuses: dict[str, RecipientStatus] = {}
        tries: dict[str, int] = dict.fromkeys(envelope.recipients, 0)
        attempts: list[Attempt] = []
        pending: list[str] = list(envelope.recipients)
        last_error: DeliveryError | None = None

        async def attempt_once() -> None:
            nonlocal last_error, pending
            targets = envelope.only(pending)
            hooked = await watch.attempt_started(len(attempts) + 1, targets.recipients)
            begun, begun_wall = self._clock(), time.time()
            last_error = None
            fresh: dict[str, RecipientStatus] = {}
            # Servers must take 100 recipients per transaction (RFC 5321 §4.5.3.1.8);
            # the policy may ask for fewer. Each chunk is its own transaction.
            for chunk in _chunks(targets.recipients, chunk_size):
                part = targets.only(chunk)
                try:
                    try:
                        report = await self.transport.deliver(part, content)
                    except ReliableSMTPError:
                        raise
                    except Exception as exc:  # the transport broke its contract
                        raise _unexpected(
                            exc, self.transport.name, f"from transport {self.transport.name}"
                        ) from exc
                    fresh.update(report.recipients)
                except DeliveryError as error:
                    last_error = error
                    fresh.update(
                        (
                            r,
                            RecipientStatus.from_error(
                                r, error, transport_name=error.transport_name or self.transport.name
                            ),
                        )
                        for r in part.recipients
                    )
            for recipient in targets.recipients:
                tries[recipient] += 1
                status = fresh.get(recipient) or missing_status(recipient, self.transport.name)
                statuses[recipient] = replace(status, attempts=tries[recipient])
            attempts.append(
                _attempt_record(
                    len(attempts) + 1, begun_wall, self._clock() - begun, targets, fresh, last_error
                )
            )
            pending = [r for r in targets.recipients if policy.should_retry(statuses[r])]
            _log_event("send", message_id, attempts[-1], pending=pending)
            await watch.attempt_finished(
                hooked, attempts[-1], targets.recipients, statuses, pending
            )
            if pending:
                raise _PendingRecipients([statuses[r] for r in pending])

        def wait(state: RetryCallState) -> float:
            signal = state.outcome.exception() if state.outcome else None
            if not isinstance(signal, _PendingRecipients):
                return 0.0
            delay = policy.wait_before_next(state.attempt_number, signal.statuses, rng=self._rng)
            attempts[-1] = replace(attempts[-1], delay_after=delay)
            return delay

        def before_sleep(state: RetryCallState) -> None:
            _log_event(
                "retry", message_id, attempts[-1], pending=pending, delay=attempts[-1].delay_after
            )

        def stop(state: RetryCallState) -> bool:
            upcoming = state.upcoming_sleep or 0.0
            halt = policy.should_stop(state.attempt_number, self._clock() - started, upcoming)
            if halt:
                attempts[-1] = replace(attempts[-1], delay_after=None)
            return halt

        try:
            # Most sends succeed at once; tenacity is only set up when they do not (it
            # costs ~0.1 ms per send, a quarter of the client's CPU on a fast link).
            await attempt_once()
        except _PendingRecipients as first_failure:
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(_PendingRecipients),
                wait=wait,
                stop=stop,
                sleep=self._sleep,
                before_sleep=before_sleep,
                reraise=True,
            )
            replayed = False
            try:
                async for attempt in retrying:
                    with attempt:
                        if not replayed:
                            # Attempt 1 already ran: hand its outcome to tenacity, which
                            # decides on the wait and whether to go on, as for any other.
                            replayed = True
                            raise first_failure
                        await attempt_once()
            except _PendingRecipients:
                pass  # gave up: the statuses say why

        result = SendResult(
            message_id=message_id,
            envelope=envelope,
            recipients={**{r: statuses[r] for r in envelope.recipients}, **refused},
            attempts=tuple(attempts),
            elapsed=self._clock() - started,
            transport_name=self.transport.name,
        )
        if result.ok:
            await watch.finish(result, None, now=self._clock())
            return result
        _log_event(
            "give_up", message_id, attempts[-1], pending=result.rejected, level=logging.WARNING
        )
        error = _final_error(result, last_error)
        await watch.finish(result, error, now=self._clock())
        raise error


def _configured(
    oauth_token_provider: TokenProvider | None,
    ssl_context: ssl.SSLContext | None,
    settings: dict[str, Any],
) -> tuple[Transport, RetryPolicy]:
    """Transport and retry policy from ``MailerSettings(**settings)`` (the environment)."""
    from .settings import MailerSettings  # pydantic-settings only when asked for

    config = MailerSettings(**settings)
    transport = config.build_transport(
        oauth_token_provider=oauth_token_provider, ssl_context=ssl_context
    )
    return transport, config.retry_policy()


def _attempt_record(
    number: int,
    started_at: float,
    duration: float,
    targets: Envelope,
    fresh: dict[str, RecipientStatus],
    error: DeliveryError | None,
) -> Attempt:
    failing = [s for s in fresh.values() if s.outcome is not Outcome.SENT]
    first = failing[0] if failing else next(iter(fresh.values()), None)
    if not failing:
        outcome = Outcome.SENT
    elif error is not None:
        outcome = error.outcome
    else:
        outcome = first.outcome if first else Outcome.PERMANENT
    return Attempt(
        number=number,
        started_at=started_at,
        duration=duration,
        recipients=targets.recipients,
        outcome=outcome,
        phase=error.phase if error is not None else (first.phase if first else None),
        reply=error.reply if error is not None else (first.reply if first else None),
        error=str(error) if error is not None else None,
    )


def _log_event(
    event: str,
    message_id: str,
    attempt: Attempt,
    *,
    pending: Sequence[str] = (),
    delay: float | None = None,
    level: int = logging.INFO,
) -> None:
    """One structured record per send attempt, retry and give-up (fields in ``extra``)."""
    if not logger.isEnabledFor(level):
        return
    reply = attempt.reply
    failing = pending[0] if pending else None
    logger.log(
        level,
        "%s %s attempt %d: %s%s%s",
        event,
        message_id,
        attempt.number,
        attempt.outcome.value,
        f", {len(pending)} recipient(s) pending" if pending else "",
        f", next try in {delay:.3g} s" if delay is not None else "",
        extra={
            "event": event,
            "message_id": message_id,
            "attempt": attempt.number,
            "outcome": attempt.outcome.value,
            "phase": attempt.phase.value if attempt.phase else None,
            "code": reply.code if reply else None,
            "enhanced_code": reply.enhanced_code if reply else None,
            "recipient": failing,
            "recipients": attempt.recipients,
            "pending": len(pending),
            "delay": delay,
        },
    )


#: The class ``send()`` raises when recipients failed in different ways: the first of
#: these outcomes that any recipient has. Ambiguous first: a caller who re-queues on
#: ``TransientError`` must never be told "retry" while a recipient may have the message.
#: Then what needs a person (credentials, TLS, sender identity), then what clears with
#: time (throttled before transient: the longer wait is right for the whole message),
#: and permanent last, because only when every failure is permanent is giving up right.
FAILURE_PRECEDENCE: tuple[Outcome, ...] = (
    Outcome.AMBIGUOUS,
    Outcome.AUTH_OR_CONFIG,
    Outcome.THROTTLED,
    Outcome.TRANSIENT,
    Outcome.PERMANENT,
)


def _final_error(result: SendResult, last_error: DeliveryError | None) -> DeliveryError:
    """The error ``send()`` raises, carrying ``result``: its class is the failed recipients'
    outcome that comes first in :data:`FAILURE_PRECEDENCE`."""
    failed = [result.recipients[r] for r in result.rejected]
    total = len(result.recipients)
    top = min(failed, key=lambda s: FAILURE_PRECEDENCE.index(s.outcome)).outcome
    if last_error is not None and all(
        s.outcome is last_error.outcome
        and s.reply == last_error.reply
        and s.phase is (last_error.phase or Phase.CONNECT)
        for s in failed
    ):
        # The whole last attempt failed the same way (connect, AUTH, MAIL...): that error
        # is the story; give it the result.
        return last_error.with_result(result)
    # Otherwise the first recipient of the top outcome tells it: its status carries the
    # verdict, so the class (ProtocolError for a 500 5.5.1, ...) follows from it.
    first = next(s for s in failed if s.outcome is top)
    error = error_for(
        first.verdict,
        _failure_summary(result.message_id, failed, total),
        reply=first.reply,
        phase=first.phase,
        recipient=first.recipient,
        transport_name=first.transport_name or None,
    )
    return error.with_result(result)


def _unexpected(exc: Exception, server: str, where: str) -> AmbiguousDeliveryError:
    """A foreign exception from a transport or the mailer: a bug, kept visible, never a crash.

    How far the send got is unknown, so the message may have been delivered: it is
    reported ambiguous (never resent automatically), the traceback is logged at ERROR
    and kept as ``__cause__``.
    """
    logger.error(
        "unexpected %s %s (a bug in reliable-smtp or in the transport; please report it)",
        type(exc).__name__,
        where,
        exc_info=exc,
        extra={"server": server},
    )
    error = AmbiguousDeliveryError(
        f"unexpected {type(exc).__name__} {where}: {exc}",
        phase=Phase.DATA_END,
        transport_name=server,
        explanation="an error the library did not expect (a bug: please report it with the "
        "logged traceback); the message may or may not have been sent, so it is not resent "
        "automatically, to avoid a duplicate",
    )
    error.__cause__ = exc
    return error


def _failure_summary(message_id: str, failed: list[RecipientStatus], total: int) -> str:
    """The headline of the error ``send()`` raises; it never contradicts the statuses.

    An AMBIGUOUS recipient (the link broke after the final dot) may have the message,
    so the headline says "may have been delivered", never "was not delivered".
    """
    recipients = f"recipient{'s' * (total != 1)}"
    ambiguous = sum(s.outcome is Outcome.AMBIGUOUS for s in failed)
    if not ambiguous:
        return f"message {message_id} was not delivered to {len(failed)} of {total} {recipients}"
    summary = (
        f"message {message_id} may have been delivered to {ambiguous} of {total} {recipients} "
        "(the server may have it: do not resend blindly)"
    )
    others = len(failed) - ambiguous
    if others:
        summary += f"; it was not delivered to {others} other{'s' * (others != 1)}"
    return summary


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


class _PortalThread:
    """One event loop in a daemon thread, reached through an anyio blocking portal.

    A daemon thread, unlike anyio's ``start_blocking_portal``, never keeps the
    interpreter from exiting when a mailer was not closed.
    """

    def __init__(self) -> None:
        ready: Future[BlockingPortal] = Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve, backend="asyncio")
            except BaseException as exc:  # pragma: no cover - start-up failure
                if not ready.done():
                    ready.set_exception(exc)

        self.thread = threading.Thread(target=run, name="reliable-smtp-mailer", daemon=True)
        self.thread.start()
        self.portal = ready.result(timeout=30)
        self.pid = os.getpid()

    def call(self, func: Callable[[], Awaitable[T]]) -> T:
        return self.portal.call(func)

    def stop(self) -> None:
        self.portal.call(self.portal.stop)
        self.thread.join(timeout=30)


class Mailer:
    """The synchronous mailer: the same methods as :class:`AsyncMailer`, blocking.

    Safe to share between threads and to call from code running inside another
    event loop's thread (it never touches the caller's loop). Use it as a context
    manager, or call :meth:`close` - that sends QUIT and stops the private loop.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        message_id_domain: str | None = None,
        recipient_policy: RecipientPolicy | _Default | None = DEFAULT,
        hooks: Iterable[MailerHooks | object] = (),
    ) -> None:
        self._async = AsyncMailer(
            transport,
            retry=retry,
            sleep=sleep,
            clock=clock,
            rng=rng,
            message_id_domain=message_id_domain,
            recipient_policy=recipient_policy,
            hooks=hooks,
        )
        self._runner: _PortalThread | None = None
        self._guard = threading.Lock()
        self._closed = False

    @classmethod
    def from_env(
        cls,
        *,
        oauth_token_provider: TokenProvider | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **settings: Any,
    ) -> Mailer:
        """A mailer configured from ``RELIABLE_SMTP_*`` variables.

        See :meth:`AsyncMailer.from_env`.
        """
        transport, retry = _configured(oauth_token_provider, ssl_context, settings)
        return cls(transport, retry=retry)

    @property
    def transport(self) -> Transport:
        return self._async.transport

    @property
    def hooks(self) -> HookSet:
        """The hooks; they run on the mailer's loop thread. See :meth:`AsyncMailer.on_result`."""
        return self._async.hooks

    def add_hook(self, hook: MailerHooks | object) -> None:
        """See :meth:`AsyncMailer.add_hook`."""
        self._async.add_hook(hook)

    def on_attempt(self, function: _HookFunction) -> _HookFunction:
        """See :meth:`AsyncMailer.on_attempt`."""
        return self._async.on_attempt(function)

    def on_result(self, function: _HookFunction) -> _HookFunction:
        """See :meth:`AsyncMailer.on_result`."""
        return self._async.on_result(function)

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy; assign a new one to change it (e.g. ``policy.without_waits()``)."""
        return self._async.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(policy).__name__}")
        self._async.retry = policy

    def _run(self, func: Callable[[], Awaitable[T]]) -> T:
        return self._portal().call(func)

    def _portal(self) -> _PortalThread:
        if self._runner is not None and self._runner.pid != os.getpid():
            # We are a forked child: the parent's loop thread does not exist here and its
            # connections belong to the parent. Start afresh, without touching them.
            self._guard = threading.Lock()
            self._runner = None
            self.transport.forget_connections()
        with self._guard:
            if self._closed:
                raise TransportClosedError("this mailer is closed; create a new one to send")
            if self._runner is None:
                self._runner = _PortalThread()
            return self._runner

    def send(self, message: AnyMessage, *, envelope: Envelope | None = None) -> SendResult:
        """Send one message; see :meth:`AsyncMailer.send`."""
        return self._run(partial(self._async.send, message, envelope=envelope))

    def send_many(
        self, messages: Iterable[AnyMessage], *, concurrency: int = 4
    ) -> list[SendResultOrError]:
        """Send every message; see :meth:`AsyncMailer.send_many`."""
        return self._run(partial(self._async.send_many, messages, concurrency=concurrency))

    def stream(
        self, messages: Iterable[AnyMessage], *, concurrency: int = 4
    ) -> Iterator[SendResultOrError]:
        """Yield each message's result or error in order; see :meth:`AsyncMailer.stream`."""
        return self._blocking(self._async.stream(messages, concurrency=concurrency))

    def as_completed(
        self, messages: Iterable[AnyMessage], *, concurrency: int = 4
    ) -> Iterator[Completed]:
        """Yield each :class:`Completed` as its send ends; see :meth:`AsyncMailer.as_completed`."""
        return self._blocking(self._async.as_completed(messages, concurrency=concurrency))

    def _blocking(self, values: AsyncGenerator[T, None]) -> Iterator[T]:
        """Iterate an async generator of the mailer's loop; closing this closes it there."""
        runner = self._portal()
        try:
            while True:
                try:
                    yield runner.call(values.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            runner.call(values.aclose)

    def close(self) -> None:
        """Close the transport and stop the private event loop. Closing twice is fine."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None and runner.pid != os.getpid():
            # Inherited across fork: the connections are the parent's; just forget them.
            self.transport.forget_connections()
            runner = None
        if runner is None:
            runner = _PortalThread()
        try:
            runner.call(self._async.aclose)
        finally:
            runner.stop()

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
