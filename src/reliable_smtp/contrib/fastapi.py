"""FastAPI integration: one :class:`~reliable_smtp.AsyncMailer` per application.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from reliable_smtp import AsyncMailer, Message
    from reliable_smtp.contrib.fastapi import MailerDep, mailer_lifespan, send_later

    app = FastAPI(lifespan=mailer_lifespan())        # AsyncMailer.from_env() at startup

    @app.post("/signup")
    async def signup(mailer: MailerDep):
        result = await mailer.send(Message(...))     # the SendResult, per recipient
        return {"accepted": result.accepted}

* :func:`mailer_lifespan` opens the mailer when the application starts (from a
  factory you give, default :meth:`AsyncMailer.from_env <reliable_smtp.AsyncMailer.from_env>`)
  and, at shutdown, waits for the sends started with :func:`send_later`, then
  closes the pool (QUIT on every connection). It can wrap your own lifespan.
* :func:`get_mailer` / :data:`MailerDep` hand the mailer to path operations.
* ``mailer_lifespan(outbox=AsyncOutbox.from_env)`` also opens a durable
  :class:`~reliable_smtp.AsyncOutbox` (closed after the mailer at shutdown);
  :func:`get_outbox` / :data:`OutboxDep` hand it to path operations, which
  ``await outbox.enqueue(message)`` - a worker (``reliable-smtp worker``) sends it.
* :func:`send_later` sends after the response without losing the outcome: the
  task is awaited at shutdown and its result or error is logged.
* :func:`add_error_handlers` maps delivery errors to HTTP responses - only when
  you call it: by default an error is an error (500), as for any other exception.

Needs FastAPI: ``pip install 'reliable-smtp[fastapi]'``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Annotated, Any

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import JSONResponse
except ImportError:  # pragma: no cover - depends on the environment
    from . import missing_framework

    raise missing_framework("reliable_smtp.contrib.fastapi", "FastAPI", "fastapi") from None

from reliable_smtp import (
    AmbiguousDeliveryError,
    AsyncMailer,
    AsyncOutbox,
    AuthOrConfigError,
    DeliveryError,
    InvalidMessageError,
    Message,
    ReliableSMTPError,
    SendResultOrError,
    ThrottledError,
    TransientError,
)

__all__ = [
    "MailerDep",
    "OutboxDep",
    "add_error_handlers",
    "get_mailer",
    "get_outbox",
    "mailer_lifespan",
    "send_later",
]

logger = logging.getLogger("reliable_smtp.contrib.fastapi")

_STATE = "reliable_smtp"
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


@dataclass(slots=True, kw_only=True)
class _AppMail:
    """What one application holds: its mailer and the sends still in flight."""

    mailer: AsyncMailer
    outbox: AsyncOutbox | None = None
    pending: set[asyncio.Task[SendResultOrError]] = field(default_factory=set)
    closing: bool = False


def mailer_lifespan(
    factory: Callable[[], AsyncMailer] | None = None,
    *,
    shutdown_timeout: float = 30.0,
    inner: Lifespan | None = None,
    outbox: Callable[[], AsyncOutbox] | None = None,
) -> Lifespan:
    """A lifespan that opens a mailer at startup and closes it cleanly at shutdown.

    ``factory`` builds the mailer (default ``AsyncMailer.from_env``, reading
    ``RELIABLE_SMTP_*``); it runs once per application start. At shutdown the
    sends started with :func:`send_later` get ``shutdown_timeout`` seconds to
    finish (the rest are cancelled and logged), then the pool is closed.
    ``inner`` is your own lifespan, run inside this one (the mailer is already
    open in it and still open when it ends); whatever it yields is yielded on.
    ``outbox`` builds an :class:`~reliable_smtp.AsyncOutbox` too (for example
    ``AsyncOutbox.from_env``, reading ``RELIABLE_SMTP_OUTBOX_URL``), opened after
    the mailer and closed after it.
    """
    build = factory or AsyncMailer.from_env

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        mail = _AppMail(mailer=build())
        try:
            mail.outbox = outbox() if outbox is not None else None
        except BaseException:
            await mail.mailer.aclose()
            raise
        setattr(app.state, _STATE, mail)
        try:
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state
        finally:
            mail.closing = True
            await _drain(mail, shutdown_timeout)
            try:
                await mail.mailer.aclose()
            finally:
                if mail.outbox is not None:
                    await mail.outbox.close()
                delattr(app.state, _STATE)

    return lifespan


async def _drain(mail: _AppMail, timeout: float) -> None:
    if not mail.pending:
        return
    _, late = await asyncio.wait(set(mail.pending), timeout=timeout)
    for task in late:
        task.cancel()
    if late:
        logger.error(
            "cancelled %d mail send(s) still running %.3g s after shutdown began; raise "
            "mailer_lifespan(shutdown_timeout=...) to give them longer",
            len(late),
            timeout,
        )
        await asyncio.gather(*late, return_exceptions=True)


def _app_mail(app: Any) -> _AppMail:
    mail = getattr(app.state, _STATE, None)
    if not isinstance(mail, _AppMail):
        raise RuntimeError(
            "no reliable-smtp mailer on this application: create it with "
            "FastAPI(lifespan=mailer_lifespan(...)) (and, in tests, enter the TestClient "
            "with `with TestClient(app) as client:` so the lifespan runs)"
        )
    return mail


def get_mailer(request: Request) -> AsyncMailer:
    """The dependency: the application's :class:`~reliable_smtp.AsyncMailer`."""
    return _app_mail(request.app).mailer


