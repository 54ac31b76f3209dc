"""The final-dot hook: the last word before a transport commits a message.

This module owns the guard a caller (the outbox worker) installs around a
``deliver`` call, and :func:`before_final_dot`, which every transport that sets
``Transport.marks_final_dot`` calls right before its commit point - for SMTP,
after the server's 354 and before the body and the final dot are written.

The worker's guard records durably that the dot is about to be sent ("dot
mark") for the recipients accepted in that transaction, so that after a crash
the outbox knows which recipients may have the message (AMBIGUOUS) and which
certainly do not (back to the queue). If the guard raises - the lease on the
entry was lost, the database went away - the dot is forbidden: the transport
drops the connection without sending it, and those recipients are transient
"not sent" (never ambiguous: the server never had a complete message).

The guard lives in a :class:`~contextvars.ContextVar`, so it follows the task
that calls ``deliver`` (and the tasks it starts) and never leaks into another
send running on the same event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

from .._envelope import Envelope
from .._errors import TransientError
from .._replies import Outcome, Phase
from .._result import RecipientStatus

__all__ = [
    "FinalDotForbiddenError",
    "FinalDotGuard",
    "before_commit",
    "before_final_dot",
    "final_dot_guarded",
    "guard_final_dot",
]

#: Called with the recipients about to get the message; raises to forbid the final dot.
FinalDotGuard = Callable[[tuple[str, ...]], Awaitable[None]]

_guard: ContextVar[FinalDotGuard | None] = ContextVar("reliable_smtp_final_dot_guard", default=None)


class FinalDotForbiddenError(Exception):
    """The guard refused the final dot; nothing was committed. ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def status(self, recipient: str, *, transport_name: str) -> RecipientStatus:
        """The status of a recipient whose message was held back: transient, nothing sent."""
        return RecipientStatus(
            recipient=recipient,
            outcome=Outcome.TRANSIENT,
            phase=Phase.DATA,
            explanation=f"not sent: {self.reason}; the final dot was never written",
            transport_name=transport_name,
        )

    def error(
        self, *, transport_name: str, what: str = "nothing was handed to the server"
    ) -> TransientError:
        """The error of a transaction the guard stopped (nothing was committed): ``what``
        says how far it got."""
        return TransientError(
            f"{transport_name}: not sent, the final dot was forbidden",
            phase=Phase.DATA,
            transport_name=transport_name,
            explanation=f"not sent: {self.reason}; {what}",
        )


@contextlib.contextmanager
def guard_final_dot(guard: FinalDotGuard) -> Iterator[None]:
    """Install ``guard`` for every ``deliver`` awaited inside the ``with`` block."""
    token = _guard.set(guard)
    try:
        yield
    finally:
        _guard.reset(token)


def final_dot_guarded() -> bool:
    """Whether a guard is installed for this task (an outbox worker's send)."""
    return _guard.get() is not None


async def before_final_dot(recipients: tuple[str, ...]) -> None:
    """Ask the installed guard (if any) whether the final dot may go to ``recipients``.

    Raises :class:`FinalDotForbiddenError` when it may not; any exception of the
    guard counts as a refusal (an unreachable queue must not let the dot through,
    since the mark that makes a crash safe could not be written).
    """
    guard = _guard.get()
    if guard is None or not recipients:
        return
    try:
        await guard(recipients)
    except FinalDotForbiddenError:
        raise
    except Exception as exc:
        raise FinalDotForbiddenError(str(exc) or type(exc).__name__) from exc


async def before_commit(envelope: Envelope, *, transport_name: str) -> None:
    """:func:`before_final_dot` for a transport that commits to every recipient at once.

    Memory, file and sendmail transports call it right before their commit point;
    a refusal becomes the :class:`~reliable_smtp.TransientError` of a send that
    failed before anything was handed over.
    """
    try:
        await before_final_dot(envelope.recipients)
    except FinalDotForbiddenError as forbidden:
        raise forbidden.error(transport_name=transport_name) from forbidden
