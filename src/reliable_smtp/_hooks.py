"""Hooks: how code outside the engine is told of each send, each attempt and each result.

A hook is an object with any of the methods of :class:`MailerHooks` (a subclass
overrides what it needs), or a plain callable registered with
``mailer.on_attempt(fn)`` / ``mailer.on_result(fn)``. Each method may be a plain
function or a coroutine function; the mailer awaits the latter. Hooks run in the
send's own task, in order of registration, on the mailer's event loop (for the
synchronous :class:`~reliable_smtp.Mailer`, its private loop thread): keep them
quick, or hand the work to a queue.

A hook that raises is logged at ERROR with its traceback and otherwise ignored:
it never changes a delivery's outcome, never stops the other hooks, and never
loses a result.

The mailer owns one :class:`HookSet`; per send it opens a :class:`SendWatch`,
which remembers what it has reported so every send ends with exactly one
``on_result``, however it ends (sent, refused, invalid, a bug, cancelled).

:func:`note_session_event` is for the transports' session code (connect, TLS,
AUTH, a wait for the rate limiter): it tells the hooks of the attempt under way in
the current task, or does nothing when no hook is listening.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from ._envelope import Envelope
from ._result import Attempt, RecipientStatus, SendResult

if TYPE_CHECKING:
    from ._message import Message
    from ._transports.base import Transport

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "MailerHooks",
    "SendFinished",
    "SendStarted",
    "SessionEvent",
    "note_session_event",
]

logger = logging.getLogger("reliable_smtp")

AttributeValue: TypeAlias = "str | bool | int | float"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendStarted:
    """A message was rendered and checked; its first attempt is about to begin."""

    message_id: str
    envelope: Envelope
    transport: Transport
    message: Message | EmailMessage | None = None
    """What was passed to ``send()`` (``None`` when the send came from elsewhere, e.g. the
    outbox worker, which sends stored bytes)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStarted:
    """Attempt ``number`` (1, 2, ...) is about to try ``recipients`` (those still pending)."""

    message_id: str
    number: int
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFinished:
    """An attempt ended: its record, what each recipient it tried got, who may be retried."""

    message_id: str
    attempt: Attempt
    statuses: Mapping[str, RecipientStatus]
    """The statuses this attempt gave the recipients it tried."""
    pending: tuple[str, ...]
    """Recipients the retry policy would try again (if its time and attempt budget allow)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFinished:
    """A send ended, one way or another: exactly one per ``send()``.

    ``result`` is the :class:`~reliable_smtp.SendResult` (also the one a raised
    :class:`~reliable_smtp.DeliveryError` carries); ``None`` only when nothing was
    tried (an invalid message, every recipient refused by the policy) or the send was
    cut short (``error`` is then a bug's exception, or ``asyncio.CancelledError``).
    """

    message_id: str | None
    result: SendResult | None
    error: BaseException | None
    """What ``send()`` raised, ``None`` when every recipient accepted the message."""
    message: Message | EmailMessage | None = None
    elapsed: float = 0.0
    """Seconds from the first attempt's start to the end (0 when nothing was tried)."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent:
    """Something the session code did during an attempt: ``connect``, ``tls``, ``auth``,
    ``rate_limit_wait`` (with ``seconds``)... Attributes never hold addresses or secrets."""

    name: str
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


class MailerHooks:
    """The hook interface: override any of these (sync or ``async def``); all default to no-op.

    ::

        class Audit(MailerHooks):
            async def on_result(self, event: SendFinished) -> None:
                await audit_log.write(event.message_id, event.ok)

        mailer = AsyncMailer(transport, hooks=[Audit()])

    ``on_session_event`` is called from inside the transport: it must be a plain
    (not async) function, and quick.
    """

    def on_send(self, event: SendStarted) -> Awaitable[None] | None:
        """Before the first attempt."""
        return None

    def on_attempt_start(self, event: AttemptStarted) -> Awaitable[None] | None:
        """Before each attempt."""
        return None

    def on_attempt(self, event: AttemptFinished) -> Awaitable[None] | None:
        """After each attempt, with its record and per-recipient statuses."""
        return None

    def on_result(self, event: SendFinished) -> Awaitable[None] | None:
        """Once per send, when it ends (sent, failed, invalid, broken or cancelled)."""
        return None

    def on_session_event(self, event: SessionEvent) -> None:
        """During an attempt: connect, TLS, AUTH, a rate-limit wait (sync only)."""
        return


_METHODS = ("on_send", "on_attempt_start", "on_attempt", "on_result", "on_session_event")


class _CallableHook(MailerHooks):
    """A plain callable registered for one event (``mailer.on_attempt(fn)``)."""

    def __init__(self, method: str, function: Callable[[Any], Awaitable[None] | None]) -> None:
        self._method = method
        self.function = function
        setattr(self, method, function)

    def __repr__(self) -> str:
        return f"<{self._method} hook {getattr(self.function, '__qualname__', self.function)!r}>"


def _overrides(hook: object, method: str) -> bool:
    """Whether ``hook`` does something for ``method`` (so no-op methods cost nothing)."""
    bound = getattr(hook, method, None)
    if bound is None:
        return False
    func = getattr(bound, "__func__", None)
    return func is None or func is not getattr(MailerHooks, method)


class HookSet:
    """The hooks of one mailer, grouped by event, each list holding only real listeners."""

    def __init__(self, hooks: Iterable[object] = ()) -> None:
        self._by_method: dict[str, list[Callable[[Any], Any]]] = {m: [] for m in _METHODS}
        self.hooks: list[object] = []
        for hook in hooks:
            self.add(hook)

    def add(self, hook: object) -> None:
        """Register ``hook`` (any object with some of :class:`MailerHooks`'s methods)."""
        if getattr(hook, "active", True) is False:
            return  # e.g. OpenTelemetryHooks without the API: nothing to call, ever
        methods = [m for m in _METHODS if _overrides(hook, m)]
        if not methods:
            raise TypeError(
                f"{hook!r} is not a hook: give an object with any of "
                f"{', '.join(_METHODS)} (see reliable_smtp.MailerHooks)"
            )
        if _overrides(hook, "on_session_event") and inspect.iscoroutinefunction(
            hook.on_session_event  # type: ignore[attr-defined]
        ):
            raise TypeError(f"{hook!r}: on_session_event must be a plain function, not async")
        self.hooks.append(hook)
        for method in methods:
            self._by_method[method].append(getattr(hook, method))

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def watch(self, message: Message | EmailMessage | None = None) -> SendWatch:
        """A watch for one send (a shared no-op one when no hook listens)."""
        return SendWatch(self, message) if self.hooks else _UNWATCHED

    def listens(self, method: str) -> bool:
        """Whether any hook listens for ``method`` (no event is built for nobody)."""
        return bool(self._by_method[method])

    async def emit(self, method: str, event: object) -> None:
        for listener in self._by_method[method]:
            try:
                outcome = listener(event)
                # A plain function returns None: no isawaitable() call for it.
                if outcome is not None and inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                # A hook's failure is the hook's: the delivery and the other hooks go on.
                logger.exception(
                    "hook %r raised in %s; the delivery is not affected", listener, method
                )

    def emit_sync(self, method: str, event: object) -> None:
        for listener in self._by_method[method]:
            try:
                listener(event)
            except Exception:
                logger.exception(
                    "hook %r raised in %s; the delivery is not affected", listener, method
                )


class SendWatch:
    """One send, as the hooks see it: started -> attempts -> exactly one result."""

    def __init__(self, hooks: HookSet | None, message: Message | EmailMessage | None) -> None:
        self._hooks = hooks
        self.message = message
        self.message_id: str | None = None
        self.finished = hooks is None  # the no-op watch never reports
        self._started_at: float | None = None

    @property
    def listening(self) -> bool:
        """False for the shared no-op watch: every method would return at once."""
        return self._hooks is not None

    async def started(
        self, message_id: str, envelope: Envelope, transport: Transport, *, now: float
    ) -> None:
        if self._hooks is None:
            return
        self.message_id = message_id
        self._started_at = now
        if self._hooks.listens("on_send"):
            await self._hooks.emit(
                "on_send",
                SendStarted(
                    message_id=message_id,
                    envelope=envelope,
                    transport=transport,
                    message=self.message,
                ),
            )

    async def attempt_started(self, number: int, recipients: tuple[str, ...]) -> object:
        """Report the attempt; return the token :meth:`attempt_finished` needs."""
        if self._hooks is None:
            return None
        token = _current_attempt.set(self._hooks)
        if self._hooks.listens("on_attempt_start"):
            await self._hooks.emit(
                "on_attempt_start",
                AttemptStarted(
                    message_id=self.message_id or "", number=number, recipients=recipients
                ),
            )
        return token

    async def attempt_finished(
        self,
        token: object,
        attempt: Attempt,
        tried: Iterable[str],
        statuses: Mapping[str, RecipientStatus],
        pending: Iterable[str],
    ) -> None:
        if self._hooks is None:
            return
        _reset_attempt(token)
        if self._hooks.listens("on_attempt"):
            await self._hooks.emit(
                "on_attempt",
                AttemptFinished(
                    message_id=self.message_id or "",
                    attempt=attempt,
                    statuses=MappingProxyType({r: statuses[r] for r in tried}),
                    pending=tuple(pending),
                ),
            )

    async def finish(
        self, result: SendResult | None, error: BaseException | None, *, now: float | None = None
    ) -> None:
        """Report the send's end, once (later calls, e.g. from an outer handler, do nothing)."""
        if self.finished or self._hooks is None:
            return
        self.finished = True
        _current_attempt.set(None)
        if not self._hooks.listens("on_result"):
            return
        started = self._started_at
        elapsed = now - started if started is not None and now is not None else 0.0
        await self._hooks.emit(
            "on_result",
            SendFinished(
                message_id=self.message_id or (result.message_id if result else None),
                result=result,
                error=error,
                message=self.message,
                elapsed=elapsed,
            ),
        )


_UNWATCHED = SendWatch(None, None)

#: The hooks of the attempt under way in this task (``None`` outside any attempt).
_current_attempt: ContextVar[HookSet | None] = ContextVar(
    "reliable_smtp_current_attempt", default=None
)


def _reset_attempt(token: object) -> None:
    try:
        _current_attempt.reset(token)  # type: ignore[arg-type]
    except (ValueError, TypeError, RuntimeError):
        # Set in another context (a transport that hopped tasks): just clear it.
        _current_attempt.set(None)


def note_session_event(name: str, **attributes: AttributeValue) -> None:
    """Tell the hooks of the current attempt that ``name`` happened (``connect``, ``tls``,
    ``auth``, ``rate_limit_wait`` with ``seconds=``...).

    For the session code: one call where the thing happened, costing one ContextVar
    read when nobody listens. Never pass an address, message content or a secret.
    """
    hooks = _current_attempt.get()
    if hooks is None:
        return
    hooks.emit_sync("on_session_event", SessionEvent(name=name, attributes=attributes))