MailerDep = Annotated[AsyncMailer, Depends(get_mailer)]
"""``mailer: MailerDep`` in a path operation's parameters gives it the mailer."""


def get_outbox(request: Request) -> AsyncOutbox:
    """The dependency: the application's :class:`~reliable_smtp.AsyncOutbox`."""
    outbox = _app_mail(request.app).outbox
    if outbox is None:
        raise RuntimeError(
            "no reliable-smtp outbox on this application: pass one to the lifespan, "
            "mailer_lifespan(outbox=AsyncOutbox.from_env)"
        )
    return outbox


OutboxDep = Annotated[AsyncOutbox, Depends(get_outbox)]
"""``outbox: OutboxDep`` in a path operation's parameters gives it the durable outbox."""


def send_later(
    request: Request, message: Message | EmailMessage
) -> asyncio.Task[SendResultOrError]:
    """Send ``message`` in the background; the application's shutdown waits for it.

    The task's result is the :class:`~reliable_smtp.SendResult` or the error
    ``send()`` would have raised (never raised out of the task); failures are
    logged with their SMTP facts.
    """
    mail = _app_mail(request.app)
    if mail.closing:
        raise RuntimeError("the application is shutting down: no new mail can be started")

    async def send() -> SendResultOrError:
        try:
            return await mail.mailer.send(message)
        except ReliableSMTPError as error:
            logger.warning("background send failed: %s", error)
            return error

    task = asyncio.get_running_loop().create_task(send())
    mail.pending.add(task)
    task.add_done_callback(mail.pending.discard)
    return task


def _status_for(error: ReliableSMTPError) -> int:
    if isinstance(error, InvalidMessageError):
        return 422  # the request gave an address or content that cannot be sent
    if isinstance(error, (ThrottledError, TransientError)):
        return 503  # try again later
    if isinstance(error, AuthOrConfigError):
        return 500  # the application's mail settings are wrong, not the request
    return 502  # the mail server refused, or may have the message (ambiguous)


def add_error_handlers(app: FastAPI) -> None:
    """Answer reliable-smtp errors escaping a path operation with JSON responses.

    ========================================  ======  ====================================
    error                                     status  why
    ========================================  ======  ====================================
    ``InvalidMessageError`` (bad address)     422     the request's input cannot be sent
    ``TransientError``, ``ThrottledError``    503     temporary; ``Retry-After`` when known
    ``AuthOrConfigError``                     500     the application's settings are wrong
    ``PermanentError``, ``AmbiguousDelivery``  502     the mail server refused / may have it
    ========================================  ======  ====================================

    The body says ``outcome``, ``code``, ``enhanced_code``, ``phase`` and a
    ``detail``; it never echoes addresses or server credentials.
    """

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ReliableSMTPError)
        status = _status_for(exc)
        body: dict[str, Any] = {"detail": _detail(exc)}
        headers: dict[str, str] = {}
        if isinstance(exc, DeliveryError):
            body.update(
                outcome=exc.outcome.value,
                code=exc.code,
                enhanced_code=exc.enhanced_code,
                phase=exc.phase.value if exc.phase is not None else None,
                may_have_been_delivered=isinstance(exc, AmbiguousDeliveryError),
            )
            if status == 503 and exc.delay_hint:
                headers["Retry-After"] = str(max(1, round(exc.delay_hint)))
        return JSONResponse(body, status_code=status, headers=headers)

    app.add_exception_handler(ReliableSMTPError, handle)


def _detail(error: ReliableSMTPError) -> str:
    if isinstance(error, InvalidMessageError):
        return "the message cannot be sent to the address given"
    if isinstance(error, DeliveryError):
        return error.explanation or error.summary
    return "mail could not be sent"
