"""The asynchronous mailer: :class:`AsyncMailer`, its send path and its retry loop.

A send goes: render the message once -> derive the envelope (Bcc included,
deduplicated) -> check the recipients (the policy) -> try the transport, one
transaction per chunk of recipients -> keep every recipient's status -> retry only
the recipients still pending, as the :class:`~reliable_smtp.RetryPolicy` allows
(tenacity, set up only after a first failure) -> return a
:class:`~reliable_smtp.SendResult`, or raise the error :mod:`.failure` picks. This
module also owns each attempt's :class:`~reliable_smtp.Attempt` record and its log
line. Sending many messages is :mod:`.bulk`; the blocking twin is :mod:`.sync`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from .._envelope import Envelope
from .._errors import DeliveryError, ReliableSMTPError, TransportClosedError
from .._hooks import HookSet, MailerHooks, SendWatch, _CallableHook
from .._message import render
from .._replies import Outcome
from .._result import Attempt, RecipientStatus, SendResult, missing_status
from .._retry import RetryPolicy
from .._transports.base import Transport
from .._transports.smtp import TokenProvider
from .._validation import RecipientPolicy
from . import bulk
from .bulk import Completed
from .failure import _final_error, _unexpected
from .values import DEFAULT, AnyMessage, SendResultOrError, _Default

logger = logging.getLogger("reliable_smtp")

_HookFunction = TypeVar("_HookFunction", bound=Callable[[Any], Any])


def _chunks(items: tuple[str, ...], size: int | None) -> Sequence[tuple[str, ...]]:
    """``items`` in transactions of at most ``size`` recipients (a list: most sends have one)."""
    if not size or len(items) <= size:
        return (items,)
    return [items[start : start + size] for start in range(0, len(items), size)]


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
                if (checked.sender, checked.recipients) != (envelope.sender, envelope.recipients):
                    envelope = checked.envelope()  # normalized: a new (checked) envelope
                refused = checked.refused_statuses(transport_name="recipient-policy")
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

    def stream(
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
        return bulk.stream(self._outcome, messages, concurrency=concurrency)

    def as_completed(
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
        return bulk.as_completed(self._outcome, messages, concurrency=concurrency)

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
        before_next_transaction: Callable[[], Awaitable[object]] | None = None,
    ) -> SendResult:
        # ``policy`` overrides ``self.retry`` for one call: the outbox worker makes one
        # attempt per claim (the outbox schedule retries) and only resends 452 splits.
        # ``before_next_transaction`` is awaited before every transaction but the first:
        # the outbox worker reserves each one's place in the shared rate there (it
        # reserved the first before calling).
        policy = policy or self.retry
        transactions = 0
        started = self._clock()
        if watch is None:
            watch = self.hooks.watch()
        # Without hooks the watch is a no-op: skip its calls (four awaits per send).
        listening = watch.listening
        if listening:
            await watch.started(message_id, envelope, self.transport, now=started)
        statuses: dict[str, RecipientStatus] = {}
        tries: dict[str, int] = dict.fromkeys(envelope.recipients, 0)
        attempts: list[Attempt] = []
        pending: list[str] = list(envelope.recipients)
        last_error: DeliveryError | None = None

        async def attempt_once() -> None:
            nonlocal last_error, pending, transactions
            # Every attempt but a retry targets the whole envelope (pending keeps its order).
            targets = (
                envelope if len(pending) == len(envelope.recipients) else envelope.only(pending)
            )
            hooked = (
                await watch.attempt_started(len(attempts) + 1, targets.recipients)
                if listening
                else None
            )
            begun, begun_wall = self._clock(), time.time()
            last_error = None
            fresh: dict[str, RecipientStatus] = {}
            # Servers must take 100 recipients per transaction (RFC 5321 §4.5.3.1.8);
            # the policy may ask for fewer. Each chunk is its own transaction.
            for chunk in _chunks(targets.recipients, chunk_size):
                part = targets if chunk is targets.recipients else targets.only(chunk)
                try:
                    try:
                        if transactions and before_next_transaction is not None:
                            await before_next_transaction()
                        transactions += 1
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
                if status.attempts != tries[recipient]:  # a status is immutable: copy on change
                    status = replace(status, attempts=tries[recipient])
                statuses[recipient] = status
            attempts.append(
                _attempt_record(
                    len(attempts) + 1, begun_wall, self._clock() - begun, targets, fresh, last_error
                )
            )
            pending = [r for r in targets.recipients if policy.should_retry(statuses[r])]
            _log_event("send", message_id, attempts[-1], pending=pending)
            if listening:
                await watch.attempt_finished(
                    hooked, attempts[-1], targets.recipients, statuses, pending
                )
            if pending:
                raise _PendingRecipients([statuses[r] for r in pending])

        try:
            # Most sends succeed at once; tenacity is only set up when they do not (it
            # costs ~0.1 ms per send, a quarter of the client's CPU on a fast link).
            await attempt_once()
        except _PendingRecipients as first_failure:
            # The retry machinery, set up only now: most sends never need it.
            def wait(state: RetryCallState) -> float:
                signal = state.outcome.exception() if state.outcome else None
                if not isinstance(signal, _PendingRecipients):
                    return 0.0
                delay = policy.wait_before_next(
                    state.attempt_number, signal.statuses, rng=self._rng
                )
                attempts[-1] = replace(attempts[-1], delay_after=delay)
                return delay

            def before_sleep(state: RetryCallState) -> None:
                _log_event(
                    "retry",
                    message_id,
                    attempts[-1],
                    pending=pending,
                    delay=attempts[-1].delay_after,
                )

            def stop(state: RetryCallState) -> bool:
                upcoming = state.upcoming_sleep or 0.0
                halt = policy.should_stop(state.attempt_number, self._clock() - started, upcoming)
                if halt:
                    attempts[-1] = replace(attempts[-1], delay_after=None)
                return halt

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

        in_order = {r: statuses[r] for r in envelope.recipients}
        result = SendResult(
            message_id=message_id,
            envelope=envelope,
            recipients={**in_order, **refused} if refused else in_order,
            attempts=tuple(attempts),
            elapsed=self._clock() - started,
            transport_name=self.transport.name,
        )
        if result.ok:
            if listening:
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
    from .._settings import MailerSettings  # pydantic-settings only when asked for

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
