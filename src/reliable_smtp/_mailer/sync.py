"""The synchronous mailer: :class:`Mailer`, the async core run on a private loop thread.

:class:`Mailer` runs :class:`~reliable_smtp.AsyncMailer` on one private event-loop
thread (an anyio blocking portal, :class:`_PortalThread`): started on first use,
shared by every calling thread, re-created in a child process after ``fork``,
stopped by ``close()``. It never calls ``asyncio.run()`` per send, so connections
stay warm between sends. Bulk sends are iterated there and handed over one value at
a time (``_blocking``).
"""

from __future__ import annotations

import os
import random
import ssl
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .._envelope import Envelope
from .._errors import TransportClosedError
from .._hooks import HookSet, MailerHooks
from .._result import SendResult
from .._retry import RetryPolicy
from .._transports.base import Transport
from .._transports.smtp import TokenProvider
from .._validation import RecipientPolicy
from .async_mailer import AsyncMailer, _configured, _HookFunction
from .bulk import Completed
from .values import DEFAULT, AnyMessage, SendResultOrError, _Default

T = TypeVar("T")


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
